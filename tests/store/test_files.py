"""Candle and liquidation files in and out, the real data files, and the replay feed."""

from __future__ import annotations

import asyncio
import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from engine.feeds.base import BarUpdate, Feed, FeedError, Health, HealthChange, Liquidation, UnknownSymbol
from engine.feeds.files import FileFeed
from engine.formats import (
    BadFile,
    read_bars_file,
    read_funding_file,
    read_liquidations_file,
    write_bars_file,
)
from engine.model import Bars
from engine.model.synthetic import synthetic_bars
from engine.store import Store, open_replay

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CANDLES = DATA / "candles_1h_binance_bybit_okx_2025-03_2026-03.csv.gz"
FUNDING = DATA / "funding_binance_bybit_okx_2025-03_2026-03.csv.gz"
OKX_LIQS = DATA / "okx_liquidations_2026-03-04.csv.gz"
OKX_CONTRACT_VALUE = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "DOGE": 1000.0}  # data/README.md

needs_data = pytest.mark.skipif(not CANDLES.exists(), reason="shared data folder not present")


def _assert_same(a: Bars, b: Bars) -> None:
    assert a.timeframe == b.timeframe
    np.testing.assert_array_equal(a.time, b.time)
    for name in ("open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _sample() -> Bars:
    bars = synthetic_bars(500, seed=11)
    oi = bars.oi_usd.copy()
    oi[[3, 4, 100]] = np.nan  # holes in OI must survive a round trip as holes
    return bars.with_columns(oi_usd=oi)


# ---- round trips ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz", "bars.json"])
def test_bars_survive_a_round_trip_exactly(tmp_path, name):
    bars = _sample()
    path = write_bars_file(tmp_path / name, bars)
    _assert_same(read_bars_file(path), bars)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_bars_survive_a_parquet_round_trip(tmp_path):
    bars = _sample()
    _assert_same(read_bars_file(write_bars_file(tmp_path / "bars.parquet", bars)), bars)
    one = bars.slice(0, 1)  # the timeframe travels in the file's metadata: one bar is enough
    _assert_same(read_bars_file(write_bars_file(tmp_path / "one.parquet", one)), one)


def test_a_broken_parquet_file_is_one_line(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(BadFile) as err:
        read_bars_file(tmp_path / "x.parquet")
    assert "not a readable Parquet file" in str(err.value) and "\n" not in str(err.value)


def test_unknown_output_format_is_refused(tmp_path):
    with pytest.raises(BadFile, match="unknown format"):
        write_bars_file(tmp_path / "bars.xlsx", _sample())


# ---- what a CSV may look like ---------------------------------------------------------------------------
def _write(tmp_path, text: str, name: str = "in.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_time_columns_in_any_of_the_accepted_spellings_agree(tmp_path):
    rows = [(1_700_000_100 + 300 * i, 100 + i) for i in range(4)]
    ms = "timestamp_ms,open,high,low,close\n" + "".join(f"{t * 1000},{p},{p + 1},{p - 1},{p}\n" for t, p in rows)
    secs = "time,open,high,low,close\n" + "".join(f"{t},{p},{p + 1},{p - 1},{p}\n" for t, p in rows)
    iso = "timestamp,open,high,low,close\n" + "".join(
        f"{np.datetime_as_string(np.datetime64(t, 's'))}Z,{p},{p + 1},{p - 1},{p}\n" for t, p in rows
    )
    binance = "open_time,open,high,low,close,close_time\n" + "".join(
        f"{t * 1000},{p},{p + 1},{p - 1},{p},{t * 1000 + 299_999}\n" for t, p in rows
    )
    got = [read_bars_file(_write(tmp_path, text, f"{i}.csv")) for i, text in enumerate([ms, secs, iso, binance])]
    for b in got:
        assert b.timeframe == 300  # inferred from the spacing
        assert b.time.tolist() == [t for t, _ in rows]


def test_taker_volume_is_split_from_net_or_from_one_side(tmp_path):
    net = _write(tmp_path, "timestamp_ms,open,high,low,close,volume,net_taker_volume,extra\n"
                 "60000,1,2,1,2,10,4,x\n120000,2,2,1,1,10,-10,y\n", "net.csv")
    b = read_bars_file(net)
    assert b.taker_buy_volume.tolist() == [7, 0] and b.taker_sell_volume.tolist() == [3, 10]
    buy_only = _write(tmp_path, "timestamp_ms,open,high,low,close,volume,taker_buy_volume\n"
                      "60000,1,2,1,2,10,6\n120000,2,2,1,1,8,8\n", "buy.csv")
    b = read_bars_file(buy_only)
    assert b.taker_buy_volume.tolist() == [6, 8] and b.taker_sell_volume.tolist() == [4, 0]


def test_optional_columns_may_be_blank_and_unknown_columns_are_ignored(tmp_path):
    p = _write(tmp_path, "Timestamp_MS, Open,High,Low,Close,OI_USD,funding_rate,notes\n"
               "60000,1,2,1,2,,0.0001,hello\n120000,2,2,1,1,5e8,,world\n")
    b = read_bars_file(p)
    assert np.isnan(b.oi_usd[0]) and b.oi_usd[1] == 5e8
    assert b.funding_rate[0] == 1e-4 and np.isnan(b.funding_rate[1])
    assert b.volume is None


HEADER = "timestamp_ms,open,high,low,close,volume\n"
OK1 = "60000,10,11,9,10.5,1\n"
OK2 = "120000,10.5,12,10,11,2\n"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", "empty file"),
        (HEADER, "no bars"),
        ("timestamp_ms,open,high,close\n60000,1,2,1\n", "missing column low"),
        ("open,high,low,close\n1,2,1,2\n", "missing column timestamp_ms"),
        (HEADER + OK1 + "120000,10,12,9,nan,1\n", "line 3: close is empty or NaN"),
        (HEADER + OK1 + "120000,10,12,9,,1\n", "line 3: close is empty or NaN"),
        (HEADER + OK1 + "120000,10,12,9,abc,1\n", "line 3: close is not a number"),
        (HEADER + OK2 + OK1, "line 3: out-of-order timestamp"),
        (HEADER + OK1 + OK1, "line 3: duplicate timestamp"),
        (HEADER + OK1 + "120000,0,12,0,11,1\n", "line 3: open must be positive"),
        (HEADER + OK1 + "120000,10,10.2,9,11,1\n", "line 3: high/low do not contain open/close"),
        (HEADER + OK1 + "120000,10,12,9,11,-1\n", "line 3: volume is negative"),
        (HEADER + OK1 + "120000,10,12,9\n", "line 3: 4 fields, the header has 6"),
        (HEADER + OK1 + "\n\n" + "120000,10,12,9,11\n", "line 5: 5 fields"),
        (HEADER + OK1, "one bar is not enough to infer the timeframe"),
        ("timestamp,open,high,low,close\n2024-13-01,1,2,1,2\n", "line 2: timestamp '2024-13-01' is not an ISO-8601 time"),
        ("timestamp_ms,open,high,low,close,volume,net_taker_volume\n60000,1,2,1,2,1,5\n120000,1,2,1,2,1,0\n", "line 2: |net_taker_volume| exceeds volume"),
    ],
    ids=[
        "empty", "header-only", "missing-low", "missing-time", "nan-price", "blank-price", "text-price",
        "unsorted", "duplicate", "zero-price", "high-below-close", "negative-volume", "short-row",
        "short-row-after-blank-lines", "one-row", "bad-iso", "net-over-volume",
    ],
)
def test_bad_bar_files_give_one_line_naming_the_row(tmp_path, text, expect):
    p = _write(tmp_path, text)
    with pytest.raises(BadFile) as err:
        read_bars_file(p)
    msg = str(err.value)
    assert expect in msg, msg
    assert "\n" not in msg and str(p) in msg
    assert isinstance(err.value, FeedError)


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a text CSV"),
        (b"timestamp_ms,open\x00,high\n", "not a CSV file"),
        (gzip.compress(b"x")[:12], "cannot read"),
    ],
    ids=["binary", "nul-bytes", "truncated-gzip"],
)
def test_files_that_are_not_csv_give_one_line(tmp_path, content, expect):
    p = tmp_path / ("in.csv.gz" if expect == "cannot read" else "in.csv")
    p.write_bytes(content)
    with pytest.raises(BadFile) as err:
        read_bars_file(p)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_or_a_folder_gives_one_line(tmp_path):
    with pytest.raises(BadFile, match="no such file"):
        read_bars_file(tmp_path / "nope.csv")
    with pytest.raises(BadFile, match="folder"):
        read_bars_file(tmp_path)


# ---- the real data files --------------------------------------------------------------------------------
@needs_data
def test_the_real_multi_venue_candle_file_loads_one_market_at_a_time():
    with pytest.raises(BadFile, match=r"several markets \(binance BTC, binance ETH, bybit BTC.*venue/coin"):
        read_bars_file(CANDLES)
    btc = read_bars_file(CANDLES, venue="binance", coin="btc")
    assert (len(btc), btc.timeframe) == (8736, 3600)
    assert btc.time[0] == 1741258800  # 2025-03-06 11:00 UTC, the file's first row
    assert (btc.open[0], btc.close[0], btc.volume[0]) == (91250.0, 91319.2, 5659.315)
    assert len(read_bars_file(CANDLES, venue="okx", coin="ETH")) == 2160
    with pytest.raises(BadFile, match="pick one by venue"):
        read_bars_file(CANDLES, coin="BTC")
    with pytest.raises(BadFile, match="no rows for kraken"):
        read_bars_file(CANDLES, venue="kraken", coin="BTC")


@needs_data
def test_the_real_okx_liquidations_load_with_position_sides_and_base_sizes():
    with pytest.raises(BadFile, match=r"several markets \(BTC, DOGE, ETH, SOL\).*pick one by coin"):
        read_liquidations_file(OKX_LIQS)
    total = 0
    for coin, ct_val in OKX_CONTRACT_VALUE.items():
        events = read_liquidations_file(OKX_LIQS, coin=coin, exchange="okx")
        total += len(events)
        assert events and all(e.symbol == f"{coin}/USDT:USDT" and e.exchange == "okx" for e in events)
        assert {e.side for e in events} == {"long", "short"}
        assert all(a.time_ms <= b.time_ms for a, b in zip(events, events[1:], strict=False))
        # base coin = contracts x contract value, recovered as notional / bankruptcy price
        e = events[0]
        contracts = e.base / ct_val
        assert abs(contracts - round(contracts, 2)) < 1e-6
        assert math.isclose(e.usd, e.base * e.price, rel_tol=1e-12)
    with gzip.open(OKX_LIQS, "rt") as f:
        assert total == sum(1 for _ in f) - 1


@needs_data
def test_the_real_funding_file_loads_per_venue_and_coin():
    t, rate = read_funding_file(FUNDING, venue="bybit", coin="ETH")
    assert len(t) > 1000 and np.all(np.diff(t) > 0) and np.all(np.abs(rate) < 0.01)


def test_own_liquidation_files_load_and_bad_sides_are_named(tmp_path):
    p = _write(tmp_path, "timestamp_ms,side,price,notional_usd,base\n"
               "1700000000500,short,60100,6010,0.1\n1700000000000,long,59900,5990,0.1\n", "liq.csv")
    events = read_liquidations_file(p, exchange="binanceusdm", symbol="BTC/USDT:USDT")
    assert events == [
        Liquidation(1700000000000, "binanceusdm", "BTC/USDT:USDT", "long", 59900.0, 0.1, 5990.0),
        Liquidation(1700000000500, "binanceusdm", "BTC/USDT:USDT", "short", 60100.0, 0.1, 6010.0),
    ]
    bad = _write(tmp_path, "timestamp_ms,side,price,notional_usd\n1,long,1,1\n2,SELL,1,1\n", "bad.csv")
    with pytest.raises(BadFile, match=r"line 3: side must be long or short \(the position liquidated\), got 'SELL'"):
        read_liquidations_file(bad)
    no_size = _write(tmp_path, "timestamp_ms,side,price\n1,long,1\n", "nosize.csv")
    with pytest.raises(BadFile, match="missing column notional_usd"):
        read_liquidations_file(no_size)


# ---- the replay feed ------------------------------------------------------------------------------------
def _liq_file(tmp_path, bars: Bars) -> Path:
    lines = ["timestamp_ms,side,price,notional_usd"]
    for i in range(0, len(bars), 7):
        lines.append(f"{int(bars.time[i]) * 1000 + 30_000},long,{bars.low[i]},{1000 + i}")
    return _write(tmp_path, "\n".join(lines) + "\n", "liqs.csv")


async def _take(stream, n=None):
    """The first n events, or (n=None) everything up to the end-of-recording notice."""
    out = []
    async for ev in stream:
        out.append(ev)
        if len(out) == n or (n is None and isinstance(ev, HealthChange) and ev.state is Health.STALE):
            break
    return out


async def test_file_feed_serves_history_before_the_cut_then_replays_the_rest(tmp_path):
    bars = synthetic_bars(200, seed=21)
    path = write_bars_file(tmp_path / "btc.csv", bars)
    cut = int(bars.time[150])
    feed = FileFeed(path, speed=math.inf, start=cut, liquidations=_liq_file(tmp_path, bars))
    assert isinstance(feed, Feed)
    (market,) = await feed.markets()
    assert market.exchange == "file" and market.symbol == "btc"
    hist = await feed.history("btc")
    _assert_same(hist, bars.slice(0, 150))
    _assert_same(await feed.history("btc", since=int(bars.time[10]), until=int(bars.time[20])), bars.slice(10, 20))

    events = await asyncio.wait_for(_take(feed.stream("btc")), 10)
    assert events[0] == HealthChange(Health.REPLAY, events[0].reason)
    closed = [e for e in events if isinstance(e, BarUpdate)]
    liqs = [e for e in events if isinstance(e, Liquidation)]
    assert all(e.closed for e in closed)
    assert [int(e.bar.time[0]) for e in closed] == bars.time[150:].tolist()
    assert [e.time_ms for e in liqs] == [int(bars.time[i]) * 1000 + 30_000 for i in range(154, 200, 7)]
    # each liquidation comes before the close of its own bar
    order = [int(e.bar.time[0]) if isinstance(e, BarUpdate) else e.time_ms // 60_000 * 60 for e in events[1:-1]]
    assert order == sorted(order)
    assert isinstance(events[-1], HealthChange) and events[-1].state is Health.STALE
    # the replay clock moved on: history now reaches the end
    assert len(await feed.history("btc")) == 200
    await feed.close()


async def test_file_feed_paces_bars_at_the_replay_speed(tmp_path):
    bars = synthetic_bars(40, seed=22)
    feed = FileFeed(write_bars_file(tmp_path / "b.csv", bars), speed=60 * 50)  # 50 bars per second
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = await asyncio.wait_for(_take(feed.stream("b"), 1 + 10), 10)
    elapsed = loop.time() - t0
    assert len(got) == 11 and 0.15 < elapsed < 2.0  # 10 bars at 20 ms each


async def test_file_feed_replays_a_store_with_its_liquidations(tmp_path):
    bars = synthetic_bars(100, seed=23)
    db = tmp_path / "rec.sqlite"
    with Store(db) as s:
        s.write_bars("okx:BTC/USDT:USDT", bars)
        s.write_bars("bybit:BTC/USDT:USDT", bars)
        s.write_bars("okx:ETH/USDT:USDT", bars)
        s.write_liquidations([Liquidation(int(bars.time[80]) * 1000 + 5, "okx", "ETH/USDT:USDT", "short", 1.0, 2.0, 2.0)])
    feed = open_replay(f"file:{db}", speed=math.inf, start=int(bars.time[70]))
    symbols = sorted(m.symbol for m in await feed.markets())
    assert symbols == ["ETH/USDT:USDT", "bybit:BTC/USDT:USDT", "okx:BTC/USDT:USDT"]  # same symbol twice: prefixed
    assert len(await feed.history("ETH/USDT:USDT")) == 70
    events = await asyncio.wait_for(_take(feed.stream("ETH/USDT:USDT")), 10)
    (liq,) = [e for e in events if isinstance(e, Liquidation)]
    assert (liq.exchange, liq.symbol, liq.side) == ("file", "ETH/USDT:USDT", "short")
    with pytest.raises(UnknownSymbol, match="SOL"):
        await feed.history("SOL/USDT:USDT")
    await feed.close()


def test_file_feed_refuses_what_it_cannot_replay(tmp_path):
    with pytest.raises(FeedError, match="no such file"):
        FileFeed(tmp_path / "none.csv")
    with pytest.raises(FeedError, match="speed"):
        FileFeed(write_bars_file(tmp_path / "b.csv", _sample()), speed=0)
    empty = tmp_path / "empty.sqlite"
    Store(empty).close()
    with pytest.raises(FeedError, match="no bars to replay"):
        asyncio.run(open_replay(str(empty)).markets())


@needs_data
async def test_file_feed_on_the_real_multi_venue_file_offers_each_market():
    feed = FileFeed(CANDLES, speed=math.inf, liquidations=OKX_LIQS, venue="okx")
    assert [m.symbol for m in await feed.markets()] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert feed.timeframe == 3600
    hist = await feed.history("BTC/USDT:USDT")
    assert len(hist) == 2160 // 2 and hist.time[0] == 1764932400
    events = await asyncio.wait_for(_take(feed.stream("BTC/USDT:USDT")), 30)
    liqs = [e for e in events if isinstance(e, Liquidation)]
    # every recorded BTC liquidation inside the replayed bars (the file runs 18 minutes past the last candle)
    end_ms = (1772704800 + 3600) * 1000
    assert len(liqs) == sum(e.time_ms < end_ms for e in read_liquidations_file(OKX_LIQS, coin="BTC")) > 1500
    every = FileFeed(CANDLES)
    assert len(await every.markets()) == 6
    assert {m.symbol for m in await every.markets()} >= {"binance:BTC/USDT:USDT", "okx:ETH/USDT:USDT"}
