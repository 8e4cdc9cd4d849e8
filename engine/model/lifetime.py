"""When does price first reach a level? Vectorised over millions of cohorts.

For a long cohort opened in bar b at level k, it is liquidated in the first later bar j > b whose low
reaches the level: touched_long[j] <= k. Shorts are the mirror image (negate both sides).

Two ways to answer "first j >= start with reach[j] <= q" for all cohorts at once:

* **Run starts** (used when they are few, the normal case). For one level k, the bars that reach it form
  runs; if bar ``start`` does not reach k, the answer is the first run *start* after it. A run of level k
  starts at bar j when reach[j] <= k < reach[j-1], so bar j starts runs for the levels between its reach
  and the previous bar's: their total is the price path's downward variation measured in levels (a few
  hundred thousand for a year of 1-minute BTC bars), far fewer than the cohorts. Sorted (level, bar)
  keys then answer every cohort with one binary search, done in level order so that consecutive
  searches walk the same few keys (nine times faster than in cohort order).
* **Sparse table** (fallback when the path is so jagged, or the grid so fine, that run starts would
  outnumber the cohorts): a table of range minima answers "does anything in [j, j + 2^l) reach q?" in
  one gather, so each cohort gallops outwards (1, 2, 4, ... bars) and then bisects back: about
  2*log2(lifetime) gathers. Cohorts that are never reached are found first with one suffix minimum and
  skip the search entirely.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class FirstTouch:
    run_budget = 1_000_000  # run starts allowed beyond twice the queries before the sparse table is used
    per_level_min = 32  # fewest queries per level (on average) for the per-level search to beat the table

    def __init__(self, reach: np.ndarray) -> None:
        """``reach[j]``: bar j reaches every level q >= reach[j]."""
        self.n = len(reach)
        self.reach = np.ascontiguousarray(reach, dtype=np.int64)
        self._table: list[np.ndarray] | None = None
        self._suffix_min: np.ndarray | None = None

    @property
    def suffix_min(self) -> np.ndarray:
        """min(reach[j:]), with a sentinel at n (nothing after the last bar)."""
        if self._suffix_min is None:
            big = np.iinfo(np.int64).max
            self._suffix_min = np.r_[np.minimum.accumulate(self.reach[::-1])[::-1], big]
        return self._suffix_min

    @property
    def table(self) -> list[np.ndarray]:
        """table[l][j] = min(reach[j : j + 2**l]) (truncated at the end); built on first use."""
        if self._table is None:
            n, table, span = self.n, [self.reach], 1
            while span < n:
                prev = table[-1]
                nxt = prev.copy()
                nxt[: n - span] = np.minimum(prev[: n - span], prev[span:])
                table.append(nxt)
                span *= 2
            self._table = table
        return self._table

    def first(self, start: np.ndarray, q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """First index j >= start with reach[j] <= q; ``n`` when there is none. Written into ``out``
        (any integer dtype that holds n) when given."""
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

    def first_by_table(self, start: np.ndarray, q: np.ndarray) -> np.ndarray:
        """:meth:`first` by galloping over the sparse table (any input; the fallback)."""
        n = self.n
        start = np.asarray(start, dtype=np.int64)
        q = np.asarray(q, dtype=np.int64)
        out = np.full(len(start), n, dtype=np.int64)
        if n == 0 or len(start) == 0:
            return out
        s_clip = np.minimum(start, n)
        live = np.flatnonzero(self.suffix_min[s_clip] <= q)
        pos = start[live]
        qq = q[live]
        level = 0
        # Gallop: at level l, test [pos, pos + 2^l). Found at level l means the touch lies in
        # [pos + 2^(l-1), pos + 2^l) because level l-1 found nothing.
        while len(live):
            hit = self.table[level][pos] <= qq
            if hit.any():
                h_idx = live[hit]
                if level == 0:
                    out[h_idx] = pos[hit]
                else:
                    out[h_idx] = self._bisect(pos[hit] + (1 << (level - 1)), qq[hit], level - 1)
                keep = ~hit
                live, pos, qq = live[keep], pos[keep], qq[keep]
            level += 1
            if level >= len(self.table) and len(live):  # cannot happen: suffix_min guaranteed a touch
                raise AssertionError("first-touch search ran past the table")
        return out

    def _bisect(self, pos: np.ndarray, q: np.ndarray, width_level: int) -> np.ndarray:
        """The touch lies in [pos, pos + 2^width_level): narrow it down one power of two at a time."""
        for lvl in range(width_level - 1, -1, -1):
            clear = self.table[lvl][pos] > q
            pos = pos + (clear.astype(np.int64) << lvl)
        return pos


def _run_starts(reach: np.ndarray, kmin: int, kmax: int, budget: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Every run start of the levels kmin..kmax as lists of bars per level, each list ascending and
    closed by a sentinel ``n`` (no later touch): (bars, offsets), level kmin + i owning
    bars[offsets[i]:offsets[i + 1]]. None when there would be more than ``budget`` run starts."""
    n = len(reach)
    r = np.clip(reach, kmin, kmax + 1)  # below kmin acts like kmin; kmax + 1 reaches none of our levels
    prev = np.empty_like(r)
    prev[0] = kmax + 1  # nothing before the first bar reached anything
    prev[1:] = r[:-1]
    count = np.maximum(prev - r, 0)  # bar j starts runs for levels r[j] .. prev[j] - 1
    total = int(count.sum())
    if total > budget:
        return None
    k = kmax - kmin + 1
    bar = np.repeat(np.arange(n, dtype=np.int64), count)
    level = np.repeat(r - kmin, count) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count))
    order = np.argsort(level, kind="stable")  # by level; bars stay ascending within a level
    level = level[order]
    per_level = np.bincount(level, minlength=k)
    bars = np.full(total + k, n, dtype=np.int64)  # one sentinel after each level's list
    bars[np.arange(total) + level] = bar[order]
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(per_level + 1, out=offsets[1:])
    return bars, offsets


_CHUNK = 1 << 19  # queries per chunk: temporaries stay small (and in cache); fastest measured


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
    """Queries grouped by level (a stable radix sort), then one small binary search per level in that
    level's own run starts: a few dozen bars, cache-resident, instead of every run start of every level."""
    bars, offsets = runs
    n = len(reach)
    levels = len(offsets) - 1
    reach_ext = np.r_[reach, np.iinfo(np.int64).max]  # bar n (none) reaches nothing
    for lo in range(0, len(start), _CHUNK):
        s = np.minimum(start[lo : lo + _CHUNK], n)
        qc = q[lo : lo + _CHUNK]
        dst = out[lo : lo + _CHUNK]
        rel = qc.astype(np.int64) - kmin
        per_level = np.bincount(rel, minlength=levels)
        present = np.flatnonzero(per_level)
        if len(present) * per_level_min > len(rel):  # too few queries per level to pay for a loop over them
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
        # the start bar itself may reach the level (inside a run, so no run start marks it)
        np.copyto(dst, s, where=reach_ext[s] <= qc, casting="unsafe")
    return out
