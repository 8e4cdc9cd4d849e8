"""Schema v1 -> v2 on a real SQLite file: liquidation rows gain their price provenance. A v1 store holds
what each venue printed as ``price``; after the upgrade Bybit/OKX rows say "bankruptcy", keep that number
as ``reported_price`` and carry the estimated liquidation price, exactly as new events from the live feed
do — so a replayed event is still recognised."""

from __future__ import annotations

import sqlite3

import pytest

import engine.store as store_mod
from engine.feeds.base import Liquidation
from engine.feeds.normalise import liquidation_rows, to_liquidation
from engine.store import Store, StoreError

DAY = 1_791_565_600_771  # 2026-10-09 (ms): the real BTC liquidation frames of that second
BYBIT = "bybit:BTC/USDT:USDT"
OKX = "okx:BTC/USDT:USDT"
BINANCE = "binanceusdm:BTC/USDT:USDT"


def _v1_store(path) -> None:
    """A store exactly as liqheat with schema v1 wrote it."""
    con = sqlite3.connect(path)
    for statement in store_mod._statements(store_mod._V1):
        con.execute(statement)
    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    for i, (exchange, symbol) in enumerate([("binanceusdm", "BTC/USDT:USDT"), ("bybit", "BTC/USDT:USDT"),
                                            ("okx", "BTC/USDT:USDT")], 1):
        con.execute("INSERT INTO markets (id, exchange, symbol) VALUES (?, ?, ?)", (i, exchange, symbol))
    rows = [
        (1, DAY + 1349, "long", 82_651.9, 0.19, 0.19 * 82_651.9),  # Binance: the fill
        (2, DAY + 221, "long", 82_396.9, 0.006, 0.006 * 82_396.9),  # Bybit: bankruptcy prices
        (2, DAY + 287, "long", 82_394.3, 0.038, 0.038 * 82_394.3),
        (2, DAY - 86_400_000, "short", 60_000.0, 1.0, 60_000.0),  # a day earlier, a short
        (3, DAY, "long", 82_655.7, 0.0855, 0.0855 * 82_655.7),  # OKX: bankruptcy price
    ]
    con.executemany("INSERT INTO liquidations VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def test_a_v1_store_is_upgraded_with_the_provenance_of_each_price(tmp_path):
    db = tmp_path / "v1.sqlite"
    _v1_store(db)
    with Store(db) as s:
        assert s.schema_version == 2
        [fill] = s.read_liquidations(BINANCE)
        assert (fill.price, fill.reported, fill.price_kind) == (82_651.9, 82_651.9, "fill")
        bybit = s.read_liquidations(BYBIT)
        [okx] = s.read_liquidations(OKX)
    assert [e.price_kind for e in bybit] == ["bankruptcy"] * 3
    assert [e.reported_price for e in bybit] == [60_000.0, 82_396.9, 82_394.3]
    # liquidated one maintenance margin nearer the entry: Bybit BTC 0.5%, OKX BTC 0.4% (first tiers)
    assert [e.price for e in bybit] == pytest.approx([60_000.0 * 0.995, 82_396.9 * 1.005, 82_394.3 * 1.005])
    assert (okx.price, okx.reported_price) == (pytest.approx(82_655.7 * 1.004), 82_655.7)
    assert [e.usd for e in bybit] == pytest.approx([60_000.0, 0.006 * 82_396.9, 0.038 * 82_394.3])  # unchanged
    con = sqlite3.connect(db)
    named = con.execute("SELECT exchange, price_kind, reported_price FROM liquidations_named ORDER BY time_ms").fetchall()
    con.close()
    assert ("okx", "bankruptcy", 82_655.7) in named and ("binanceusdm", "fill", 82_651.9) in named


def test_after_the_upgrade_the_live_feeds_events_are_recognised_as_already_stored(tmp_path):
    db = tmp_path / "v1.sqlite"
    _v1_store(db)
    frame = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1791565601482, "data": [
        {"T": DAY + 221, "s": "BTCUSDT", "S": "Buy", "v": "0.006", "p": "82396.90"},
        {"T": DAY + 287, "s": "BTCUSDT", "S": "Buy", "v": "0.038", "p": "82394.30"}]}
    events = [to_liquidation("bybit", r, "BTC/USDT:USDT", 1.0) for r in liquidation_rows("bybit", frame)]
    with Store(db) as s:
        assert s.write_liquidations([e for e in events if e is not None]) == 0
        assert s.read_liquidations(BYBIT)[1:] == events
        assert s.count_liquidations(BYBIT) == 3


def test_new_events_round_trip_with_both_prices_and_a_bad_kind_is_refused(tmp_path):
    ev = Liquidation(DAY, "okx", "BTC/USDT:USDT", "short", 82_000.0, 0.1, 8_200.0, 82_400.0, "bankruptcy")
    fill = Liquidation(DAY, "binanceusdm", "BTC/USDT:USDT", "long", 82_651.9, 0.19, 15_703.861)
    with Store(tmp_path / "new.sqlite") as s:
        assert s.schema_version == 2
        assert s.write_liquidations([ev, fill]) == 2
        assert s.read_liquidations(OKX) == [ev] and s.read_liquidations(BINANCE) == [fill]
        with pytest.raises(StoreError, match="price_kind"):
            s.write_liquidations([Liquidation(DAY, "okx", "BTC/USDT:USDT", "long", 1.0, 1.0, 1.0, 1.0, "mark")])


def test_a_v2_store_is_refused_in_one_line_by_a_liqheat_that_only_reads_v1(tmp_path, monkeypatch):
    db = tmp_path / "v2.sqlite"
    Store(db).close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 1)
    with pytest.raises(StoreError) as err:
        Store(db)
    assert "\n" not in str(err.value) and "newer liqheat" in str(err.value) and "v2" in str(err.value)
