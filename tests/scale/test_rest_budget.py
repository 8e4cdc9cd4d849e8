"""Several workers behind one egress IP share the exchange's REST budget (engine/rest_budget.py): the real
ccxt client of each worker's feed takes every request's weight from one token bucket in a real Redis, and
a 429 from the (loopback) exchange pauses all of them. Two feeds with their own ccxt clients and their own
Redis connections stand for two `liqheat worker` processes: everything they share goes through Redis.
The request times and weights are read where the exchange sees them: in the loopback server's log."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import ccxt
import pytest
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "feeds"))

from fake_exchange import BINANCE, DAY, FakeExchange, Fault, Request, floor_minute  # noqa: E402

from engine.feeds.exchange import ExchangeFeed  # noqa: E402
from engine.feeds.retry import Backoff  # noqa: E402
from engine.rest_budget import RestBudget  # noqa: E402

pytestmark = pytest.mark.timeout(120)

RATE = 20.0  # weight a second for the whole egress (ccxt's own pace for Binance USD-M, per process)
SYMBOL = "BTC/USDT:USDT"
# One klines page's weight: the loopback server logs a request when it answers it, a little after the
# budget let it go, so a page can land in the next second's count.
SLACK = 10.0
# ccxt's own weight of each route the feed calls on the (fake) Binance: (api, path)
ROUTES = {"markets": ("fapiPublic", "exchangeInfo"), "klines": ("fapiPublic", "klines"),
          "oi": ("fapiData", "openInterestHist"), "funding": ("fapiPublic", "fundingRate")}
_WEIGHTS = ccxt.binanceusdm()


def weight(req: Request) -> float:
    api, path = ROUTES[req.route]
    params = {k: int(v) if v.isdigit() else v for k, v in req.params.items()}
    return float(_WEIGHTS.calculate_rate_limiter_cost([api], "GET", path, params, _WEIGHTS.api[api]["get"][path]))


def busiest_second(reqs: list[Request]) -> float:
    """The most weight the exchange received in any one-second window."""
    times = [r.at for r in reqs]
    return max(sum(weight(r) for r in reqs if t <= r.at < t + 1.0) for t in times)


@pytest.fixture
async def fake():
    server = await FakeExchange(floor_minute(time.time() * 1000) + 17_000, days=7.0).start()
    yield server
    await server.close()


@pytest.fixture
async def workers(fake, redis_server):
    """Two workers' feeds on one egress, each with its own Redis connection and ccxt client."""
    made: list[tuple[ExchangeFeed, aioredis.Redis]] = []

    def make(budget: bool = True) -> ExchangeFeed:
        r = aioredis.from_url(redis_server.url, decode_responses=True)
        feed = ExchangeFeed(BINANCE, route_through=fake.base, clock=lambda: fake.now_ms / 1000, rate_limit=False,
                            backoff=Backoff(base=0.001, cap=0.01), timeout_s=2.0, seed=1, history_days=6.0,
                            rest_budget=RestBudget(r, BINANCE, "host-a", RATE) if budget else None)
        made.append((feed, r))
        return feed

    yield make
    for feed, r in made:
        await asyncio.wait_for(feed.close(), 5)
        await r.aclose()


async def test_two_workers_together_stay_within_the_egress_budget(fake, workers):
    # without the budget the two feeds' history requests arrive at loopback speed: far over the limit
    free = [workers(budget=False), workers(budget=False)]
    await asyncio.gather(*(f.history(SYMBOL) for f in free))
    unpaced = list(fake.requests)
    assert busiest_second(unpaced) > 2 * RATE + SLACK  # the bound the paced pair must keep, below
    fake.requests.clear()

    paced = [workers(), workers()]
    t0 = time.monotonic()
    bars = await asyncio.gather(*(f.history(SYMBOL) for f in paced))
    took = time.monotonic() - t0
    assert all(len(b) > 8000 for b in bars) and bars[0].close.tolist() == bars[1].close.tolist()
    reqs = [r for r in fake.requests if r.exchange == BINANCE]
    total = sum(weight(r) for r in reqs)
    assert total > 3 * RATE  # enough requests that the budget, not the burst, decides
    # the bucket holds one second of budget: no second ever sees more than that plus a second's refill
    assert busiest_second(reqs) <= 2 * RATE + SLACK
    # and overall the pair spent at the budget's pace, not faster
    assert total <= RATE * (reqs[-1].at - reqs[0].at) + RATE + SLACK
    assert took >= (total - RATE) / RATE * 0.9
    waited = [f.rest_budget.stats()["waited_s"] for f in paced if f.rest_budget is not None]
    assert min(waited) > 0  # both took turns, neither ran alone


async def test_a_429_pauses_every_worker_on_the_egress(fake, workers):
    a, b = workers(), workers()
    await asyncio.gather(a.markets(), b.markets())  # both clients made, market lists loaded
    fake.requests.clear()
    fake.inject(f"{BINANCE}:klines", Fault.http(429))
    bars = await asyncio.gather(a.history(SYMBOL, since=int(fake.now_ms / 1000) - DAY // 1000),
                                b.history(SYMBOL, since=int(fake.now_ms / 1000) - DAY // 1000))
    assert all(len(x) > 1400 for x in bars)  # both recovered and got the whole day
    limited = [r for r in fake.requests if r.status == 429]
    assert len(limited) == 1
    t = limited[0].at
    # Requests already on the wire when the 429 came back are answered within a moment (the loopback
    # exchange shares this event loop); then both workers fall silent for the pause (no Retry-After:
    # 1 s), where the feed's own retry backoff is milliseconds and the budget alone spaces klines pages
    # 0.25 s apart; then they go on.
    after = sorted(r.at for r in fake.requests if r.at >= t)
    gap, start = max((b - a, a - t) for a, b in zip(after, after[1:], strict=False))
    assert gap >= 0.7 and start < 0.5, [round(x - t, 3) for x in after]
    stats = [a.rest_budget.stats(), b.rest_budget.stats()]  # type: ignore[union-attr]
    assert sum(s["rate_limited"] for s in stats) == 1 and all(s["shared"] for s in stats)


async def test_without_redis_a_worker_paces_itself_and_says_so(caplog):
    from real_servers import free_port

    r = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    budget = RestBudget(r, BINANCE, "host-a", RATE)
    try:
        t0 = time.monotonic()
        for _ in range(3):
            await budget.acquire(5)
        assert time.monotonic() - t0 < 3.0  # not stalled: ccxt's own limiter is what is left
        assert budget.stats()["shared"] is False
        assert sum("shared REST budget unavailable" in m for m in caplog.messages) == 1  # said once
    finally:
        await r.aclose()


def test_a_worker_gives_each_exchange_feed_its_egress_budget():
    """`liqheat worker` hands open_feed one budget per exchange (server/worker.py); the demo has no REST."""
    from engine.service import open_feed

    made: dict[str, RestBudget] = {}

    def budget(exchange: str) -> RestBudget:
        return made.setdefault(exchange, RestBudget(None, exchange, "host-a"))

    single = open_feed("binance", rest_budget=budget)
    assert isinstance(single, ExchangeFeed) and single.rest_budget is made["binanceusdm"]
    agg = open_feed("bybit+okx", rest_budget=budget)
    assert [f.rest_budget for f in agg.feeds] == [made["bybit"], made["okx"]]  # type: ignore[attr-defined]
    assert made["okx"].key == "liqheat:rest:okx:host-a"
    open_feed("demo", rest_budget=budget)
    assert sorted(made) == ["binanceusdm", "bybit", "okx"]
