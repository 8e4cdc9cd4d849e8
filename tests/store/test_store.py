"""The recorded-history store on real SQLite files and on a real PostgreSQL server (the ``target`` fixture
runs each portable test on both): idempotent upserts, schema versioning, crash-safe settings, fast reads,
and one-line errors for files that are not a usable store."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

import engine.store as store_mod
import engine.store_pg as store_pg
from engine.feeds.base import Liquidation
from engine.model import Bars
from engine.model.synthetic import synthetic_bars
from engine.store import SCHEMA_VERSION, Store, StoreError
from engine.stores import open_store

BTC = "binanceusdm:BTC/USDT:USDT"
ETH = "okx:ETH/USDT:USDT"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "history.sqlite"


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a portable test keeps its history: a SQLite file, or a fresh database on a real PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "history.sqlite"
    return request.getfixturevalue("postgres_url")


def _rows(path, sql):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _assert_same(a: Bars, b: Bars) -> None:
    assert a.timeframe == b.timeframe
    np.testing.assert_array_equal(a.time, b.time)
    for name in ("open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _liq(t, side="long", price=60_000.0, base=0.5, symbol="BTC/USDT:USDT", exchange="binanceusdm"):
    return Liquidation(t, exchange, symbol, side, price, base, base * price)


# ---- idempotence ----------------------------------------------------------------------------------------
def test_replayed_and_overlapping_bar_writes_leave_one_row_per_bar(target):
    bars = synthetic_bars(1000, seed=1)
    with open_store(target) as s:
        s.write_bars(BTC, bars.slice(0, 600))
        s.write_bars(BTC, bars.slice(0, 600))  # a replay
        s.write_bars(BTC, bars.slice(400, 1000))  # an overlapping backfill
        assert s.count_bars(BTC) == 1000
        _assert_same(s.read_bars(BTC), bars)
        assert list(s._db.execute("SELECT count(*), count(DISTINCT time) FROM candles")) == [(1000, 1000)]


def test_a_newer_bar_replaces_prices_but_a_missing_column_keeps_the_recorded_value(target):
    bars = synthetic_bars(10, seed=2)
    corrected = bars.with_columns(close=bars.close * 1.0, high=bars.high * 1.001, oi_usd=None)
    with open_store(target) as s:
        s.write_bars(BTC, bars)
        s.write_bars(BTC, corrected)
        back = s.read_bars(BTC)
    np.testing.assert_array_equal(back.high, corrected.high)  # the re-fetch wins on prices
    np.testing.assert_array_equal(back.oi_usd, bars.oi_usd)  # but did not erase recorded OI


def test_replayed_liquidations_are_stored_once(target):
    events = [_liq(1_700_000_000_000 + i * 250, "long" if i % 3 else "short", 60_000 + i, 0.1 * (i + 1)) for i in range(50)]
    with open_store(target) as s:
        assert s.write_liquidations(events) == 50
        assert s.write_liquidations(events[10:30]) == 0  # replay: nothing new
        assert s.write_liquidations(events[40:] + [_liq(1_800_000_000_000)]) == 1
        back = s.read_liquidations(BTC)
        assert len(back) == 51
        assert back[:50] == sorted(events, key=lambda e: e.time_ms)
        # same instant, same price, other side or size: a different event
        assert s.write_liquidations([_liq(events[0].time_ms, "short"), _liq(events[0].time_ms, base=9.0)]) == 2
        window = s.read_liquidations(BTC, since_ms=events[5].time_ms, until_ms=events[8].time_ms)
        assert [e.time_ms for e in window] == [e.time_ms for e in events[5:8]]


def test_gaps_are_recorded_once_per_start_with_the_latest_reason(target):
    with open_store(target) as s:
        s.add_gap(BTC, "bars", 1000, 2000, "exchange down")
        s.add_gap(BTC, "bars", 1000, 2600, "exchange down (longer)")
        s.add_gap(BTC, "liquidations", 1000, 2600, "not recording")
        s.add_gap(ETH, "bars", 5000, 5000, "empty stretch is no gap")
        gaps = s.gaps(BTC)
        assert [(g.kind, g.start, g.end, g.reason) for g in gaps] == [
            ("bars", 1000, 2600, "exchange down (longer)"),
            ("liquidations", 1000, 2600, "not recording"),
        ]
        assert s.gaps(BTC, kind="bars")[0].market == BTC
        assert s.gaps(ETH) == []


# ---- reading ------------------------------------------------------------------------------------------
def test_read_range_is_half_open_and_timeframes_are_kept_apart(target):
    m1 = synthetic_bars(600, seed=3)
    h1 = m1.resample("1h")
    with open_store(target) as s:
        s.write_bars(BTC, m1)
        s.write_bars(BTC, h1)
        t = m1.time
        part = s.read_bars(BTC, since=int(t[100]), until=int(t[200]))
        _assert_same(part, m1.slice(100, 200))
        assert s.read_bars(BTC).timeframe == 60  # the finest by default
        _assert_same(s.read_bars(BTC, timeframe=3600), h1)
        assert s.last_time(BTC) == int(t[-1])
        assert s.last_time(BTC, 3600) == int(h1.time[-1])
        assert s.last_time(ETH) is None
        assert len(s.read_bars(BTC, since=int(t[-1]) + 60)) == 0
        (listed,) = s.markets()
        assert (listed.key, listed.timeframe, listed.first, listed.last, listed.bars) == (BTC, 60, int(t[0]), int(t[-1]), 600)


def test_columns_a_source_never_had_read_back_as_absent(target):
    bars = synthetic_bars(100, seed=4, with_oi=False, with_taker=False)
    with open_store(target) as s:
        s.write_bars(ETH, bars)
        back = s.read_bars(ETH)
    assert back.oi_usd is None and back.taker_buy_volume is None and back.volume is not None


def test_oi_and_funding_series_fill_bars_that_lack_them(target):
    bars = synthetic_bars(180, seed=5, with_oi=False).with_columns(funding_rate=None)
    t0 = int(bars.time[0])
    with open_store(target) as s:
        s.write_bars(BTC, bars)
        s.write_open_interest(BTC, np.array([t0 + 300, t0 + 600]), np.array([1e9, 2e9]))
        s.write_funding(BTC, np.array([t0 - 3600]), np.array([1e-4]))
        back = s.read_bars(BTC)
        oi, fr = back.oi_usd, back.funding_rate
        assert oi is not None and fr is not None
        close = back.time + 60
        assert np.isnan(oi[close < t0 + 300]).all()  # nothing known yet
        assert (oi[(close >= t0 + 300) & (close < t0 + 600)] == 1e9).all()
        assert (oi[(close >= t0 + 600) & (close <= t0 + 600 + store_mod.OI_MAX_AGE)] == 2e9).all()
        assert np.isnan(oi[close > t0 + 600 + store_mod.OI_MAX_AGE]).all()  # too old to stand in
        assert (fr == 1e-4).all()
        assert s.read_funding(BTC)[1].tolist() == [1e-4]
        assert s.count_open_interest(BTC) == 2


def test_reading_a_market_that_is_not_there_names_what_is(target):
    with open_store(target) as s:
        s.write_bars(BTC, synthetic_bars(5))
        with pytest.raises(StoreError, match=r"no market 'okx:ETH/USDT:USDT'.*binanceusdm:BTC/USDT:USDT"):
            s.read_bars(ETH)
        with pytest.raises(StoreError, match="EXCHANGE:SYMBOL"):
            s.read_bars("BTCUSDT")


def test_thirty_days_of_one_minute_bars_read_back_whole(target):
    bars = synthetic_bars(30 * 1440, seed=6)
    with open_store(target) as s:
        s.write_bars(BTC, synthetic_bars(30 * 1440, seed=7, start=int(bars.time[0]) - 30 * 86_400))  # older month
        s.write_bars(BTC, bars)
        s.write_bars(ETH, bars)
    with open_store(target) as s:
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            got = s.read_bars(BTC, since=int(bars.time[0]))
            best = min(best, time.perf_counter() - t)
    _assert_same(got, bars)
    # speed is benchmarks/bench_store.py's job: a timed assert fails on a loaded machine, not on a regression
    print(f"\n30 days of 1m bars (43,200 rows) read in {best * 1000:.1f} ms (goal <= 100 ms)")


def test_bars_with_bad_prices_are_refused_with_one_line(target):
    bars = synthetic_bars(5)
    bad = bars.with_columns(close=np.r_[bars.close[:3], np.nan, bars.close[4:]])
    with open_store(target) as s, pytest.raises(StoreError) as err:
        s.write_bars(BTC, bad)
    assert "\n" not in str(err.value) and "row 3" in str(err.value)


# ---- the file itself ------------------------------------------------------------------------------------
def test_schema_version_and_crash_safe_settings_are_recorded(db):
    Store(db).close()
    assert _rows(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert _rows(db, "PRAGMA journal_mode") == [("wal",)]
    with Store(db) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert s.integrity() == "ok"


def test_an_older_store_is_migrated_on_open(db, monkeypatch):
    with Store(db) as s:
        s.write_bars(BTC, synthetic_bars(20))
    step = (SCHEMA_VERSION + 1, "CREATE TABLE notes (market INTEGER, text TEXT);")
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, step])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store(db) as s:
        assert s.schema_version == SCHEMA_VERSION + 1
        assert s.count_bars(BTC) == 20  # data survives the migration
    assert _rows(db, "SELECT count(*) FROM notes") == [(0,)]


def test_a_store_from_a_newer_liqheat_is_refused(db):
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError) as err:
        Store(db)
    msg = str(err.value)
    assert "\n" not in msg and "newer liqheat" in msg and "v99" in msg


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"timestamp_ms,open\n1,2\n" * 50, "not a readable liqheat store"),
        (bytes(range(256)) * 40, "not a readable liqheat store"),
    ],
    ids=["csv", "binary"],
)
def test_a_file_that_is_not_a_database_gives_one_line(db, content, expect):
    db.write_bytes(content)
    with pytest.raises(StoreError) as err:
        Store(db)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_a_foreign_sqlite_database_or_a_folder_is_refused(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a liqheat store"):
        Store(other)
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "missing.sqlite", create=False)


def test_a_damaged_store_gives_one_line_not_a_traceback(db):
    with Store(db) as s:
        s.write_bars(BTC, synthetic_bars(20_000))
    raw = bytearray(db.read_bytes())
    # scribble over the middle of the file (b-tree pages), keeping the header intact
    mid = len(raw) // 2
    raw[mid : mid + 40_000] = b"\xff" * 40_000
    db.write_bytes(bytes(raw))
    with pytest.raises(StoreError) as err:
        with Store(db) as s:
            s.read_bars(BTC)
            s.markets()
            assert s.integrity() == "ok"
    assert "\n" not in str(err.value)


def test_a_reader_is_not_blocked_by_a_writer_in_another_connection(target):
    bars = synthetic_bars(200)
    with open_store(target) as writer, open_store(target) as reader:
        writer.write_bars(BTC, bars.slice(0, 100))
        with writer.transaction():
            writer.write_bars(BTC, bars.slice(100, 200))
            assert len(reader.read_bars(BTC)) == 100  # sees the last commit, at once
        assert len(reader.read_bars(BTC)) == 200


def test_a_failed_batch_is_rolled_back_whole(target):
    bars = synthetic_bars(50)
    with open_store(target) as s:
        with pytest.raises(StoreError), s.transaction():
            s.write_bars(ETH, bars)
            s.write_liquidations([_liq(1, side="sideways")])
        assert s.count_bars(ETH) == 0 and s.markets() == []
        s.write_bars(ETH, bars)  # and the store is still usable afterwards
        assert s.count_bars(ETH) == 50


# ---- PostgreSQL: the server itself -----------------------------------------------------------------------
def test_postgres_schema_is_versioned_and_an_older_one_is_migrated(postgres_url, monkeypatch):
    with open_store(postgres_url) as s:
        assert s.schema_version == store_pg.PG_MIGRATIONS[-1][0] == SCHEMA_VERSION
        s.write_bars(BTC, synthetic_bars(20))
        assert s.integrity() == "ok" and not s.timescale  # Debian's PostgreSQL has no TimescaleDB
    step = (SCHEMA_VERSION + 1, ["CREATE TABLE notes (market BIGINT, text TEXT)"])
    monkeypatch.setattr(store_pg, "PG_MIGRATIONS", [*store_pg.PG_MIGRATIONS, step])
    with open_store(postgres_url) as s:
        assert s.schema_version == SCHEMA_VERSION + 1
        assert s.count_bars(BTC) == 20  # data survives the migration
        assert list(s._db.execute("SELECT count(*) FROM notes")) == [(0,)]


def test_a_postgres_store_from_a_newer_liqheat_or_a_foreign_database_is_refused(postgres_server):
    url = postgres_server.new_database()
    with open_store(url) as s:
        s._db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert "\n" not in str(err.value) and "newer liqheat" in str(err.value) and "v99" in str(err.value)
    other = postgres_server.new_database()
    import psycopg

    with psycopg.connect(other, autocommit=True) as con:
        con.execute("CREATE TABLE t (x int)")
    with pytest.raises(StoreError, match="not a liqheat store"):
        open_store(other)
    with pytest.raises(StoreError, match="no liqheat store"):
        open_store(postgres_server.new_database(), create=False)


def test_an_unreachable_postgres_is_one_line_naming_the_server_without_its_password():
    from real_servers import free_port

    url = f"postgresql://trader:secret@127.0.0.1:{free_port()}/history"
    t = time.perf_counter()
    with pytest.raises(StoreError) as err:
        store_pg.PgStore(url, timeout=1.0)
    msg = str(err.value)
    assert "\n" not in msg and "cannot connect" in msg and "127.0.0.1" in msg and "secret" not in msg
    assert time.perf_counter() - t < 10


def test_a_v1_postgres_store_moves_to_v2_and_estimates_bybit_liquidation_prices(postgres_url, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(store_pg, "PG_MIGRATIONS", store_pg.PG_MIGRATIONS[:1])
        with store_pg.PgStore(postgres_url) as s:
            assert s.schema_version == 1
            s._db.execute("INSERT INTO markets (exchange, symbol) VALUES ('bybit', 'BTC/USDT:USDT'), ('binanceusdm', 'BTC/USDT:USDT')")
            for mid in (1, 2):
                s._db.execute("INSERT INTO liquidations VALUES (%s, 1772323200000, 'long', 60000, 0.5, 30000)", (mid,))
    with open_store(postgres_url) as s:
        assert s.schema_version == 2
        (bybit,) = s.read_liquidations("bybit:BTC/USDT:USDT")
        (binance,) = s.read_liquidations("binanceusdm:BTC/USDT:USDT")
        assert bybit.price_kind == "bankruptcy" and bybit.reported == 60000 and bybit.price > 60000  # a long: above
        assert binance.price_kind == "fill" and binance.price == 60000
        assert s.write_liquidations([bybit]) == 0  # known by its reported price: not stored twice
