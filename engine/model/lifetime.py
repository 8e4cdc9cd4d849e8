"""When does price first reach a level? Vectorised over millions of cohorts.

For a long cohort opened in bar b at level k, it is liquidated in the first later bar j > b whose low
reaches the level: touched_long[j] <= k. Shorts are the mirror image (negate both sides).

A sparse table of range minima answers "does anything in [j, j + 2^l) reach q?" in one gather, so each
cohort gallops outwards (1, 2, 4, ... bars) and then bisects back: about 2*log2(lifetime) gathers, done
level by level for all cohorts at once. Cohorts that are never reached are found first with one suffix
minimum and skip the search entirely.
"""

from __future__ import annotations

import numpy as np


class FirstTouch:
    def __init__(self, reach: np.ndarray) -> None:
        """``reach[j]``: bar j reaches every level q >= reach[j]."""
        self.n = n = len(reach)
        v = np.ascontiguousarray(reach, dtype=np.int64)
        big = np.iinfo(np.int64).max
        # suffix minimum, with a sentinel at n (nothing after the last bar)
        self.suffix_min = np.r_[np.minimum.accumulate(v[::-1])[::-1], big]
        table = [v]
        span = 1
        while span < n:
            prev = table[-1]
            nxt = prev.copy()
            nxt[: n - span] = np.minimum(prev[: n - span], prev[span:])
            table.append(nxt)
            span *= 2
        self.table = table  # table[l][j] = min(reach[j : j + 2**l]) (truncated at the end)

    def first(self, start: np.ndarray, q: np.ndarray) -> np.ndarray:
        """First index j >= start with reach[j] <= q; ``n`` when there is none."""
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
