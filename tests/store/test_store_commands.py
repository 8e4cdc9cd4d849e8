"""``liqheat import`` and ``liqheat record`` as a user runs them: real processes, real files."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.commands.record import parse_since
from engine.formats import read_bars_file, write_bars_file
from engine.model.synthetic import synthetic_bars
from engine.store import Store

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
CANDLES = DATA / "candles_1h_binance_bybit_okx_2025-03_2026-03.csv.gz"
FUNDING = DATA / "funding_binance_bybit_okx_2025-03_2026-03.csv.gz"
OKX_LIQS = DATA / "okx_liquidations_2026-03-04.csv.gz"

needs_data = pytest.mark.skipif(not CANDLES.exists(), reason="shared data folder not present")


def liqheat(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@needs_data
def test_importing_the_real_files_twice_adds_nothing_the_second_time(tmp_path):
    db = tmp_path / "h.sqlite"
    args = ["import", "--db", db, "--market", "okx:BTC/USDT:USDT", "--bars", CANDLES, "--liquidations", OKX_LIQS,
            "--funding", FUNDING]
    first = liqheat(*args)
    assert first.returncode == 0, first.stderr
    again = liqheat(*args)
    assert again.returncode == 0, again.stderr
    assert "2160 bars (1h, 2025-12-05 11:00 -> 2026-03-05 10:00)" in first.stderr
    assert "0 new, 2160 already stored" in again.stderr and "0 new, 1611 already stored" in again.stderr
    with Store(db) as s:
        (m,) = s.markets()
        assert (m.key, m.timeframe, m.bars, m.liquidations) == ("okx:BTC/USDT:USDT", 3600, 2160, 1611)
        # the market's own rows were picked from the mixed files: OKX BTC, not Binance or ETH
        bars = s.read_bars(m.key)
        direct = read_bars_file(CANDLES, venue="okx", coin="BTC")
        np.testing.assert_array_equal(bars.close, direct.close)
        # funding settlements fill the bars from the first one on (OKX's start two days after the candles)
        first_funding = s.read_funding(m.key)[0][0]
        settled = bars.time + 3600 >= first_funding
        assert 0 < settled.sum() < len(bars) and np.isfinite(bars.funding_rate[settled]).all()
        assert np.isnan(bars.funding_rate[~settled]).all()
        events = s.read_liquidations(m.key)
        assert {e.side for e in events} == {"long", "short"}
        # OKX prints bankruptcy prices: stored beside the estimated liquidation price, one MMR nearer the entry
        assert {e.price_kind for e in events} == {"bankruptcy"}
        for e in events[:50]:
            assert e.reported_price is not None
            assert (e.price > e.reported_price) if e.side == "long" else (e.price < e.reported_price)


def test_import_errors_are_one_line_with_a_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp_ms,open,high,low,close\n60000,1,2,1,2\n60000,1,2,1,2\n")
    r = liqheat("import", "--db", tmp_path / "h.sqlite", "--market", "demo:BTC/USDT:USDT", "--bars", bad)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "line 3: duplicate timestamp" in r.stderr
    r = liqheat("import", "--db", tmp_path / "h.sqlite", "--market", "BTCUSDT", "--bars", bad)
    assert r.returncode == 2 and "EXCHANGE:SYMBOL" in r.stderr
    notdb = tmp_path / "not.sqlite"
    notdb.write_text("hello\n" * 100)
    good = write_bars_file(tmp_path / "good.csv", synthetic_bars(10))
    r = liqheat("import", "--db", notdb, "--market", "demo:BTC/USDT:USDT", "--bars", good)
    assert r.returncode == 1 and "not a readable liqheat store" in r.stderr and "Traceback" not in r.stderr


def test_record_replays_a_file_into_a_store_and_stops_cleanly_on_sigterm(tmp_path):
    bars = synthetic_bars(3000, seed=31)
    src = write_bars_file(tmp_path / "btc.csv.gz", bars)
    db = tmp_path / "rec.sqlite"
    log = tmp_path / "rec.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "record", "--exchange", f"file:{src}", "--db", str(db),
             "--speed", "60000", "--flush", "0.05"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
        )

    def stored():
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM candles").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    try:
        deadline = time.monotonic() + 60
        while stored() < 3000:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Store(db) as s:
        (m,) = s.markets()
        assert m.key == "file:btc"
        got = s.read_bars(m.key)
        np.testing.assert_array_equal(got.time, bars.time)
        np.testing.assert_array_equal(got.close, bars.close)
        assert s.gaps() == []


def test_record_refuses_bad_arguments_in_one_line(tmp_path):
    r = liqheat("record", "--exchange", "okx", "--db", tmp_path / "x.sqlite")
    assert r.returncode == 2 and "--symbols" in r.stderr
    r = liqheat("record", "--exchange", f"file:{tmp_path / 'missing.csv'}", "--db", tmp_path / "x.sqlite")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = liqheat("record", "--since", "last tuesday", "--db", tmp_path / "x.sqlite")
    assert r.returncode == 2 and "--since" in r.stderr


def test_since_accepts_dates_and_durations_before_now():
    assert parse_since("2024-05-01") == 1714521600
    assert parse_since("2024-05-01T12:00") == 1714521600 + 12 * 3600
    assert parse_since("30d", now=1_000_000_000) == 1_000_000_000 - 30 * 86_400
    assert parse_since("90m", now=1_000_000_000) == 1_000_000_000 - 5400
    assert parse_since(None) is None
