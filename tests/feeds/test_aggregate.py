"""One coin across venues: sums, weighted prices, a reference venue, and OI that does not jump when a
venue's shorter history begins."""

from __future__ import annotations

import numpy as np
import pytest
from fake_exchange import now_s
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.feeds.aggregate import combine, history_across
from engine.feeds.base import FeedError
from engine.model import Bars, BarsError

NAN = np.nan


def bars(times, close, volume, oi=None, buy=None, funding=None, spread=1.0):
    t = np.asarray(times, dtype=np.int64) * 60
    c = np.asarray(close, float)
    v = np.asarray(volume, float)
    b = None if buy is None else np.asarray(buy, float)
    return Bars(timeframe=60, time=t, open=c - 0.5, high=c + spread, low=c - spread, close=c, volume=v,
                taker_buy_volume=b, taker_sell_volume=None if b is None else v - b,
                oi_usd=None if oi is None else np.asarray(oi, float),
                funding_rate=None if funding is None else np.asarray(funding, float))


def test_volumes_add_and_prices_are_volume_weighted():
    a = bars([0, 1, 2], [100, 101, 102], [1, 3, 0])
    b = bars([0, 1, 2], [110, 111, 112], [3, 1, 0])
    out = combine({"binanceusdm": a, "bybit": b})
    np.testing.assert_allclose(out.bars.volume, [4, 4, 0])
    np.testing.assert_allclose(out.bars.close, [107.5, 103.5, 107.0])  # no volume: plain mean
    out.bars.validate()
    assert out.price_source == "volume-weighted"
    np.testing.assert_allclose(out.breakdown["binanceusdm"].volume_share[:2], [0.25, 0.75])


def test_a_reference_venue_sets_the_price_where_it_has_the_bar():
    a = bars([0, 1], [100, 101], [1, 1])
    b = bars([0, 1, 2], [110, 111, 112], [9, 9, 9])
    out = combine({"binanceusdm": a, "okx": b}, price="binanceusdm")
    np.testing.assert_allclose(out.bars.close, [100, 101, 112])  # bar 2: Binance has none, OKX fills in
    assert out.price_source == "binanceusdm"
    with pytest.raises(BarsError, match="reference venue 'kraken'"):
        combine({"okx": b}, price="kraken")


def test_the_time_axis_is_the_union_and_absent_venues_add_nothing():
    a = bars([0, 1, 3], [100, 100, 100], [1, 1, 1])
    b = bars([1, 2, 3], [100, 100, 100], [2, 2, 2])
    out = combine({"a": a, "b": b})
    assert out.bars.time.tolist() == [0, 60, 120, 180]
    np.testing.assert_allclose(out.bars.volume, [1, 3, 2, 3])
    assert out.breakdown["a"].present.tolist() == [True, True, False, True]


def test_oi_sums_without_a_jump_where_a_shorter_history_begins():
    binance = bars(range(6), [100] * 6, [1] * 6, oi=[1000, 1010, 1020, 1030, 1040, 1050])
    okx = bars(range(6), [100] * 6, [1] * 6, oi=[NAN, NAN, NAN, 500, 505, 510])  # OKX starts later
    held = combine({"binanceusdm": binance, "okx": okx})
    np.testing.assert_allclose(held.bars.oi_usd, [1500, 1510, 1520, 1530, 1545, 1560])
    # the change in combined OI is only ever the venues' real changes: no +500 "new positions" at bar 3
    assert np.diff(held.bars.oi_usd).max() == 15
    assert held.breakdown["okx"].oi_reported.tolist() == [False] * 3 + [True] * 3
    strict = combine({"binanceusdm": binance, "okx": okx}, oi_gaps="strict")
    assert np.isnan(strict.bars.oi_usd[:3]).all()
    np.testing.assert_allclose(strict.bars.oi_usd[3:], [1530, 1545, 1560])
    assert held.oi_venues == ("binanceusdm", "okx")


def test_taker_imbalance_from_binance_is_scaled_to_the_whole_market():
    binance = bars([0, 1], [100, 100], [10, 10], buy=[7, 2])
    bybit = bars([0, 1], [100, 100], [30, 10])
    out = combine({"binanceusdm": binance, "bybit": bybit})
    np.testing.assert_allclose(out.bars.taker_buy_volume, [28, 4])  # 70 % and 20 % of 40 and 20
    np.testing.assert_allclose(out.bars.taker_buy_volume + out.bars.taker_sell_volume, out.bars.volume)
    assert combine({"bybit": bybit}).bars.taker_buy_volume is None


def test_funding_is_open_interest_weighted():
    a = bars([0], [100], [1], oi=[3000], funding=[0.0001])
    b = bars([0], [100], [1], oi=[1000], funding=[0.0005])
    out = combine({"a": a, "b": b})
    assert out.bars.funding_rate[0] == pytest.approx((3 * 0.0001 + 0.0005) / 4)


def test_mismatched_timeframes_are_refused():
    a = bars([0], [100], [1])
    b = Bars(timeframe=300, time=np.array([0]), open=np.array([1.0]), high=np.array([1.0]),
             low=np.array([1.0]), close=np.array([1.0]))
    with pytest.raises(BarsError, match="different timeframes"):
        combine({"a": a, "b": b})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(10, 1e5), st.floats(0, 50), st.floats(0, 50), st.floats(0.1, 5)),
                min_size=1, max_size=30))
def test_combined_candles_are_always_valid_and_volume_is_conserved(rows):
    c = np.array([r[0] for r in rows])
    a = bars(range(len(rows)), c, [r[1] for r in rows], spread=1.0)
    b = bars(range(len(rows)), c * (1 + 0.001 * np.array([r[3] for r in rows])), [r[2] for r in rows],
             spread=2.0)
    out = combine({"a": a, "b": b})
    out.bars.validate()
    np.testing.assert_allclose(out.bars.volume, a.volume + b.volume)
    assert np.all(out.bars.close >= np.minimum(a.close, b.close) - 1e-9)
    assert np.all(out.bars.close <= np.maximum(a.close, b.close) + 1e-9)


async def test_history_across_three_real_clients_on_the_loopback_exchange(fake, make_feed):
    feeds = [make_feed(v) for v in ("binanceusdm", "bybit", "okx")]
    since = now_s(fake) - 6 * 3600
    out = await history_across(feeds, "BTC", since=since)
    parts = [await f.history("BTC", since=since) for f in feeds]
    np.testing.assert_allclose(out.bars.volume, sum(p.volume for p in parts))
    np.testing.assert_allclose(out.bars.oi_usd, sum(p.oi_usd for p in parts))
    assert set(out.breakdown) == {"binanceusdm", "bybit", "okx"}
    assert out.skipped == {}
    with pytest.raises(FeedError, match="^no venue has OLD history"):  # listed, but delisted everywhere
        await history_across(feeds, "OLD", since=since)


async def test_a_venue_without_the_coin_is_skipped_with_its_reason(fake, make_feed):
    feeds = [make_feed("bybit"), make_feed("okx")]
    fake.delisted.add("ETH-USDT-SWAP")
    out = await history_across(feeds, "ETH", since=now_s(fake) - 3600)
    assert set(out.breakdown) == {"bybit"}
    assert "Instrument ID does not exist" in out.skipped["okx"]
