"""The snapshot picture (matplotlib): PNG and SVG files whose parts are really there."""

import io
import json

import numpy as np
import pytest
from analytics_data import CANDLES, need
from PIL import Image

from engine.cli import main
from engine.snapshot import (
    DOWN,
    GRADE_C,
    LONG_C,
    SHORT_C,
    UP,
    WARN,
    SnapshotError,
    render_snapshot,
    snapshot_bytes,
)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def colour_count(region: np.ndarray, colour: str, tol: int = 6) -> int:
    return int((np.abs(region[..., :3].astype(int) - _rgb(colour)).max(axis=-1) <= tol).sum())


def _region(img: np.ndarray, ax) -> np.ndarray:
    """The pixels of one panel (matplotlib's y axis points up, the image's down)."""
    box = ax.get_window_extent()
    h = img.shape[0]
    return img[int(h - box.y1) + 1 : int(h - box.y0) - 1, int(box.x0) + 1 : int(box.x1) - 1]


def test_png_shows_heatmap_candles_profile_zone_grades_and_the_estimated_label(synth_est):
    zones = synth_est.zones()
    snap = render_snapshot(synth_est, "BTC/USDT:USDT", 3600, 1000, 600, candles=80, zones=zones)
    data = snapshot_bytes(snap, "png", "BTC/USDT:USDT")
    pic = Image.open(io.BytesIO(data))
    img = np.asarray(pic.convert("RGB"))
    assert img.shape == (600, 1000, 3)
    model = json.loads(pic.text["liqheat.model"])
    assert model["estimate"] is True and model["seed_mode"] == synth_est.seed_mode
    chart = _region(img, snap.chart)
    assert len(np.unique(chart.reshape(-1, 3), axis=0)) > 50  # the heatmap: many colours
    assert colour_count(chart, UP) + colour_count(chart, DOWN) > 500  # candles drawn on top
    assert colour_count(chart, WARN, tol=30) > 50  # "ESTIMATED" in yellow
    panel = _region(img, snap.profile)
    assert colour_count(panel, LONG_C) > 200 and colour_count(panel, SHORT_C) > 200
    assert sum(colour_count(panel, GRADE_C[z.grade]) for z in zones) > 20  # zone grades on the right edge
    assert snap.colour_scale_usd > 0


def test_svg_keeps_the_words_as_text(synth_est):
    snap = render_snapshot(synth_est, "ETH/USDT:USDT", 3600, 900, 500, zones=synth_est.zones())
    svg = snapshot_bytes(snap, "svg", "ETH/USDT:USDT").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for words in ("ESTIMATED", "ETH/USDT:USDT", "USD per cell", "Model: ladder default", "not a record of real positions"):
        assert words in svg, words
    assert '"estimate": true' in svg  # the model's parameters in the description


def test_size_and_dpi_are_options(synth_est):
    small = render_snapshot(synth_est, "X", 3600, 600, 300, dpi=50)
    img = np.asarray(Image.open(io.BytesIO(snapshot_bytes(small, "png", "X"))).convert("RGB"))
    assert img.shape == (300, 600, 3)
    with pytest.raises(SnapshotError):
        render_snapshot(synth_est, "X", 3600, 100, 100)
    with pytest.raises(SnapshotError):
        render_snapshot(synth_est, "X", 3600, dpi=5)


def test_snapshot_command_writes_png_and_svg_from_a_real_candle_file(tmp_path, capsys):
    png, svg = tmp_path / "okx.png", tmp_path / "okx.svg"
    code = main(["snapshot", "--png", str(png), "--svg", str(svg), "--feed", f"file:{need(CANDLES)}", "--venue", "okx",
                 "--coin", "BTC", "--contract-size", "0.01", "--timeframe", "4h", "--width", "900", "--height", "500"])
    assert code == 0, capsys.readouterr().err
    with Image.open(png) as pic:
        assert pic.size == (900, 500)
        model = json.loads(pic.text["liqheat.model"])
    assert model["estimate"] is True and model["ladder"] == "default" and model["seed_mode"] == "volume"
    assert "ESTIMATED" in svg.read_text()
    assert capsys.readouterr().out.count("wrote") == 2


def test_snapshot_command_on_the_demo_market(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["snapshot", "--png", str(out), "--days", "3", "--timeframe", "1h"]) == 0, capsys.readouterr().err
    with Image.open(out) as pic:
        assert pic.size == (1200, 720)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--width", "100"], "at least"), (["--feed", "file:/nope.csv"], "no such file"), (["--feed", "moon"], "unknown feed"),
     (["--timeframe", "7m"], "unknown timeframe"), (["--dpi", "1"], "--dpi")],
)
def test_snapshot_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, needle):
    assert main(["snapshot", "--png", str(tmp_path / "x.png"), "--days", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_snapshot_needs_an_output(capsys):
    assert main(["snapshot", "--days", "1"]) == 2
    assert "--png FILE and/or --svg FILE" in capsys.readouterr().err
