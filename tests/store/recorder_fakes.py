"""A tiny Feed for the store/recorder tests: a synthetic market on a fast clock.

The clock is tied to the wall clock through ``epoch``, so a second process started later with the same
epoch sees the market further along — exactly what a recorder restarted after a crash sees. Every bar and
liquidation is a pure function of (symbol, index), so a test can check stored rows value by value.

Run as a script it is a recorder daemon over this feed (the crash test's subprocess):
    python tests/store/recorder_fakes.py --db FILE --epoch T [--speed 6000] [--symbols A,B]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import zlib
from collections.abc import AsyncIterator, Sequence

import numpy as np

from engine.feeds.base import (
    BarUpdate,
    FeedError,
    FeedEvent,
    Health,
    HealthChange,
    Liquidation,
    Market,
    UnknownSymbol,
)
from engine.model import Bars
from engine.model.synthetic import synthetic_bars

START = 1_700_000_040  # a whole minute
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")


class ClockedFeed:
    """Implements engine.feeds.base.Feed. ``speed`` market seconds pass per wall second; ``warmup`` bars
    have closed at ``epoch``; ``retention`` (bars) limits how far back history() reaches; bars listed
    in ``drop`` are never streamed (a connection that lost them) and announce a reconnect instead."""

    exchange = "fake"
    timeframe = 60

    def __init__(
        self,
        symbols: Sequence[str] = SYMBOLS,
        speed: float = 6000.0,
        epoch: float | None = None,
        warmup: int = 120,
        retention: int | None = None,
        n: int = 100_000,
        liqs_per_bar: int = 2,
        drop: Sequence[int] = (),
        stop_at: int | None = None,
        fail_at: int | None = None,
    ) -> None:
        self.symbols = list(symbols)
        self.speed = speed
        self.epoch = time.time() if epoch is None else epoch
        self.warmup = warmup
        self.retention = retention
        self.n = n
        self.liqs_per_bar = liqs_per_bar
        self.drop = set(drop)
        self.stop_at = stop_at  # the clock stands still at this many closed bars (tests stop it there)
        self.fail_at = fail_at  # each market's stream breaks (FeedError) once, instead of delivering this bar
        self._failed: set[str] = set()
        self._src: dict[str, Bars] = {}
        self.history_calls: list[tuple[str, int | None, int | None]] = []

    def source(self, symbol: str) -> Bars:
        if symbol not in self.symbols:
            raise UnknownSymbol(f"unknown symbol {symbol!r}")
        if symbol not in self._src:
            self._src[symbol] = synthetic_bars(self.n, seed=zlib.crc32(symbol.encode()), start=START)
        return self._src[symbol]

    def closed(self) -> int:
        """How many bars have closed on the market clock."""
        k = self.warmup + (time.time() - self.epoch) * self.speed / self.timeframe
        k = int(min(self.n, math.floor(k)))
        return k if self.stop_at is None else min(k, self.stop_at)

    def liquidations(self, symbol: str, i: int) -> list[Liquidation]:
        bars = self.source(symbol)
        out = []
        for j in range(self.liqs_per_bar):
            long = (i + j) % 2 == 0
            price = float(bars.low[i] if long else bars.high[i])
            base = 0.001 * (1 + (i * 7 + j) % 13)
            out.append(
                Liquidation(
                    int(bars.time[i]) * 1000 + 7_000 + 20_000 * j, self.exchange, symbol,
                    "long" if long else "short", price, base, base * price,
                )
            )
        return out

    async def markets(self) -> list[Market]:
        return [Market(self.exchange, s, s.split("/")[0]) for s in self.symbols]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        self.history_calls.append((symbol, since, until))
        bars = self.source(symbol)
        k = self.closed()
        lo = 0 if self.retention is None else max(0, k - self.retention)
        out = bars.slice(lo, k)
        if since is not None:
            out = out.slice(int(np.searchsorted(out.time, since)))
        if until is not None:
            out = out.slice(0, int(np.searchsorted(out.time, until)))
        return out

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        bars = self.source(symbol)
        yield HealthChange(Health.LIVE, "fake clock")
        i = self.closed()
        while i < self.n:
            while self.closed() <= i:
                wait = (i + 1 - self.closed()) * self.timeframe / self.speed
                await asyncio.sleep(min(max(wait, 0.001), 0.05))
            if i == self.fail_at and symbol not in self._failed:
                self._failed.add(symbol)
                raise FeedError("fake connection reset")
            if i in self.drop:
                if i - 1 not in self.drop:
                    yield HealthChange(Health.RECONNECTING, "fake drop")
                i += 1
                continue
            if i - 1 in self.drop:
                yield HealthChange(Health.LIVE, "fake reconnect")
            for ev in self.liquidations(symbol, i):
                yield ev
            yield BarUpdate(bars.slice(i, i + 1), closed=True)
            i += 1
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    from engine.recorder import record
    from engine.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--epoch", type=float, required=True)
    ap.add_argument("--speed", type=float, default=6000.0)
    ap.add_argument("--symbols", default=",".join(SYMBOLS))
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--flush", type=float, default=0.05)
    args = ap.parse_args(argv)
    feed = ClockedFeed(args.symbols.split(","), speed=args.speed, epoch=args.epoch)
    store = Store(args.db)

    async def go() -> int:
        return await record(
            feed, store, args.symbols.split(","), batch_rows=args.batch, flush_seconds=args.flush,
            status_seconds=0.5,
        )

    try:
        return asyncio.run(go())
    finally:
        store.close()


if __name__ == "__main__":
    raise SystemExit(main())
