"""Loading in two passes (issue 14: the map took seconds to appear — "show the recent days first, backfill
the rest"). The first pass publishes the map from the recent window; the backfill merges the rest of the
history into the same state, which must then equal a one-pass load: on real Binance candles with bars
closing while the backfill is in flight, and on the simulated market the TUI opens by default."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from history_feeds import RealBarsFeed, real_bars

import engine.service as service
from engine.feeds.base import BarUpdate
from engine.feeds.demo import DemoFeed
from engine.model import ModelParams
from engine.service import RECENT_DAYS, Hub, MarketService

DAY = 86_400


def assert_same_state(two: MarketService, one: MarketService, lo: float, hi: float) -> None:
    """Everything a face reads: bars, candles, heatmap columns, realised, the live book, zones."""
    np.testing.assert_array_equal(two.bars.time, one.bars.time)
    np.testing.assert_array_equal(two.bars.close, one.bars.close)
    for tf in ("5m", "1h", "1d"):
        a = two.heatmap(tf, bins=80, price_low=lo, price_high=hi, columns=2000)
        b = one.heatmap(tf, bins=80, price_low=lo, price_high=hi, columns=2000)
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_allclose(a.long_usd, b.long_usd, rtol=1e-5, atol=1e-2)
        np.testing.assert_allclose(a.short_usd, b.short_usd, rtol=1e-5, atol=1e-2)
        ra, rb = two.realised(tf), one.realised(tf)
        np.testing.assert_array_equal(ra.time, rb.time)
        np.testing.assert_allclose(ra.long_usd, rb.long_usd, rtol=1e-6, atol=1e-3)
    edges = np.linspace(lo, hi, 201)
    for x, y in zip(two.live_book().binned(edges), one.live_book().binned(edges), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-2)
    za = [(z.side, round(z.price_low, 2), round(z.price_high, 2), z.grade) for z in two.zones()]
    zb = [(z.side, round(z.price_low, 2), round(z.price_high, 2), z.grade) for z in one.zones()]
    assert za == zb and za


async def test_recent_days_publish_first_and_the_backfill_equals_one_pass_on_real_candles(shared_data, monkeypatch):
    bars = real_bars(shared_data)
    n = 60 * 288  # 60 days of 5m bars are history; what follows closes live
    feed = RealBarsFeed(bars, n, hold=True)
    market = (await feed.markets())[0]
    two = MarketService(feed, market, ModelParams(), history_days=30)
    events = two.subscribe()
    await asyncio.wait_for(two.load(), 60)

    # the first pass: the recent window only, and every view works on it
    assert two.load_phase == "recent" and two.loaded.is_set() and not two.complete.is_set()
    assert two.health_info()["history"]["phase"] == "recent"
    span = int(two.bars.close_time[-1]) - int(two.bars.time[0])
    assert span <= RECENT_DAYS * DAY + 300, "the first pass fetched more than the recent window"
    first_hourly = two.heatmap("1h", columns=2000)
    assert len(first_hourly.times) <= RECENT_DAYS * 24 + 2
    assert two.zones(), "no zones from the recent pass"

    # bars close while the older history is on its way ...
    k = n
    for _ in range(6):
        two.ingest(BarUpdate(bars.slice(k, k + 1), closed=True))
        k += 1
    # ... and while the whole history's estimate runs in its thread
    loop = asyncio.get_running_loop()
    real_estimate = service.estimate
    during = []

    def estimate_while_bars_close(b, params):
        if len(b) > RECENT_DAYS * 288 + 50:  # the backfill's estimate, not a view's
            done = threading.Event()

            def close_three():
                nonlocal k
                for _ in range(3):
                    two.ingest(BarUpdate(bars.slice(k, k + 1), closed=True))
                    k += 1
                during.append(3)
                done.set()

            loop.call_soon_threadsafe(close_three)
            assert done.wait(30)
        return real_estimate(b, params)

    monkeypatch.setattr(service, "estimate", estimate_while_bars_close)
    assert feed.hold is not None
    feed.hold.set()
    await asyncio.wait_for(two.complete.wait(), 60)
    monkeypatch.setattr(service, "estimate", real_estimate)
    assert during, "no bar closed during the backfill's estimate"
    assert two.load_phase == "complete" and two.health_info()["history"]["phase"] == "complete"
    assert len(two.heatmap("1h", columns=2000).times) >= 30 * 24
    kinds = []
    while not events._queue.empty():
        kinds.append(events._queue.get_nowait().kind)  # type: ignore[union-attr]
    assert "history" in kinds, "the faces were not told that the history changed"

    # the same bars through a one-pass load, then the same live bars
    one_feed = RealBarsFeed(bars, n)
    one = MarketService(one_feed, market, ModelParams(), history_days=30)
    await one.load(recent_days=0)
    assert one.load_phase == "complete" and len(one_feed.requests) == 1
    for j in range(n, k):
        one.ingest(BarUpdate(bars.slice(j, j + 1), closed=True))
    price = float(bars.close[k - 1])
    assert_same_state(two, one, price * 0.8, price * 1.2)


async def test_a_history_no_longer_than_the_window_loads_in_one_pass(shared_data):
    bars = real_bars(shared_data)
    feed = RealBarsFeed(bars, 20 * 288)
    svc = MarketService(feed, (await feed.markets())[0], ModelParams(), history_days=RECENT_DAYS)
    await svc.load()
    assert svc.load_phase == "complete" and svc.complete.is_set() and len(feed.requests) == 1


async def test_the_demo_market_a_face_shows_loads_first_and_its_recent_days_first():
    """The TUI's default: the simulated market with 30 days of history. The face's market is ready
    while the others have not started, its first views stand on the recent days only, and after the
    backfill it equals a one-pass load of the same simulation."""
    now = 1_780_000_000.0

    def demo() -> DemoFeed:
        return DemoFeed(seed=11, history_days=30, now=now, clock=lambda: 0.0)  # a simulated clock standing still

    hub = Hub(demo(), history_days=30)
    try:
        await asyncio.wait_for(hub.start(first="ETH", wait_all=False, defer_others=True), 120)
        eth, others = hub.get("ETH"), [s for s in hub.services.values() if s.market.coin != "ETH"]
        assert eth.load_phase == "recent"
        assert not any(s.loaded.is_set() for s in others), "the other markets loaded before the face's"
        assert len(eth.heatmap("1h", columns=2000).times) <= RECENT_DAYS * 24 + 2
        await asyncio.wait_for(eth.complete.wait(), 120)
        assert len(eth.heatmap("1h", columns=2000).times) >= 29 * 24
        hub.load_others()
        await asyncio.wait_for(hub.ready(), 120)
    finally:
        await hub.stop()
    one = MarketService(demo(), eth.market, eth.params, history_days=30)
    await one.load(recent_days=0)
    if eth._forming is not None:  # the hub's stream ticked the forming minute in; the same here
        one.ingest(BarUpdate(eth._forming, closed=False))
    price = eth.last_price
    assert_same_state(eth, one, price * 0.8, price * 1.25)


@pytest.mark.parametrize("fail_times", [1])
async def test_a_failed_backfill_says_so_and_retries(shared_data, monkeypatch, fail_times):
    bars = real_bars(shared_data)
    feed = RealBarsFeed(bars, 40 * 288)
    calls = {"n": 0}
    real_history = feed.history

    async def flaky(symbol, since=None, until=None):
        if until is not None and calls["n"] < fail_times:
            calls["n"] += 1
            raise service.FeedError("exchange busy (429)")
        return await real_history(symbol, since, until)

    feed.history = flaky  # type: ignore[method-assign]
    monkeypatch.setattr(service, "BACKFILL_RETRY_S", 0.05)
    svc = MarketService(feed, (await feed.markets())[0], ModelParams(), history_days=30)
    await svc.load()
    seen = []
    sub = svc.subscribe()

    async def watch():
        async for ev in sub:
            if ev.kind == "health" and ev.data["history"].get("error"):
                seen.append(ev.data["history"]["error"])

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(svc.complete.wait(), 60)
    watcher.cancel()
    assert seen and "exchange busy (429)" in seen[0] and "backfill failed" in seen[0]
    assert "error" not in svc.history_info() and svc.load_phase == "complete"
