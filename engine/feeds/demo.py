"""The built-in simulated market: the default feed, needing no network and no keys.

A seeded exchange (engine/feeds/demo_exchange.py) whose traders open leveraged positions, pay funding,
close by choice and are liquidated — with cascades — and whose history is backfilled at start so the
live ticks carry straight on from it. ``speed`` multiplies simulated time (60 = a simulated minute per
second); the simulated clock starts at ``now`` (default: the wall clock).

What the simulated traders really hold is available as :meth:`DemoFeed.ground_truth`, so the engine's
estimate can be scored against the truth (tests, backtests).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from engine.model import Bars

from .base import BarUpdate, FeedError, FeedEvent, Health, HealthChange, Liquidation, Market, UnknownSymbol
from .demo_exchange import SimulatedExchange
from .demo_flow import TICKS
from .demo_markets import CATALOGUE, DEFAULT_SYMBOLS, SimulatedSymbol, find_symbol
from .demo_traders import GroundTruth

__all__ = ["DemoFeed", "GroundTruth", "DEFAULT_SYMBOLS"]

SIDES = ("long", "short")
BULK_MINUTES = 1440  # advancing more than a day at once runs in a worker thread (keeps the loop responsive)
MAX_CATCH_UP = 2000  # closed bars one stream emits per tick before letting others run


class DemoFeed:
    """A simulated exchange implementing the Feed protocol. Same seed and ``now`` give the same market."""

    exchange = "demo"
    timeframe = 60

    def __init__(
        self,
        seed: int = 7,
        speed: float = 1.0,
        symbols: tuple[str, ...] | list[str] | None = None,
        history_days: float = 30,
        now: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,  # wall seconds the simulated clock runs on (tests)
    ) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise FeedError(f"demo seed must be a non-negative integer, got {seed!r}")
        if not (math.isfinite(speed) and speed > 0):
            raise FeedError(f"demo speed must be positive, got {speed!r}")
        if not (math.isfinite(history_days) and history_days > 0):
            raise FeedError(f"demo history_days must be positive, got {history_days!r}")
        self.seed = seed
        self.speed = float(speed)
        self.history_days = float(history_days)
        if symbols is None:
            self.offered: tuple[SimulatedSymbol, ...] = CATALOGUE
        else:
            chosen = []
            for name in symbols:
                spec = find_symbol(name, CATALOGUE)
                if spec is None:
                    raise UnknownSymbol(_unknown(name, CATALOGUE))
                chosen.append(spec)
            self.offered = tuple(chosen)
        self._mono = clock
        self._mono0 = clock()
        self.started_at = time.time() if now is None else float(now)
        # The history ends at the last whole minute before "now"; live ticks continue from there.
        self.history_end = int(self.started_at // 60) * 60
        self.history_start = int((self.history_end - self.history_days * 86_400) // 86_400) * 86_400
        self._exchanges: dict[str, SimulatedExchange] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    # ---- the clock ------------------------------------------------------------------------------------
    def now(self) -> float:
        """Simulated UNIX time: ``now`` at construction, running ``speed`` times the wall clock."""
        return self.started_at + (self._mono() - self._mono0) * self.speed

    # ---- Feed protocol --------------------------------------------------------------------------------
    async def markets(self) -> list[Market]:
        return [Market(self.exchange, s.symbol, s.coin, 1.0, s.tick, True) for s in self.offered]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        """Closed 1m bars in [since, until). ``until`` defaults to the history end fixed at start (the
        stream carries on from there) and is capped at the simulated clock."""
        spec = self._spec(symbol)
        until = self.history_end if until is None else min(int(until), int(self.now() // 60) * 60)
        since = self.history_start if since is None else max(int(since), self.history_start)
        async with self._lock(spec.symbol):
            ex = self.exchange_for(spec.symbol)
            to_minute = -(-until // 60)
            if to_minute - ex.minute > BULK_MINUTES:
                await asyncio.to_thread(_advance, ex, to_minute)
            else:
                _advance(ex, to_minute)
            return ex.bars(since, until)

    def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        """Events after the history end: health first, then per tick the liquidations and closed bars
        that happened since the last tick, in time order, and the forming bar."""
        spec = self._spec(symbol)  # unknown symbols fail here, not at the first event
        return self._stream(spec)

    async def close(self) -> None:
        self._closed = True

    # ---- the truth and the record (not part of the Feed protocol) -------------------------------------
    def exchange_for(self, symbol: str) -> SimulatedExchange:
        """The simulation behind one symbol (created on first use, starting at the history start)."""
        spec = self._spec(symbol)
        ex = self._exchanges.get(spec.symbol)
        if ex is None:
            ex = SimulatedExchange(spec, CATALOGUE.index(spec), self.seed, self.history_start)
            self._exchanges[spec.symbol] = ex
        return ex

    def history_now(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        """Synchronous :meth:`history` (for batch jobs and tests)."""
        spec = self._spec(symbol)
        ex = self.exchange_for(spec.symbol)
        until = self.history_end if until is None else int(until)
        _advance(ex, -(-until // 60))
        return ex.bars(self.history_start if since is None else int(since), until)

    def ground_truth(self, symbol: str) -> GroundTruth:
        """What the simulated traders really hold: liquidation USD per price level, long and short, as
        of the newest simulated minute (the history end until a stream moves on; while streaming, the
        end of the forming minute). Not to be called while :meth:`history` is backfilling the symbol."""
        ex = self.exchange_for(symbol)
        if ex.minute * 60 < self.history_end:
            _advance(ex, self.history_end // 60)
        return ex.ground_truth()

    def liquidations(self, symbol: str, since_ms: int | None = None, until_ms: int | None = None) -> list[Liquidation]:
        """Every simulated liquidation in [since_ms, until_ms) that has been simulated so far."""
        ex = self.exchange_for(symbol)
        a = 0 if since_ms is None else ex.liquidation_index(since_ms)
        b = len(ex.liq_time) if until_ms is None else ex.liquidation_index(until_ms)
        return [self._liquidation(ex, j) for j in range(a, b)]

    # ---- internals ------------------------------------------------------------------------------------
    def _spec(self, symbol: str) -> SimulatedSymbol:
        spec = find_symbol(symbol, self.offered)
        if spec is None:
            raise UnknownSymbol(_unknown(symbol, self.offered))
        return spec

    def _lock(self, symbol: str) -> asyncio.Lock:
        lock = self._locks.get(symbol)
        if lock is None:
            lock = self._locks[symbol] = asyncio.Lock()
        return lock

    def _liquidation(self, ex: SimulatedExchange, j: int) -> Liquidation:
        return Liquidation(
            time_ms=ex.liq_time[j],
            exchange=self.exchange,
            symbol=ex.spec.symbol,
            side=SIDES[ex.liq_side[j]],
            price=ex.liq_price[j],
            base=ex.liq_base[j],
            usd=ex.liq_usd[j],
        )

    def _tick_seconds(self) -> float:
        """Wall seconds between updates: one per simulated second, but at most 20 and at least one per
        wall second."""
        return min(1.0, max(0.05, 1.0 / self.speed))

    async def _stream(self, spec: SimulatedSymbol) -> AsyncIterator[FeedEvent]:
        yield HealthChange(Health.DEMO, f"simulated market (seed {self.seed}, {self.speed:g}x speed)")
        lock = self._lock(spec.symbol)
        ex = self.exchange_for(spec.symbol)
        cursor = _Cursor(self.history_end // 60, self.history_end * 1000)
        while not self._closed:
            now = self.now()
            # Simulate and read under the lock (a backfill may be running in a worker thread), then hand
            # the events out without holding it.
            async with lock:
                if int(now // 60) + 1 - ex.minute > BULK_MINUTES:
                    await asyncio.to_thread(_advance, ex, int(now // 60) + 1)
                else:
                    _advance(ex, int(now // 60) + 1)
                events, caught_up = self._tick_events(ex, cursor, now)
            for event in events:
                yield event
            # one update per simulated second; while catching up, just let the other streams run
            await asyncio.sleep(self._tick_seconds() if caught_up else 0)

    def _tick_events(self, ex: SimulatedExchange, cursor: _Cursor, now: float) -> tuple[list[FeedEvent], bool]:
        """Liquidations and closed bars since the cursor, in time order, then the forming bar."""
        events: list[FeedEvent] = []
        current = int(now // 60)
        while cursor.minute < current and len(events) < MAX_CATCH_UP:
            end_ms = (cursor.minute + 1) * 60_000
            events.extend(self._liquidations_between(ex, cursor.liq_ms, end_ms))
            cursor.liq_ms = end_ms
            events.append(BarUpdate(ex.bars(cursor.minute * 60, end_ms // 1000), closed=True))
            cursor.minute += 1
        if cursor.minute < current:
            return events, False
        now_ms = int(now * 1000) + 1
        events.extend(self._liquidations_between(ex, cursor.liq_ms, now_ms))
        cursor.liq_ms = max(cursor.liq_ms, now_ms)
        events.append(BarUpdate(self._forming(ex, current, now), closed=False))
        return events, True

    def _liquidations_between(self, ex: SimulatedExchange, a_ms: int, b_ms: int) -> list[Liquidation]:
        a, b = ex.liquidation_index(a_ms), ex.liquidation_index(b_ms)
        return [self._liquidation(ex, j) for j in range(a, b)]

    def _forming(self, ex: SimulatedExchange, minute: int, now: float) -> Bars:
        """The minute so far: its ticks up to ``now``, volume in proportion, open interest moving from
        the last close's towards this minute's."""
        bar = ex.bars(minute * 60, minute * 60 + 60)
        seen = min(TICKS, max(0, int(now - minute * 60)))
        frac = seen / TICKS
        if seen == 0:
            price = bar.open
            high = low = close = price
        else:
            ticks = ex.round_price(np.exp(ex.minute_path(minute)[:seen]))
            close = ticks[-1:]
            high = np.maximum(bar.open, ticks.max(keepdims=True))
            low = np.minimum(bar.open, ticks.min(keepdims=True))
        prev = ex.bars(minute * 60 - 60, minute * 60)
        oi = bar.oi_usd if len(prev) == 0 or prev.oi_usd is None or bar.oi_usd is None else prev.oi_usd + (bar.oi_usd - prev.oi_usd) * frac
        vol = {c: None if getattr(bar, c) is None else getattr(bar, c) * frac for c in ("volume", "taker_buy_volume", "taker_sell_volume")}
        return Bars(
            timeframe=60,
            time=bar.time,
            open=bar.open,
            high=high,
            low=low,
            close=close,
            oi_usd=oi,
            funding_rate=bar.funding_rate,
            **vol,
        )


@dataclass
class _Cursor:
    """Where one stream is: the first minute it has not closed, the first liquidation time not sent."""

    minute: int
    liq_ms: int


def _advance(ex: SimulatedExchange, to_minute: int) -> None:
    ex.advance(to_minute)
    ex.settle()


def _unknown(name: str, offered: tuple[SimulatedSymbol, ...]) -> str:
    return f"unknown demo symbol {name!r}; the simulated market lists {', '.join(s.symbol for s in offered)}"

