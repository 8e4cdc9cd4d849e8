"""End to end on a real year: Binance BTC perpetual 1h candles (../shared/data), no open interest, so the
volume-proxy mode, driven through ``liqheat export`` in a subprocess as a user would."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.formats import read_bars_file
from engine.model import estimate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CANDLES = "candles_1h_binance_bybit_okx_2025-03_2026-03.csv.gz"


@pytest.fixture(scope="module")
def candles(shared_data):
    path = shared_data / CANDLES
    if not path.exists():
        pytest.skip(f"{CANDLES} is not in the shared data")
    return path


@pytest.fixture(scope="module")
def btc(candles):
    return read_bars_file(candles, venue="binance", coin="BTC")


def export(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", *map(str, args)], cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_year_of_real_candles_in_volume_proxy_mode(candles, btc, tmp_path):
    assert len(btc) == 8736 and btc.timeframe == 3600 and btc.oi_usd is None
    out = tmp_path / "realised.json"
    proc = export("--bars", candles, "--venue", "binance", "--coin", "BTC", "--what", "realised", "--out", out)
    assert "volume proxy" in proc.stderr
    doc = json.loads(out.read_text())
    assert doc["liqheat"]["seed_mode"] == "volume" and doc["liqheat"]["bars"] == 8736
    r = np.array(doc["rows"], dtype=np.float64)
    assert r[:, 0].astype(np.int64).tolist() == btc.time.tolist()
    long_usd, short_usd = r[:, 1], r[:, 2]
    # The model liquidates in the violent hours: its busiest 1% of hours had ranges far wider than usual.
    total = long_usd + short_usd
    rng = (btc.high - btc.low) / btc.open
    busiest = np.argsort(total)[-len(total) // 100 :]
    assert rng[busiest].mean() > 3 * np.median(rng)
    # Longs are liquidated on the way down, shorts on the way up.
    down = btc.close < btc.open
    assert long_usd[down].sum() > 2 * long_usd[~down].sum()
    assert short_usd[~down].sum() > 2 * short_usd[down].sum()


def test_the_heatmap_of_the_past_does_not_change_when_the_future_arrives(candles, btc, tmp_path):
    half = tmp_path / "first_half.csv"
    with open(half, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp_ms", "open", "high", "low", "close", "volume"])
        for i in range(4000):
            w.writerow([int(btc.time[i]) * 1000] + [repr(float(getattr(btc, c)[i])) for c in ("open", "high", "low", "close", "volume")])
    grid = ("--what", "heatmap", "--step", "1d", "--bins", "300", "--log-prices", "--price-low", "40000",
            "--price-high", "150000")
    full_out, half_out = tmp_path / "full.csv", tmp_path / "half.csv"
    export("--bars", candles, "--venue", "binance", "--coin", "BTC", *grid, "--out", full_out)
    export("--bars", half, *grid, "--out", half_out)
    full, part = rows(full_out), rows(half_out)
    last_daily = int(btc.close_time[3999]) // 86_400 * 86_400
    past = [r for r in part if int(r["time"]) <= last_daily]
    assert len({r["time"] for r in past}) >= 160
    assert past == [r for r in full if int(r["time"]) <= last_daily]
    days = sorted({int(r["time"]) for r in full})
    assert np.all(np.diff(days[:-1]) == 86_400) and days[-1] == int(btc.close_time[-1])


def test_map_and_zones_now(candles, btc, tmp_path):
    m_out, z_out = tmp_path / "map.csv", tmp_path / "zones.csv"
    export("--bars", candles, "--venue", "binance", "--coin", "BTC", "--what", "map", "--bins", "100", "--out", m_out)
    export("--bars", candles, "--venue", "binance", "--coin", "BTC", "--what", "zones", "--out", z_out)
    price = float(btc.close[-1])
    lm = rows(m_out)
    assert float(lm[0]["price_low"]) == pytest.approx(price * 0.75) and float(lm[-1]["price_high"]) == pytest.approx(price * 1.25)
    assert sum(float(r["long_usd"]) for r in lm) > 0 and sum(float(r["short_usd"]) for r in lm) > 0
    zones = rows(z_out)
    assert zones
    for z in zones:
        assert price * 0.75 - 1e-6 <= float(z["price_low"]) < float(z["price_high"]) <= price * 1.25 + 1e-6
        assert (z["side"] == "long") == (float(z["price_low"]) < price)
    book = estimate(btc).book()
    assert book.price == price and book.time == int(btc.close_time[-1])


def test_resampling_real_candles_composes(btc):
    daily = btc.resample("1d")
    via_4h = btc.resample("4h").resample("1d")
    for name in ("time", "open", "high", "low", "close"):
        assert np.array_equal(getattr(daily, name), getattr(via_4h, name))
    assert np.allclose(daily.volume, via_4h.volume, rtol=1e-12)
    assert len(daily) == 364 or len(daily) == 365
