"""When does price first reach a level? Vectorised over millions of cohorts.

For a long cohort opened in bar b at level k, it is liquidated in the first later bar j > b whose low
reaches the level: touched_long[j] <= k. Shorts are the mirror image (negate both sides).

Two ways to answer "first j >= start with reach[j] <= q" for all cohorts at once:

* **Run starts** (used when they are few, the normal case). For one level k, the bars that reach it form
  runs; if bar ``start`` does not reach k, the answer is the first run *start* after it. A run of level k
  starts at bar j when reach[j] <= k < reach[j-1], so bar j starts runs for the levels between its reach
  and the previous bar's: their total is the price path's downward variation measured in levels (a few
  hundred thousand for a year of 1-minute BTC bars), far fewer than the cohorts. Sorted (level, bar)
  keys then answer every cohort with one binary search.
* **Sparse table** (fallback when the path is so jagged, or the grid so fine, that run starts would
  outnumber the cohorts): a table of range minima answers "does anything in [j, j + 2^l) reach q?" in
  one gather, so each cohort gallops outwards (1, 2, 4, ... bars) and then bisects back: about
  2*log2(lifetime) gathers.

Cohorts that are never reached are found first with one suffix minimum and skip the search entirely.
"""

from __future__ import annotations

import numpy as np


class FirstTouch:
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
        runs = _run_starts(self.reach, int(q.min()), int(q.max()), budget=2 * len(q) + 1_000_000)
        if runs is not None:
            return _first_by_runs(self.reach, runs, int(q.min()), start, q, out)
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


def _run_starts(reach: np.ndarray, kmin: int, kmax: int, budget: int) -> tuple[np.ndarray, int] | None:
    """Sorted keys ((level - kmin) << shift) | bar of every run start of the levels kmin..kmax, and the
    shift; None when there would be more than ``budget`` of them."""
    n = len(reach)
    r = np.clip(reach, kmin, kmax + 1)  # below kmin acts like kmin; kmax + 1 reaches none of our levels
    prev = np.empty_like(r)
    prev[0] = kmax + 1  # nothing before the first bar reached anything
    prev[1:] = r[:-1]
    count = np.maximum(prev - r, 0)  # bar j starts runs for levels r[j] .. prev[j] - 1
    total = int(count.sum())
    if total > budget:
        return None
    shift = int(n).bit_length()  # bars (and the "none" marker n) fit below the shift
    # 32-bit keys halve the memory the binary search walks, when levels and bars fit
    dtype = np.int32 if (kmax - kmin + 1) < (1 << (31 - shift)) else np.int64
    bar = np.repeat(np.arange(n, dtype=np.int64), count)
    offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    keys = ((np.repeat(r - kmin, count) + offset) << shift) | bar
    keys = keys.astype(dtype)
    keys.sort()
    return keys, shift


_CHUNK = 1 << 20  # queries per chunk: temporaries stay small enough for the allocator to reuse


def _first_by_runs(
    reach: np.ndarray, runs: tuple[np.ndarray, int], kmin: int, start: np.ndarray, q: np.ndarray, out: np.ndarray
) -> np.ndarray:
    keys, shift = runs
    n = len(reach)
    reach_ext = np.r_[reach, np.iinfo(np.int64).max]  # bar n (none) reaches nothing
    for lo in range(0, len(start), _CHUNK):
        s = np.minimum(start[lo : lo + _CHUNK], n).astype(np.int64, copy=False)
        qc = q[lo : lo + _CHUNK].astype(np.int64, copy=False)
        # the start bar itself may reach the level (inside a run, so no run start marks it)
        direct = reach_ext[s] <= qc
        if not len(keys):
            out[lo : lo + _CHUNK] = np.where(direct, s, n)
            continue
        rel = qc - kmin
        query = rel << shift
        query |= s
        query = query.astype(keys.dtype, copy=False)
        if int(rel.max()) < (1 << 16):
            # Searching in level order walks the keys front to back (cache-friendly); a stable radix
            # sort on 16-bit levels costs less than it saves.
            order = np.argsort(rel.astype(np.uint16), kind="stable")
            idx = np.empty(len(query), dtype=np.intp)
            idx[order] = np.searchsorted(keys, query[order])
        else:
            idx = np.searchsorted(keys, query)
        beyond = idx >= len(keys)  # no key at or after the query at all
        np.minimum(idx, len(keys) - 1, out=idx)
        hit = keys[idx].astype(np.int64, copy=False)
        found = (hit >> shift) == rel  # the next run start is of this level (else: none after start)
        found &= ~beyond
        hit &= (1 << shift) - 1
        dst = out[lo : lo + _CHUNK]
        np.copyto(dst, n)
        np.copyto(dst, hit, where=found)
        np.copyto(dst, s, where=direct)
    return out
