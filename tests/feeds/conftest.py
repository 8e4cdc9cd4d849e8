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

from fake_exchange import MINUTE, FakeExchange, floor_minute  # noqa: E402

from engine.feeds.exchange import ExchangeFeed  # noqa: E402
from engine.feeds.retry import Backoff  # noqa: E402

VENUES = ("binanceusdm", "bybit", "okx")
TINY_BACKOFF = Backoff(base=0.001, cap=0.01)


class FakeClock:
    """The feed's and the fake exchange's "now", moved by the test (seconds)."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake

    def __call__(self) -> float:
        return self.fake.now_ms / 1000

    def advance(self, seconds: float) -> None:
        self.fake.now_ms += int(seconds * 1000)


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


def now_s(fake: FakeExchange) -> int:
    return fake.now_ms // 1000


def last_closed_bar_ms(fake: FakeExchange) -> int:
    return floor_minute(fake.now_ms) - MINUTE
