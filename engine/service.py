"""Live state per market: history + the incremental engine + subscribers.

One ``MarketService`` per (exchange, symbol) keeps closed base bars (history from the feed, then live),
the forming bar, the incremental level book, the actual liquidation events the feed reported, and the
data-health state. It publishes events to subscribers; the server and the TUI use only this module and
never touch a feed or ccxt themselves. See docs/SERVICE_API.md.

View methods are synchronous numpy work guarded by a lock, so faces may call them from an executor
thread while the event loop keeps ingesting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

# Several machines: server/worker.py and server/replica.py reach these through the service (re-exported):
# the Redis bus's names and shard ownership, the store a worker records into, the feed wrapper that records.
from engine import bus  # noqa: F401
from engine.columns import ClosedColumns
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
from engine.ladderfile import load_ladder
from engine.memory import ByteLRU, nbytes, owned
from engine.model import (
    TIMEFRAMES,
    Bars,
    BarsError,
    Estimate,
    Heatmap,
    IncrementalEngine,
    LadderError,
    LevelBook,
    LiquidationMap,
    ModelParams,
    Realised,
    Zone,
    bucket_start,
    daily_volume_usd,
    estimate,
    price_edges,
    timeframe_name,
    timeframe_seconds,
)
from engine.model.bars import BarHistory
from engine.model.cascade import CascadeError
from engine.model.risk import RiskError
from engine.model.touch import TouchError
from engine.model.views import ViewError
from engine.rest_budget import RestBudget  # noqa: F401
from engine.store import StoreError  # noqa: F401
from engine.stores import open_store  # noqa: F401
from engine.worker import RecordingFeed  # noqa: F401

if TYPE_CHECKING:
    from engine.alerts import WebhookSender
    from engine.analytics import MarketAnalytics
    from engine.config import AlertSettings
    from engine.store import Store

log = logging.getLogger("liqheat.service")

FEEDS = ("demo", "binanceusdm", "bybit", "okx", "binanceusdm+bybit+okx", "all", "file:PATH")


def open_feed(spec: str, **options: Any) -> Feed:
    """Build a feed from its command-line name. Imports lazily: ccxt is slow to import and the demo
    market should not pay for it."""
    if spec == "demo":
        from engine.feeds.demo import DemoFeed

        return DemoFeed(**{k: v for k, v in options.items() if k in ("seed", "speed", "symbols", "history_days", "now")})
    # rest_budget: exchange id -> its shared REST budget (engine/rest_budget.py), for cluster workers
    budget = options.get("rest_budget") or (lambda _exchange: None)
    if spec in ("binanceusdm", "binance", "bybit", "okx"):
        from engine.feeds.exchange import ExchangeFeed

        name = "binanceusdm" if spec == "binance" else spec
        return ExchangeFeed(name, rest_budget=budget(name))
    if spec == "all" or ("+" in spec and not spec.startswith("file:")):
        # One coin summed across venues ("binanceusdm+bybit+okx", or "all" of them): each venue keeps its
        # own ccxt feed and the aggregate combines their bars (engine/feeds/aggregate.py).
        from engine.feeds.aggregate import AggregateFeed
        from engine.feeds.exchange import VENUES, ExchangeFeed

        names = list(VENUES) if spec == "all" else [{"binance": "binanceusdm"}.get(n, n) for n in spec.split("+")]
        unknown = [n for n in names if n not in VENUES]
        if unknown:
            raise FeedError(f"unknown exchange {unknown[0]!r} in {spec!r}; join some of {', '.join(VENUES)} with +")
        return AggregateFeed([ExchangeFeed(n, rest_budget=budget(n)) for n in names])
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        if not path:
            raise FeedError("file feed needs a path: file:PATH")
        from engine.store import open_replay  # a bars file or a store DB

        return open_replay(path, **{k: v for k, v in options.items() if k in ("speed",)})
    raise FeedError(f"unknown feed {spec!r}; use one of {', '.join(FEEDS)}")


@dataclass(frozen=True)
class ServiceEvent:
    kind: str  # bar | realised | book | zones | health | liquidation | alert | history (backfill done: views changed)
    data: dict[str, Any]
    seq: int


class Subscription:
    """A bounded queue of events for one consumer. A slow consumer loses the oldest events (counted in
    ``dropped``) instead of stalling the feed; it sees the gap in ``seq`` and should resync."""

    def __init__(self, service: MarketService, maxsize: int) -> None:
        self._service = service
        self._queue: asyncio.Queue[ServiceEvent | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def _put(self, event: ServiceEvent) -> None:
        if self.closed:
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self.dropped += 1

    def __aiter__(self) -> AsyncIterator[ServiceEvent]:
        return self

    async def __anext__(self) -> ServiceEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._service._subs.discard(self)
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)


def _bar_dict(bar: Bars, closed: bool) -> dict[str, Any]:
    return {
        "time": int(bar.time[0]),
        "open": float(bar.open[0]),
        "high": float(bar.high[0]),
        "low": float(bar.low[0]),
        "close": float(bar.close[0]),
        "volume": None if bar.volume is None else float(bar.volume[0]),
        "closed": closed,
    }


class MarketService:
    def __init__(
        self,
        feed: Feed,
        market: Market,
        params: ModelParams,
        history_days: float = 30.0,
        stale_after: float = 90.0,
    ) -> None:
        self.feed = feed
        self.market = market
        self.params = params
        self.history_days = history_days
        self.stale_after = stale_after
        self.base_timeframe = feed.timeframe
        self.health = Health.DEMO if feed.exchange == "demo" else Health.LIVE
        self.health_reason = "loading history"
        self.last_update = time.time()
        self._lock = threading.RLock()
        self._bars: Bars | None = None  # the history now (a view of _history_kept after the first close)
        self._history_kept: BarHistory | None = None
        self._forming: Bars | None = None
        self._engine: IncrementalEngine | None = None
        self._estimate: Estimate | None = None
        self._live_book: LevelBook | None = None
        self._version = 0  # bumps on every closed bar
        self._live_version = 0  # bumps on every forming update too
        # Views and closed heatmap columns, bounded in bytes (a faces' memory budget resizes them).
        self._cache: ByteLRU[Any] = ByteLRU(f"{market.key} views", DEFAULT_CACHE_BYTES // 3)
        self._subs: set[Subscription] = set()
        self._seq = 0
        self._liquidations: deque[Liquidation] = deque(maxlen=20_000)
        self._zones_key: tuple[Any, ...] = ()
        self._books: OrderedDict[int, LevelBook] = OrderedDict()  # book at recent 5m closes
        self._recent_books: OrderedDict[int, LevelBook] = OrderedDict()  # book at the last few bar closes
        self._closed_hm: ByteLRU[ClosedColumns] = ByteLRU(f"{market.key} closed columns", DEFAULT_CACHE_BYTES * 2 // 3)
        self._zones_running = False
        self.load_phase = "loading"  # then "recent" (recent window only, backfilling) and "complete"
        self.loaded = asyncio.Event()  # the views work (the recent window at least)
        self.complete = asyncio.Event()  # the whole history is in
        self._backfill_task: asyncio.Task[None] | None = None
        self._backfill_error = ""
        self._epoch = 0  # bumps when a history is installed (the first pass, the backfill)

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def load(self, recent_days: float | None = None) -> None:
        """History in two passes. First the recent window (``recent_days``, default RECENT_DAYS): one
        batch estimate of it seeds the incremental engine, and the map, zones and views publish at once
        (``load_phase`` "recent", ``history_info()`` in the health says so). Then, in a background task, the
        rest of the history: fetched, estimated over the whole in a worker thread, and swapped in with
        the bars that closed meanwhile appended — the same state a one-pass load would have reached
        (``load_phase`` "complete", a ``history`` event, zones republished). A feed that hands out
        everything at once (or a history no longer than the window) loads in one pass."""
        recent = RECENT_DAYS if recent_days is None else recent_days
        now = self._feed_now()
        since = int(now - self.history_days * 86_400) if self.history_days > 0 else None
        two_pass = since is not None and 0 < recent < self.history_days
        first_since = int(now - recent * 86_400) if two_pass else since
        bars, fell_back = await self._history(first_since)
        if len(bars) == 0:
            raise FeedError(f"{self.market.key}: the feed returned no history")
        # complete when the feed gave more than the window (it ignores since, or replays on its own clock)
        complete = not two_pass or fell_back or int(bars.time[0]) <= int(since or 0) + self.base_timeframe
        loop = asyncio.get_running_loop()
        est = await loop.run_in_executor(None, estimate, bars, self.params)
        with self._lock:
            self._install(bars, est)
            self.load_phase = "complete" if complete else "recent"
        self.health_reason = ""
        self.last_update = time.time()
        self.loaded.set()
        if complete:
            self.complete.set()
        else:
            assert since is not None
            self._backfill_task = asyncio.create_task(self._backfill(since), name=f"backfill {self.market.key}")

    def _feed_now(self) -> float:
        """The feed's clock (the demo runs its own, maybe sped up or fixed), else the wall clock."""
        clock = getattr(self.feed, "now", None) or getattr(self.feed, "clock", None)
        if callable(clock):
            with contextlib.suppress(Exception):
                return float(clock())
        return time.time()

    def _install(self, bars: Bars, est: Estimate) -> None:
        """A new history and the engine seeded from its batch estimate (under the lock). Everything
        derived from the old one goes: cached views, closed columns, book snapshots, the zones key."""
        keep = int(self.history_days * 86_400 / self.base_timeframe)
        self._history_kept = BarHistory(bars, keep=keep if keep > 0 else None)  # appends copy no history
        self._bars = self._history_kept.bars
        self._estimate = est
        self._engine = IncrementalEngine.from_estimate(est)
        self._live_book = None
        self._books.clear()
        self._recent_books.clear()
        self._cache.clear()
        self._closed_hm.clear()
        self._zones_key = ()
        self._epoch += 1
        self._version += 1
        self._live_version += 1

    def history_loaded_days(self) -> float:
        bars = self._bars
        return 0.0 if bars is None or len(bars) == 0 else (int(bars.close_time[-1]) - int(bars.time[0])) / 86_400

    def history_info(self) -> dict[str, Any]:
        """How much of the history the views stand on: ``phase`` "loading", "recent" (the recent window
        only, the rest backfilling) or "complete"; the days loaded and the days asked for."""
        info: dict[str, Any] = {"phase": self.load_phase, "days": round(self.history_loaded_days(), 2),
                                "wanted_days": self.history_days}
        if self._backfill_error:
            info["error"] = self._backfill_error
        return info

    async def _backfill(self, since: int) -> None:
        """The second pass: the history before the recent window, merged in off the event loop. A feed
        error is shown in ``history_info()`` and retried with backoff; the recent views stay up meanwhile."""
        delay = BACKFILL_RETRY_S
        while True:
            try:
                await self._merge_older(since)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the recent views stay usable; say why the rest is missing
                msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                log.warning("%s: backfill failed: %s", self.market.key, msg)
                self._backfill_error = f"backfill failed (retrying in {delay:.0f}s): {msg}"  # until it works
                self._publish("health", self.health_info())
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        self._backfill_error = ""
        self.complete.set()
        self._publish("history", self.history_info())
        self._publish("health", self.health_info())
        self._schedule_zones()

    async def _merge_older(self, since: int) -> None:
        assert self._bars is not None
        first = int(self._bars.time[0])
        older = await self.feed.history(self.market.symbol, since=since, until=first)
        older = older.slice(0, int(np.searchsorted(older.time, first, side="left")))  # a feed that ignores until
        with self._lock:
            merged = older.concat(self._bars) if len(older) else self._bars.concat(self._bars.slice(0, 0))  # a copy
        loop = asyncio.get_running_loop()
        est = await loop.run_in_executor(None, estimate, merged, self.params)
        # Back on the loop (no await from here on, so no bar can close in between): the bars that closed
        # while the estimate ran are appended to the new engine, as they were to the old one.
        with self._lock:
            assert self._bars is not None
            newer = self._bars.slice(int(np.searchsorted(self._bars.time, int(merged.time[-1]), side="right")))
            self._install(merged, est)
            for i in range(len(newer)):
                self._append_closed(newer.slice(i, i + 1))
            self.load_phase = "complete"

    async def _history(self, since: int | None) -> tuple[Bars, bool]:
        """The feed's history since ``since``, and whether it fell back to everything it has."""
        bars = await self.feed.history(self.market.symbol, since=since)
        # Replayed files run on their own clock: if nothing is recent, take what they have.
        if len(bars) == 0 and since is not None:
            return await self.feed.history(self.market.symbol), True
        return bars, False

    async def run(self) -> None:
        """Consume the feed's live stream until cancelled."""
        await self.loaded.wait()
        async for event in self.feed.stream(self.market.symbol):
            self.ingest(event)

    def ingest(self, event: BarUpdate | Liquidation | HealthChange) -> None:
        self.last_update = time.time()
        if isinstance(event, BarUpdate):
            self._on_bar(event)
        elif isinstance(event, Liquidation):
            self._liquidations.append(event)
            self._publish("liquidation", event.to_dict())
        elif isinstance(event, HealthChange):
            self._set_health(event.state, event.reason)

    def _set_health(self, state: Health, reason: str = "") -> None:
        if state != self.health or reason != self.health_reason:
            self.health, self.health_reason = state, reason
            self._publish("health", self.health_info())

    def check_stale(self) -> None:
        """Called periodically: a live feed that has said nothing for too long is stale."""
        if self.health in (Health.LIVE, Health.DELAYED) and time.time() - self.last_update > self.stale_after:
            self._set_health(Health.STALE, f"no data for {time.time() - self.last_update:.0f}s")

    def _on_bar(self, update: BarUpdate) -> None:
        bar = update.bar
        with self._lock:
            assert self._bars is not None and self._engine is not None and self._history_kept is not None
            last_closed = int(self._bars.time[-1])
            t = int(bar.time[0])
            if t <= last_closed:
                return  # a replay of a bar we already closed
            if update.closed:
                r = self._append_closed(bar)
                self._forming = None
                realised = {"time": t, "long_usd": float(r.long_usd[-1]), "short_usd": float(r.short_usd[-1])}
            else:
                self._forming = bar
                realised = None
            self._live_version += 1
            self._live_book = None
        if self.health in (Health.STALE, Health.RECONNECTING):
            self._set_health(Health.LIVE, "")
        self._publish("bar", _bar_dict(bar, update.closed))
        if realised is not None:
            self._publish("realised", realised)
        self._publish("book", {"time": t, "price": float(bar.close[0])})
        if update.closed:
            self._schedule_zones()

    def _append_closed(self, bar: Bars) -> Realised:
        """One closed base bar into the history and the engine (under the lock)."""
        assert self._history_kept is not None and self._engine is not None
        self._history_kept.append(bar)
        self._bars = self._history_kept.bars
        r = self._engine.append(bar)
        self._snapshot_book(int(bar.close_time[0]))
        self._version += 1
        return r

    def _snapshot_book(self, close_time: int) -> None:
        """Keep the book as it stood at recent closes — every bar for the last few minutes, and every
        5-minute boundary (where 5m, 15m, 1h, 4h, 1d and 1w candles all close) for longer — so a new
        heatmap column comes from here instead of a fresh batch estimate."""
        assert self._engine is not None
        book = self._engine.book()
        for ring, every, kept in ((self._books, _SNAPSHOT_EVERY, _SNAPSHOTS_KEPT), (self._recent_books, 1, _RECENT_KEPT)):
            if close_time % every == 0:
                ring[close_time] = book
                while len(ring) > kept:
                    ring.popitem(last=False)

    def _book_at(self, close_time: int) -> LevelBook | None:
        return self._books.get(close_time) or self._recent_books.get(close_time)

    def _maybe_publish_zones(self) -> None:
        self._publish_zones(self._zones_now())

    def _zones_now(self) -> tuple[tuple[Any, ...], list[Zone]]:
        zones = self.zones()
        return tuple((z.side, round(z.price_low, 2), round(z.price_high, 2), z.grade) for z in zones), zones

    def _publish_zones(self, keyed: tuple[tuple[Any, ...], list[Zone]]) -> None:
        key, zones = keyed
        if key != self._zones_key:
            self._zones_key = key
            self._publish("zones", {"zones": self.analytics.zone_rows(refresh_confluence=False)})  # ranked, touch, age

    def _schedule_zones(self) -> None:
        """The zones of the new book are numpy work (milliseconds per market and bar): compute them in a
        thread and publish from the loop, so ingesting a bar never stalls the clients. One at a time;
        a bar closing meanwhile is covered by the next run."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # ingest() called outside an event loop (scripts, tests): inline
            self._maybe_publish_zones()
            return
        if self._zones_running:
            return
        self._zones_running = True

        def done(fut: asyncio.Future[tuple[tuple[Any, ...], list[Zone]]]) -> None:
            self._zones_running = False
            if fut.cancelled():
                return
            if fut.exception() is not None:
                log.warning("%s: zones failed: %s", self.market.key, fut.exception())
                return
            self._publish_zones(fut.result())

        loop.run_in_executor(None, self._zones_now).add_done_callback(done)

    # ---- subscribers --------------------------------------------------------------------------------
    def subscribe(self, maxsize: int = 256) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        self._seq += 1
        event = ServiceEvent(kind, data, self._seq)
        for sub in list(self._subs):
            sub._put(event)

    # ---- plain facts --------------------------------------------------------------------------------
    @property
    def bars(self) -> Bars:
        if self._bars is None:
            raise FeedError(f"{self.market.key}: still loading")
        return self._bars

    @property
    def last_price(self) -> float:
        if self._forming is not None:
            return float(self._forming.close[0])
        return float(self.bars.close[-1])

    @property
    def seed_mode(self) -> str:
        return self._engine.seed_mode if self._engine else "unknown"

    def oi_usd(self) -> float | None:
        oi = self.bars.oi_usd
        if oi is None:
            return None
        finite = oi[np.isfinite(oi)]
        return float(finite[-1]) if len(finite) else None

    def daily_volume_usd(self) -> float | None:
        return daily_volume_usd(self.bars)

    def funding(self, interval_hours: float = 8.0) -> dict[str, Any]:
        fr = self.bars.funding_rate
        rate = None
        if fr is not None and np.isfinite(fr).any():
            rate = float(fr[np.isfinite(fr)][-1])
        now = int(self.bars.close_time[-1]) if self._forming is None else int(self._forming.time[0])
        step = int(interval_hours * 3600)
        return {"rate": rate, "next_time": (now // step + 1) * step, "interval_hours": interval_hours}

    def breakdown(self) -> dict[str, Any] | None:
        """Each venue's share when the feed sums several exchanges (``AggregateFeed``); None otherwise."""
        of = getattr(self.feed, "breakdown", None)
        return of(self.market.symbol) if callable(of) else None

    def health_info(self) -> dict[str, Any]:
        age = time.time() - self.last_update
        info = {"state": self.health.value, "reason": self.health_reason, "last_update": self.last_update, "age_s": round(age, 3),
                "history": self.history_info()}
        oi_source = getattr(self.feed, "oi_source", None)  # which venue fields the OI comes from (exchange feeds)
        if callable(oi_source):
            info["oi_source"] = oi_source(self.market.symbol)
        return info

    def model_info(self) -> dict[str, Any]:
        info = self.params.describe()
        info.update(
            {
                "estimate": True,
                "seed_mode": self.seed_mode,
                "health": self.health_info(),
                "market": self.market.key,
                "base_timeframe": self.base_timeframe,
            }
        )
        return info

    def liquidations(self, since_ms: int | None = None, limit: int = 1000) -> list[Liquidation]:
        events = [e for e in self._liquidations if since_ms is None or e.time_ms >= since_ms]
        return events[-limit:] if limit > 0 else []

    # ---- analytics wiring (engine/analytics.py; docs/ANALYTICS_API.md) -----------------------------
    @property
    def version(self) -> int:
        """Bumps on every closed base bar (caches keyed on closed data use it)."""
        return self._version

    @property
    def live_version(self) -> int:
        """Bumps on every update, the forming bar's too (caches of the live book use it)."""
        return self._live_version

    def market_time(self) -> float:
        """The market's clock (UNIX s): the close of the newest bar in the book. Replays and the sped-up
        demo run on it, so alert cooldowns and persistence are in market time, not wall-clock time."""
        if self._bars is None:
            return time.time()
        return float(self.live_book().time)

    def configure_analytics(self, alerts: AlertSettings | None = None, webhook: WebhookSender | None = None) -> None:
        """Alert thresholds (config file) and the webhook; set by the hub before streaming starts."""
        from engine.analytics import MarketAnalytics

        self._analytics = MarketAnalytics(self, alerts, webhook)

    @property
    def analytics(self) -> MarketAnalytics:
        """Touch, ranked zones, risk, cascades, sessions, alerts for this market (one per service)."""
        an = getattr(self, "_analytics", None)
        if an is None:
            self.configure_analytics()
            an = self._analytics
        return an  # type: ignore[no-any-return]

    def set_memory_budget(self, nbytes: int) -> None:
        """Bound this market's view caches to ``nbytes`` in all (a third views, the rest closed columns)."""
        self._cache.resize(nbytes // 3)
        self._closed_hm.resize(nbytes - nbytes // 3)

    def prune_caches(self, idle_s: float = 60.0) -> None:
        """Drop cached views of an older book (never asked for again) and anything unused for ``idle_s``."""
        live, closed = self._live_version, self._version

        def dead(key: Any) -> bool:
            return key[-1] < (closed if key[0] == "candles" else live)

        self._cache.prune(dead, idle_s)
        self._closed_hm.prune(lambda key: False, idle_s)

    def cache_stats(self) -> dict[str, dict[str, int]]:
        return {"views": self._cache.stats(), "closed_columns": self._closed_hm.stats()}

    # ---- views --------------------------------------------------------------------------------------
    def candles(
        self, timeframe: str | int = "5m", since: int | None = None, until: int | None = None, limit: int | None = None
    ) -> Bars:
        tf = timeframe_seconds(timeframe)
        with self._lock:
            bars, forming, version = self.bars, self._forming, self._version
        key = ("candles", tf, version)
        closed = self._cache.get(key)
        if closed is None:
            closed = bars.resample(tf)
            self._cache.put(key, closed)
        if forming is not None and until is None and len(closed):
            # Only the rows the window can keep take part in the merge (the live views ask for the last
            # few candles every update: O(limit), not a copy of the whole history). The merge looks at
            # the last closed row only, which the cut keeps.
            lo = 0 if since is None else int(np.searchsorted(closed.time, since, side="left"))
            if limit is not None:
                lo = max(lo, len(closed) - max(1, limit))
            closed = closed.slice(min(lo, len(closed) - 1))
        out = closed if forming is None else _merge_forming(closed, forming.resample(tf))
        return _window(out, since, until, limit)

    def live_book(self) -> LevelBook:
        with self._lock:
            if self._live_book is None:
                assert self._engine is not None
                self._live_book = self._engine.preview(self._forming) if self._forming is not None else self._engine.book()
            return self._live_book

    def _current_estimate(self, cover_until: int) -> Estimate:
        """The batch estimate, recomputed only when a column it must provide lies beyond it."""
        with self._lock:
            est = self._estimate
            bars = self.bars
        if est is None or int(est.bars.close_time[-1]) < cover_until <= int(bars.close_time[-1]):
            old, est = est, estimate(bars, self.params)
            with self._lock:
                if self._estimate is old:  # not replaced meanwhile (a backfill swapped the whole history in)
                    self._estimate = est
        return est

    def heatmap(
        self,
        timeframe: str | int = "5m",
        tier: int | None = None,
        bins: int = 200,
        price_low: float | None = None,
        price_high: float | None = None,
        log: bool = False,
        since: int | None = None,
        until: int | None = None,
        columns: int | None = None,
        spread: bool = False,
        keep: bool = True,
    ) -> Heatmap:
        """One column per candle of ``timeframe``: the book at the candle's close (the forming candle's
        column is the live book). ``times`` are the column times (candle close). ``spread``: levels split
        over the bins they overlap (what the chart page draws: no striping). ``keep=False``: compute
        without caching this grid (a batch-sized one-off request: tens of MB that would evict the grids
        the live views use every bar)."""
        tf = timeframe_seconds(timeframe)
        if tf < self.base_timeframe or tf % self.base_timeframe:
            raise ViewError(f"timeframe must be a multiple of the {self.base_timeframe}s base bars")
        if tier is not None and not (0 <= tier < len(self.params.ladder.leverage)):
            raise ViewError(f"tier must be between 0 and {len(self.params.ladder.leverage) - 1}")
        key = ("hm", tf, tier, bins, price_low, price_high, log, since, until, columns, spread, self._live_version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        candles = self.candles(tf, since, until, columns)
        if len(candles) == 0:
            raise ViewError("no candles in that range")
        lo = price_low if price_low is not None else _nice_floor(float(candles.low.min()) / 1.12)
        hi = price_high if price_high is not None else _nice_ceil(float(candles.high.max()) * 1.12)
        edges = price_edges(lo, hi, bins, log)
        closes = candles.time + tf
        with self._lock:
            last_closed = int(self.bars.close_time[-1])
            epoch = self._epoch
        closed_cols = closes[closes <= last_closed]
        # keyed by the history's epoch too: columns a thread computed from the recent window while the
        # backfill was swapped in must never be served after it
        grid = (epoch, tf, bins, lo, hi, log, spread)
        closed = self._closed_columns(closed_cols, edges, grid, keep) if len(closed_cols) else None
        t = len(self.params.ladder.leverage)
        longs = [closed.long_usd] if closed is not None else [np.zeros((0, bins, t))]
        shorts = [closed.short_usd] if closed is not None else [np.zeros((0, bins, t))]
        if len(closes) > len(closed_cols):
            # the candle still forming: the live book (includes the forming base bar if any)
            lb, sb = self.live_book().binned(edges, spread=spread)
            longs.append(lb[None])
            shorts.append(sb[None])
        long_usd, short_usd = np.concatenate(longs), np.concatenate(shorts)
        tiers = self.params.ladder.labels
        if tier is not None:  # copies: a cached slice would pin the whole all-tier grid
            long_usd, short_usd, tiers = owned(long_usd[:, :, tier : tier + 1]), owned(short_usd[:, :, tier : tier + 1]), (tiers[tier],)
        out = Heatmap(closes, edges, long_usd, short_usd, tiers)
        if keep:
            self._cache.put(key, out)
        return out

    def _closed_columns(self, times: np.ndarray, edges: np.ndarray, grid_key: tuple[Any, ...], keep: bool = True) -> Heatmap:
        """Columns at closed candle times. Closed columns never change (no look-ahead), so the newest set
        for this grid is kept and only columns it lacks are added — from the book snapshots when they
        are at the end, else from one batch estimate. A close appends its one column to the kept set
        (engine/columns.py): the work per close does not grow with the columns kept."""
        kept = self._closed_hm.get(grid_key)
        if kept is not None and len(kept):
            missing = kept.missing(times)
            only_newer = not len(missing) or missing[0] > kept.newest
            books = [self._book_at(int(m)) for m in missing] if only_newer else []
            if only_newer and all(b is not None for b in books):
                if len(missing):
                    # Keep every column known for this grid (up to _CLOSED_KEPT), not only the ones asked
                    # for: the live fan-out asks for the last 2 columns of a grid that a 300-column view
                    # shares, and keeping only those would send the next big request to the batch path.
                    binned = [b.binned(edges, spread=grid_key[-1]) for b in books]  # type: ignore[union-attr]
                    if kept.append(missing, np.stack([lb for lb, _ in binned]), np.stack([sb for _, sb in binned])):
                        self._closed_hm.put(grid_key, kept, kept.nbytes())  # reallocated: its new size
                hit = kept.select(times)
                if hit is not None:  # else the request reaches past what is kept: batch below
                    return hit
        est = self._current_estimate(int(times[-1]))
        out = est.heatmap(times=times, edges=edges, spread=grid_key[-1])
        if not keep:
            return out
        cols = ClosedColumns(out, _CLOSED_KEPT)
        self._closed_hm.put(grid_key, cols, cols.nbytes())
        return out

    def liquidation_map(self, bins: int = 200, span: float = 0.25, log: bool = False, spread: bool = False) -> LiquidationMap:
        """``spread``: levels split over the bins they overlap, as drawn beside the heatmap (no striping)."""
        return self.live_book().liquidation_map(bins=bins, span=span, log=log, spread=spread)

    def zones(self, bins: int = 200, span: float = 0.25) -> list[Zone]:
        key = ("zones", bins, span, self._live_version)
        cached = self._cache.get(key)
        if cached is None:
            cached = self.live_book().zones(self.daily_volume_usd(), bins=bins, span=span)
            self._cache.put(key, cached)
        return list(cached)

    def realised(self, timeframe: str | int = "5m", since: int | None = None, until: int | None = None) -> Realised:
        """Estimated liquidations summed per candle of ``timeframe``."""
        tf = timeframe_seconds(timeframe)
        with self._lock:
            assert self._engine is not None
            r = self._engine.realised
        if since is not None:
            # only the rows from ``since`` on: a bucket starting at or after it holds no earlier row, and
            # one starting before it is dropped below anyway (the live fan-out asks for the last bucket
            # every bar: O(that bucket), not O(history))
            a = int(np.searchsorted(r.time, since, side="left"))
            r = Realised(r.time[a:], r.long_usd[a:], r.short_usd[a:])
        bucket = bucket_start(r.time, tf)
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]]) if len(bucket) else np.zeros(0, dtype=np.int64)
        if len(starts) == 0:
            return Realised(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        out = Realised(bucket[starts], np.add.reduceat(r.long_usd, starts), np.add.reduceat(r.short_usd, starts))
        sel = np.ones(len(out.time), dtype=bool)
        if since is not None:
            sel &= out.time >= since
        if until is not None:
            sel &= out.time < until
        return Realised(out.time[sel], out.long_usd[sel], out.short_usd[sel])


# The first pass of a load: enough for the default views (200 columns of 5m is 17 hours; the 24h change
# needs a day); the rest of the history is backfilled behind it.
RECENT_DAYS = 2.0
BACKFILL_RETRY_S = 2.0  # the first wait after a failed backfill (doubling, up to a minute)
_SNAPSHOT_EVERY = 300  # seconds: 5m, 15m, 1h, 4h, 1d and 1w candles all close on 5-minute boundaries
_SNAPSHOTS_KEPT = 24
_RECENT_KEPT = 16  # every base bar, so 1m views also grow column by column
_CLOSED_KEPT = 2000  # closed heatmap columns kept per grid (the API's largest request)
# Bytes of cached views and closed columns per market unless a face sets a budget (set_memory_budget):
# a third for views, two thirds for closed-column grids (2000 x 1000 x 5 tiers is 160 MB, so the largest
# grids are recomputed rather than kept at this size).
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
_NICE = 0.02  # default heatmap ranges snap to 2% steps so a moving price does not change the bins


def _nice_floor(price: float) -> float:
    return float(np.exp(np.floor(np.log(price) / _NICE) * _NICE))


def _nice_ceil(price: float) -> float:
    return float(np.exp(np.ceil(np.log(price) / _NICE) * _NICE))


def _merge_forming(closed: Bars, forming: Bars) -> Bars:
    """Closed candles plus the forming base bar: it extends the last candle if it falls in the same
    bucket, else opens a new one."""
    if len(closed) and forming.time[0] == closed.time[-1]:
        last = closed.slice(len(closed) - 1)
        merged = Bars(
            closed.timeframe,
            last.time,
            last.open,
            np.maximum(last.high, forming.high),
            np.minimum(last.low, forming.low),
            forming.close,
            None if last.volume is None or forming.volume is None else last.volume + forming.volume,
            oi_usd=forming.oi_usd if forming.oi_usd is not None else last.oi_usd,
            funding_rate=forming.funding_rate if forming.funding_rate is not None else last.funding_rate,
        )
        return closed.slice(0, len(closed) - 1).concat(merged)
    return closed.concat(forming)


def _window(bars: Bars, since: int | None, until: int | None, limit: int | None) -> Bars:
    lo = 0 if since is None else int(np.searchsorted(bars.time, since, side="left"))
    hi = len(bars) if until is None else int(np.searchsorted(bars.time, until, side="left"))
    if limit is not None:
        if limit <= 0:
            raise ViewError("limit must be positive")
        lo = max(lo, hi - limit)
    return bars.slice(lo, hi)


class Hub:
    """All markets of one feed: loads them, streams them, hands out services by name."""

    def __init__(
        self,
        feed: Feed,
        symbols: list[str] | tuple[str, ...] | None = None,
        params: ModelParams | None = None,
        history_days: float = 30.0,
        max_default_symbols: int = 3,
        alerts: AlertSettings | None = None,
        webhook: str | None = None,
    ) -> None:
        self.feed = feed
        self.symbols = tuple(symbols) if symbols else None
        self.params = params or ModelParams()
        self.history_days = history_days
        self.max_default_symbols = max_default_symbols
        self.services: dict[str, MarketService] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.alert_settings = alerts
        self.webhook_url = webhook or (alerts.webhook if alerts is not None else None)
        self.webhook: WebhookSender | None = None
        self._others_go = asyncio.Event()

    async def start(self, first: str | None = None, wait_all: bool = True, defer_others: bool = False) -> None:
        """Open the markets and start streaming. Each market loads its recent window first and backfills
        the rest of its history in the background (``MarketService.load``). ``first`` (the market a face
        shows; default the first chosen) loads before the others. With ``wait_all`` every market's recent
        window is in when this returns (all loading at once, as exchange fetches overlap); without it only
        ``first``'s is, and the others load one after another in the background (``svc.loaded``), so the
        face's market is not slowed by theirs (the demo's simulations share one interpreter);
        ``defer_others`` holds them until the face calls ``load_others()`` (once its first picture is
        drawn) or OTHERS_AFTER_S have passed."""
        markets = await self.feed.markets()
        by_name = {m.symbol: m for m in markets}
        if self.symbols:
            chosen = []
            for name in self.symbols:
                m = by_name.get(name) or _match(markets, name)
                if m is None:
                    raise UnknownSymbol(f"unknown symbol {name!r} on {self.feed.exchange}; try {', '.join(sorted(by_name)[:8])}")
                chosen.append(m)
        else:
            chosen = markets[: self.max_default_symbols]
        exchange = {"demo": "binance", "binanceusdm": "binance"}.get(self.feed.exchange, self.feed.exchange)
        for m in chosen:
            params = dataclasses.replace(self.params, coin=m.coin, exchange=exchange if exchange in ("binance", "bybit", "okx") else "binance")
            self.services[m.key] = MarketService(self.feed, m, params, self.history_days)
        order = list(self.services.values())
        if first is not None:
            lead = self.get(first)
            order = [lead] + [s for s in order if s is not lead]
        if wait_all:
            await asyncio.gather(*(s.load() for s in order))
        else:
            await order[0].load()
        await self._start_analytics()
        if not defer_others:
            self.load_others()
        if not wait_all and len(order) > 1:
            self._tasks.append(asyncio.create_task(self._load_rest(order[1:]), name="load markets"))
        for s in self.services.values():
            self._tasks.append(asyncio.create_task(self._run(s), name=f"stream {s.market.key}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="staleness watchdog"))
        self._tasks.append(asyncio.create_task(self._alert_loop(), name="alerts"))

    async def _load_rest(self, services: list[MarketService]) -> None:
        """The markets behind the first, one at a time; a failure is shown as that market's health and
        retried with backoff (the others carry on)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._others_go.wait(), OTHERS_AFTER_S)
        for svc in services:
            delay = 2.0
            while not svc.loaded.is_set():
                try:
                    await svc.load()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one market's history must not stop the others
                    msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                    log.warning("%s: loading failed: %s", svc.market.key, msg)
                    svc._set_health(Health.RECONNECTING, f"loading history failed: {msg}")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60.0)

    def load_others(self) -> None:
        """Let the markets behind the first load now (``start(defer_others=True)``)."""
        self._others_go.set()

    async def ready(self, complete: bool = False) -> None:
        """Wait until every market's views work (``complete``: until their whole history is in)."""
        for s in list(self.services.values()):
            await (s.complete if complete else s.loaded).wait()

    async def _run(self, svc: MarketService) -> None:
        """Keep a market streaming: a feed error is shown as health, and the stream is retried."""
        delay = 1.0
        while True:
            try:
                await svc.run()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a feed fault must never take the process down
                log.warning("%s: stream failed: %s", svc.market.key, exc)
                svc._set_health(Health.RECONNECTING, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ---- alerts: one rule set per market, run here so every face shows the same ones -------------------
    async def _start_analytics(self) -> None:
        from engine.alerts import WebhookSender
        from engine.config import AlertSettings

        settings = self.alert_settings or AlertSettings()
        if self.webhook_url and self.webhook is None:
            self.webhook = WebhookSender(self.webhook_url)
            await self.webhook.start()
        for s in self.services.values():
            s.configure_analytics(settings, self.webhook)

    def configure_alerts(self, settings: AlertSettings) -> None:
        """New thresholds for every market (history and cooldowns start afresh; the webhook stays)."""
        self.alert_settings = settings
        for s in self.services.values():
            s.configure_analytics(settings, self.webhook)

    async def _alert_loop(self) -> None:
        """Every few seconds, the rules of each market whose book moved; what fires is published as an
        ``alert`` event (and POSTed to the webhook). The numpy work runs in a worker thread."""
        seen: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.25)  # short steps: configure_alerts() may shorten the interval
            interval = self.alert_settings.interval_s if self.alert_settings is not None else 5.0
            if loop.time() - last < interval:
                continue
            last = loop.time()
            for s in list(self.services.values()):
                if not s.loaded.is_set() or seen.get(s.market.key) == s.live_version:
                    continue
                seen[s.market.key] = s.live_version
                try:
                    fired = await loop.run_in_executor(None, s.analytics.alerts.check)
                except Exception as exc:  # an alert rule must never end the stream
                    log.warning("%s: alerts failed: %s", s.market.key, exc)
                    continue
                for alert in fired:
                    s._publish("alert", {"kind": alert.get("rule"), **alert})

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            for s in self.services.values():
                s.check_stale()

    def markets(self) -> list[Market]:
        return [s.market for s in self.services.values()]

    def get(self, name: str) -> MarketService:
        if name in self.services:
            return self.services[name]
        for s in self.services.values():
            if name in (s.market.symbol, s.market.coin, s.market.symbol.split(":")[0]):
                return s
        raise UnknownSymbol(f"unknown symbol {name!r}; this server has {', '.join(self.services) or 'none'}")

    async def stop(self) -> None:
        self._tasks.extend(s._backfill_task for s in self.services.values() if s._backfill_task is not None)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.webhook is not None:
            await self.webhook.drain(timeout_s=2.0)
            await self.webhook.close()
            self.webhook = None
        await self.feed.close()


OTHERS_AFTER_S = 5.0  # the markets behind the first start loading by then even if the face never says so


def _match(markets: list[Market], name: str) -> Market | None:
    n = name.upper()
    for m in markets:
        if n in (m.coin.upper(), m.symbol.upper(), m.symbol.split(":")[0].upper(), m.key.upper()):
            return m
    return None


def open_hub(
    feed: str | Feed = "demo",
    symbols: list[str] | tuple[str, ...] | None = None,
    *,
    ladder: str | None = None,
    history_days: float = 30.0,
    speed: float | None = None,
    seed: int | None = None,
    now: float | None = None,
    alerts: AlertSettings | None = None,
    webhook: str | None = None,
    store: Store | None = None,
) -> Hub:
    """The one way the commands open markets (``serve``, ``tui``): a feed by name (or a Feed object), the
    model with ``--ladder`` (preset, JSON, or a JSON file — engine/ladderfile.py), alert thresholds and a
    webhook. Not started: ``await hub.start()``. LadderError / FeedError (one line) on bad input, before
    anything runs. With an open ``store`` the markets read their history from it first and record what
    they stream into it, as a cluster worker's do (engine/worker.py)."""
    params = ModelParams(ladder=load_ladder(ladder)) if ladder else ModelParams()
    if isinstance(feed, str):
        opts: dict[str, Any] = {"history_days": history_days}  # the demo backfills only this much
        for name, value in (("speed", speed), ("seed", seed), ("now", now)):
            if value is not None:
                opts[name] = value
        feed = open_feed(feed, **opts)
    if store is not None:
        feed = RecordingFeed(feed, store)
    return Hub(feed, symbols=list(symbols) if symbols else None, params=params, history_days=history_days,
               alerts=alerts, webhook=webhook)


# What the faces may use from the engine besides engine.analytics (tests/test_face_imports.py).
__all__ = [
    "ByteLRU", "nbytes",  # the byte-bounded cache, for the faces' own caches (one memory budget)
    "FEEDS", "TIMEFRAMES", "Bars", "BarsError", "CascadeError", "Feed", "FeedError", "Health", "Heatmap", "Hub",
    "LadderError", "Liquidation", "LiquidationMap", "Market", "MarketService", "ModelParams", "Realised", "RiskError",
    "ServiceEvent", "Subscription", "TouchError", "UnknownSymbol", "ViewError", "Zone", "bucket_start", "load_ladder", "open_feed",
    "open_hub", "price_edges", "timeframe_name", "timeframe_seconds",
]
