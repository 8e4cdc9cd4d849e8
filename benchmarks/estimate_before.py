"""The batch estimate's code paths as they were before issue 12's estimate round, kept so that the
benchmarks can time them beside today's in one run (the same answers, to the bit).

- first touch: run starts listed per level, the queries radix-sorted by level, then one small binary
  search per level in a Python loop (~1,100 levels for 8,015 5m bars: the loop was most of the estimate).

``with before(): estimate(bars, params)`` runs the estimate through them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from engine.model import estimate as estimate_module
from engine.model.lifetime import FirstTouch


class FirstTouchBefore(FirstTouch):
    per_level_min = 32  # fewest queries per level (on average) for the per-level search to beat the table

    def first(self, start: np.ndarray, q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        start = np.asarray(start)
        q = np.asarray(q)
        if out is None:
            out = np.empty(len(start), dtype=np.int64)
        if self.n == 0 or len(start) == 0:
            out[:] = self.n
            return out
        runs = _run_starts(self.reach, int(q.min()), int(q.max()), budget=2 * len(q) + self.run_budget)
        if runs is not None:
            return _first_by_runs(self.reach, runs, int(q.min()), start, q, out, self.first_by_table, self.per_level_min)
        out[:] = self.first_by_table(start, q)
        return out


def _run_starts(reach: np.ndarray, kmin: int, kmax: int, budget: int) -> tuple[np.ndarray, np.ndarray] | None:
    n = len(reach)
    r = np.clip(reach, kmin, kmax + 1)
    prev = np.empty_like(r)
    prev[0] = kmax + 1
    prev[1:] = r[:-1]
    count = np.maximum(prev - r, 0)
    total = int(count.sum())
    if total > budget:
        return None
    k = kmax - kmin + 1
    bar = np.repeat(np.arange(n, dtype=np.int64), count)
    level = np.repeat(r - kmin, count) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count))
    order = np.argsort(level, kind="stable")
    level = level[order]
    per_level = np.bincount(level, minlength=k)
    bars = np.full(total + k, n, dtype=np.int64)
    bars[np.arange(total) + level] = bar[order]
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(per_level + 1, out=offsets[1:])
    return bars, offsets


_CHUNK = 1 << 19


def _first_by_runs(
    reach: np.ndarray,
    runs: tuple[np.ndarray, np.ndarray],
    kmin: int,
    start: np.ndarray,
    q: np.ndarray,
    out: np.ndarray,
    fallback: Callable[[np.ndarray, np.ndarray], np.ndarray],
    per_level_min: int,
) -> np.ndarray:
    bars, offsets = runs
    n = len(reach)
    levels = len(offsets) - 1
    reach_ext = np.r_[reach, np.iinfo(np.int64).max]
    for lo in range(0, len(start), _CHUNK):
        s = np.minimum(start[lo : lo + _CHUNK], n)
        qc = q[lo : lo + _CHUNK]
        dst = out[lo : lo + _CHUNK]
        rel = qc.astype(np.int64) - kmin
        per_level = np.bincount(rel, minlength=levels)
        present = np.flatnonzero(per_level)
        if len(present) * per_level_min > len(rel):
            dst[:] = fallback(s, qc)
            continue
        order = np.argsort(rel.astype(np.uint16) if levels <= 1 << 16 else rel, kind="stable")
        starts = s[order]
        found = np.empty(len(starts), dtype=np.int64)
        bounds = np.zeros(levels + 1, dtype=np.int64)
        np.cumsum(per_level, out=bounds[1:])
        for k in present.tolist():
            a, b = bounds[k], bounds[k + 1]
            own = bars[offsets[k] : offsets[k + 1]]
            found[a:b] = own[np.searchsorted(own, starts[a:b])]
        dst[order] = found
        np.copyto(dst, s, where=reach_ext[s] <= qc, casting="unsafe")
    return out


@contextmanager
def before() -> Iterator[None]:
    """Estimates made inside use the code paths above."""
    saved = estimate_module.FirstTouch
    estimate_module.FirstTouch = FirstTouchBefore  # type: ignore[misc]
    try:
        yield
    finally:
        estimate_module.FirstTouch = saved  # type: ignore[misc]
