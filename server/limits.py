"""Fair scheduling and admission: who may make the server work, and how much at once.

Three lanes of threads, so one kind of work never queues behind another:

- ``live``: what open pages need every bar (the fan-out's deltas, alerts). Nobody else uses it.
- ``light``: small REST answers and default-sized snapshots (a page opening its first chart).
- ``heavy``: batch-sized requests (big heatmaps). One client (IP) may have a few waiting; past that it
  gets 429, and past the lane's queue everyone gets 503 — both with ``Retry-After``. A request is
  admitted only if its estimated working memory fits the budget's share for work in flight.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .params import BadRequest

T = TypeVar("T")

# A heatmap (or snapshot) above this many cells is batch-sized: the page's default is 300 x 200.
HEAVY_CELLS = 120_000
# Longest a batch job waits for live work to finish before it starts anyway (batch work must progress).
MAX_DEFER_S = 0.5
# Event-loop lateness at which the live pages count as hurting (heavy lane at its lowest duty).
LOOP_LAG_FULL_MS = 50.0


class LoopWatch:
    """How late the event loop runs (a timer that should fire every ``every_s``): the live pages' bars
    go out on this loop, so its lateness is what they feel. ``pressure()`` is the worst of the last
    ~2 s, scaled to [0, 1] at LOOP_LAG_FULL_MS."""

    def __init__(self, every_s: float = 0.05, window: int = 40) -> None:
        self.every_s = every_s
        self.late_ms: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None
        # The cyclic garbage collector's passes over the oldest generation stop every thread (the loop
        # too) for as long as they walk the heap: one cause of lateness, measured apart (health).
        self.gc_full_ms: deque[float] = deque(maxlen=window)
        self._gc_started = 0.0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_full_ms.append((time.perf_counter() - self._gc_started) * 1000)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop watch")
            gc.callbacks.append(self._gc)

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.every_s)
            self.late_ms.append(max(0.0, (time.perf_counter() - t0 - self.every_s) * 1000))

    def pressure(self) -> float:
        return min(1.0, max(self.late_ms, default=0.0) / LOOP_LAG_FULL_MS)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            if self._gc in gc.callbacks:
                gc.callbacks.remove(self._gc)


class Busy(Exception):
    """The server will not take this work now: HTTP ``status`` with ``Retry-After: retry_after``."""

    def __init__(self, message: str, status: int = 503, retry_after: int = 2) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Lane:
    """Threads for one kind of work, with a bounded queue and a per-client share of it."""

    def __init__(self, name: str, workers: int, max_waiting: int, per_client: int, work_bytes: int = 0,
                 duty: float = 1.0) -> None:
        self.name = name
        # Share of the time this lane may compute (< 1: after a job of t seconds the next one waits
        # t * (1/duty - 1)). Numpy work in a thread still holds the interpreter lock much of the time, so a
        # lane busy back to back slows the event loop (and every live page) down; a pause gives it back.
        self.duty = duty
        # Live first (set by server.markets): while ``defer()`` is true a job waits to start (at most
        # MAX_DEFER_S), and ``pressure()`` in [0, 1] (how late the live pages are) lowers the duty further.
        self.defer: Callable[[], bool] = lambda: False
        self.pressure: Callable[[], float] = lambda: 0.0
        self.deferred_s = 0.0
        self._gate = asyncio.Lock() if duty < 1.0 else None
        self._next_start = 0.0
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"liqheat-{name}")
        self.workers = workers
        self.max_waiting = max_waiting  # admitted (running + queued) jobs at most
        self.per_client = per_client
        self.work_bytes = work_bytes  # 0: not bounded by memory
        self.admitted = 0
        self.bytes_in_flight = 0
        self.by_client: Counter[str] = Counter()
        self.refused = 0
        self.done = 0

    def admit(self, client: str, cost_bytes: int = 0) -> None:
        """Raise :class:`Busy` unless this job may queue now."""
        retry = max(1, math.ceil(self.admitted / max(1, self.workers)))
        if self.work_bytes and cost_bytes > self.work_bytes:
            raise BadRequest(f"this request needs ~{cost_bytes // 2**20} MB of working memory; the server's "
                             f"budget allows {self.work_bytes // 2**20} MB: ask for fewer columns or bins")
        if self.by_client[client] >= self.per_client:
            self.refused += 1
            raise Busy(f"too many {self.name} requests from this client at once ({self.per_client}); retry later",
                       429, retry)
        if self.admitted >= self.max_waiting:
            self.refused += 1
            raise Busy(f"the server is busy with {self.admitted} {self.name} requests; retry later", 503, retry)

    async def run(self, client: str, fn: Callable[..., T], *args: Any, cost_bytes: int = 0) -> T:
        self.admit(client, cost_bytes)
        self.admitted += 1
        self.by_client[client] += 1
        self.bytes_in_flight += cost_bytes
        try:
            if self._gate is None:
                return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
            async with self._gate:  # one at a time, with a pause after each
                await asyncio.sleep(max(0.0, self._next_start - time.monotonic()))
                waited = time.monotonic()
                while self.defer() and time.monotonic() - waited < MAX_DEFER_S:  # noqa: ASYNC110 - a condition, not an event
                    await asyncio.sleep(0.005)  # live work is computing: do not start a batch against it
                started = time.monotonic()
                self.deferred_s += started - waited
                try:
                    return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
                finally:
                    ended = time.monotonic()
                    duty = self.duty * (1.0 - 0.8 * min(1.0, max(0.0, self.pressure())))
                    self._next_start = ended + (ended - started) * (1.0 / duty - 1.0)
        finally:
            self.admitted -= 1
            self.bytes_in_flight -= cost_bytes
            self.by_client[client] -= 1
            if self.by_client[client] <= 0:
                del self.by_client[client]
            self.done += 1

    def stats(self) -> dict[str, Any]:
        return {"workers": self.workers, "admitted": self.admitted, "max_waiting": self.max_waiting,
                "per_client": self.per_client, "bytes_in_flight": self.bytes_in_flight, "refused": self.refused,
                "done": self.done, "deferred_s": round(self.deferred_s, 3)}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class TokenBucket:
    """``rate`` events a second on average, bursts up to ``burst`` (subscription churn, messages)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True
