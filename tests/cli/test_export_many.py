"""``liqheat export --market all --jobs N``: many markets of a store exported side by side, each file the same
as exporting that market alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.model.synthetic import synthetic_bars
from engine.store import Store

REPO = Path(__file__).resolve().parents[2]
MARKETS = ["okx:BTC/USDT:USDT", "okx:ETH/USDT:USDT", "bybit:SOL/USDT:USDT"]


def liqheat(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", "export", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_all_markets_with_two_processes_match_one_by_one_exports(tmp_path):
    db = tmp_path / "h.sqlite"
    with Store(db) as s:
        for i, m in enumerate(MARKETS):
            s.write_bars(m, synthetic_bars(2 * 1440, seed=50 + i))
    many = liqheat("--store", db, "--market", "all", "--jobs", "2", "--what", "zones", "--out", tmp_path / "out" / "{market}.csv")
    assert many.returncode == 0, many.stderr
    assert "3 markets with 2 processes" in many.stderr
    for m, name in zip(MARKETS, ["okx_BTC-USDT-USDT", "okx_ETH-USDT-USDT", "bybit_SOL-USDT-USDT"], strict=True):
        alone = tmp_path / f"alone_{name}.csv"
        assert liqheat("--store", db, "--market", m, "--what", "zones", "--out", alone, "--quiet").returncode == 0
        assert (tmp_path / "out" / f"{name}.csv").read_text() == alone.read_text()


def test_a_missing_market_fails_alone_and_sets_the_status(tmp_path):
    db = tmp_path / "h.sqlite"
    with Store(db) as s:
        s.write_bars(MARKETS[0], synthetic_bars(1440, seed=1))
    r = liqheat("--store", db, "--market", f"{MARKETS[0]},okx:XRP/USDT:USDT", "--jobs", "2", "--what", "realised",
                "--out", tmp_path / "{market}.csv")
    assert r.returncode == 2 and "no market 'okx:XRP/USDT:USDT'" in r.stderr
    assert (tmp_path / "okx_BTC-USDT-USDT.csv").exists()
    bad = liqheat("--store", db, "--market", "all", "--what", "realised", "--out", tmp_path / "x.csv")
    assert bad.returncode == 2 and "{market}" in bad.stderr
