"""``liqheat backtest --jobs N``: many stored markets (and the accuracy suite's sets) scored side by side
give the report one process gives, in the same order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.feeds.demo import DemoFeed
from engine.store import Store
from engine.stores import open_store

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
MARKETS = ["demo:BTC/USDT:USDT", "demo:ETH/USDT:USDT", "demo:SOL/USDT:USDT"]


def backtest(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", "backtest", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def record(s) -> None:
    """Three simulated markets recorded as a recorder would: 4 days of 1m bars and every liquidation."""
    feed = DemoFeed(seed=3, history_days=4, now=1_772_323_200)
    for key in MARKETS:
        bars = feed.history_now(key.split(":", 1)[1])
        s.write_bars(key, bars)
        s.write_liquidations(feed.liquidations(key.split(":", 1)[1], until_ms=int(bars.close_time[-1]) * 1000))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("bt") / "history.sqlite"
    with Store(db) as s:
        record(s)
    return db


def test_all_markets_with_two_processes_match_one_process_and_each_market_alone(store):
    two = backtest("--store", store, "--market", "all", "--jobs", "2", "--json")
    one = backtest("--store", store, "--market", "all", "--json")
    assert two.returncode == 0 == one.returncode, two.stderr + one.stderr
    assert two.stdout == one.stdout
    doc = json.loads(two.stdout)
    assert list(doc) == MARKETS  # the store's order, whichever process finished first
    for m in MARKETS:
        alone = backtest("--store", store, "--market", m, "--json")
        assert alone.returncode == 0, alone.stderr
        assert json.loads(alone.stdout) == doc[m]
        assert doc[m]["recorded"]["events"] > 100 and doc[m]["recorded"]["prices"].startswith("as stored")
    # the markets are not copies of one another
    assert len({doc[m]["recorded"]["usd"] for m in MARKETS}) == 3


def test_a_postgresql_store_gives_the_same_reports_as_sqlite(store, postgres_url):
    with open_store(postgres_url) as s:
        record(s)
    pg = backtest("--store", postgres_url, "--market", "all", "--jobs", "2", "--json")
    lite = backtest("--store", store, "--market", "all", "--json")
    assert pg.returncode == 0 == lite.returncode, pg.stderr + lite.stderr
    assert json.loads(pg.stdout) == json.loads(lite.stdout)


def test_the_text_report_names_each_market_in_the_order_asked(store):
    r = backtest("--store", store, "--market", f"{MARKETS[2]},{MARKETS[0]}", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.index(f"== {MARKETS[2]}") < r.stdout.index(f"== {MARKETS[0]}")
    assert r.stdout.count("rank correlation, bar x side") == 2


def test_a_missing_market_fails_alone_in_one_line_and_sets_the_status(store):
    r = backtest("--store", store, "--market", f"{MARKETS[0]},demo:XRP/USDT:USDT", "--jobs", "2", "--json")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "demo:XRP/USDT:USDT" in r.stderr and "no market" in r.stderr
    assert list(json.loads(r.stdout)) == [MARKETS[0]]
    bad = backtest("--store", store, "--market", "all", "--jobs", "0")
    assert bad.returncode == 2 and "--jobs must be at least 1" in bad.stderr


def test_the_suite_sets_side_by_side_give_the_same_table():
    for name in ("bybit_btcusdt_liquidations_2024-02_06.csv.gz", "okx_liquidations_2026-03-04.csv.gz"):
        if not (DATA / name).exists():
            pytest.skip(f"shared data file {name} is not present")
    sets = "okx-1h,bybit-15m"  # okx-1h is scored with the Bybit fit: the one dependency between sets
    two = backtest("--suite", "--sets", sets, "--jobs", "2", "--json")
    one = backtest("--suite", "--sets", sets, "--json")
    assert two.returncode == 0 == one.returncode, two.stderr + one.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert [s["key"] for s in b["sets"]] == ["bybit-15m", "okx-1h"]
    assert b["final"]["fitted_on"].startswith("Bybit BTCUSDT liquidations")
