"""Heatmap binning: outstanding notional per column time x cell, from the column each cohort appears in
and the column it is gone by.

A cohort of tier t born in bar b is worth usd * exp(H[t, c] - F[t, b]) at column c (H: the tier's log
survival at each column). Between its birth and its death nothing but survival changes it, so a cell's
value at column c is sum over tiers of S[t] * exp(H[t, c]), with S[t] constant until a cohort of that
tier and cell is born or dies.

The columns go in blocks. At a block's first column c0 every (tier, cell) holds ``carry``: USD then.
Inside the block, with E[t, c] = exp(H[t, c] - H[t, c0]):

- a cell that no cohort enters or leaves is sum_t E[t, c] * carry[t, cell]: for every such cell and
  column of the block at once, one (columns x T) @ (T x cells) product written straight into the float32
  result (summed over tiers), or a broadcast product (per tier);
- a (cell, tier) pair that sees a birth or a death gets a dense row over the block's columns: its events
  added up per column, a running sum, the same survival scale.

Every event of every block lands in one table of such rows (block by block, pairs in key order) through
a single ``bincount`` over a flat (row, column in block) index: no sort of the events, no Python loop over
events or columns, only a short one over blocks. The tiers' different half-lives are why the sum over
tiers cannot be taken before the survival scale.

Exactness: a cohort's death removes what its birth added only up to rounding, so every (tier, cell)
also counts its alive cohorts (integers), and a pair whose cohorts have all died is exactly zero.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache

import numpy as np

# Inside a block an event weighs usd * exp(H[t, c0] - F[t, birth]) (block units); a cohort born later in
# the block weighs more than its USD. Keeping H's fall inside a block below SPAN keeps every weight far
# from float64 overflow (exp(600) * 1e12 USD ~ 1e272) whatever the decay rates and the history's length.
SPAN = 600.0
# Amounts decayed below this (USD) are dropped: they would be float32 subnormals, which cost a hundred
# times more per operation and no one can see a billionth of a cent.
TINY = 1e-9
BLOCK_COLUMNS = 128  # columns per block: fewer blocks cost Python calls, wider ones cost wider event rows
# Above this many (block, key) slots the table of touched pairs is found by np.unique instead (only when
# blocks are very narrow: survival falling by SPAN e-folds within a few columns).
TABLE_LIMIT = 1 << 26


@cache
def _blas_controller() -> object | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a core dependency; the product still works, only slower
        return None
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[object]:
    """BLAS on one thread for the block products. They are small (a few MB): OpenBLAS's threads cost more
    to wake and to spin than the work, measured 0.8 s CPU instead of 13 ms for the 8,015 x 2,200 grid on
    a busy 2-core machine."""
    controller = _blas_controller()
    if controller is None:  # pragma: no cover
        return nullcontext()
    return controller.limit(limits=1, user_api="blas")  # type: ignore[attr-defined, no-any-return]


def _blocks(h: np.ndarray, width: int) -> np.ndarray:
    """Block starts, and the end: at most ``width`` columns, and a log-survival fall below SPAN in every tier."""
    ncol = h.shape[1]
    # a conservative scalar: the sum over tiers of each tier's fall since the first column (non-decreasing)
    fall = (h[:, :1] - h).sum(axis=0)
    if fall[-1] < SPAN:  # the usual case: survival falls little, blocks of ``width``
        return np.r_[np.arange(0, ncol, width), ncol].astype(np.int64)
    starts = [0]
    while starts[-1] < ncol:
        c0 = starts[-1]
        c1 = min(c0 + width, int(np.searchsorted(fall, fall[c0] + SPAN, side="left")), ncol)
        starts.append(max(c1, c0 + 1))
    return np.asarray(starts, dtype=np.int64)


def _rows(slot_b: np.ndarray, slot_d: np.ndarray, nslots: int, wide: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (block, key) slots that see an event, ascending, and where each event's row starts in a table
    of ``wide`` columns per slot (row * wide)."""
    kind = np.int64 if nslots * wide >= 1 << 31 else np.int32
    if nslots <= TABLE_LIMIT:
        seen = np.zeros(nslots, dtype=bool)
        seen[slot_b] = True
        seen[slot_d] = True
        rows = np.flatnonzero(seen)
        row_of = np.zeros(nslots, dtype=kind)
        row_of[rows] = np.arange(0, len(rows) * wide, wide, dtype=kind)
        return rows, row_of[slot_b], row_of[slot_d]
    rows, inverse = np.unique(np.concatenate([slot_b, slot_d]), return_inverse=True)
    inverse = inverse.astype(kind)
    inverse *= wide
    return rows, inverse[: len(slot_b)], inverse[len(slot_b) :]


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
    if ncol == 0 or len(appear) == 0:
        return np.zeros((ncol, ncells, t if split_tiers else 1), dtype=np.float32)
    out = np.empty((ncol, ncells, t if split_tiers else 1), dtype=np.float32)  # every cell is written below
    starts = _blocks(h, BLOCK_COLUMNS)
    nblocks = len(starts) - 1
    wide = int(np.diff(starts).max())
    block_of = np.repeat(np.arange(nblocks, dtype=np.int32), np.diff(starts))
    pos_of = (np.arange(ncol) - starts[:-1][block_of]).astype(np.int32)  # column within its block
    nkeys = ncells * t
    index = np.int64 if nblocks * nkeys >= 1 << 31 else np.int32
    slot_base = block_of.astype(index) * nkeys  # per column: its block's first (block, key) slot
    tier = tier.astype(np.int32)
    key = cell.astype(index) * t + tier  # (cell, tier): a cell's tiers side by side
    at_h = tier * np.int32(ncol)  # where each cohort's tier starts in h0 (flat)
    ends = np.flatnonzero(gone < ncol)
    dcol = gone[ends].astype(np.int32)
    # each event's slot (block, key) and its row in the table of slots that see events
    rows, row_b, row_d = _rows(slot_base[appear] + key, slot_base[dcol] + key[ends], nblocks * nkeys, wide)
    block_rows = np.searchsorted(rows, np.arange(nblocks + 1, dtype=np.int64) * nkeys)
    # an event's weight in its block's units: usd * exp(H[tier, block start] - F[tier, birth])
    h0 = h[:, starts[:-1]][:, block_of].ravel()  # (T * C): H at each column's block start
    lb = h0[at_h + appear]
    lb -= log_birth
    np.exp(lb, out=lb)
    lb *= usd
    ld = h0[at_h[ends] + dcol]
    ld -= log_birth[ends]
    np.exp(ld, out=ld)
    ld *= usd[ends]
    # one table: a row per touched (block, key), a column per column of the block; births minus deaths,
    # then the running sum along the block. Same for the counts of alive cohorts.
    size = len(rows) * wide
    row_b += pos_of[appear]
    row_d += pos_of[dcol]
    added = np.bincount(row_b, weights=lb, minlength=size)
    np.subtract.at(added, row_d, ld)  # in place: no second table
    added = added.reshape(-1, wide)
    np.cumsum(added, axis=1, out=added)
    alive = np.bincount(row_b, minlength=size)
    np.subtract.at(alive, row_d, 1)
    alive = alive.reshape(-1, wide)
    np.cumsum(alive, axis=1, out=alive)
    del lb, ld, row_b, row_d

    carry = np.zeros((t, ncells))  # USD at the block's first column, per (tier, cell)
    count = np.zeros((t, ncells), dtype=np.int64)  # alive cohorts per (tier, cell)
    flat = out.reshape(ncol, -1)
    with one_blas_thread():
        for k in range(nblocks):
            c0, c1 = int(starts[k]), int(starts[k + 1])
            width = c1 - c0
            scale = np.exp(h[:, c0:c1] - h[:, c0 : c0 + 1])  # (T, width): survival since the block's start
            r0, r1 = int(block_rows[k]), int(block_rows[k + 1])
            keys = rows[r0:r1] - k * nkeys
            p_cell, p_tier = keys // t, keys % t
            # the touched pairs over the block: what they carried plus what their events added, aged
            units = added[r0:r1, :width] + carry[p_tier, p_cell][:, None]
            units *= scale[p_tier]
            units[(alive[r0:r1, :width] + count[p_tier, p_cell][:, None]) <= 0] = 0.0
            np.maximum(units, 0.0, out=units)
            if split_tiers:
                # every pair as if nothing happened inside the block, then the touched pairs over it
                np.multiply(scale.T[:, None, :], carry.T[None, :, :], out=out[c0:c1], casting="same_kind")
                out[c0:c1, p_cell, p_tier] = units.T
            else:
                # every cell as if nothing happened inside the block: one float32 product over the tiers
                np.matmul(scale.T.astype(np.float32), carry.astype(np.float32), out=flat[c0:c1])
                if r1 > r0:
                    # a touched cell: its untouched tiers by the same product (float64), plus its touched
                    # pairs (keys are ascending, so a cell's pairs are side by side)
                    first = np.flatnonzero(np.r_[True, p_cell[1:] != p_cell[:-1]])
                    cells = p_cell[first]
                    which = np.repeat(np.arange(len(cells)), np.diff(np.r_[first, len(p_cell)]))
                    rest = carry[:, cells]
                    rest[p_tier, which] = 0.0
                    total = scale.T @ rest
                    at = (which * width)[:, None] + np.arange(width)
                    total += np.bincount(at.ravel(), weights=units.ravel(), minlength=len(cells) * width).reshape(-1, width).T
                    flat[c0:c1, cells] = total
            # what is alive at the block's end, aged to the next block's first column
            if r1 > r0:
                carry[p_tier, p_cell] += added[r0:r1, width - 1]
                count[p_tier, p_cell] += alive[r0:r1, width - 1]
                gone_now = count[p_tier, p_cell] <= 0
                carry[p_tier[gone_now], p_cell[gone_now]] = 0.0
            carry *= scale[:, -1:] if c1 == ncol else np.exp(h[:, c1] - h[:, c0])[:, None]
            carry[carry < TINY] = 0.0
    return out
