"""``liqheat export`` as a user runs it: a subprocess, files in, files out, one-line errors."""

import csv
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.commands.export import Progress
from engine.model import Bars, ModelParams, estimate, price_edges
from engine.model.synthetic import synthetic_bars

REPO = Path(__file__).resolve().parents[2]


def liqheat(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_csv(path: Path, bars: Bars, iso: bool = False) -> Path:
    """Candles as an exchange export would have them (written here, independent of the engine's writer)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp" if iso else "timestamp_ms", "open", "high", "low", "close", "volume", "taker_buy_volume",
                    "taker_sell_volume", "oi_usd"])
        for i in range(len(bars)):
            t = int(bars.time[i])
            stamp = np.datetime_as_string(np.datetime64(t, "s")) + "Z" if iso else t * 1000
            w.writerow([stamp] + [repr(float(getattr(bars, c)[i])) for c in
                                  ("open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "oi_usd")])
    return path


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    bars = synthetic_bars(3 * 1440, seed=42, vol_per_bar=0.001, start=1_700_000_040)  # 3 days of 1m bars
    return bars, write_csv(tmp_path_factory.mktemp("in") / "btc_1m.csv", bars)


def read(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_realised_is_one_row_per_base_bar(market, tmp_path):
    bars, src = market
    out = tmp_path / "realised.csv"
    proc = liqheat("--bars", src, "--what", "realised", "--out", out)
    assert out.read_text().splitlines()[0] == "time,long_usd,short_usd"
    rows = read(out)
    assert [int(r["time"]) for r in rows] == bars.time.tolist()
    want = estimate(bars).realised
    assert np.allclose([float(r["long_usd"]) for r in rows], want.long_usd, atol=0.006)
    assert np.allclose([float(r["short_usd"]) for r in rows], want.short_usd, atol=0.006)
    assert "seeded from open-interest changes" in proc.stderr and proc.stderr.count("\n") == 1


def test_realised_on_a_coarser_timeframe_sums_the_candles(market, tmp_path):
    bars, src = market
    base, hourly = tmp_path / "base.csv", tmp_path / "hourly.csv"
    liqheat("--bars", src, "--what", "realised", "--out", base)
    liqheat("--bars", src, "--what", "realised", "--timeframe", "1h", "--out", hourly)
    per_min = read(base)
    per_hour = read(hourly)
    assert [int(r["time"]) % 3600 for r in per_hour] == [0] * len(per_hour)
    assert len(per_hour) == len({int(r["time"]) // 3600 for r in per_min})
    for h in per_hour:
        t = int(h["time"])
        inside = [float(r["long_usd"]) for r in per_min if t <= int(r["time"]) < t + 3600]
        assert float(h["long_usd"]) == pytest.approx(sum(inside), abs=0.01 * len(inside) + 0.01)


def test_heatmap_rows_are_the_non_empty_cells_of_each_column(market, tmp_path):
    bars, src = market
    out = tmp_path / "heat.csv.gz"
    liqheat("--bars", src, "--what", "heatmap", "--step", "4h", "--bins", "120", "--log-prices", "--out", out)
    with gzip.open(out, "rt") as f:
        assert f.readline().strip() == "time,price_low,price_high,long_usd,short_usd"
    rows = read(out)
    est = estimate(bars)
    times = est.column_times(4 * 3600)
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, 120, log=True)
    hm = est.heatmap(times=times, edges=edges)
    longs, shorts = hm.total()
    assert all(float(r["long_usd"]) > 0 or float(r["short_usd"]) > 0 for r in rows)
    showing = {t for c, t in enumerate(times.tolist()) if (np.round(longs[c], 2) > 0).any() or (np.round(shorts[c], 2) > 0).any()}
    assert {int(r["time"]) for r in rows} == showing and len(showing) >= len(times) - 1
    for c, t in enumerate(times.tolist()):
        mine = [r for r in rows if int(r["time"]) == t]
        # the grid is float32: equal to its precision (summed here in float64)
        want_long, want_short = longs[c].sum(dtype=np.float64), shorts[c].sum(dtype=np.float64)
        assert sum(float(r["long_usd"]) for r in mine) == pytest.approx(want_long, rel=1e-6, abs=0.01 * len(mine) + 1)
        assert sum(float(r["short_usd"]) for r in mine) == pytest.approx(want_short, rel=1e-6, abs=0.01 * len(mine) + 1)
        lows = [float(r["price_low"]) for r in mine]
        assert lows == sorted(lows) and all(edges[0] * 0.999 <= p <= edges[-1] for p in lows)
    assert {int(r["time"]) for r in rows} <= set(times.tolist())
    assert int(times[-1]) == int(bars.close_time[-1])


def test_heatmap_refuses_too_many_columns_but_columns_n_keeps_the_newest(market, tmp_path):
    bars, src = market
    big = synthetic_bars(30_000, seed=1, start=1_700_000_040)
    path = write_csv(tmp_path / "big.csv", big)
    proc = liqheat("--bars", path, "--what", "heatmap", "--out", tmp_path / "x.csv", check=False)
    assert proc.returncode == 2 and "30,000 columns" in proc.stderr and "--step" in proc.stderr
    out = tmp_path / "newest.csv"
    liqheat("--bars", src, "--what", "heatmap", "--columns", "5", "--step", "1h", "--out", out)
    assert len({r["time"] for r in read(out)}) == 5


def test_map_json_carries_the_model_and_the_seed_mode(market, tmp_path):
    bars, src = market
    out = tmp_path / "map.json"
    liqheat("--bars", src, "--what", "map", "--bins", "80", "--span", "10", "--ladder", '{"10": 1, "50": 1}', "--out", out)
    doc = json.loads(out.read_text())
    meta = doc["liqheat"]
    assert meta["seed_mode"] == "oi" and meta["estimate"] is True and meta["model"]["ladder"] == "custom"
    assert doc["columns"][:6] == ["price_low", "price_high", "long_usd", "short_usd", "long_below_usd", "short_above_usd"]
    assert doc["columns"][6:] == ["long_10x", "long_50x", "short_10x", "short_50x"]
    rows = [dict(zip(doc["columns"], r, strict=True)) for r in doc["rows"]]
    assert len(rows) == 80
    price = meta["price"]
    assert rows[0]["price_low"] == pytest.approx(price * 0.9) and rows[-1]["price_high"] == pytest.approx(price * 1.1)
    below = [r["long_below_usd"] for r in rows if (r["price_low"] + r["price_high"]) / 2 <= price]
    above = [r["short_above_usd"] for r in rows if (r["price_low"] + r["price_high"]) / 2 >= price]
    assert below == sorted(below, reverse=True) and above == sorted(above)
    assert all(r["long_usd"] == pytest.approx(r["long_10x"] + r["long_50x"], abs=0.02) for r in rows)


def test_zones_csv_and_parquet(market, tmp_path):
    bars, src = market
    out = tmp_path / "zones.csv"
    liqheat("--bars", src, "--what", "zones", "--out", out)
    rows = read(out)
    assert rows and list(rows[0])[:9] == ["side", "price_low", "price_high", "peak_price", "usd", "grade",
                                          "share_of_daily_volume", "percentile", "distance_pct"]
    usd = [float(r["usd"]) for r in rows]
    assert usd == sorted(usd, reverse=True)
    for r in rows:
        assert r["grade"] in ("low", "elevated", "high") and float(r["share_of_daily_volume"]) > 0
        assert float(r["price_low"]) < float(r["price_high"])
    import pyarrow.parquet as pq

    pq_out = tmp_path / "zones.parquet"
    liqheat("--bars", src, "--what", "zones", "--out", pq_out)
    table = pq.read_table(pq_out)
    assert table.column("usd").to_pylist() == pytest.approx(usd, abs=0.01)
    assert json.loads(table.schema.metadata[b"liqheat"])["what"] == "zones"


def test_csv_to_stdout_and_iso_timestamps(market, tmp_path):
    bars, _ = market
    iso = write_csv(tmp_path / "iso.csv", bars.slice(0, 300), iso=True)
    proc = liqheat("--bars", iso, "--what", "realised", "--out", "-", "--quiet")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 300 and int(rows[0]["time"]) == int(bars.time[0]) and proc.stderr == ""


def test_one_tier_only(market, tmp_path):
    bars, src = market
    out = tmp_path / "t.csv"
    liqheat("--bars", src, "--what", "realised", "--tier", "100x", "--out", out)
    total = tmp_path / "all.csv"
    liqheat("--bars", src, "--what", "realised", "--out", total)
    one = sum(float(r["long_usd"]) for r in read(out))
    every = sum(float(r["long_usd"]) for r in read(total))
    assert 0 < one < every


def test_from_a_store(market, tmp_path):
    store_mod = pytest.importorskip("engine.store")
    bars, src = market
    db = tmp_path / "rec.sqlite"
    with store_mod.Store(db) as store:
        store.write_bars("okx:BTC/USDT:USDT", bars)
    out = tmp_path / "from_store.csv"
    proc = liqheat("--store", db, "--market", "okx:BTC/USDT:USDT", "--since", str(int(bars.time[1440])),
                   "--what", "realised", "--out", out)
    rows = read(out)
    assert len(rows) == len(bars) - 1440 and int(rows[0]["time"]) == int(bars.time[1440])
    assert "rec.sqlite okx:BTC/USDT:USDT" in proc.stderr
    want = estimate(bars.slice(1440), ModelParams(exchange="okx")).realised
    assert np.allclose([float(r["long_usd"]) for r in rows], want.long_usd, atol=0.006)
    bad = liqheat("--store", db, "--market", "okx:ETH/USDT:USDT", "--what", "map", "--out", out, check=False)
    assert bad.returncode == 2 and "no market" in bad.stderr


def _broken(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


HEADER = "timestamp_ms,open,high,low,close,volume\n"
ROW = "{t},100,101,99,100.5,10\n"


@pytest.mark.parametrize(
    ("case", "make", "extra", "says"),
    [
        ("missing column", lambda d: _broken(d, "a.csv", "timestamp_ms,open,high,close\n0,1,2,1\n"), (), "missing column low"),
        ("NaN price", lambda d: _broken(d, "b.csv", HEADER + ROW.format(t=0) + "60000,100,101,nan,100,1\n"), (), "low"),
        ("unsorted", lambda d: _broken(d, "c.csv", HEADER + ROW.format(t=120000) + ROW.format(t=60000)), (), "out-of-order"),
        ("duplicate", lambda d: _broken(d, "d.csv", HEADER + ROW.format(t=60000) + ROW.format(t=60000)), (), "duplicate"),
        ("non-positive", lambda d: _broken(d, "e.csv", HEADER + ROW.format(t=0) + "60000,0,101,99,100,1\n"), (), "positive"),
        ("empty file", lambda d: _broken(d, "f.csv", ""), (), "empty"),
        ("header only", lambda d: _broken(d, "g.csv", HEADER), (), "no bars"),
        ("no such file", lambda d: d / "nope.csv", (), "no such file"),
        ("unknown ladder", None, ("--ladder", "yolo"), "unknown ladder 'yolo'"),
        ("bad ladder JSON", None, ("--ladder", "{5: 1"), "ladder JSON does not parse"),
        ("zero bins", None, ("--bins", "0"), "--bins must be between 1 and 5000"),
        ("absurd bins", None, ("--bins", "1000000"), "--bins must be between 1 and 5000"),
        ("bins not a number", None, ("--bins", "many"), "invalid int value"),
        ("zero step", None, ("--step", "0"), "--step '0'"),
        ("nonsense step", None, ("--step", "fortnight"), "--step 'fortnight'"),
        ("step finer than bars", None, ("--step", "30s"), "finer than the input"),
        ("huge step", None, ("--step", "500d"), "longer than a year"),
        ("timeframe not a multiple", None, ("--timeframe", "90s"), "not a whole multiple"),
        ("unknown tier", None, ("--tier", "7x"), "the ladder's tiers are 5x, 10x"),
        ("unknown format", None, ("--out-override", "x.xlsx"), "unknown format"),
        ("missing folder", None, ("--out-override", "no/such/dir/x.csv"), "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(market, tmp_path, case, make, extra, says):
    _, good = market
    src = make(tmp_path) if make else good
    out = str(tmp_path / "out.csv")
    extra = list(extra)
    if extra[:1] == ["--out-override"]:
        out = str(tmp_path / extra[1]) if not extra[1].startswith("no/") else extra[1]
        extra = []
    proc = liqheat("--bars", src, "--what", "heatmap", *extra, "--out", out, check=False)
    assert proc.returncode == 2, (case, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liqheat export: "), proc.stderr
    assert says in lines[0], lines[0]
    assert not Path(out).exists()


def test_missing_arguments_are_one_line_too(tmp_path):
    proc = liqheat("--what", "map", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--out" in proc.stderr


def test_help_documents_every_format():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "export", "-h"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for text in ("time,long_usd,short_usd", "time,price_low,price_high,long_usd,short_usd", "long_below_usd",
                 "share_of_daily_volume", "--log-prices", "--store"):
        assert text in proc.stdout


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_on_a_terminal_and_is_plain_for_long_piped_runs():
    tty = _Tty()
    p = Progress(stream=tty)
    p.stage("estimating")
    p.fraction(1.0)
    p.clear()
    assert "\r[" in tty.getvalue() and "100% estimating" in tty.getvalue()
    piped = io.StringIO()
    p = Progress(stream=piped)
    p.stage("short input: nothing")
    p.long_input = True
    p.stage("estimating 525,600 bars")
    p.fraction(0.5)
    assert piped.getvalue() == "liqheat export: estimating 525,600 bars...\n"
    quiet = _Tty()
    Progress(enabled=False, stream=quiet).stage("x")
    assert quiet.getvalue() == ""


def test_open_interest_and_net_flow_without_volume_tilt_the_sides_by_the_flow(market, tmp_path):
    """A charting site's export: OI and net taker flow (CVD deltas), no volume. The flow is used (sides
    tilt toward the flow's sign, by its size relative to its recent size), and the output says so."""
    bars, _ = market
    flow = bars.taker_buy_volume - bars.taker_sell_volume
    src = tmp_path / "cvd.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp_ms", "open", "high", "low", "close", "oi_usd", "net_taker_volume"])
        for i in range(len(bars)):
            w.writerow([int(bars.time[i]) * 1000] + [repr(float(x)) for x in
                       (bars.open[i], bars.high[i], bars.low[i], bars.close[i], bars.oi_usd[i], flow[i])])
    out = tmp_path / "map.json"
    proc = liqheat("--bars", src, "--what", "map", "--out", out)
    assert "sides from net taker flow relative to its recent size (no volume column)" in proc.stderr
    doc = json.loads(out.read_text())
    assert doc["liqheat"]["inputs"] == {
        "open_interest": True, "volume": False, "sides": "net taker flow relative to its recent size (no volume column)",
    }
    # the same OI with the flow's sign flipped moves notional between the sides
    from engine.formats import read_bars_file

    read = read_bars_file(src)
    imb = (read.taker_buy_volume - read.taker_sell_volume) / (read.taker_buy_volume + read.taker_sell_volume)
    assert np.all(np.abs(imb) <= 1 + 1e-12) and np.all(np.sign(imb[flow != 0]) == np.sign(flow[flow != 0]))
    flipped = read.with_columns(taker_buy_volume=read.taker_sell_volume, taker_sell_volume=read.taker_buy_volume)
    a, b = estimate(read).book().total(), estimate(flipped).book().total()
    assert a != b
    plain = estimate(read.with_columns(taker_buy_volume=None, taker_sell_volume=None)).book().total()
    assert plain != a  # the flow changed the answer: it was not ignored
