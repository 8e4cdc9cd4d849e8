"""The live service against a scripted feed: history loads, live bars flow to subscribers, views agree
with a batch estimate over the same bars, faults show up as health instead of killing the stream."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.feeds.base import BarUpdate, FeedError, Health, HealthChange, Liquidation, Market, UnknownSymbol
from engine.model import ModelParams, estimate
from engine.model.synthetic import synthetic_bars
from engine.service import Hub, open_feed

N_HISTORY = 3000
N_LIVE = 40


class ScriptedFeed:
    """A Feed that replays synthetic bars: history first, then each live bar as two forming updates and
    a close. ``fail_after`` makes the stream raise once, like a dropped exchange socket."""

    exchange = "scripted"
    timeframe = 60

    def __init__(self, fail_after: int | None = None) -> None:
        self.all = synthetic_bars(N_HISTORY + N_LIVE, seed=11)
        self.fail_after = fail_after
        self.released = asyncio.Event()
        self.streams = 0
        self.closed = False

    async def markets(self) -> list[Market]:
        return [Market("scripted", "BTC/USDT:USDT", "BTC"), Market("scripted", "ETH/USDT:USDT", "ETH")]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None):
        return self.all.slice(0, N_HISTORY)

    async def stream(self, symbol: str):
        self.streams += 1
        await self.released.wait()
        yield HealthChange(Health.LIVE, "")
        for j in range(N_HISTORY, N_HISTORY + N_LIVE):
            if self.fail_after is not None and j == N_HISTORY + self.fail_after and self.streams == 1:
                raise ConnectionError("socket dropped")
            bar = self.all.slice(j, j + 1)
            half = bar.with_columns(close=bar.open, high=np.maximum(bar.open, bar.open), low=np.minimum(bar.open, bar.open))
            yield BarUpdate(half, closed=False)
            yield BarUpdate(bar, closed=False)
            yield BarUpdate(bar, closed=True)
            if j == N_HISTORY + 5:
                yield Liquidation(int(bar.time[0]) * 1000, "scripted", symbol, "long", float(bar.low[0]), 1.0, float(bar.low[0]))
            await asyncio.sleep(0)
        await asyncio.Event().wait()  # a live stream never ends

    async def close(self) -> None:
        self.closed = True


async def _drain_until(sub, kind: str, count: int, within: float = 10.0):
    seen = []
    async with asyncio.timeout(within):
        async for ev in sub:
            seen.append(ev)
            if sum(e.kind == kind for e in seen) >= count:
                return seen
    return seen


async def test_live_bars_reach_subscribers_and_match_batch():
    feed = ScriptedFeed()
    hub = Hub(feed, symbols=["BTC"], history_days=0)
    await hub.start()
    try:
        svc = hub.get("BTC/USDT:USDT")
        assert hub.get("BTC") is svc and hub.get("scripted:BTC/USDT:USDT") is svc
        sub = svc.subscribe(maxsize=10_000)
        feed.released.set()
        events = await _drain_until(sub, "realised", N_LIVE)
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        kinds = {e.kind for e in events}
        assert {"bar", "realised", "book", "liquidation"} <= kinds
        assert svc.health == Health.LIVE
        # the live book equals a batch estimate over the same closed bars
        batch = estimate(feed.all, svc.params).book()
        live = svc.live_book()
        assert live.total() == pytest.approx(batch.total(), rel=1e-9)
        # realised per 1m bar equals the batch's
        r = svc.realised("1m")
        assert np.allclose(r.long_usd, estimate(feed.all, svc.params).realised.long_usd, rtol=1e-9, atol=1e-6)
        # the heatmap's last column is the live book, earlier columns are history
        hm = svc.heatmap("15m", bins=80)
        long_now, short_now = hm.total()
        lb, sb = live.binned(hm.edges)
        assert np.allclose(long_now[-1], lb.sum(axis=1)) and np.allclose(short_now[-1], sb.sum(axis=1))
        assert len(hm.times) == len(svc.candles("15m"))
        assert svc.liquidations()[0].side == "long"
        info = svc.model_info()
        assert info["estimate"] is True and info["seed_mode"] in ("oi", "hybrid", "volume")
    finally:
        await hub.stop()
    assert feed.closed


async def test_a_dropped_stream_shows_reconnecting_then_recovers():
    feed = ScriptedFeed(fail_after=3)
    hub = Hub(feed, symbols=["BTC"], history_days=0)
    await hub.start()
    try:
        svc = hub.get("BTC")
        sub = svc.subscribe(maxsize=10_000)
        feed.released.set()
        events = await _drain_until(sub, "health", 2, within=15)
        states = [e.data["state"] for e in events if e.kind == "health"]
        assert "reconnecting" in states
        assert states[-1] == "live"  # the stream came back
        assert feed.streams >= 2
    finally:
        await hub.stop()


async def test_slow_subscriber_loses_oldest_events_but_never_blocks():
    feed = ScriptedFeed()
    hub = Hub(feed, symbols=["BTC"], history_days=0)
    await hub.start()
    try:
        svc = hub.get("BTC")
        slow = svc.subscribe(maxsize=4)
        fast = svc.subscribe(maxsize=10_000)
        feed.released.set()
        await _drain_until(fast, "realised", N_LIVE)
        assert slow.dropped > 0
        first = await asyncio.wait_for(slow.__anext__(), 1)
        assert first.seq > 4  # the oldest were dropped, the newest kept
        slow.close()
        assert slow not in svc._subs
    finally:
        await hub.stop()


async def test_unknown_symbols_and_feeds_are_one_line_errors():
    feed = ScriptedFeed()
    with pytest.raises(UnknownSymbol, match="unknown symbol 'DOGE"):
        await Hub(feed, symbols=["DOGE/USDT:USDT"]).start()
    hub = Hub(feed, symbols=["ETH"], history_days=0)
    await hub.start()
    try:
        with pytest.raises(UnknownSymbol):
            hub.get("XRP")
    finally:
        await hub.stop()
    with pytest.raises(FeedError, match="unknown feed"):
        open_feed("kraken")
    with pytest.raises(FeedError, match="needs a path"):
        open_feed("file:")


def test_default_params_name_the_margin_table_per_coin():
    p = ModelParams(coin="ETH")
    assert "ETH" in p.describe()["margin_table"]


@pytest.mark.parametrize("tf", ["5m", "1m"])
async def test_heatmap_columns_added_live_equal_a_fresh_batch(tf):
    """New closed columns come from book snapshots, not a recompute; they must match the batch."""
    from engine.service import MarketService

    feed = ScriptedFeed()
    svc = MarketService(feed, (await feed.markets())[0], ModelParams(), history_days=0)
    await svc.load()
    first = svc.heatmap(tf, bins=60, columns=1500)  # the API serves at most 2,000 columns
    est_before = svc._estimate
    for j in range(N_HISTORY, N_HISTORY + N_LIVE):
        svc.ingest(BarUpdate(feed.all.slice(j, j + 1), closed=True))
        svc.heatmap(tf, bins=60, price_low=float(first.edges[0]), price_high=float(first.edges[-1]), columns=1500)
    live = svc.heatmap(tf, bins=60, price_low=float(first.edges[0]), price_high=float(first.edges[-1]), columns=1500)
    assert svc._books, "no 5-minute snapshots were taken"
    assert svc._estimate is est_before, "new columns should not need a batch recompute"
    closed_times = live.times[live.times <= int(feed.all.close_time[-1])]
    fresh = estimate(feed.all, svc.params).heatmap(times=closed_times, edges=live.edges)
    n = len(closed_times)
    assert np.allclose(live.long_usd[:n], fresh.long_usd, rtol=1e-6, atol=1e-3)
    assert np.allclose(live.short_usd[:n], fresh.short_usd, rtol=1e-6, atol=1e-3)
    # candles include every closed bar once, bucketed
    c = svc.candles(tf)
    assert c.close[-1] == feed.all.close[-1] and np.all(np.diff(c.time) == c.timeframe)


async def test_a_live_charts_two_column_refreshes_keep_the_full_heatmap_off_the_batch_path():
    """The server's live fan-out asks for the last two columns of the grid a full chart (or the REST
    heatmap) shows. Those small requests must not make the next full heatmap fall back to a batch
    recompute, and the full heatmap must still equal the batch."""
    from engine.service import MarketService

    feed = ScriptedFeed()
    svc = MarketService(feed, (await feed.markets())[0], ModelParams(), history_days=0)
    await svc.load()
    first = svc.heatmap("5m", bins=60)
    lo, hi = float(first.edges[0]), float(first.edges[-1])
    est_before = svc._estimate
    for j in range(N_HISTORY, N_HISTORY + N_LIVE):
        svc.ingest(BarUpdate(feed.all.slice(j, j + 1), closed=True))
        svc.heatmap("5m", bins=60, price_low=lo, price_high=hi, columns=2)
        if j % 7 == 0:
            svc.heatmap("5m", bins=60, price_low=lo, price_high=hi)
    live = svc.heatmap("5m", bins=60, price_low=lo, price_high=hi)
    assert svc._estimate is est_before, "the full heatmap fell back to a batch recompute"
    closed_times = live.times[live.times <= int(feed.all.close_time[-1])]
    fresh = estimate(feed.all, svc.params).heatmap(times=closed_times, edges=live.edges)
    n = len(closed_times)
    assert n > len(first.times), "the closed candles since the first view are columns too"
    assert np.allclose(live.long_usd[:n], fresh.long_usd, rtol=1e-6, atol=1e-3)
    assert np.allclose(live.short_usd[:n], fresh.short_usd, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("tf", ["1m", "5m"])
async def test_candles_with_a_forming_bar_are_the_whole_history_merged_then_windowed(tf):
    """The forming bar is merged only into the candles a request can get back (the live views ask for
    the last few every update); every window must equal the whole history merged, then cut."""
    from engine.service import MarketService, _merge_forming, _window

    feed = ScriptedFeed()
    svc = MarketService(feed, (await feed.markets())[0], ModelParams(), history_days=0)
    await svc.load()
    for j in range(N_HISTORY, N_HISTORY + 7):  # the 5m candle is part-way through its bars
        svc.ingest(BarUpdate(feed.all.slice(j, j + 1), closed=True))
    bar = feed.all.slice(N_HISTORY + 7, N_HISTORY + 8)
    svc.ingest(BarUpdate(bar.with_columns(close=bar.open), closed=False))
    whole = _merge_forming(svc.bars.resample(tf), svc._forming.resample(tf))
    last = int(whole.time[-1])
    for since, limit in [(None, 3), (None, 1), (None, 300), (None, None), (last, 2), (last - 600, 5),
                         (last + 60, 3), (int(whole.time[0]), None)]:
        got, want = svc.candles(tf, since=since, limit=limit), _window(whole, since, None, limit)
        np.testing.assert_array_equal(got.time, want.time)
        for col in ("open", "high", "low", "close", "volume", "oi_usd"):
            np.testing.assert_array_equal(getattr(got, col), getattr(want, col))
    assert float(svc.candles(tf, limit=1).close[-1]) == float(bar.open[0])  # the forming bar is in
