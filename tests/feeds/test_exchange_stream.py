"""Live data over ccxt.pro websockets from the loopback exchange: closed candles, every liquidation of
every frame with the right side and units, reconnects with the missed bars backfilled over REST, gaps
recorded for what cannot be backfilled, and health as the user would see it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from fake_exchange import (
    BINANCE,
    BYBIT,
    IDS,
    OKX,
    OKX_CT_VAL,
    VENUES,
    FakeClock,
    FakeExchange,
    binance_force_order,
    binance_kline_frame,
    bybit_all_liquidation,
    bybit_kline_frame,
    floor_minute,
    now_s,
    okx_candle_frame,
    okx_liquidation_orders,
)

from engine.feeds.base import BarUpdate, FeedEvent, Health, HealthChange, Liquidation, UnknownSymbol
from engine.feeds.exchange import ExchangeFeed

CANDLE_TOPIC = {BINANCE: "btcusdt@kline_1m", BYBIT: "kline.1.BTCUSDT", OKX: "candle1m:BTC-USDT-SWAP"}
LIQ_TOPIC = {BINANCE: "btcusdt@forceOrder", BYBIT: "allLiquidation.BTCUSDT", OKX: "liquidation-orders:SWAP"}


def candle_frame(venue: str, fake: FakeExchange, i: int) -> dict[str, Any]:
    tape = fake.tape(venue, "BTC")
    mid = IDS[venue]["BTC"]
    if venue == BINANCE:
        return binance_kline_frame(mid, tape, i)
    if venue == BYBIT:
        return bybit_kline_frame(mid, tape, i)
    return okx_candle_frame(mid, tape, i, OKX_CT_VAL["BTC"])


class Events:
    """Pulls events from a stream in the background; tests wait on conditions, never on sleeps."""

    def __init__(self, stream: AsyncIterator[FeedEvent]) -> None:
        self.stream = stream
        self.seen: list[FeedEvent] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for ev in self.stream:
                async with self._changed:
                    self.seen.append(ev)
                    self._changed.notify_all()
        except Exception as exc:
            async with self._changed:
                self.error = exc
                self._changed.notify_all()

    async def until(self, cond: Callable[[list[FeedEvent]], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.error is not None or cond(self.seen))
        if self.error is not None and not cond(self.seen):
            raise self.error

    def bars(self, closed: bool | None = None) -> list[BarUpdate]:
        return [e for e in self.seen if isinstance(e, BarUpdate) and (closed is None or e.closed == closed)]

    def liquidations(self) -> list[Liquidation]:
        return [e for e in self.seen if isinstance(e, Liquidation)]

    def health(self) -> list[Health]:
        return [e.state for e in self.seen if isinstance(e, HealthChange)]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.stream.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def live(fake: FakeExchange, make_feed) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Events] = []

    async def start(venue: str, **kw: Any) -> tuple[ExchangeFeed, Events]:
        kw.setdefault("oi_poll_s", 3600)
        kw.setdefault("funding_poll_s", 3600)
        feed = make_feed(venue, **kw)
        await feed.history("BTC", since=now_s(fake) - 3 * 3600)
        events = Events(feed.stream("BTC"))
        opened.append(events)
        await fake.wait_subscribed(venue, CANDLE_TOPIC[venue])
        await fake.wait_subscribed(venue, LIQ_TOPIC[venue])
        return feed, events

    yield start
    for ev in opened:
        await ev.close()


def tape_index(fake: FakeExchange, venue: str, t_ms: int) -> int:
    return int(np.searchsorted(fake.tape(venue, "BTC").t, t_ms))


@pytest.mark.parametrize("venue", VENUES)
async def test_a_candle_is_closed_when_the_next_one_starts(venue, fake, live):
    feed, ev = await live(venue)
    i = tape_index(fake, venue, floor_minute(fake.now_ms))  # the forming bar
    await fake.push(venue, CANDLE_TOPIC[venue], candle_frame(venue, fake, i))
    await ev.until(lambda s: len(ev.bars()) >= 1)
    first = ev.bars()[0]
    assert not first.closed and first.bar.time[0] * 1000 == fake.tape(venue, "BTC").t[i]
    assert ev.health()[0] is Health.LIVE
    await fake.push(venue, CANDLE_TOPIC[venue], candle_frame(venue, fake, i + 1))
    await ev.until(lambda s: len(ev.bars(closed=True)) >= 1 and len(ev.bars(closed=False)) >= 2)
    [closed] = ev.bars(closed=True)
    tape = fake.tape(venue, "BTC")
    assert closed.bar.time[0] * 1000 == tape.t[i]
    np.testing.assert_allclose([closed.bar.open[0], closed.bar.high[0], closed.bar.low[0], closed.bar.close[0],
                                closed.bar.volume[0]],
                               [tape.open[i], tape.high[i], tape.low[i], tape.close[i], tape.volume[i]])
    closed.bar.validate()
    if venue == BINANCE:  # the kline frame's taker buy volume, which ccxt's parser drops
        assert closed.bar.taker_buy_volume[0] == pytest.approx(tape.taker_buy[i])
        assert closed.bar.taker_sell_volume[0] == pytest.approx(tape.volume[i] - tape.taker_buy[i])
    else:
        assert closed.bar.taker_buy_volume is None
    assert ev.bars()[-1].bar.time[0] * 1000 == tape.t[i + 1] and not ev.bars()[-1].closed


async def test_binance_liquidation_side_and_units(fake, live):
    feed, ev = await live(BINANCE)
    t = fake.now_ms
    await fake.push(BINANCE, LIQ_TOPIC[BINANCE], binance_force_order("BTCUSDT", "SELL", 0.5, 61_000.0, t))
    await fake.push(BINANCE, LIQ_TOPIC[BINANCE], binance_force_order("BTCUSDT", "BUY", 0.2, 62_000.0, t + 5))
    await ev.until(lambda s: len(ev.liquidations()) >= 2)
    a, b = ev.liquidations()
    assert (a.side, a.base, a.usd, a.time_ms, a.exchange, a.symbol) == (
        "long", 0.5, 0.5 * 61_000.0, t, BINANCE, "BTC/USDT:USDT")
    assert (b.side, b.base) == ("short", 0.2)


async def test_bybit_frame_with_several_liquidations_delivers_all_of_them(fake, live):
    """ccxt's watch_liquidations returns only the first row of such a frame."""
    feed, ev = await live(BYBIT)
    t = fake.now_ms
    rows = [("Buy", 0.3, 60_900.0, t), ("Buy", 1.2, 60_850.0, t + 3), ("Sell", 0.05, 60_990.0, t + 9)]
    await fake.push(BYBIT, LIQ_TOPIC[BYBIT], bybit_all_liquidation("BTCUSDT", rows))
    await ev.until(lambda s: len(ev.liquidations()) >= 3)
    assert [(x.side, x.base, x.reported_price, x.price_kind, x.time_ms) for x in ev.liquidations()] == [
        ("long", 0.3, 60_900.0, "bankruptcy", t), ("long", 1.2, 60_850.0, "bankruptcy", t + 3),
        ("short", 0.05, 60_990.0, "bankruptcy", t + 9)]
    # Bybit prints bankruptcy prices: liquidated one maintenance margin (0.5%, BTCUSDT's first tier) nearer
    # the entry — above it for a long, below for a short; the USD is the notional Bybit printed
    assert [x.price for x in ev.liquidations()] == pytest.approx([60_900.0 * 1.005, 60_850.0 * 1.005,
                                                                  60_990.0 * 0.995])
    assert [x.usd for x in ev.liquidations()] == pytest.approx([0.3 * 60_900.0, 1.2 * 60_850.0, 0.05 * 60_990.0])


async def test_okx_frame_with_several_details_delivers_all_of_ours_in_base_coin(fake, live):
    """ccxt parses only details[0]; OKX sizes are contracts of 0.01 BTC."""
    feed, ev = await live(OKX)
    t = fake.now_ms
    frame = okx_liquidation_orders({
        "ETH-USDT-SWAP": [("sell", "long", 10, 2_500.0, t)],
        "BTC-USDT-SWAP": [("sell", "long", 25, 60_000.0, t + 1), ("buy", "short", 4, 61_000.0, t + 2),
                          ("sell", "net", 100, 59_900.0, t + 3)],
    })
    await fake.push(OKX, LIQ_TOPIC[OKX], frame)
    await ev.until(lambda s: len(ev.liquidations()) >= 3)
    got = [(x.side, x.base, x.usd) for x in ev.liquidations()]
    assert got == [("long", 0.25, 0.25 * 60_000.0), ("short", 0.04, 0.04 * 61_000.0),
                   ("long", 1.0, 59_900.0)]
    assert all(x.symbol == "BTC/USDT:USDT" for x in ev.liquidations())


@pytest.mark.parametrize("venue", VENUES)
async def test_a_dropped_socket_reconnects_backfills_missed_bars_and_marks_the_liquidation_gap(venue, fake, live):
    feed, ev = await live(venue)
    clock = FakeClock(fake)
    tape = fake.tape(venue, "BTC")
    i = tape_index(fake, venue, floor_minute(fake.now_ms))
    await fake.push(venue, CANDLE_TOPIC[venue], candle_frame(venue, fake, i))
    await ev.until(lambda s: len(ev.bars()) >= 1)

    dropped_at = clock()
    await fake.drop(venue)
    await ev.until(lambda s: Health.RECONNECTING in ev.health())
    clock.advance(4 * 60)  # four minutes pass while the socket is down
    await fake.wait_subscribed(venue, CANDLE_TOPIC[venue], count=2)
    await fake.wait_subscribed(venue, LIQ_TOPIC[venue], count=2)
    j = tape_index(fake, venue, floor_minute(fake.now_ms))
    assert j == i + 4
    await fake.push(venue, CANDLE_TOPIC[venue], candle_frame(venue, fake, j))
    await ev.until(lambda s: any(b.bar.time[0] * 1000 == tape.t[j] for b in ev.bars(closed=False)))

    closed = ev.bars(closed=True)
    times = [int(b.bar.time[0]) * 1000 for b in closed]
    assert times == [int(t) for t in tape.t[i:j]], "missed bars backfilled over REST, in order, once each"
    for b in closed:  # the REST values, not the half-seen socket candle
        k = tape_index(fake, venue, int(b.bar.time[0]) * 1000)
        assert b.bar.close[0] == pytest.approx(tape.close[k]) and b.bar.volume[0] == pytest.approx(tape.volume[k])
    assert ev.health()[-1] is Health.LIVE
    liq_gaps = [g for g in feed.gaps if g.kind == "liquidations"]
    assert len(liq_gaps) == 1
    assert liq_gaps[0].symbol == "BTC/USDT:USDT"
    assert int(dropped_at) <= liq_gaps[0].start < liq_gaps[0].end <= clock() + 1

    # liquidations flow again after the reconnect
    t = fake.now_ms
    frame = {BINANCE: binance_force_order("BTCUSDT", "SELL", 1.0, 60_000.0, t),
             BYBIT: bybit_all_liquidation("BTCUSDT", [("Buy", 1.0, 60_000.0, t)]),
             OKX: okx_liquidation_orders({"BTC-USDT-SWAP": [("sell", "long", 100, 60_000.0, t)]})}[venue]
    await fake.push(venue, LIQ_TOPIC[venue], frame)
    await ev.until(lambda s: len(ev.liquidations()) >= 1)
    assert ev.liquidations()[0].side == "long" and ev.liquidations()[0].base == pytest.approx(1.0)


async def test_a_quiet_feed_turns_stale_then_live_again(fake, live):
    feed, ev = await live(BYBIT, stale_after_s=30, watchdog_s=0.02)
    i = tape_index(fake, BYBIT, floor_minute(fake.now_ms))
    await fake.push(BYBIT, CANDLE_TOPIC[BYBIT], candle_frame(BYBIT, fake, i))
    await ev.until(lambda s: len(ev.bars()) == 1 and Health.LIVE in ev.health())
    FakeClock(fake).advance(45)
    await ev.until(lambda s: ev.health()[-1] is Health.STALE)
    assert feed.health is Health.STALE and "no update" in feed.health_reason
    await fake.push(BYBIT, CANDLE_TOPIC[BYBIT], candle_frame(BYBIT, fake, i))
    await ev.until(lambda s: ev.health()[-1] is Health.LIVE and len(ev.bars()) == 2)


@pytest.mark.parametrize("venue", VENUES)
async def test_live_bars_carry_polled_open_interest_in_usd(venue, fake, live):
    feed, ev = await live(venue, oi_poll_s=0.05)
    tape = fake.tape(venue, "BTC")
    k = int(np.searchsorted(tape.oi_t, fake.now_ms, side="right")) - 1
    price = tape.close_at(fake.now_ms)
    i = tape_index(fake, venue, floor_minute(fake.now_ms))
    expected = {BINANCE: [tape.oi_base[k] * tape.close[i - 1], tape.oi_base[k] * tape.close[i]],  # base × last price
                BYBIT: [tape.oi_base[k] * 1.001 * price],  # the ticker's live value, not the 5-min bucket
                OKX: [tape.oi_base[k] * price]}[venue]
    await fake.wait_until_called(venue, "ticker" if venue == BYBIT else "open_interest")
    for _ in range(100):  # the first poll's answer may land just after a frame: push until a bar has it
        n = len(ev.bars())
        await fake.push(venue, CANDLE_TOPIC[venue], candle_frame(venue, fake, i))
        await ev.until(lambda s, n=n: len(ev.bars()) > n)
        if np.isfinite(ev.bars()[-1].bar.oi_usd[0]):
            break
    bar = ev.bars()[-1]
    assert any(bar.bar.oi_usd[0] == pytest.approx(x, rel=1e-6) for x in expected)
    assert np.isfinite(bar.bar.funding_rate[0])


async def test_streaming_an_unknown_symbol_fails_with_one_line(fake, make_feed):
    feed = make_feed(OKX)
    with pytest.raises(UnknownSymbol, match="^OKX has no perpetual NOPE/USDT:USDT"):
        async for _ in feed.stream("NOPE"):
            pass


async def test_a_row_that_cannot_be_read_is_skipped_and_the_rest_delivered(fake, live):
    feed, ev = await live(BYBIT)
    t = fake.now_ms
    frame = bybit_all_liquidation("BTCUSDT", [("Hold", 0.3, 60_900.0, t), ("Sell", 0.4, 61_000.0, t + 1)])
    frame["data"].insert(0, {"T": t, "s": "BTCUSDT"})  # no side, size or price at all
    await fake.push(BYBIT, LIQ_TOPIC[BYBIT], frame)
    await ev.until(lambda s: len(ev.liquidations()) >= 1)
    assert [(x.side, x.base) for x in ev.liquidations()] == [("short", 0.4)]


async def test_rate_limited_polls_show_as_delayed_then_recover(fake, live):
    from fake_exchange import Fault

    fake.inject("bybit:ticker", Fault.http(429), Fault.http(429))
    feed, ev = await live(BYBIT, oi_poll_s=0.05, max_retries=0)
    await ev.until(lambda s: Health.DELAYED in ev.health())
    assert "Too many visits" in next(e.reason for e in ev.seen if isinstance(e, HealthChange)
                                      and e.state is Health.DELAYED)
    await ev.until(lambda s: ev.health()[-1] is Health.LIVE and len(fake.calls(BYBIT, "ticker")) >= 3)


async def test_closing_the_feed_ends_its_streams(fake, live):
    feed, ev = await live(OKX)
    await feed.close()
    await asyncio.wait_for(ev.task, 5)
    assert ev.error is None
