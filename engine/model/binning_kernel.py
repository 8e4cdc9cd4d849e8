"""The heatmap's column walk compiled with numba: the same outstanding notional as ``binning.Binning``'s
numpy blocks, for the biggest grids (one column per bar over weeks of bars: binning.KERNEL_CELLS).

One pass over the columns. Each (tier, cell) holds G, what its alive cohorts are worth at the current
block's first column, and how many are alive. A column first takes its events (births, then deaths: a
pair whose cohorts have all died is exactly zero, and a death never leaves less than zero), then is
written as the sum over tiers of exp(H[t, c] - H[t, c0]) * G[t, cell], in tier order. Columns go four at
a time so that G is read once for four (reading it, not the arithmetic, is the cost), the output rows
are contiguous so that the loops become vector code, and cells that a later column of the four changes
are summed again for it. At each block start G is aged by the survival since the previous start and
amounts below TINY drop out, as the numpy path's carries do. Every column reads nothing after it, so the
past never changes as bars arrive.

Only this module imports numba (loaded the first time a grid is big enough, see binning.py). Compiled
code is cached beside the module, so only the first run on a machine compiles (a few seconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

GROUP = 4  # columns summed per read of G (see _walk; _five is written for 4)


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
    acc = np.zeros((GROUP, ncells))
    e = np.empty((GROUP, t))
    for b in range(len(starts) - 1):
        c0, c1 = starts[b], starts[b + 1]
        if b > 0:  # aged from the previous block's start to this one's
            p0 = starts[b - 1]
            for tier in range(t):
                r = np.exp(h[tier, c0] - h[tier, p0])
                for cell in range(ncells):
                    x = g[tier * ncells + cell] * r
                    g[tier * ncells + cell] = x if x >= tiny else 0.0
        # the columns go GROUP at a time: G is read once for all of them (reading it is the cost, far
        # more than the arithmetic), as it stands after the group's first column's events; a later
        # column's events then change a few cells, and those cells are summed again for that column and
        # the rest of the group. Every value is the same sum, in the same tier order (no fused
        # multiply-adds), as one column at a time.
        for c_lo in range(c0, c1, GROUP):
            c_hi = min(c1, c_lo + GROUP)
            m = c_hi - c_lo
            for c in range(c_lo, c_hi):
                for tier in range(t):
                    e[c - c_lo, tier] = np.exp(h[tier, c] - h[tier, c0])
            _events(g, alive, order, key, weight, dead, bounds[c_lo], bounds[c_lo + 1])
            if split:
                for c in range(c_lo, c_hi):
                    row = out[c]
                    for tier in range(t):
                        et = e[c - c_lo, tier]
                        base = tier * ncells
                        for cell in range(ncells):
                            row[cell * t + tier] = et * g[base + cell]
            elif t == 5 and m == GROUP:  # the usual ladder, a whole group: sums kept in registers
                _five(g, e, ncells, out[c_lo], out[c_lo + 1], out[c_lo + 2], out[c_lo + 3])
            else:
                for j in range(m):
                    aj = acc[j]
                    et = e[j, 0]
                    for cell in range(ncells):
                        aj[cell] = et * g[cell]
                    for tier in range(1, t):
                        et = e[j, tier]
                        gt = g[tier * ncells : (tier + 1) * ncells]
                        for cell in range(ncells):
                            aj[cell] += et * gt[cell]
                    flat = out[c_lo + j]
                    for cell in range(ncells):
                        flat[cell] = aj[cell]
            for c in range(c_lo + 1, c_hi):
                _events(g, alive, order, key, weight, dead, bounds[c], bounds[c + 1])
                for jj in range(bounds[c], bounds[c + 1]):
                    k = key[order[jj]]
                    cell = k % ncells
                    for c2 in range(c, c_hi):
                        if split:
                            tier = k // ncells
                            out[c2, cell * t + tier] = e[c2 - c_lo, tier] * g[k]
                        else:
                            v = e[c2 - c_lo, 0] * g[cell]
                            for tier in range(1, t):
                                v += e[c2 - c_lo, tier] * g[tier * ncells + cell]
                            out[c2, cell] = v


@njit(cache=True, nogil=True)
def _five(
    g: np.ndarray, e: np.ndarray, ncells: int, o0: np.ndarray, o1: np.ndarray, o2: np.ndarray, o3: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Four columns of five tiers: each cell's five amounts read once, four sums in tier order."""
    g0, g1, g2, g3, g4 = (g[0:ncells], g[ncells : 2 * ncells], g[2 * ncells : 3 * ncells], g[3 * ncells : 4 * ncells],
                          g[4 * ncells : 5 * ncells])
    a0, a1, a2, a3, a4 = e[0, 0], e[0, 1], e[0, 2], e[0, 3], e[0, 4]
    b0, b1, b2, b3, b4 = e[1, 0], e[1, 1], e[1, 2], e[1, 3], e[1, 4]
    c0, c1, c2, c3, c4 = e[2, 0], e[2, 1], e[2, 2], e[2, 3], e[2, 4]
    d0, d1, d2, d3, d4 = e[3, 0], e[3, 1], e[3, 2], e[3, 3], e[3, 4]
    for cell in range(ncells):
        x0, x1, x2, x3, x4 = g0[cell], g1[cell], g2[cell], g3[cell], g4[cell]
        o0[cell] = a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4
        o1[cell] = b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4
        o2[cell] = c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3 + c4 * x4
        o3[cell] = d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4


@njit(cache=True, nogil=True)
def _events(
    g: np.ndarray, alive: np.ndarray, order: np.ndarray, key: np.ndarray, weight: np.ndarray, dead: np.ndarray,
    j0: int, j1: int,
) -> None:  # pragma: no cover - compiled
    """One column's events (births first): a pair whose cohorts have all died is exactly zero, and a
    death never leaves less than zero."""
    for j in range(j0, j1):
        i = order[j]
        k = key[i]
        if dead[i] == 0:
            g[k] += weight[i]
            alive[k] += 1
        else:
            alive[k] -= 1
            x = g[k] - weight[i]
            g[k] = x if (alive[k] > 0 and x > 0.0) else 0.0


def walk(
    h: np.ndarray, starts: np.ndarray, col: np.ndarray, key: np.ndarray, weight: np.ndarray, dead: np.ndarray,
    ncells: int, split: bool, tiny: float,
) -> np.ndarray:
    """Float32 (C, ncells, T or 1): events at column ``col`` of (tier, cell) ``key`` (tier * ncells +
    cell), worth ``weight`` in their block's units (exp(H[t, block start] - F[t, birth]) * usd), births
    where ``dead`` is 0 and deaths where it is 1."""
    t, ncol = h.shape
    out = np.empty((ncol, ncells, t if split else 1), dtype=np.float32)
    _walk(np.ascontiguousarray(h, dtype=np.float64), starts.astype(np.int64, copy=False), col.astype(np.int64, copy=False),
          key.astype(np.int64, copy=False), weight.astype(np.float64, copy=False), dead.astype(np.int8, copy=False),
          ncells, split, tiny, out.reshape(ncol, -1))  # 2-D rows, contiguous: the compiler writes them with vector code
    return out
