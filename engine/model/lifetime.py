"""When does price first reach a level? Vectorised over millions of cohorts.

For a long cohort opened in bar b at level k, it is liquidated in the first later bar j > b whose low
reaches the level: touched_long[j] <= k. Shorts are the mirror image (negate both sides).

Two ways to answer "first j >= start with reach[j] <= q" for all cohorts at once:

* **Run starts** (used when they are few, the normal case). For one level k, the bars that reach it form
  runs; if bar ``start`` does not reach k, the answer is the first run *start* after it. A run of level k
  starts at bar j when reach[j] <= k < reach[j-1], so bar j starts runs for the levels between its reach
  and the previous bar's: their total is the price path's downward variation measured in levels (a few
  hundred thousand for a year of 1-minute BTC bars), far fewer than the cohorts. Each run start is one
  integer key, level * (n + 1) + bar, and each level ends with a key for bar n (no touch); a query is the
  key of its own (level, start), and its answer is the first run key at or after it. Both sides sorted,
  that is a merge: the queries are sorted (their own index packed into the low bits, so one plain sort
  also gives the way back), and one binary search of every run key among them counts the run keys below
  each query. No Python loop over levels: the few queries per level of a 5-minute history cost what the
  many of a 1-minute year do.
* **Sparse table** (fallback when the path is so jagged, or the grid so fine, that run starts would
  outnumber the cohorts): a table of range minima answers "does anything in [j, j + 2^l) reach q?" in
  one gather, so each cohort gallops outwards (1, 2, 4, ... bars) and then bisects back: about
  2*log2(lifetime) gathers. Cohorts that are never reached are found first with one suffix minimum and
  skip the search entirely.
"""

from __future__ import annotations

import numpy as np


class FirstTouch:
    run_budget = 1_000_000  # run starts allowed beyond twice the queries before the sparse table is used

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
        """First index j >= start with reach[j] <= q (start >= 0); ``n`` when there is none. Written into
        ``out`` (any integer dtype that holds n) when given."""
        start = np.asarray(start)
        q = np.asarray(q)
        if out is None:
            out = np.empty(len(start), dtype=np.int64)
        if self.n == 0 or len(start) == 0:
            out[:] = self.n
            return out
        kmin, kmax = int(q.min()), int(q.max())
        keys = _run_keys(self.reach, kmin, kmax, budget=2 * len(q) + self.run_budget)
        if keys is not None:
            return _first_by_runs(self.reach, keys, kmin, start, q, out)
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


def _run_keys(reach: np.ndarray, kmin: int, kmax: int, budget: int) -> np.ndarray | None:
    """Every run start of the levels kmin..kmax as sorted keys (level - kmin) * (n + 1) + bar, each level
    closed by a sentinel key for bar n (no later touch). None when there would be more than ``budget``
    run starts, or when the keys would not fit the packing of :func:`_first_by_runs`."""
    n = len(reach)
    k = kmax - kmin + 1
    if k * (n + 1) >= 1 << (62 - _CHUNK_BITS):  # (level, bar) keys and a chunk's query index share 62 bits
        return None
    r = np.clip(reach, kmin, kmax + 1)  # below kmin acts like kmin; kmax + 1 reaches none of our levels
    prev = np.empty_like(r)
    prev[0] = kmax + 1  # nothing before the first bar reached anything
    prev[1:] = r[:-1]
    count = np.maximum(prev - r, 0)  # bar j starts runs for levels r[j] .. prev[j] - 1
    total = int(count.sum())
    if total > budget:
        return None
    width = n + 1
    lowest = (r - kmin) * width + np.arange(n)  # bar j's key at the lowest level it starts a run for
    above = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)  # 0, 1, .. per bar
    keys = np.empty(total + k, dtype=np.int64)
    keys[:total] = np.repeat(lowest, count) + above * width
    keys[total:] = np.arange(k, dtype=np.int64) * width + n
    keys.sort()  # keys are unique: a bar starts at most one run per level
    return keys


_CHUNK_BITS = 19  # 2^19 queries per chunk: temporaries stay small (and in cache); fastest measured


def _first_by_runs(reach: np.ndarray, keys: np.ndarray, kmin: int, start: np.ndarray, q: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each query's first run key at or after its own key (see the module's docstring), chunk by chunk."""
    n = len(reach)
    width = n + 1
    bar_of = keys % width
    reach_ext = np.r_[reach, np.iinfo(np.int64).max]  # bar n (none) reaches nothing
    chunk = 1 << _CHUNK_BITS
    for lo in range(0, len(start), chunk):
        s = np.minimum(start[lo : lo + chunk], n)
        qc = q[lo : lo + chunk]
        dst = out[lo : lo + chunk]
        m = len(s)
        bits = max(m - 1, 1).bit_length()
        low = (1 << bits) - 1
        packed = (qc.astype(np.int64) - kmin) * width
        packed += s
        packed <<= bits
        packed |= np.arange(m)  # the query's own index below its key: unique, and the way back after sorting
        packed.sort()
        # run key j lands after the sorted queries at or below it (its index bits all set: a query of
        # the same (level, bar) counts as below); so the run keys landing at or before position i are
        # those strictly below query i, and query i's answer is the next run key
        below = np.bincount(np.searchsorted(packed, (keys << bits) | low, side="right"), minlength=m + 1)[:m]
        np.cumsum(below, out=below)
        packed &= low
        dst[packed] = bar_of[below]
        # the start bar itself may reach the level (inside a run, so no run start marks it)
        np.copyto(dst, s, where=reach_ext[s] <= qc, casting="unsafe")
    return out
