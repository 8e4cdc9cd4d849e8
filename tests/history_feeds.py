"""A feed over real candles for the two-pass load tests (issue 14: "show the recent days first, backfill
the rest"): Binance's BTC perpetual 5m bars from ../shared/data, on a fixed clock, handing out history
for [since, until) as an exchange does. ``hold`` keeps the older window (the backfill's request, the
one with an ``until``) waiting until the test releases it, so a test sees the recent pass on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from engine.feeds.base import FeedEvent, Market
from engine.formats import read_bars_file
from engine.model import Bars

REAL_5M = "binance_usdm_btcusdt_5m_2024-02_06.csv.gz"
SYMBOL = "BTC/USDT:USDT"


def real_bars(shared_data: Path) -> Bars:
    return read_bars_file(shared_data / REAL_5M)


class RealBarsFeed:
    exchange = "binance"

    def __init__(self, bars: Bars, now_index: int, hold: bool = False) -> None:
        self.all = bars
        self.timeframe = bars.timeframe
        self.n = now_index  # bars before this index are history; the rest the test feeds live
        self.hold = asyncio.Event() if hold else None
        self.requests: list[tuple[int | None, int | None]] = []

    def now(self) -> float:
        return float(self.all.close_time[self.n - 1])

    async def markets(self) -> list[Market]:
        return [Market(self.exchange, SYMBOL, "BTC")]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        self.requests.append((since, until))
        if until is not None and self.hold is not None:
            await self.hold.wait()
        past = self.all.slice(0, self.n)
        lo = 0 if since is None else int(np.searchsorted(past.time, since, side="left"))
        hi = len(past) if until is None else int(np.searchsorted(past.time, until, side="left"))
        return past.slice(lo, max(lo, hi))

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        await asyncio.Event().wait()  # nothing live unless the test ingests it
        yield  # type: ignore[misc]

    async def close(self) -> None:
        pass
