"""The markets this server shows: symbol lookup across feeds, and cached view computation off the event loop.

Views are numpy work (the engine's), so they run in a thread pool; identical requests arriving together
share one computation (single flight) and the serialised answer is cached until the market changes
(a new bar or a live-book update bumps the market's generation).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from engine.service import ByteLRU, Hub, Market, MarketService, UnknownSymbol, nbytes

from .budget import MemoryBudget
from .limits import Lane, LoopWatch

T = TypeVar("T")


def compact_ticker(market: Market) -> str:
    """``BTC/USDT:USDT`` → ``BTCUSDT`` (the ticker a trader types in a UDF search box)."""
    base_quote = market.symbol.split(":")[0]
    return base_quote.replace("/", "").upper()


def udf_name(market: Market) -> str:
    """``EXCHANGE:TICKER``, TradingView's convention (``DEMO:BTCUSDT``)."""
    return f"{market.exchange.upper()}:{compact_ticker(market)}"


def dumps(obj: Any) -> str:
    # NaN is not JSON; the payload builders already map missing numbers to None.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class Markets:
    def __init__(self, hubs: Sequence[Hub], workers: int = 4, cache_entries: int = 256, max_stale_s: float = 0.0,
                 budget: MemoryBudget | None = None, heavy_workers: int = 1, heavy_waiting: int = 8,
                 heavy_per_client: int = 2, light_waiting: int = 256, light_per_client: int = 64,
                 heavy_duty: float = 1.0) -> None:
        self.hubs = list(hubs)
        self.budget = budget or MemoryBudget()
        # Separate threads per kind of work (server.limits): the live fan-out never waits behind a batch.
        self.live = Lane("live", 2, 1 << 30, 1 << 30)
        self.light = Lane("light", workers, light_waiting, light_per_client)
        self.heavy = Lane("heavy", heavy_workers, heavy_waiting, heavy_per_client, work_bytes=self.budget.work,
                          duty=heavy_duty)
        self.executor = self.live.executor
        # Live first: a batch job does not start while live work computes, and runs less while the loop
        # (where the live pages' bars go out) is late.
        self.live_inflight = 0
        self.loop_watch = LoopWatch()
        self.heavy.defer = lambda: self.live_inflight > 0
        self.heavy.pressure = self.loop_watch.pressure
        self.cache_entries = cache_entries  # kept for callers; the bound is in bytes now
        # (market, key, generation) -> answer, at most the budget's share of bytes (least recently used go)
        self._cache: ByteLRU[Any] = ByteLRU("answers", self.budget.answers)
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self.generation: dict[str, int] = {}
        # Stale-while-revalidate: while a newer answer is being computed, callers get the previous one if
        # it is at most this old (0: always wait). Keeps REST latency flat on a market that ticks fast.
        # Holds the cache key of the previous answer, not the answer: what the cache evicted is gone.
        self.max_stale_s = max_stale_s
        self._latest: ByteLRU[tuple[float, Hashable]] = ByteLRU("latest", self.budget.queries // 2)
        # (path, query string) -> (market key, generation, cache key): repeated identical requests
        self._memo: ByteLRU[tuple[str, int, Hashable]] = ByteLRU("memo", self.budget.queries // 4)
        # (path, query string) -> (service, cache key, build) of a request that passed validation: the same
        # query again goes straight to the cache even while the market's new answer is being computed (on
        # a market ticking 4x a second, re-validating those requests was a quarter of the REST load)
        self._calls: ByteLRU[tuple[MarketService, Hashable, Callable[[], Any], str, int]] = ByteLRU(
            "calls", self.budget.queries // 4)

    def apply_budget(self) -> None:
        """Split the engine's share of the budget across the markets (call once they are loaded)."""
        services = self.services()
        for svc in services:
            svc.set_memory_budget(self.budget.engine_caches // max(1, len(services)))

    def prune(self, idle_s: float = 60.0, answers_idle_s: float | None = None) -> None:
        """Free what cannot be asked for again: answers of an older market generation (kept only while
        stale-while-revalidate may hand them out), and anything unused for ``idle_s`` (answers: for
        ``answers_idle_s`` if given)."""
        gens = dict(self.generation)
        answers_idle = idle_s if answers_idle_s is None else answers_idle_s
        self._cache.prune(lambda key: key[2] < gens.get(key[0], 0) - 1, answers_idle)  # type: ignore[index]
        self._latest.prune(lambda key: False, idle_s)
        self._memo.prune(lambda key: False, idle_s)
        self._calls.prune(lambda key: False, idle_s)
        for svc in self.services():
            svc.prune_caches(idle_s)

    def cache_bytes(self) -> int:
        """Bytes in all of this server's answer caches and the markets' view caches."""
        return sum(c["bytes"] for c in self.memory()["caches"].values())

    def memory(self) -> dict[str, Any]:
        """Bytes held per cache (what /api/v1/health reports)."""
        caches = {c.name: c.stats() for c in (self._cache, self._latest, self._memo, self._calls)}
        for svc in self.services():
            for name, st in svc.cache_stats().items():
                caches[f"{svc.market.key} {name}"] = st
        return {"caches": caches, "cache_bytes": sum(c["bytes"] for c in caches.values()),
                "lanes": {lane.name: lane.stats() for lane in (self.live, self.light, self.heavy)},
                "loop_late_ms": round(max(self.loop_watch.late_ms, default=0.0), 1),
                "gc_full_ms": round(max(self.loop_watch.gc_full_ms, default=0.0), 1)}

    # ---- lookup -------------------------------------------------------------------------------------
    def services(self) -> list[MarketService]:
        return [svc for hub in self.hubs for svc in hub.services.values()]

    def resolve(self, name: str) -> MarketService:
        """A market key (``demo:BTC/USDT:USDT``), a unified symbol, a coin, or a UDF name (``DEMO:BTCUSDT``).
        A market still loading is returned too (its views answer 503 "still loading") and its hub starts
        loading the markets behind the first now, if it was holding them back."""
        svc = self._resolve(name)
        if not svc.loaded.is_set():
            for hub in self.hubs:
                load_others = getattr(hub, "load_others", None)
                if callable(load_others):
                    load_others()
        return svc

    def _resolve(self, name: str) -> MarketService:
        name = name.strip()
        if not name:
            raise UnknownSymbol("symbol must not be empty")
        for svc in self.services():
            if name == svc.market.key:
                return svc
        upper = name.upper()
        for svc in self.services():
            if upper == udf_name(svc.market) or upper == compact_ticker(svc.market):
                return svc
        for hub in self.hubs:
            try:
                return hub.get(name)
            except UnknownSymbol:
                continue
        known = ", ".join(s.market.key for s in self.services()) or "none"
        raise UnknownSymbol(f"unknown symbol {name[:60]!r}; this server has {known}")

    # ---- cache invalidation ---------------------------------------------------------------------------
    def bump(self, key: str) -> None:
        """The market changed (new bar / live book): its cached views are stale."""
        self.generation[key] = self.generation.get(key, 0) + 1

    def gen(self, key: str) -> int:
        return self.generation.get(key, 0)

    def remember(self, path: str, query: str, market: str, gen: int, key: Hashable) -> None:
        """The answer to (path, query) is the cached answer ``key`` of ``market`` at ``gen``."""
        if self.gen(market) != gen:
            return  # the market moved while this was computed: do not pin a stale answer
        self._memo.put((path, query), (market, gen, key), _key_bytes(path, query))

    def recall(self, path: str, query: str) -> Any | None:
        hit = self._memo.get((path, query))
        if hit is None or self.gen(hit[0]) != hit[1]:
            return None
        return self._cache.get((hit[0], hit[2], hit[1]))

    def remember_call(self, path: str, query: str, svc: MarketService, key: Hashable, build: Callable[[], Any],
                      lane: str = "light", cost_bytes: int = 0) -> None:
        self._calls.put((path, query), (svc, key, build, lane, cost_bytes), _key_bytes(path, query))

    def recall_call(self, path: str, query: str) -> tuple[MarketService, Hashable, Callable[[], Any], str, int] | None:
        return self._calls.get((path, query))

    # ---- computation --------------------------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Live work (the fan-out, alerts): its own threads, never behind a client's request."""
        loop = asyncio.get_running_loop()
        self.live_inflight += 1
        try:
            return await loop.run_in_executor(self.live.executor, fn, *args)
        finally:
            self.live_inflight -= 1
            self.live.done += 1

    def lane(self, name: str) -> Lane:
        return {"live": self.live, "light": self.light, "heavy": self.heavy}[name]

    async def cached(self, svc: MarketService, key: Hashable, fn: Callable[[], T], lane: str = "light",
                     client: str = "", cost_bytes: int = 0) -> T:
        """``fn()`` in ``lane``'s pool, cached per (market, key, generation); concurrent callers share one
        run (only the first is admitted by the lane: the others wait for the same answer)."""
        full = (svc.market.key, key, self.gen(svc.market.key))
        hit = self._cache.get(full)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        task = self._inflight.get(full)
        if task is None:
            if self.max_stale_s > 0:
                stale = self._stale(svc, key)
                if stale is not None:  # answer now, recompute in the background if a lane has room
                    try:
                        self._start(full, fn, lane, client, cost_bytes)
                    except Exception:  # noqa: S110 - busy: the stale answer is all this caller needs
                        pass
                    return stale  # type: ignore[no-any-return]
            task = self._start(full, fn, lane, client, cost_bytes)
        elif self.max_stale_s > 0:
            stale = self._stale(svc, key)
            if stale is not None:
                return stale  # type: ignore[no-any-return]
        return await asyncio.shield(task)  # type: ignore[no-any-return]

    def _start(self, full: Hashable, fn: Callable[[], T], lane: str, client: str, cost_bytes: int) -> asyncio.Future[T]:
        worker = self.lane(lane)
        worker.admit(client, cost_bytes)  # raise Busy before anything is queued
        # The computation is its own task: a caller that goes away does not cancel it for the others.
        task = asyncio.ensure_future(worker.run(client, fn, cost_bytes=cost_bytes))
        self._inflight[full] = task
        task.add_done_callback(lambda t: self._store(full, t))
        return task

    def _stale(self, svc: MarketService, key: Hashable) -> Any | None:
        previous = self._latest.get((svc.market.key, key))
        if previous is None or time.monotonic() - previous[0] > self.max_stale_s:
            return None
        return self._cache.get(previous[1])

    def is_current(self, svc: MarketService, key: Hashable, value: Any) -> bool:
        """Whether ``value`` is the answer for the market as it is now (not a stale-while-revalidate one)."""
        return self._cache.get((svc.market.key, key, self.gen(svc.market.key))) is value

    def _store(self, full: Hashable, task: asyncio.Future[Any]) -> None:
        self._inflight.pop(full, None)
        if task.cancelled() or task.exception() is not None:
            return
        if self._cache.put(full, task.result()):
            market, key, _ = full  # type: ignore[misc]
            self._latest.put((market, key), (time.monotonic(), full), 256)

    def close(self) -> None:
        self.loop_watch.stop()
        for lane in (self.live, self.light, self.heavy):
            lane.close()


def _key_bytes(path: str, query: str) -> int:
    """A remembered query: its strings plus the small tuple that points at the answer."""
    return nbytes(path) + nbytes(query) + 512
