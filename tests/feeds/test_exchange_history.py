"""History through the real ccxt client against the loopback exchange: what a user downloads is exactly
what the venue has, in per-call pages, with OI in USD and funding in force."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fake_exchange import (
    DAY,
    MINUTE,
    VENUES,
    FakeClock,
    FakeExchange,
    Tape,
    floor_minute,
    last_closed_bar_ms,
    now_s,
    recorded_market_lists,
)

from engine.feeds.base import Feed, UnknownSymbol
from engine.feeds.exchange import VENUES as VENUE_LIMITS
from engine.feeds.exchange import ExchangeFeed, Progress


def expected_oi(tape: Tape, bar_close_ms: np.ndarray) -> np.ndarray:
    """The venue's snapshot at or before each bar close, in USD (value at the snapshot's price)."""
    j = np.searchsorted(tape.oi_t, bar_close_ms, side="right") - 1
    return np.array([tape.oi_base[k] * tape.close_at(int(tape.oi_t[k])) for k in j])


def expected_funding(tape: Tape, bar_close_ms: np.ndarray) -> np.ndarray:
    j = np.searchsorted(tape.funding_t, bar_close_ms, side="right") - 1
    return np.where(j >= 0, tape.funding_rate[np.clip(j, 0, None)], np.nan)


def assert_matches_tape(bars, tape: Tape) -> np.ndarray:
    assert len(bars) > 0
    bars.validate()
    assert np.all(np.diff(bars.time) == 60), "bars must be unique and contiguous"
    i = np.searchsorted(tape.t, bars.time * 1000)
    np.testing.assert_array_equal(tape.t[i], bars.time * 1000)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(getattr(bars, col), getattr(tape, col)[i], rtol=1e-9, err_msg=col)
    return i


@pytest.mark.parametrize("venue", VENUES)
async def test_markets_are_linear_perpetuals_loaded_without_spot_or_options(venue, fake, make_feed):
    feed = make_feed(venue)
    assert isinstance(feed, Feed)
    markets = await feed.markets()
    assert [m.symbol for m in markets] == ["BTC/USDT:USDT", "ETH/USDT:USDT", "OLD/USDT:USDT"]
    btc = markets[0]
    # the tick the venue's own list gives (Binance's recorded 2021 list: 0.01; Bybit, OKX: 0.1)
    tick = 0.01 if venue == "binanceusdm" and recorded_market_lists() else 0.1
    assert (btc.exchange, btc.coin, btc.linear, btc.tick) == (venue, "BTC", True, tick)
    assert btc.contract_size == (0.01 if venue == "okx" else 1.0)
    asked = [r.params for r in fake.calls(venue, "markets")]
    if venue == "bybit":
        assert {p["category"] for p in asked} == {"linear"}
    if venue == "okx":
        assert {p["instType"] for p in asked} == {"SWAP"}


@pytest.mark.parametrize("venue", VENUES)
async def test_history_is_exactly_the_venues_closed_bars(venue, fake, make_feed):
    feed = make_feed(venue)
    since = now_s(fake) - 2 * 86_400
    bars = await feed.history("BTC", since=since)
    tape = fake.tape(venue, "BTC")
    assert_matches_tape(bars, tape)
    assert bars.time[0] == -(-since // 60) * 60
    assert bars.time[-1] * 1000 == last_closed_bar_ms(fake)  # the forming bar is not handed out
    assert bars.time[-1] + 60 <= now_s(fake)
    close_ms = (bars.time + 60) * 1000
    np.testing.assert_allclose(bars.oi_usd, expected_oi(tape, close_ms), rtol=1e-8)
    np.testing.assert_allclose(bars.funding_rate, expected_funding(tape, close_ms), rtol=1e-9)
    assert feed.gaps == []


async def test_binance_history_carries_taker_buy_and_sell_volume(fake, make_feed):
    feed = make_feed("binanceusdm")
    bars = await feed.history("BTCUSDT", since=now_s(fake) - 6 * 3600)
    i = assert_matches_tape(bars, fake.tape("binanceusdm", "BTC"))
    tape = fake.tape("binanceusdm", "BTC")
    np.testing.assert_allclose(bars.taker_buy_volume, tape.taker_buy[i], rtol=1e-9)
    np.testing.assert_allclose(bars.taker_buy_volume + bars.taker_sell_volume, bars.volume, rtol=1e-9)


@pytest.mark.parametrize("venue", ["bybit", "okx"])
async def test_venues_without_taker_volume_say_so(venue, fake, make_feed):
    bars = await make_feed(venue).history("BTC", since=now_s(fake) - 3600)
    assert bars.taker_buy_volume is None and not bars.has_taker


@pytest.mark.parametrize("venue", VENUES)
async def test_pages_stay_within_each_venues_per_call_limits(venue, fake, make_feed):
    feed = make_feed(venue)
    await feed.history("BTC", since=now_s(fake) - 2 * 86_400)
    limits = VENUE_LIMITS[venue]
    klines = fake.calls(venue, "klines")
    assert all(int(r.params["limit"]) <= limits.candle_limit for r in klines)
    span_bars = 2 * 1440
    assert len(klines) == -(-(span_bars + 5) // (limits.candle_limit - 1))  # no wasted or repeated pages
    assert all(int(r.params.get("limit", 0)) <= limits.oi_limit for r in fake.calls(venue, "oi"))
    assert all(int(r.params.get("limit", 0)) <= limits.funding_limit for r in fake.calls(venue, "funding"))


async def test_eth_on_bybit_settles_funding_every_4_hours_and_none_is_lost(fake, make_feed):
    """ccxt's own funding pagination assumes 8 hours and leaves holes on 4-hour symbols."""
    feed = make_feed("bybit")
    bars = await feed.history("ETH", since=now_s(fake) - 2 * 86_400)
    tape = fake.tape("bybit", "ETH")
    close_ms = (bars.time + 60) * 1000
    np.testing.assert_allclose(bars.funding_rate, expected_funding(tape, close_ms))
    # every settlement inside the range shows up as a change of the rate in force
    settled = tape.funding_t[(tape.funding_t > close_ms[0]) & (tape.funding_t <= close_ms[-1])]
    assert len(settled) >= 11
    for t in settled:
        k = int(np.searchsorted(close_ms, t))
        assert bars.funding_rate[k] == tape.funding_rate[tape.funding_t == t][0]


async def test_bybit_open_interest_follows_the_cursor_when_pages_are_short(make_feed):
    fake = await FakeExchange(floor_minute(time.time() * 1000) + 5_000, days=1,
                              page_cap={"bybit:oi": 40}).start()
    try:
        feed = make_feed("bybit", route_through=fake.base, clock=FakeClock(fake))
        bars = await feed.history("BTC", since=now_s(fake) - 12 * 3600)
        tape = fake.tape("bybit", "BTC")
        np.testing.assert_allclose(bars.oi_usd, expected_oi(tape, (bars.time + 60) * 1000), rtol=1e-8)
        assert any("cursor" in r.params for r in fake.calls("bybit", "oi"))
    finally:
        await feed.close()
        await fake.close()


async def test_a_venue_that_returns_shorter_pages_than_asked_loses_nothing(make_feed):
    fake = await FakeExchange(floor_minute(time.time() * 1000) + 5_000, days=1,
                              page_cap={"okx:klines": 120, "binanceusdm:klines": 333}).start()
    try:
        for venue in ("okx", "binanceusdm"):
            feed = make_feed(venue, route_through=fake.base, clock=FakeClock(fake))
            bars = await feed.history("BTC", since=now_s(fake) - 8 * 3600)
            assert len(bars) == 8 * 60 - 1 or len(bars) == 8 * 60
            assert_matches_tape(bars, fake.tape(venue, "BTC"))
            await feed.close()
    finally:
        await fake.close()


async def test_binance_open_interest_exists_for_the_last_30_days_only(make_feed):
    fake = await FakeExchange(floor_minute(time.time() * 1000) + 5_000, days=32, future_hours=0.1).start()
    try:
        feed = make_feed("binanceusdm", route_through=fake.base, clock=FakeClock(fake))
        bars = await feed.history("BTC", since=now_s(fake) - 31 * 86_400)
        assert len(bars) == (last_closed_bar_ms(fake) // 1000 - bars.time[0]) // 60 + 1
        assert bars.time[0] - (now_s(fake) - 31 * 86_400) < 60
        close_ms = (bars.time + 60) * 1000
        has = np.isfinite(bars.oi_usd)
        oldest_kept = fake.now_ms - 30 * DAY
        assert not has[close_ms < oldest_kept].any()
        assert has[close_ms > oldest_kept + DAY / 12].all()
        np.testing.assert_allclose(bars.oi_usd[has], expected_oi(fake.tape("binanceusdm", "BTC"), close_ms[has]),
                                   rtol=1e-8)
        # the fake answers -1130 to older startTimes: the feed never asked
        assert all(r.status == 200 for r in fake.requests)
    finally:
        await fake.close()


async def test_okx_open_interest_covers_its_last_1440_points(make_feed):
    fake = await FakeExchange(floor_minute(time.time() * 1000) + 5_000, days=7, future_hours=0.1).start()
    try:
        feed = make_feed("okx", route_through=fake.base, clock=FakeClock(fake))
        bars = await feed.history("BTC", since=now_s(fake) - 6 * 86_400)
        close_ms = (bars.time + 60) * 1000
        has = np.isfinite(bars.oi_usd)
        assert not has[close_ms < fake.now_ms - 5 * DAY].any()
        assert has[close_ms > fake.now_ms - 5 * DAY + 3600_000].all()
        assert_matches_tape(bars, fake.tape("okx", "BTC"))
    finally:
        await fake.close()


async def test_progress_reports_every_request_per_stage(fake, make_feed):
    seen: list[Progress] = []
    feed = make_feed("okx", progress=seen.append)
    await feed.history("BTC", since=now_s(fake) - 86_400)
    stages = {p.stage for p in seen}
    assert stages == {"candles", "open interest", "funding"}
    for stage in stages:
        mine = [p for p in seen if p.stage == stage]
        assert [p.done for p in mine] == list(range(1, len(mine) + 1))
        assert mine[-1].done == mine[-1].total and mine[-1].fraction == 1.0
    assert len([p for p in seen if p.stage == "candles"]) == len(fake.calls("okx", "klines"))


async def test_an_empty_range_is_empty_not_an_error(fake, make_feed):
    feed = make_feed("bybit")
    bars = await feed.history("BTC", since=now_s(fake) + 3600)
    assert len(bars) == 0


@pytest.mark.parametrize("venue", VENUES)
async def test_unknown_symbol_fails_fast_with_one_line_and_no_data_request(venue, fake, make_feed):
    feed = make_feed(venue)
    with pytest.raises(UnknownSymbol) as info:
        await feed.history("NOPE")
    text = str(info.value)
    assert "\n" not in text and "NOPE/USDT:USDT" in text
    assert fake.calls(venue, "klines") == []


async def test_ccxt_is_imported_off_the_event_loop_and_only_when_needed():
    import sys

    import engine.feeds.exchange  # noqa: F401 — importing the module must not import ccxt

    feed = ExchangeFeed("okx")
    assert feed._client is None  # nothing loaded until the first call
    assert "engine.feeds.exchange" in sys.modules
    await feed.close()


def test_unknown_exchange_is_one_line():
    from engine.feeds.base import FeedError

    with pytest.raises(FeedError, match="unknown exchange 'kraken'; use one of binanceusdm, bybit, okx"):
        ExchangeFeed("kraken")


async def test_history_hands_the_stream_its_starting_point(fake, make_feed):
    feed = make_feed("binanceusdm")
    bars = await feed.history("BTC", since=now_s(fake) - 3600)
    assert feed._last_closed_ms["BTC/USDT:USDT"] == bars.time[-1] * 1000
    assert MINUTE == 60_000


async def test_injected_markets_skip_the_markets_request(fake, make_feed):
    first = make_feed("okx")
    await first.markets()
    unified = list(first._client.markets.values())
    calls = len(fake.calls("okx", "markets"))
    feed = make_feed("okx", markets=unified)
    assert [m.symbol for m in await feed.markets()][:2] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    bars = await feed.history("BTC", since=now_s(fake) - 600)
    assert len(bars) >= 9
    assert len(fake.calls("okx", "markets")) == calls


async def test_api_overrides_point_individual_urls_elsewhere(fake, make_feed):
    import ccxt.pro

    from engine.feeds.exchange import loopback_urls

    overrides = loopback_urls(ccxt.pro.bybit().urls["api"], fake.base)
    assert overrides["public"] == f"http://{fake.base}/api.{{hostname}}"
    assert overrides["ws"]["public"]["linear"] == f"ws://{fake.base}/stream.{{hostname}}/v5/public/linear"
    feed = make_feed("bybit", route_through=None, api_overrides=overrides)
    bars = await feed.history("BTC", since=now_s(fake) - 600)
    assert_matches_tape(bars, fake.tape("bybit", "BTC"))


@pytest.mark.parametrize(("venue", "coin", "hours"), [("binanceusdm", "BTC", 8), ("bybit", "ETH", 4)])
async def test_the_funding_interval_is_read_from_the_settlements(venue, coin, hours, fake, make_feed):
    feed = make_feed(venue)
    assert feed.funding_info(coin) is None
    await feed.history(coin, since=now_s(fake) - 86_400)
    info = feed.funding_info(coin)
    tape = fake.tape(venue, coin)
    last = tape.funding_t[tape.funding_t <= fake.now_ms][-1]
    assert info.interval_hours == hours and info.time == last // 1000
    assert info.next_time == last // 1000 + hours * 3600
    assert info.rate == tape.funding_rate[tape.funding_t == last][0]
