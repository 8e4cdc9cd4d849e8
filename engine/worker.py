"""What a cluster worker adds to a feed: its history comes from the store first, and what it streams is
recorded, through the one connection per market the worker holds.

``RecordingFeed(feed, store)`` is itself a Feed. ``history()`` answers from the store and asks the exchange
only for the bars after the newest stored one (a restart after a minute fetches a minute, not 30 days);
what the exchange returns is stored. ``stream()`` passes events through untouched and queues the closed
bars and liquidation events for a writer thread that stores them in batches. A store that goes away
(PostgreSQL restarting) keeps the rows queued, up to ``max_rows``, and writes them when it is back; the
upserts are idempotent, so a retried batch is never doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from engine.feeds.base import BarUpdate, Feed, FeedEvent, Liquidation, Market
from engine.model import Bars
from engine.store import Store, StoreError, StoreUnavailable

log = logging.getLogger("liqheat.worker")

# How far before the newest stored bar the exchange is asked again on start (seconds).
OVERLAP_S = 3600


class RecordingFeed:
    """A Feed over another one that reads history from and records into a Store."""

    def __init__(self, feed: Feed, store: Store, *, flush_s: float = 0.5, max_rows: int = 200_000) -> None:
        self.feed = feed
        self.store = store
        self.exchange = feed.exchange
        self.timeframe = feed.timeframe
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._bars: deque[tuple[str, Bars]] = deque()
        self._liqs: deque[Liquidation] = deque()
        self.dropped = 0
        self.written = 0
        self.from_store = 0  # bars the last history() call took from the store
        self.store_error = ""
        self._writer: asyncio.Task[None] | None = None

    def key(self, symbol: str) -> str:
        return f"{self.exchange}:{symbol}"

    async def markets(self) -> list[Market]:
        return await self.feed.markets()

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        key = self.key(symbol)
        stored: Bars | None = None
        try:
            last = await asyncio.to_thread(self.store.last_time, key, self.timeframe)
            if last is not None and (since is None or last >= since):
                stored = await asyncio.to_thread(self.store.read_bars, key, since, until, self.timeframe)
        except StoreError as exc:
            log.warning("%s: stored history unavailable (%s); asking the exchange", key, exc)
        if stored is None or len(stored) == 0:
            fresh = await self.feed.history(symbol, since=since, until=until)
            self.from_store = 0
            self._queue_bars(key, fresh)
            return fresh
        # The exchange's recent bars, overlapping the stored end by an hour: they win where both have a
        # bar (the exchange may have corrected it), and a store that runs ahead of the feed's clock (a
        # sped-up demo started again) is cut back to the feed's present.
        tail = await self.feed.history(symbol, since=int(stored.time[-1]) - OVERLAP_S, until=until)
        if len(tail) == 0:
            fresh = await self.feed.history(symbol, since=since, until=until)
            self.from_store = 0
            self._queue_bars(key, fresh)
            return fresh
        head = stored.slice(0, int(np.searchsorted(stored.time, int(tail.time[0]))))
        self.from_store = len(head)
        self._queue_bars(key, tail)
        return head.concat(tail) if len(head) else tail

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        key = self.key(symbol)
        self._ensure_writer()
        async for event in self.feed.stream(symbol):
            if isinstance(event, BarUpdate) and event.closed:
                self._queue_bars(key, event.bar)
            elif isinstance(event, Liquidation):
                self._liqs.append(event)
                self._trim()
            yield event

    def _queue_bars(self, key: str, bars: Bars) -> None:
        if len(bars):
            self._bars.append((key, bars))
            self._trim()
            self._ensure_writer()

    def _queued(self) -> int:
        return sum(len(b) for _, b in self._bars) + len(self._liqs)

    def _trim(self) -> None:
        """Bounded: past max_rows the oldest queued rows go (counted, and logged by the writer)."""
        while self._bars and self._queued() > self.max_rows:
            self.dropped += len(self._bars.popleft()[1])
        while self._liqs and self._queued() > self.max_rows:
            self._liqs.popleft()
            self.dropped += 1

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next call starts it
                self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="record")

    def _write(self, bars: list[tuple[str, Bars]], liqs: list[Liquidation]) -> None:
        with self.store.transaction():
            for key, b in bars:
                self.store.write_bars(key, b)
            if liqs:
                self.store.write_liquidations(liqs)

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        if not self._bars and not self._liqs:
            return
        bars, liqs = list(self._bars), list(self._liqs)
        self._bars.clear()
        self._liqs.clear()
        try:
            await asyncio.to_thread(self._write, bars, liqs)
        except StoreUnavailable as exc:
            # rolled back whole: put it back in front and try again on the next round
            self._bars.extendleft(reversed(bars))
            self._liqs.extendleft(reversed(liqs))
            self._trim()
            if not self.store_error:
                log.warning("store unavailable (%s); keeping %d rows to write", exc, self._queued())
            self.store_error = str(exc)
            return
        except StoreError as exc:
            self.dropped += sum(len(b) for _, b in bars) + len(liqs)
            log.warning("cannot record %d rows: %s", sum(len(b) for _, b in bars) + len(liqs), exc)
            self.store_error = str(exc)
            return
        self.store_error = ""
        self.written += sum(len(b) for _, b in bars) + len(liqs)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        with contextlib.suppress(StoreError):
            await self.flush()
        await self.feed.close()

    def stats(self) -> dict[str, Any]:
        return {"written": self.written, "queued": self._queued(), "dropped": self.dropped,
                "from_store": self.from_store, "error": self.store_error}
