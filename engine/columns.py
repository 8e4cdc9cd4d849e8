"""The closed heatmap columns kept for one grid, in a buffer with room to grow.

A closed column never changes (no look-ahead), so the service keeps the newest ones per grid and a
candle's close only adds the new column. Kept as one array rebuilt per close, that close copied every
kept column (2,000 x bins x tiers, both sides: tens of MB per close at the API's largest grids). Here a
close writes its column into spare room at the end; the oldest columns past ``keep`` drop off by moving
the window's start; the buffer is reallocated only when the spare room runs out (after an eighth of
the kept columns' count of appends), so a close costs O(one column) amortised.

What :meth:`select` hands out are views of the buffer, and they stay valid: rows a view covers are
never written again (appends go past the window's end; a reallocation copies into a new buffer).
"""

from __future__ import annotations

import threading

import numpy as np

from .model.views import Heatmap


class ClosedColumns:
    """Columns at sorted, distinct close times of one grid (edges fixed), the newest ``keep`` of them."""

    def __init__(self, hm: Heatmap, keep: int) -> None:
        self.keep = max(1, int(keep))
        self.edges = np.array(hm.edges, copy=True)
        self.tiers = hm.tiers
        self._lock = threading.Lock()  # the views run in several pools: one appender at a time
        n = min(len(hm.times), self.keep)
        self._alloc(n)
        self._times[:n] = hm.times[len(hm.times) - n :]
        self._long[:n] = hm.long_usd[len(hm.times) - n :]
        self._short[:n] = hm.short_usd[len(hm.times) - n :]
        self._start, self._end = 0, n

    def _alloc(self, rows: int) -> None:
        """Buffers for ``rows`` rows plus spare room: an eighth of that (at least 16), so a
        reallocation copies about 8 kept columns per appended one (instead of all of them per close),
        and the spare room is an eighth more memory (counted: :meth:`nbytes`)."""
        cap = rows + max(16, rows // 8)
        bins, tiers = len(self.edges) - 1, len(self.tiers)
        self._times = np.zeros(cap, dtype=np.int64)
        self._long = np.zeros((cap, bins, tiers))
        self._short = np.zeros((cap, bins, tiers))

    # ---- reading ------------------------------------------------------------------------------------
    @property
    def times(self) -> np.ndarray:
        return self._times[self._start : self._end]

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def newest(self) -> int:
        return int(self._times[self._end - 1]) if self._end > self._start else -(2**62)

    def missing(self, times: np.ndarray) -> np.ndarray:
        """Those of ``times`` (sorted) not kept: O(len(times) * log kept), not O(kept)."""
        with self._lock:
            kept = self.times
        if not len(kept):
            return times
        i = np.minimum(np.searchsorted(kept, times), len(kept) - 1)
        return times[kept[i] != times]

    def select(self, times: np.ndarray) -> Heatmap | None:
        """The columns at ``times`` (sorted), or None if one of them is not kept. A run of consecutive
        kept columns (what the views ask for) is a view of the buffer, not a copy."""
        with self._lock:
            kept = self.times
            if not len(times) or not len(kept):
                return None
            i = np.searchsorted(kept, times)
            if i[-1] >= len(kept) or not np.array_equal(kept[i], times):
                return None
            a, b = self._start + int(i[0]), self._start + int(i[-1]) + 1
            if b - a == len(times):
                return Heatmap(self._times[a:b], self.edges, self._long[a:b], self._short[a:b], self.tiers)
            rows = self._start + i
            return Heatmap(self._times[rows], self.edges, self._long[rows], self._short[rows], self.tiers)

    # ---- writing ------------------------------------------------------------------------------------
    def append(self, times: np.ndarray, long_usd: np.ndarray, short_usd: np.ndarray) -> bool:
        """Add columns newer than every kept one (``times`` sorted); older or already kept ones are
        skipped (another thread added them first). True when the buffer was reallocated (its byte
        size changed)."""
        with self._lock:
            new = times > self.newest
            times, long_usd, short_usd = times[new], long_usd[new], short_usd[new]
            k = len(times)
            if not k:
                return False
            grew = False
            if self._end + k > len(self._times):
                # out of spare room: copy the newest columns (at most keep - k) into a new buffer
                stay = min(len(self), max(0, self.keep - k))
                old_t, old_l, old_s = self.times[len(self) - stay :], self._long[self._end - stay : self._end], \
                    self._short[self._end - stay : self._end]
                self._alloc(stay + k)
                self._times[:stay], self._long[:stay], self._short[:stay] = old_t, old_l, old_s
                self._start, self._end = 0, stay
                grew = True
            e = self._end
            self._times[e : e + k], self._long[e : e + k], self._short[e : e + k] = times, long_usd, short_usd
            self._end = e + k
            self._start = max(self._start, self._end - self.keep)
            return grew

    def nbytes(self) -> int:
        return int(self._times.nbytes + self._long.nbytes + self._short.nbytes + self.edges.nbytes) + 256
