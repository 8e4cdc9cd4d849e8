"""The markets this server shows: symbol lookup across feeds, and cached view computation off the event loop.

Views are numpy work (the engine's), so they run in a thread pool; identical requests arriving together
share one computation (single flight) and the serialised answer is cached until the market changes
(a new bar or a live-book update bumps the market's generation).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from engine.service import Hub, Market, MarketService, UnknownSymbol

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
    def __init__(self, hubs: Sequence[Hub], workers: int = 4, cache_entries: int = 256, max_stale_s: float = 0.0) -> None:
        self.hubs = list(hubs)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liqheat-view")
        self.cache_entries = cache_entries
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self.generation: dict[str, int] = {}
        # Stale-while-revalidate: while a newer answer is being computed, callers get the previous one if
        # it is at most this old (0: always wait). Keeps REST latency flat on a market that ticks fast.
        self.max_stale_s = max_stale_s
        self._latest: dict[tuple[str, Hashable], tuple[float, Any]] = {}
        # (path, query string) -> (market key, generation, answer): repeated identical requests
        self._memo: OrderedDict[tuple[str, str], tuple[str, int, Any]] = OrderedDict()
        # (path, query string) -> (service, cache key, build) of a request that passed validation: the same
        # query again goes straight to the cache even while the market's new answer is being computed (on
        # a market ticking 4x a second, re-validating those requests was a quarter of the REST load)
        self._calls: OrderedDict[tuple[str, str], tuple[MarketService, Hashable, Callable[[], Any]]] = OrderedDict()

    # ---- lookup -------------------------------------------------------------------------------------
    def services(self) -> list[MarketService]:
        return [svc for hub in self.hubs for svc in hub.services.values()]

    def resolve(self, name: str) -> MarketService:
        """A market key (``demo:BTC/USDT:USDT``), a unified symbol, a coin, or a UDF name (``DEMO:BTCUSDT``)."""
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

    def remember(self, path: str, query: str, market: str, gen: int, answer: Any) -> None:
        if self.gen(market) != gen:
            return  # the market moved while this was computed: do not pin a stale answer
        self._memo[(path, query)] = (market, gen, answer)
        if len(self._memo) > 4 * self.cache_entries:
            self._memo.popitem(last=False)

    def recall(self, path: str, query: str) -> Any | None:
        hit = self._memo.get((path, query))
        if hit is None or self.gen(hit[0]) != hit[1]:
            return None
        return hit[2]

    def remember_call(self, path: str, query: str, svc: MarketService, key: Hashable, build: Callable[[], Any]) -> None:
        self._calls[(path, query)] = (svc, key, build)
        if len(self._calls) > 4 * self.cache_entries:
            self._calls.popitem(last=False)

    def recall_call(self, path: str, query: str) -> tuple[MarketService, Hashable, Callable[[], Any]] | None:
        return self._calls.get((path, query))

    # ---- computation --------------------------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def cached(self, svc: MarketService, key: Hashable, fn: Callable[[], T]) -> T:
        """``fn()`` in the pool, cached per (market, key, generation); concurrent callers share one run."""
        full = (svc.market.key, key, self.gen(svc.market.key))
        if full in self._cache:
            self._cache.move_to_end(full)
            return self._cache[full]  # type: ignore[no-any-return]
        task = self._inflight.get(full)
        if task is None:
            # The computation is its own task: a caller that goes away does not cancel it for the others.
            task = asyncio.ensure_future(self.run(fn))
            self._inflight[full] = task
            task.add_done_callback(lambda t: self._store(full, t))
        if self.max_stale_s > 0:
            previous = self._latest.get((svc.market.key, key))
            if previous is not None and time.monotonic() - previous[0] <= self.max_stale_s:
                return previous[1]  # type: ignore[no-any-return]
        return await asyncio.shield(task)  # type: ignore[no-any-return]

    def is_current(self, svc: MarketService, key: Hashable, value: Any) -> bool:
        """Whether ``value`` is the answer for the market as it is now (not a stale-while-revalidate one)."""
        return self._cache.get((svc.market.key, key, self.gen(svc.market.key))) is value

    def _store(self, full: Hashable, task: asyncio.Future[Any]) -> None:
        self._inflight.pop(full, None)
        if task.cancelled() or task.exception() is not None:
            return
        self._cache[full] = task.result()
        market, key, _ = full  # type: ignore[misc]
        self._latest[(market, key)] = (time.monotonic(), task.result())
        if len(self._latest) > 4 * self.cache_entries:
            self._latest.pop(next(iter(self._latest)))
        while len(self._cache) > self.cache_entries * max(1, len(self.services())):
            self._cache.popitem(last=False)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
