"""The recorder daemon: keeps a store's history of one feed's markets complete, from day one.

Liquidation feeds cannot be backfilled and OI history is short (Binance keeps 30 days), so a recorder that
runs all the time is the only way to build a long history. On start it resumes each market from its last
stored bar, backfills the hole from the feed's history and marks what it could not get as a gap; then it
streams, writing closed bars and liquidations in small transactions.

Crash safety: everything goes through one first-in-first-out queue that is written in order, one
transaction per batch, so the store always holds a *prefix* of what was received. A ``kill -9`` loses the
batch being written and what was queued after it (under ``flush_seconds`` of data); bars come back on the
next start from the feed's history, and the lost stretch of liquidations is recorded as a gap.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from engine.feeds.base import (
    BarUpdate,
    Feed,
    FeedError,
    Health,
    HealthChange,
    Liquidation,
    Market,
    UnknownSymbol,
)
from engine.model import Bars
from engine.store import Store, StoreError, StoreUnavailable

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {line}", file=sys.stderr, flush=True)


def utc(ts: int | float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


# ---- what goes into the write queue -------------------------------------------------------------------
@dataclass(frozen=True)
class _BarsItem:
    market: str
    bars: Bars


@dataclass(frozen=True)
class _GapItem:
    market: str
    kind: str
    start: int
    end: int
    reason: str


_Item = _BarsItem | Liquidation | _GapItem


@dataclass
class MarketProgress:
    """What the recorder has done for one market (for status lines and tests)."""

    key: str
    bars: int = 0
    liquidations: int = 0
    gaps: int = 0
    last_bar: int | None = None  # open time of the newest bar queued
    health: str = ""
    errors: list[str] = field(default_factory=list)


def resolve_symbol(markets: Sequence[Market], wanted: str) -> str:
    """What the user typed -> the feed's symbol: exact, or case-insensitive on the symbol, on
    ``BASEQUOTE`` (``BTCUSDT``) or on the coin (``BTC``) when only one market has it."""
    by_symbol = {m.symbol: m.symbol for m in markets}
    if wanted in by_symbol:
        return wanted
    w = wanted.strip().upper()
    candidates = []
    for m in markets:
        pair = m.symbol.split(":")[0]
        squashed = pair.replace("/", "").replace("-", "").upper()
        if w in (m.symbol.upper(), pair.upper(), squashed, m.coin.upper()):
            candidates.append(m.symbol)
    if len(candidates) == 1:
        return candidates[0]
    some = ", ".join(m.symbol for m in list(markets)[:8]) + (" ..." if len(markets) > 8 else "")
    if candidates:
        raise UnknownSymbol(f"{wanted!r} matches several markets ({', '.join(candidates[:6])}); be exact")
    raise UnknownSymbol(f"unknown symbol {wanted!r}; the feed has {some or 'no markets'}")


def _join(chunks: list[Bars]) -> Bars:
    """Concatenate bars column by column in one go (Bars.concat pairwise would be quadratic)."""
    if len(chunks) == 1:
        return chunks[0]
    kw: dict[str, object] = {"timeframe": chunks[0].timeframe}
    for name in ("time", "open", "high", "low", "close"):
        kw[name] = np.concatenate([getattr(b, name) for b in chunks])
    for name in ("volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate"):
        parts = [getattr(b, name) for b in chunks]
        if all(p is None for p in parts):
            kw[name] = None
        else:
            kw[name] = np.concatenate([np.full(len(b), np.nan) if p is None else p for b, p in zip(chunks, parts, strict=True)])
    return Bars(**kw)  # type: ignore[arg-type]


def _holes(times: np.ndarray, tf: int, start: int, end: int) -> list[tuple[int, int]]:
    """Stretches of [start, end) with no bar, given sorted bar open times."""
    t = times[(times >= start) & (times < end)]
    edges = np.concatenate([[start - tf], t, [end]])
    jumps = np.flatnonzero(np.diff(edges) > tf)
    return [(int(edges[j] + tf), int(edges[j + 1])) for j in jumps]


class Recorder:
    """Records ``symbols`` of ``feed`` into ``store`` until cancelled (then flushes and returns)."""

    def __init__(
        self,
        feed: Feed,
        store: Store,
        symbols: Sequence[str],
        *,
        since: int | None = None,
        batch_rows: int = 500,
        flush_seconds: float = 0.5,
        status_seconds: float = 30.0,
        retry_seconds: float = 1.0,
        log: Log = stderr_log,
    ) -> None:
        self.feed = feed
        self.store = store
        self.symbols = list(symbols)
        self.since = since
        self.batch_rows = max(1, batch_rows)
        self.flush_seconds = flush_seconds
        self.status_seconds = status_seconds
        self.retry_seconds = retry_seconds
        self.log = log
        self.tf = int(feed.timeframe)
        self.progress: dict[str, MarketProgress] = {}
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._inflight: asyncio.Future[None] | None = None
        self._away: dict[str, str] = {}  # symbol -> why its recording broke off (for the gap's reason)

    def key(self, symbol: str) -> str:
        return f"{self.feed.exchange}:{symbol}"

    # ---- queue --------------------------------------------------------------------------------------
    def _put(self, item: _Item) -> None:
        self._queue.append(item)
        self._queued_rows += len(item.bars) if isinstance(item, _BarsItem) else 1
        if self._queued_rows >= self.batch_rows:
            self._wake.set()

    def _take_batch(self) -> list[_Item]:
        """Up to batch_rows rows from the head of the queue, in order (a big backfill is split)."""
        batch: list[_Item] = []
        rows = 0
        while self._queue and rows < self.batch_rows:
            item = self._queue[0]
            if isinstance(item, _BarsItem) and rows + len(item.bars) > self.batch_rows and len(item.bars) > 1:
                room = max(1, self.batch_rows - rows)
                head, tail = item.bars.slice(0, room), item.bars.slice(room)
                self._queue[0] = _BarsItem(item.market, tail)
                item = _BarsItem(item.market, head)
            else:
                self._queue.popleft()
            n = len(item.bars) if isinstance(item, _BarsItem) else 1
            rows += n
            self._queued_rows -= n
            batch.append(item)
        return batch

    def _write_batch(self, batch: list[_Item]) -> None:
        """One transaction: consecutive bars of a market are joined into one upsert."""
        with self.store.transaction():
            pending: list[Bars] = []
            pending_key = ""
            liqs: list[Liquidation] = []

            def flush_bars() -> None:
                if pending:
                    self.store.write_bars(pending_key, _join(pending))
                    pending.clear()

            for item in batch:
                if isinstance(item, _BarsItem):
                    if item.market != pending_key:
                        flush_bars()
                        pending_key = item.market
                    pending.append(item.bars)
                elif isinstance(item, Liquidation):
                    liqs.append(item)
                else:
                    self.store.add_gap(item.market, item.kind, item.start, item.end, item.reason)
            flush_bars()
            if liqs:
                self.store.write_liquidations(liqs)

    async def _writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued so far, batch by batch, in order."""
        await self._settle()
        while self._queue:
            batch = self._take_batch()
            # A write that has begun runs to the end even if we are cancelled (a thread cannot be
            # stopped); shielding it lets the stop wait for it instead of closing the store under it.
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._write_batch, batch))
            try:
                await asyncio.shield(self._inflight)
            except StoreUnavailable as exc:
                # The store's server went away (a PostgreSQL restart): the batch was rolled back whole,
                # so it goes back to the head of the queue and is written again once the server answers.
                # The upserts are idempotent, so a batch that did commit before the error is not doubled.
                self._inflight = None
                for item in reversed(batch):
                    self._queue.appendleft(item)
                    self._queued_rows += len(item.bars) if isinstance(item, _BarsItem) else 1
                self.log(f"store unavailable ({exc}); {self._queued_rows} rows kept, retrying in {self.retry_seconds:.0f}s")
                await asyncio.sleep(self.retry_seconds)

    async def _settle(self) -> None:
        """Wait for a batch already being written (its rows precede everything still queued)."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight])
        if self._inflight is not None and self._inflight.done() and not self._inflight.cancelled():
            exc = self._inflight.exception()
            self._inflight = None
            if exc is not None:
                raise exc

    # ---- per market ---------------------------------------------------------------------------------
    async def _backfill(
        self, symbol: str, start: int | None, end: int | None, why: str, first: bool = False
    ) -> int | None:
        """Queue the feed's history over [start, end) and gaps for what it lacks; returns the newest open
        time queued (or None). On a first start (``first``) the recording simply begins where the feed's
        history does: only holes inside it are gaps."""
        key = self.key(symbol)
        p = self.progress[key]
        hist = await self.feed.history(symbol, since=start, until=end)
        if len(hist):
            if start is not None:
                hist = hist.slice(int(np.searchsorted(hist.time, start)))
            if end is not None:
                hist = hist.slice(0, int(np.searchsorted(hist.time, end)))
        if len(hist):
            self._put(_BarsItem(key, hist))
            p.bars += len(hist)
            p.last_bar = max(p.last_bar or 0, int(hist.time[-1]))
        if first and len(hist):
            start = int(hist.time[0])
        if start is not None and not (first and not len(hist)):
            stop = end if end is not None else (int(hist.time[-1]) + self.tf if len(hist) else start)
            for lo, hi in _holes(hist.time, self.tf, start, stop):
                reason = (
                    f"the feed's history does not reach back to {utc(lo)} UTC"
                    if len(hist) and hi == int(hist.time[0])
                    else f"the feed has no bars for it ({why})"
                )
                self._put(_GapItem(key, "bars", lo, hi, reason))
                p.gaps += 1
                self.log(f"{key}: gap in bars {utc(lo)} -> {utc(hi)} UTC ({reason})")
        return int(hist.time[-1]) if len(hist) else None

    async def _record(self, symbol: str) -> None:
        key = self.key(symbol)
        p = self.progress.setdefault(key, MarketProgress(key))
        tf = self.tf
        last = await asyncio.to_thread(self.store.last_time, key, tf)
        if p.last_bar is not None:  # a retry after a feed error: what is queued counts too
            last = max(last or 0, p.last_bar)
        away = "recorder was not running"
        if last is None:
            since = None if self.since is None else -(-self.since // tf) * tf  # a whole bar
            newest = await self._backfill(symbol, since, None, "first start", first=True)
            self.log(
                f"{key}: new recording; {p.bars} bars of history"
                + (f" up to {utc(newest + tf)} UTC" if newest is not None else "")
            )
        else:
            before = p.bars
            away = self._away.pop(symbol, "recorder was not running")
            # Mark the lost liquidations before backfilling (a kill during a long backfill must not forget
            # them); the same start is extended below once we know how far the outage reached.
            await asyncio.to_thread(
                self.store.add_gap, key, "liquidations", last + tf, last + 2 * tf, f"{away} (not backfillable)"
            )
            newest = await self._backfill(symbol, last + tf, None, away)
            filled = p.bars - before
            self.log(f"{key}: resuming after {utc(last + tf)} UTC; backfilled {filled} bars")
            # Liquidations are only ever live: whatever happened while we were away is lost.
            lost_until = max(newest + tf if newest is not None else 0, last + 2 * tf)
            self._put(_GapItem(key, "liquidations", last + tf, lost_until, f"{away} (not backfillable)"))
            p.gaps += 1
        expected = newest if newest is not None else last
        next_open = None if expected is None else expected + tf
        outage_from: int | None = None  # where the feed reported trouble (reconnecting / stale)
        first_bar = True
        async for ev in self.feed.stream(symbol):
            if isinstance(ev, BarUpdate):
                if not ev.closed or len(ev.bar) == 0:
                    continue
                t = int(ev.bar.time[0])
                lost: tuple[int, str] | None = None
                if next_open is not None and t > next_open:
                    # The stream skipped bars: fetch them; their liquidations are lost for good.
                    await self._backfill(symbol, next_open, t, "missed by the stream")
                    if first_bar and last is not None:
                        lost = (last + tf, f"{away} (not backfillable)")  # extends that gap
                    elif first_bar:
                        lost = (next_open, "closed before the live stream started (not backfillable)")
                    else:
                        lost = (outage_from if outage_from is not None else next_open, "feed interrupted (not backfillable)")
                elif outage_from is not None:
                    lost = (outage_from, "feed interrupted (not backfillable)")
                if lost is not None:
                    self._put(_GapItem(key, "liquidations", lost[0], t + tf, lost[1]))
                    p.gaps += 1
                    self.log(f"{key}: liquidations may be missing {utc(lost[0])} -> {utc(t + tf)} UTC")
                outage_from = None
                first_bar = False
                self._put(_BarsItem(key, ev.bar))
                p.bars += 1
                p.last_bar = max(p.last_bar or 0, t)
                next_open = max(next_open or 0, t + tf)
            elif isinstance(ev, Liquidation):
                if (ev.exchange, ev.symbol) != (self.feed.exchange, symbol):
                    ev = replace(ev, exchange=self.feed.exchange, symbol=symbol)  # stored with its bars
                self._put(ev)
                p.liquidations += 1
            elif isinstance(ev, HealthChange):
                p.health = ev.state.value
                self.log(f"{key}: feed {ev.state.value}" + (f" ({ev.reason})" if ev.reason else ""))
                if ev.state in (Health.RECONNECTING, Health.STALE) and outage_from is None:
                    outage_from = next_open

    async def _record_forever(self, symbol: str) -> None:
        delay = self.retry_seconds
        while True:
            try:
                await self._record(symbol)
                return
            except UnknownSymbol:
                raise
            except FeedError as exc:
                key = self.key(symbol)
                msg = " ".join(str(exc).split())
                self.progress[key].errors.append(msg)
                self._away[symbol] = f"feed error: {msg[:120]}"
                self.log(f"{key}: feed error: {msg}; retrying in {delay:.0f}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _status(self) -> None:
        last_counts: dict[str, tuple[int, int]] = {}
        while True:
            await asyncio.sleep(self.status_seconds)
            for key, p in self.progress.items():
                b0, l0 = last_counts.get(key, (0, 0))
                last_counts[key] = (p.bars, p.liquidations)
                newest = f"last bar {utc(p.last_bar)} UTC" if p.last_bar is not None else "no bars yet"
                self.log(
                    f"{key}: {p.bars} bars (+{p.bars - b0}), {p.liquidations} liquidations (+{p.liquidations - l0}), "
                    f"{newest}, {p.health or 'waiting'}"
                )

    async def run(self) -> None:
        """Record until cancelled; on cancellation, write what is queued and return."""
        for s in self.symbols:
            self.progress.setdefault(self.key(s), MarketProgress(self.key(s)))
        writer = asyncio.create_task(self._writer(), name="recorder-writer")
        status = asyncio.create_task(self._status(), name="recorder-status")
        markets = [asyncio.create_task(self._record_forever(s), name=f"record {s}") for s in self.symbols]
        everything = [writer, status, *markets]
        try:
            # The first failure (a bad symbol, the disk) ends the recording; markets never finish on
            # their own, so returning here means something went wrong.
            done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
        finally:
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            # whatever is queued is written before we go (a clean stop loses nothing)
            await self.flush()


async def record(
    feed: Feed,
    store: Store,
    symbols: Sequence[str],
    *,
    since: int | None = None,
    batch_rows: int = 500,
    flush_seconds: float = 0.5,
    status_seconds: float = 30.0,
    log: Log = stderr_log,
) -> int:
    """Run a recorder until SIGINT/SIGTERM; returns an exit code. Resolves the symbols against the feed's
    markets first, so a typo fails at once with one line."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    stopping: list[str] = []

    def stop(signame: str) -> None:
        if not stopping:
            log(f"{signame}: stopping (writing what is queued)")
            stopping.append(signame)
            if main is not None:
                main.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / not Unix
            pass
    try:
        markets = await feed.markets()
        # no symbols = every market the feed has (sensible for the demo market and replays)
        resolved = [resolve_symbol(markets, s) for s in symbols] if symbols else [m.symbol for m in markets]
        if not resolved:
            raise FeedError(f"{feed.exchange} has no markets to record")
        log(f"recording {', '.join(resolved)} from {feed.exchange} into {store.path}")
        rec = Recorder(
            feed, store, resolved, since=since, batch_rows=batch_rows, flush_seconds=flush_seconds,
            status_seconds=status_seconds, log=log,
        )
        await rec.run()
        return 0
    except asyncio.CancelledError:
        if stopping:
            if main is not None:
                main.uncancel()
            log("stopped cleanly")
            return 0
        raise
    except (FeedError, StoreError) as exc:
        log(f"error: {' '.join(str(exc).split())}")
        return 1
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        try:
            await feed.close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide how we stopped
            log(f"closing the feed: {exc}")
