"""One coin summed across exchanges as a feed the service can open: combined history, per-venue shares that
add up, live minutes merged across venues, and one venue's outage shown without stopping the others."""

from __future__ import annotations

import numpy as np
import pytest
from fake_exchange import BINANCE, BYBIT, IDS, OKX, VENUES, Fault, binance_force_order, floor_minute, now_s
from test_exchange_stream import CANDLE_TOPIC, LIQ_TOPIC, Events, candle_frame

from engine.feeds.aggregate import AggregateFeed, combine
from engine.feeds.base import BarUpdate, FeedError, Health, HealthChange, Liquidation, UnknownSymbol
from engine.feeds.exchange import ExchangeFeed
from engine.service import open_feed

COLUMNS = ("time", "open", "high", "low", "close", "volume", "taker_buy_volume", "oi_usd", "funding_rate")


def same_bars(a, b) -> None:
    assert len(a) == len(b)
    for col in COLUMNS:
        np.testing.assert_allclose(getattr(a, col), getattr(b, col), rtol=1e-12, err_msg=col)


async def test_history_across_three_venues_is_the_combination_of_each(fake, make_feed):
    feeds = {v: make_feed(v) for v in VENUES}
    agg = AggregateFeed(list(feeds.values()))
    since = now_s(fake) - 3 * 3600
    bars = await agg.history("btc", since=since)
    each = {v: await f.history("BTC", since=since) for v, f in feeds.items()}
    same_bars(bars, combine(each).bars)
    assert len(bars) == len(each[BINANCE]) >= 179  # 3 h of closed minutes

    markets = await agg.markets()
    assert [(m.exchange, m.symbol) for m in markets[:2]] == [("all", "BTC/USDT:USDT"), ("all", "ETH/USDT:USDT")]
    ref = AggregateFeed(list(feeds.values()), reference=OKX)  # one venue's price, everyone's volume
    priced = await ref.history("BTC", since=since)
    np.testing.assert_array_equal(priced.close, each[OKX].close)
    np.testing.assert_allclose(priced.volume, bars.volume)


async def test_the_per_venue_breakdown_adds_up_to_the_total(fake, make_feed):
    agg = AggregateFeed([make_feed(v) for v in VENUES])
    bars = await agg.history("BTC", since=now_s(fake) - 2 * 3600)
    b = agg.breakdown("BTC")
    venues = b["venues"]
    assert set(venues) == set(VENUES)
    assert sum(v["oi_usd"] for v in venues.values()) == pytest.approx(bars.oi_usd[-1], rel=1e-12)
    assert sum(v["oi_share"] for v in venues.values()) == pytest.approx(1.0)
    assert sum(v["volume_share"] for v in venues.values()) == pytest.approx(1.0)
    assert b["volume_24h"] == pytest.approx(bars.volume.sum())  # 2 h of history: all of it is in the day
    for venue, part in venues.items():  # each venue's own newest close, not the blended one
        tape = fake.tape(venue, "BTC")
        assert part["price"] == pytest.approx(tape.close[np.searchsorted(tape.t, bars.time[-1] * 1000)])
    assert b["skipped"] == {}


async def test_unknown_coin_and_bad_specs_are_one_line(fake, make_feed):
    agg = AggregateFeed([make_feed(BYBIT), make_feed(OKX)])
    with pytest.raises(UnknownSymbol, match=r"^none of bybit, okx lists a perpetual DOGE/USDT:USDT") as info:
        await agg.history("DOGE")
    assert "\n" not in str(info.value)
    with pytest.raises(FeedError, match="unknown exchange 'kraken'"):
        open_feed("bybit+kraken")
    with pytest.raises(FeedError, match="each exchange once"):
        open_feed("okx+okx")
    for spec, venues in (("binance+okx", (BINANCE, OKX)), ("all", VENUES)):
        feed = open_feed(spec)
        assert isinstance(feed, AggregateFeed) and feed.venues == venues and feed.exchange == "all"
        assert all(isinstance(f, ExchangeFeed) for f in feed.feeds)
        await feed.close()


async def test_a_venue_down_for_history_is_left_out_and_named(fake, make_feed):
    feeds = [make_feed(BINANCE), make_feed(BYBIT), make_feed(OKX, max_retries=1)]
    fake.inject("okx:klines", *[Fault.http(503)] * 20)
    agg = AggregateFeed(feeds)
    since = now_s(fake) - 3600
    bars = await agg.history("BTC", since=since)
    both = combine({v: await f.history("BTC", since=since) for v, f in zip((BINANCE, BYBIT), feeds, strict=False)})
    same_bars(bars, both.bars)
    b = agg.breakdown("BTC")
    assert set(b["venues"]) == {BINANCE, BYBIT}
    assert b["skipped"][OKX].startswith("okx")


async def test_live_minutes_merge_across_venues_and_an_outage_only_degrades_health(fake, make_feed):
    agg = AggregateFeed([make_feed(v, oi_poll_s=3600, funding_poll_s=3600) for v in VENUES], grace_s=30)
    await agg.history("BTC", since=now_s(fake) - 3600)
    ev = Events(agg.stream("BTC"))
    try:
        for v in VENUES:
            await fake.wait_subscribed(v, CANDLE_TOPIC[v])
            await fake.wait_subscribed(v, LIQ_TOPIC[v])
        t0 = floor_minute(fake.now_ms)  # the forming minute
        idx = {v: int(np.searchsorted(fake.tape(v, "BTC").t, t0)) for v in VENUES}
        for step in (0, 1):  # minute t0 forms, then t0+1 starts and closes it on every venue
            for v in VENUES:
                await fake.push(v, CANDLE_TOPIC[v], candle_frame(v, fake, idx[v] + step))
        # handed out as soon as all three closed it: well inside the 30 s grace
        await ev.until(lambda s: len(ev.bars(closed=True)) >= 1, within=5)
        first = ev.bars(closed=True)[0].bar
        assert int(first.time[0]) == t0 // 1000
        want = sum(fake.tape(v, "BTC").volume[idx[v]] for v in VENUES)
        assert float(first.volume[0]) == pytest.approx(want, rel=1e-3)

        await fake.drop(OKX)  # OKX's socket goes; Binance and Bybit keep serving
        await ev.until(lambda s: any(isinstance(e, HealthChange) and e.reason.startswith("okx") for e in s))
        change = [e for e in ev.seen if isinstance(e, HealthChange)][-1]
        assert change.state is Health.DELAYED and "reconnecting" in change.reason
        for v in (BINANCE, BYBIT):
            await fake.push(v, CANDLE_TOPIC[v], candle_frame(v, fake, idx[v] + 2))
        await ev.until(lambda s: len(ev.bars(closed=True)) >= 2, within=5)  # no waiting on OKX
        second = ev.bars(closed=True)[1].bar
        want = sum(fake.tape(v, "BTC").volume[idx[v] + 1] for v in (BINANCE, BYBIT))
        assert float(second.volume[0]) == pytest.approx(want, rel=1e-3)

        price = float(fake.tape(BINANCE, "BTC").close[idx[BINANCE]])
        await fake.push(BINANCE, LIQ_TOPIC[BINANCE],
                        binance_force_order(IDS[BINANCE]["BTC"], "SELL", 0.5, price, t0 + 61_000))
        await ev.until(lambda s: any(isinstance(e, Liquidation) for e in s))
        liq = next(e for e in ev.seen if isinstance(e, Liquidation))
        assert (liq.exchange, liq.side, liq.base) == (BINANCE, "long", 0.5)
        assert all(isinstance(e, BarUpdate | HealthChange | Liquidation) for e in ev.seen)
    finally:
        await ev.close()


async def test_a_silent_venue_holds_a_minute_back_only_for_the_grace_delay(fake, make_feed):
    agg = AggregateFeed([make_feed(v, oi_poll_s=3600, funding_poll_s=3600) for v in VENUES], grace_s=0.3)
    await agg.history("BTC", since=now_s(fake) - 3600)
    ev = Events(agg.stream("BTC"))
    try:
        for v in VENUES:
            await fake.wait_subscribed(v, CANDLE_TOPIC[v])
        idx = {v: int(np.searchsorted(fake.tape(v, "BTC").t, floor_minute(fake.now_ms))) for v in VENUES}
        for step in (0, 1):
            for v in (BINANCE, BYBIT):  # OKX is connected but says nothing
                await fake.push(v, CANDLE_TOPIC[v], candle_frame(v, fake, idx[v] + step))
        await ev.until(lambda s: len(ev.bars(closed=True)) >= 1, within=5)
        want = sum(fake.tape(v, "BTC").volume[idx[v]] for v in (BINANCE, BYBIT))
        assert float(ev.bars(closed=True)[0].bar.volume[0]) == pytest.approx(want, rel=1e-3)
        for step in (0, 1):  # OKX's bar for that minute turns up after it was handed out: counted, not lost silently
            await fake.push(OKX, CANDLE_TOPIC[OKX], candle_frame(OKX, fake, idx[OKX] + step))
        await ev.until(lambda s: agg.late_bars == 1 or len(ev.bars(closed=True)) > 1, within=5)
        assert agg.late_bars == 1 and len(ev.bars(closed=True)) == 1
    finally:
        await ev.close()


async def test_the_service_serves_the_summed_market_with_its_breakdown(fake, make_feed):
    from engine.service import Hub

    agg = AggregateFeed([make_feed(v, oi_poll_s=3600, funding_poll_s=3600) for v in (BINANCE, OKX)])
    hub = Hub(agg, symbols=["BTC"], history_days=0.05)
    await hub.start()
    try:
        svc = hub.get("BTC")
        assert svc.market.key == "all:BTC/USDT:USDT"
        shares = svc.breakdown()
        assert shares is not None and set(shares["venues"]) == {BINANCE, OKX}
        assert shares["oi_usd"] == pytest.approx(svc.oi_usd(), rel=1e-12)
    finally:
        await hub.stop()


async def test_the_sum_counts_bybit_once_and_says_which_field_each_venue_gave(fake, make_feed):
    """Bybit serves open interest counted on both sides; the sum across venues must add one side of each."""
    agg = AggregateFeed([make_feed(v) for v in VENUES])
    bars = await agg.history("BTC", since=now_s(fake) - 3600)
    venues = agg.breakdown("BTC")["venues"]
    close_ms = int(bars.time[-1]) * 1000 + 60_000
    for venue in VENUES:  # the tape holds one side; Bybit's answers carry twice that
        tape = fake.tape(venue, "BTC")
        k = int(np.searchsorted(tape.oi_t, close_ms, side="right")) - 1
        assert venues[venue]["oi_usd"] == pytest.approx(tape.oi_base[k] * tape.close_at(int(tape.oi_t[k])), rel=1e-9)
    sources = agg.oi_source("BTC")
    assert set(sources) == set(VENUES) and all(s["counts"] == "one side" for s in sources.values())
    assert "÷ 2" in sources[BYBIT]["history"] and "sumOpenInterestValue" in sources[BINANCE]["history"]
