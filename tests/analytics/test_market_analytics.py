"""engine/analytics.py on a real market service (Hub over a scripted feed): the one place both faces get
ranked zones, risk, sessions and alerts from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiohttp import web

from engine.analytics import HYSTERESIS, AlertSettings, RankedZone, _order_with_hysteresis
from engine.feeds.base import BarUpdate, FeedEvent, Market
from engine.model import Bars
from engine.model.risk import Position, position_liquidation_price
from engine.model.synthetic import synthetic_bars
from engine.service import Hub

N_HISTORY = 3 * 1440
START = 1_767_225_600  # 2026-01-01 00:00 UTC


class Feed:
    timeframe = 60

    def __init__(self, exchange: str = "test") -> None:
        self.exchange = exchange
        self.bars = {"BTC/USDT:USDT": synthetic_bars(N_HISTORY + 300, seed=5, start=START, price=90_000.0),
                     "ETH/USDT:USDT": synthetic_bars(N_HISTORY + 300, seed=6, start=START, price=3_000.0)}
        self.next = N_HISTORY
        self.queues: dict[str, asyncio.Queue[FeedEvent]] = {s: asyncio.Queue() for s in self.bars}

    async def markets(self) -> list[Market]:
        return [Market(self.exchange, s, s.split("/")[0]) for s in self.bars]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        return self.bars[symbol].slice(0, N_HISTORY)

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        while True:
            yield await self.queues[symbol].get()

    async def close(self) -> None:
        pass

    def push(self, closed: bool = True, frac: float = 1.0) -> Bars:
        bar = self.bars["BTC/USDT:USDT"].slice(self.next, self.next + 1)
        if not closed:
            c = bar.open + (bar.close - bar.open) * frac
            bar = bar.with_columns(close=c, high=np.maximum(bar.open, c), low=np.minimum(bar.open, c))
        else:
            self.next += 1
        self.queues["BTC/USDT:USDT"].put_nowait(BarUpdate(bar, closed=closed))
        return bar


async def until(predicate, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling a plain predicate on purpose
            await asyncio.sleep(0.02)


# ---- the order ---------------------------------------------------------------------------------------
def test_a_fresh_order_is_the_score_order():
    assert _order_with_hysteresis([], {1: 5.0, 2: 9.0, 3: 1.0}, HYSTERESIS) == [2, 1, 3]


def test_small_changes_keep_the_order_large_ones_move_a_zone_up():
    prev = [1, 2, 3]
    assert _order_with_hysteresis(prev, {1: 10.0, 2: 11.0, 3: 3.0}, 0.25) == [1, 2, 3]  # 10% more: stays
    assert _order_with_hysteresis(prev, {1: 10.0, 2: 13.0, 3: 3.0}, 0.25) == [2, 1, 3]  # 30% more: overtakes
    assert _order_with_hysteresis(prev, {1: 10.0, 2: 9.0, 3: 40.0}, 0.25) == [3, 1, 2]  # climbs several places
    # a new zone takes its place by score; a vanished one leaves
    assert _order_with_hysteresis(prev, {1: 10.0, 3: 3.0, 4: 5.0}, 0.25) == [1, 4, 3]


def test_ranked_zones_survive_the_json_round_trip():
    from engine.model.views import Zone

    z = Zone("long", 100.0, 101.0, 100.5, 2e6, "high", 0.05, 99.0, -1.2, (1e6, 1e6))
    r = RankedZone(z, 7, 2, 5e5, {1.0: 0.1, 4.0: 0.25, 24.0: 0.6}, {1.0: 2e5, 4.0: 5e5, 24.0: 1.2e6}, 3,
                   ("1h", "4h", "1d"), 1_767_225_600, 5400)
    d = r.to_dict()
    assert d["touch_4h"] == 0.25 and d["risk_usd_4h"] == 5e5 and d["touch_probability"] == 0.6
    assert RankedZone.from_dict(d) == r


# ---- on a live market ---------------------------------------------------------------------------------
@pytest.fixture
async def market():  # type: ignore[no-untyped-def]
    feed = Feed()
    hub = Hub(feed, history_days=0)
    await hub.start()
    yield hub, feed
    await hub.stop()


async def test_zone_order_holds_while_the_price_wiggles_and_ages_count_in_market_time(market):
    hub, feed = market
    an = hub.get("BTC").analytics
    first = await asyncio.to_thread(an.zones)
    assert first and [z.rank for z in first] == list(range(1, len(first) + 1))
    assert all(4.0 in z.touch and z.score == pytest.approx(z.zone.usd ** 0.25 * z.touch[4.0]) for z in first)
    orders = []
    for k in range(8):  # ticks inside one minute: touch probabilities move a little every time
        before = hub.get("BTC").live_version
        feed.push(closed=False, frac=(k % 4) / 4 + 0.1)
        await until(lambda b=before: hub.get("BTC").live_version > b)
        orders.append([z.id for z in await asyncio.to_thread(an.zones)])
    # zones may come and go at the grading threshold; those that stay keep their order
    for a, b in zip(orders, orders[1:], strict=False):
        common = set(a) & set(b)
        assert len(common) >= 3 and [i for i in a if i in common] == [i for i in b if i in common]
    start = hub.get("BTC").market_time()
    for _ in range(6):  # the forming bar's minute, then five more
        feed.push(closed=True)
    await until(lambda: hub.get("BTC").market_time() >= start + 300)
    later = await asyncio.to_thread(an.zones)
    kept = {z.id: z for z in later}
    same = [z for z in first if z.id in kept]
    assert same and all(kept[z.id].persistence_s >= 300 for z in same)  # five more minutes of market time
    assert all(0 <= z.confluence <= 3 for z in later) and any(z.confluence > 0 for z in later)


async def test_risk_uses_the_markets_own_exchange_and_coin():
    feed = Feed(exchange="bybit")
    hub = Hub(feed, history_days=0)
    await hub.start()
    try:
        eth = hub.get("ETH")
        price = eth.last_price
        body = await asyncio.to_thread(eth.analytics.position, "long", price, 20.0, 10_000.0)
        assert body["position"]["exchange"] == "bybit" and body["position"]["coin"] == "ETH"
        assert set(body["touch"]) == {"1h", "4h", "24h"}
        bybit = position_liquidation_price(Position("long", price, 20.0, 10_000.0, exchange="bybit", coin="ETH"))
        binance = position_liquidation_price(Position("long", price, 20.0, 10_000.0, exchange="binance", coin="BTC"))
        assert body["liquidation_price"] == pytest.approx(bybit, rel=1e-12) and bybit != pytest.approx(binance, rel=1e-6)
    finally:
        await hub.stop()


async def test_alerts_run_in_the_hub_on_market_time_and_reach_the_webhook(aiohttp_server):
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    feed = Feed()
    settings = AlertSettings(within_pct=50.0, min_grade=None, interval_s=0.5)
    hub = Hub(feed, history_days=0, alerts=settings, webhook=str(server.make_url("/hook")))
    await hub.start()
    try:
        svc = hub.get("BTC")
        sub = svc.subscribe()
        feed.push(closed=True)
        async with asyncio.timeout(15):
            async for ev in sub:
                if ev.kind == "alert":
                    break
        alert = ev.data
        assert alert["kind"] == alert["rule"] == "proximity" and alert["symbol"] == svc.market.key
        assert alert["time"] == svc.market_time() != pytest.approx(asyncio.get_running_loop().time())
        assert alert["time"] <= START + (N_HISTORY + 2) * 60  # the market's clock, not the wall clock
        await until(lambda: any(a["key"] == alert["key"] for a in got))
        assert svc.analytics.alerts.webhook_stats()["sent"] >= 1
        assert any(a["key"] == alert["key"] for a in svc.analytics.alerts.recent(50))
    finally:
        await hub.stop()


async def test_sessions_split_the_realised_liquidations_of_the_history(market):
    hub, _ = market
    svc = hub.get("BTC")
    body = await asyncio.to_thread(svc.analytics.sessions)
    r = svc.realised("1h")
    assert sum(s["usd"] for s in body["sessions"]) == pytest.approx(float(r.long_usd.sum() + r.short_usd.sum()))
    # three days from a midnight: Asia 9h, Europe 6h, US 9h of each day
    hours = {s["session"]: s["hours_observed"] for s in body["sessions"]}
    assert hours == {"Asia": 27.0, "Europe": 18.0, "US": 27.0}
    assert sum(body["funding_cycle"]["slots"]) == 72
