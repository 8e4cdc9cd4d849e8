"""Fixtures for the exchange feed tests: a loopback fake exchange and feeds pointed at it."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_exchange import FakeClock, FakeExchange, floor_minute  # noqa: E402

from engine.feeds.exchange import ExchangeFeed  # noqa: E402
from engine.feeds.retry import Backoff  # noqa: E402

TINY_BACKOFF = Backoff(base=0.001, cap=0.01)  # retries in tests cost milliseconds, not seconds


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    # "now" sits 17 s into a real minute: the current bar is forming, the one before has closed
    server = await FakeExchange(floor_minute(time.time() * 1000) + 17_000, days=3.0).start()
    yield server
    await server.close()


@pytest.fixture
def clock(fake: FakeExchange) -> FakeClock:
    return FakeClock(fake)


@pytest.fixture
async def make_feed(fake: FakeExchange, clock: FakeClock) -> AsyncIterator[Callable[..., ExchangeFeed]]:
    feeds: list[ExchangeFeed] = []

    def make(exchange: str, **kw: Any) -> ExchangeFeed:
        kw.setdefault("route_through", fake.base)
        kw.setdefault("clock", clock)
        kw.setdefault("rate_limit", False)
        kw.setdefault("backoff", TINY_BACKOFF)
        kw.setdefault("timeout_s", 0.5)
        kw.setdefault("seed", 1)
        feed = ExchangeFeed(exchange, **kw)
        feeds.append(feed)
        return feed

    yield make
    for f in feeds:
        await asyncio.wait_for(f.close(), 5)

