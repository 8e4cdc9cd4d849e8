"""The heatmap's column walk compiled with numba: the same outstanding notional as ``binning.Binning``'s
numpy blocks, for large grids (one column per bar over weeks of bars, the page's biggest views).

One pass over the columns. Each (tier, cell) holds what its alive cohorts are worth at the current
block's first column (G) and how many are alive. A column first takes its events (births, then deaths:
a pair whose cohorts have all died is exactly zero, and a death never leaves less than zero), then is
written as sum over tiers of exp(H[t, c] - H[t, c0]) * G[t, cell]: a loop over cells that the compiler
turns into vector instructions, with G (a few hundred KB) in cache. At each block start G is aged by the
survival since the previous start and amounts below TINY drop out, as the numpy path's carries do.

Only this module imports numba (imported when a grid is big enough to pay for it, see binning.py).
Compiled code is cached beside the module, so only the first run on a machine compiles (a few seconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _order(col: np.ndarray, dead: np.ndarray, ncol: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Events by column, a column's births before its deaths (a counting sort, stable): the order and
    each column's first event (ncol + 1 bounds)."""
    counts = np.zeros(2 * ncol + 1, np.int64)
    for i in range(len(col)):
        counts[2 * col[i] + dead[i] + 1] += 1
    for j in range(2 * ncol):
        counts[j + 1] += counts[j]
    order = np.empty(len(col), np.int64)
    fill = counts[:-1].copy()
    for i in range(len(col)):
        j = 2 * col[i] + dead[i]
        order[fill[j]] = i
        fill[j] += 1
    bounds = np.empty(ncol + 1, np.int64)
    for c in range(ncol + 1):
        bounds[c] = counts[2 * c]
    return order, bounds


@njit(cache=True, nogil=True)
def _walk(
    h: np.ndarray, starts: np.ndarray, col: np.ndarray, key: np.ndarray, weight: np.ndarray, dead: np.ndarray,
    ncells: int, split: bool, tiny: float, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    t, ncol = h.shape
    order, bounds = _order(col, dead, ncol)
    g = np.zeros(t * ncells)
    alive = np.zeros(t * ncells, np.int64)
    acc = np.zeros(ncells)
    e = np.empty(t)
    for b in range(len(starts) - 1):
        c0, c1 = starts[b], starts[b + 1]
        if b > 0:  # aged from the previous block's start to this one's
            p0 = starts[b - 1]
            for tier in range(t):
                r = np.exp(h[tier, c0] - h[tier, p0])
                for cell in range(ncells):
                    x = g[tier * ncells + cell] * r
                    g[tier * ncells + cell] = x if x >= tiny else 0.0
        for c in range(c0, c1):
            for j in range(bounds[c], bounds[c + 1]):
                i = order[j]
                k = key[i]
                if dead[i] == 0:
                    g[k] += weight[i]
                    alive[k] += 1
                else:
                    alive[k] -= 1
                    x = g[k] - weight[i]
                    g[k] = x if (alive[k] > 0 and x > 0.0) else 0.0
            for tier in range(t):
                e[tier] = np.exp(h[tier, c] - h[tier, c0])
            row = out[c]
            if split:
                for tier in range(t):
                    et = e[tier]
                    base = tier * ncells
                    for cell in range(ncells):
                        row[cell, tier] = et * g[base + cell]
            else:
                e0 = e[0]
                for cell in range(ncells):
                    acc[cell] = e0 * g[cell]
                for tier in range(1, t):
                    et = e[tier]
                    base = tier * ncells
                    for cell in range(ncells):
                        acc[cell] += et * g[base + cell]
                flat = row[:, 0]
                for cell in range(ncells):
                    flat[cell] = acc[cell]


def walk(
    h: np.ndarray, starts: np.ndarray, col: np.ndarray, key: np.ndarray, weight: np.ndarray, dead: np.ndarray,
    ncells: int, split: bool, tiny: float,
) -> np.ndarray:
    """Float32 (C, ncells, T or 1): events at column ``col`` of (tier, cell) ``key`` (tier * ncells +
    cell), worth ``weight`` in their block's units (exp(H[t, block start] - F[t, birth]) * usd), births
    where ``dead`` is 0 and deaths where it is 1."""
    t, ncol = h.shape
    out = np.empty((ncol, ncells, t if split else 1), dtype=np.float32)
    _walk(np.ascontiguousarray(h, dtype=np.float64), starts.astype(np.int64), col.astype(np.int64),
          key.astype(np.int64), weight.astype(np.float64), dead.astype(np.int8), ncells, split, tiny, out)
    return out
