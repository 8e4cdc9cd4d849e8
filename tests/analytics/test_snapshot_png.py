"""The PNG snapshot: a tiny encoder/decoder pair and a picture whose parts are really there."""

import json
import struct
import zlib

import numpy as np
import pytest
from analytics_data import CANDLES, need

from engine.cli import main
from engine.rasterfont import text_mask
from engine.snapshot import (
    BG,
    DOWN,
    LONG_C,
    SHORT_C,
    UP,
    WARN,
    Layout,
    SnapshotError,
    colormap,
    decode_png,
    encode_png,
    nice_ticks,
    render_snapshot,
)


def test_png_round_trip_is_exact_and_carries_text():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    data = encode_png(img, {"Software": "liqheat", "liqheat.model": '{"estimate": true}'})
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back, text = decode_png(data)
    assert np.array_equal(back, img)
    assert text["liqheat.model"] == '{"estimate": true}'
    # the IDAT really is zlib: inflate it by hand
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    assert len(zlib.decompress(idat)) == 37 * (1 + 53 * 3)
    broken = bytearray(data)
    broken[40] ^= 0xFF
    with pytest.raises(SnapshotError):
        decode_png(bytes(broken))


def _filter(raw, ftype, bpp=3):
    """Encode one image with a given PNG row filter (the decoder must undo all five)."""
    h, w3 = raw.shape
    out = np.zeros((h, w3 + 1), dtype=np.uint8)
    prev = np.zeros(w3, dtype=np.int32)
    for y in range(h):
        line = raw[y].astype(np.int32)
        left = np.r_[np.zeros(bpp, np.int32), line[:-bpp]]
        ul = np.r_[np.zeros(bpp, np.int32), prev[:-bpp]]
        if ftype == 0:
            pred = 0
        elif ftype == 1:
            pred = left
        elif ftype == 2:
            pred = prev
        elif ftype == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - ul
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
        out[y, 0] = ftype
        out[y, 1:] = (line - pred) % 256
        prev = line
    return out


@pytest.mark.parametrize("ftype", [0, 1, 2, 3, 4])
def test_decoder_undoes_every_png_filter(ftype):
    rng = np.random.default_rng(ftype)
    img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    raw = _filter(img.reshape(9, 33), ftype)

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 11, 9, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes())) + chunk(b"IEND", b""))
    assert np.array_equal(decode_png(data)[0], img)


def test_font_colormap_and_ticks():
    m = text_mask("ESTIMATED 1,234.5 $", 2)
    assert m.shape == (14, 12 * 19) and m.sum() > 100
    assert text_mask("abc").tolist() == text_mask("ABC").tolist()
    c = colormap(np.array([0.0, 1.0]))
    assert tuple(c[0]) == (36, 14, 60) and tuple(c[1]) == (250, 230, 40)
    ticks = nice_ticks(61_234.0, 64_987.0)
    assert np.all(np.diff(ticks) == 500.0) and ticks[0] >= 61_234.0 and 4 <= len(ticks) <= 9


def colour_count(region, colour):
    return int(np.all(region == np.array(colour, dtype=np.uint8), axis=-1).sum())


def test_render_shows_heatmap_candles_profile_and_the_estimated_label(synth_est):
    img = render_snapshot(synth_est, "BTC/USDT:USDT", 3600, 1000, 600, candles=80, zones=synth_est.zones())
    assert img.shape == (600, 1000, 3) and img.dtype == np.uint8
    lay = Layout(1000, 600)
    x0, y0, x1, y1 = lay.chart
    chart = img[y0:y1, x0:x1]
    # heatmap region not blank: most pixels are heat colours, and there are many different ones
    distinct = len(np.unique(chart.reshape(-1, 3), axis=0))
    assert distinct > 50
    assert colour_count(chart, BG) < 0.2 * chart.shape[0] * chart.shape[1]
    assert colour_count(chart, UP) + colour_count(chart, DOWN) > 500  # candles drawn on top
    px0, py0, px1, py1 = lay.panel
    panel = img[py0:py1, px0:px1]
    assert colour_count(panel, LONG_C) > 200 and colour_count(panel, SHORT_C) > 200
    assert colour_count(img[y0 : y0 + 30, x0 : x0 + 130], WARN) > 100  # "ESTIMATED" in yellow, top left
    footer = img[600 - lay.footer :, :]
    assert len(np.unique(footer.reshape(-1, 3), axis=0)) >= 2  # the parameters line is written
    with pytest.raises(SnapshotError):
        render_snapshot(synth_est, "X", 3600, 100, 100)


def test_snapshot_command_writes_a_png_from_a_real_candle_file(tmp_path, capsys):
    out = tmp_path / "okx.png"
    code = main(["snapshot", "--png", str(out), "--feed", f"file:{need(CANDLES)}", "--venue", "okx", "--coin", "BTC",
                 "--contract-size", "0.01", "--timeframe", "4h", "--width", "900", "--height", "500"])
    assert code == 0, capsys.readouterr().err
    img, text = decode_png(out.read_bytes())
    assert img.shape == (500, 900, 3)
    model = json.loads(text["liqheat.model"])
    assert model["estimate"] is True and model["ladder"] == "default" and model["seed_mode"] == "volume"
    assert "wrote" in capsys.readouterr().out


def test_snapshot_command_on_the_demo_market(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["snapshot", "--png", str(out), "--days", "3", "--timeframe", "1h"]) == 0, capsys.readouterr().err
    img, _ = decode_png(out.read_bytes())
    assert img.shape == (720, 1200, 3)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--width", "100"], "at least"), (["--feed", "file:/nope.csv"], "no such file"), (["--feed", "moon"], "unknown feed"),
     (["--timeframe", "7m"], "unknown timeframe")],
)
def test_snapshot_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, needle):
    assert main(["snapshot", "--png", str(tmp_path / "x.png"), "--days", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
