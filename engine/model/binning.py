"""Heatmap binning: outstanding notional per column time x cell, from the column each cohort appears in
and the column it is gone by.

A cohort of tier t born in bar b is worth usd * exp(H[t, c] - F[t, b]) at column c (H: the tier's log
survival at each column). Between its birth and its death nothing but survival changes it, so a cell's
value at column c is sum over tiers of S[t] * exp(H[t, c]), with S[t] constant until a cohort of that
tier and cell is born or dies.

The columns go in blocks. At a block's first column c0 every cell holds ``carry`` (T, cells): USD then.
Cells that no cohort enters or leaves inside the block are, for every column of the block, a T-term sum:
E[t, c] = exp(H[t, c] - H[t, c0]), out[c, cell] = sum_t E[t, c] * carry[t, cell] — one multiply-add per
tier over the block, written straight into the float32 result. Only the cells that see a birth or a
death in the block get a dense (cells touched x tiers x columns) pass: one ``bincount`` of the events, a
``cumsum`` along the block, the same survival scale. The tiers' different half-lives are why the sum over
tiers cannot be taken before the survival scale. No Python loop over columns, no float64 array of every
column, and the result is float32.

Exactness: a cohort's death removes what its birth added only up to rounding, so every (tier, cell)
also counts its alive cohorts (integers), and a cell whose cohorts have all died is exactly zero.
"""

from __future__ import annotations

import numpy as np

# Inside a block an event weighs usd * exp(H[t, c0] - F[t, birth]) (block units); a cohort born later in
# the block weighs more than its USD. Keeping H's fall inside a block below SPAN keeps every weight far
# from float64 overflow (exp(600) * 1e12 USD ~ 1e272) whatever the decay rates and the history's length.
SPAN = 600.0
# Amounts decayed below this (USD) are dropped: they would be float32 subnormals, which cost a hundred
# times more per operation and no one can see a billionth of a cent.
TINY = 1e-9
BLOCK_COLUMNS = 128  # columns per block: fewer blocks cost Python calls, wider ones cost wider event rows


def _blocks(h: np.ndarray, width: int) -> np.ndarray:
    """Block starts, and the end: at most ``width`` columns, and a log-survival fall below SPAN in every tier."""
    ncol = h.shape[1]
    # a conservative scalar: the sum over tiers of each tier's fall since the first column (non-decreasing)
    fall = (h[:, :1] - h).sum(axis=0)
    starts = [0]
    while starts[-1] < ncol:
        c0 = starts[-1]
        c1 = min(c0 + width, int(np.searchsorted(fall, fall[c0] + SPAN, side="left")), ncol)
        starts.append(max(c1, c0 + 1))
    return np.asarray(starts, dtype=np.int64)


def outstanding(
    appear: np.ndarray,
    gone: np.ndarray,
    cell: np.ndarray,
    tier: np.ndarray,
    usd: np.ndarray,
    log_birth: np.ndarray,
    h: np.ndarray,
    ncells: int,
    split_tiers: bool = True,
) -> np.ndarray:
    """Outstanding USD per column, cell (and tier), as float32 (C, ncells, T) — or (C, ncells, 1) summed
    over tiers when ``split_tiers`` is False.

    Per cohort: ``appear`` the first column that shows it, ``gone`` the first column that no longer does
    (C: none; appear < gone), ``cell`` its cell, ``tier`` its row of ``h``, ``usd`` its notional at birth
    and ``log_birth`` the log survival F[tier, birth] it was born at. ``h`` (T, C): each tier's log
    survival at each column, non-increasing along the columns."""
    t, ncol = h.shape
    out = np.zeros((ncol, ncells, t if split_tiers else 1), dtype=np.float32)
    if ncol == 0 or len(appear) == 0:
        return out
    starts = _blocks(h, BLOCK_COLUMNS)
    nblocks = len(starts) - 1
    block_of = np.repeat(np.arange(nblocks, dtype=np.int64), np.diff(starts))
    ends = gone < ncol
    # events: births (+1) then deaths (-1); key: (cell, tier), so one cell's tiers sit side by side
    col = np.concatenate([appear, gone[ends]]).astype(np.int64)
    sign = np.r_[np.ones(len(appear)), -np.ones(int(ends.sum()))]
    ev_tier = np.concatenate([tier, tier[ends]]).astype(np.int64)
    key = np.concatenate([cell, cell[ends]]).astype(np.int64) * t + ev_tier
    block = block_of[col]
    # weight in the units of the event's block: usd * exp(H[tier, block start] - F[tier, birth])
    weight = np.exp(h[ev_tier, starts[block]] - np.concatenate([log_birth, log_birth[ends]]))
    weight *= np.concatenate([usd, usd[ends]])
    weight *= sign
    order = np.argsort(block.astype(np.uint16) if nblocks < 1 << 16 else block, kind="stable")
    bounds = np.searchsorted(block[order], np.arange(nblocks + 1))
    col, key, weight, sign = col[order], key[order], weight[order], sign[order]
    carry = np.zeros((ncells, t))  # USD at the block's first column, per (cell, tier)
    count = np.zeros((ncells, t), dtype=np.int64)  # alive cohorts per (cell, tier)
    flat_carry, flat_count = carry.reshape(-1), count.reshape(-1)
    tmp = np.empty((BLOCK_COLUMNS, ncells), dtype=np.float32)
    slot = np.zeros(ncells * t, dtype=np.int64)  # key -> row of the block's touched pairs
    for k in range(nblocks):
        c0, c1 = int(starts[k]), int(starts[k + 1])
        width = c1 - c0
        scale = np.exp(h[:, c0:c1] - h[:, c0 : c0 + 1])  # (T, width): survival since the block's start
        # every cell as if nothing happened inside the block
        if split_tiers:
            np.multiply(scale.T[:, None, :], carry[None, :, :], out=out[c0:c1], casting="same_kind")
        else:
            # a multiply-add per tier in float32 (measured: 1.7x faster than einsum, and BLAS threads
            # busy-wait on a shared machine, costing 20x more CPU)
            now, s32, c32 = out[c0:c1, :, 0], scale.astype(np.float32), carry.T.astype(np.float32)
            np.multiply(s32[0][:, None], c32[0][None, :], out=now)
            for tier_row in range(1, t):
                np.multiply(s32[tier_row][:, None], c32[tier_row][None, :], out=tmp[:width])
                now += tmp[:width]
        a, b = int(bounds[k]), int(bounds[k + 1])
        if a == b:
            carry *= scale[:, -1] if c1 == ncol else np.exp(h[:, c1] - h[:, c0])
            carry[carry < TINY] = 0.0
            continue
        # the (cell, tier) pairs that see births or deaths: their units added up to each column
        # (a table over every (cell, tier) key, not np.unique: no sort of a block's events)
        seen = np.bincount(key[a:b], minlength=ncells * t)
        pairs = np.flatnonzero(seen)
        npairs = len(pairs)
        slot[pairs] = np.arange(npairs)
        inv = slot[key[a:b]]
        at = inv * width + (col[a:b] - c0)
        added = np.bincount(at, weights=weight[a:b], minlength=npairs * width).reshape(npairs, width)
        np.cumsum(added, axis=1, out=added)
        alive = np.bincount(at, weights=sign[a:b], minlength=npairs * width).reshape(npairs, width)
        np.cumsum(alive, axis=1, out=alive)
        alive += flat_count[pairs][:, None]
        p_tier, p_cell = pairs % t, pairs // t
        if split_tiers:
            value = (added + flat_carry[pairs][:, None]) * scale[p_tier]  # (pairs, width) USD
            value[alive < 0.5] = 0.0
            np.maximum(value, 0.0, out=value)
            out[c0:c1, p_cell, p_tier] = value.T
        else:
            # a touched cell with all its tiers, summed over the tiers in their order: the same sum
            # whichever of its tiers were touched, so the past does not change when the future arrives
            cells = np.flatnonzero(np.bincount(p_cell, minlength=ncells))
            cell_slot = np.zeros(ncells, dtype=np.int64)
            cell_slot[cells] = np.arange(len(cells))
            which = cell_slot[p_cell]
            units = np.repeat(carry[cells][:, :, None], width, axis=2)  # (cells, T, width)
            units[which, p_tier] += added
            units *= scale[None]
            units[which, p_tier] *= alive >= 0.5
            np.maximum(units, 0.0, out=units)
            total = units.sum(axis=1)
            # columns before the cell's first event keep what the product wrote
            first = np.full(len(cells), width)
            np.minimum.at(first, which[inv], col[a:b] - c0)
            keep = np.arange(width)[None, :] < first[:, None]
            total[keep] = out[c0:c1, cells, 0].T[keep]
            out[c0:c1, cells, 0] = total.T
        # what is alive at the block's end, aged to the next block's first column
        flat_carry[pairs] += added[:, -1]
        flat_count[pairs] = np.rint(alive[:, -1]).astype(np.int64)
        flat_carry[pairs[alive[:, -1] < 0.5]] = 0.0
        carry *= scale[:, -1] if c1 == ncol else np.exp(h[:, c1] - h[:, c0])
        carry[carry < TINY] = 0.0
    return out
