"""Heatmap binning: outstanding notional per column time x cell, from the column each cohort appears in
and the column it is gone by.

A cohort of tier t born in bar b is worth usd * exp(H[t, c] - F[t, b]) at column c (H: the tier's log
survival at each column). Between its birth and its death nothing but survival changes it, so a cell's
value at column c is sum over tiers of S[t] * exp(H[t, c]), with S[t] constant until a cohort of that
tier and cell is born or dies.

The columns go in blocks. At a block's first column c0 every (tier, cell) holds ``carry``: USD then.
Inside the block, with E[t, c] = exp(H[t, c] - H[t, c0]):

- a cell that no cohort enters or leaves is sum_t E[t, c] * carry[t, cell]: for every cell and column of
  the block at once, one float32 (columns x T) @ (T x cells) product on one BLAS thread written straight
  into the result (summed over tiers), or a broadcast product (per tier);
- a (cell, tier) pair that sees a birth or a death gets a dense row over the block's columns: its events
  added up per column, a running sum, the same survival scale (float64). A cell with such pairs is, from
  its first event on, the sum of all its tiers in tier order.

Every event of every block lands in one table of such rows (block by block, pairs in key order): each
event's row comes from a lookup table over (block, key) slots, and ``np.add.at`` adds it in. No sort of
the events, no Python loop over events or columns, only a short one over blocks; the work is
O(events + touched pairs x block width + columns x cells), whatever the number of bars behind a column.
The tiers' different half-lives are why the sum over tiers cannot be taken before the survival scale.
Cohorts may come in chunks (``Binning.add``): a year of 1m bars has millions, and each chunk keeps only
its events' slot, column in block and weight.

Big grids (KERNEL_CELLS) take the same cohorts through a compiled walk over the columns instead
(binning_kernel.py): equal to float32 precision, dead cells exactly zero, and the past never changes.

Exactness: a cohort's death removes what its birth added only up to rounding, so every (tier, cell)
also counts its alive cohorts (integers), and a pair whose cohorts have all died is exactly zero. Every
column's value reads nothing after that column, so appending history never changes a past column.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache
from importlib.util import find_spec

import numpy as np

# Inside a block an event weighs usd * exp(H[t, c0] - F[t, birth]) (block units); a cohort born later in
# the block weighs more than its USD. Keeping H's fall inside a block below SPAN keeps every weight far
# from float64 overflow (exp(600) * 1e12 USD ~ 1e272) whatever the decay rates and the history's length.
SPAN = 600.0
# Amounts decayed below this (USD) are dropped: they would be float32 subnormals, which cost a hundred
# times more per operation and no one can see a billionth of a cent.
TINY = 1e-9
BLOCK_COLUMNS = 64  # columns per block: fewer blocks cost Python calls, wider ones wider event rows (64: measured)
# Above this many (block, key) slots the touched pairs are found by np.unique instead of a lookup table
# (which then would pass ~64 MB): very narrow blocks (survival falling by SPAN e-folds within a few
# columns) or the largest grids the views allow.
TABLE_LIMIT = 1 << 24
# Grids of at least this many (column, cell, tier) values go through the compiled column walk
# (binning_kernel, numba) when numba is installed: 2-3x faster there (python -m benchmarks peers prints
# both). The first such grid in a process pays ~1 s of CPU and ~170 MB of memory to import numba and
# load the compiled code (a few seconds more the first time on a machine, to compile it), so smaller
# grids stay on numpy: the page's largest view (2,000 x 1,100 bins x 2 sides x 5 tiers = 22M) takes
# under a second there, and a server never loads numba for the page's views.
KERNEL_CELLS = 40_000_000


@cache
def kernel_on() -> bool:
    """Whether big grids can go through the compiled walk: numba is installed (a core dependency; a
    source install without it keeps every grid on numpy)."""
    return find_spec("numba") is not None


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


class Binning:
    """Outstanding USD per column, cell (and tier), built from cohorts given in any number of chunks
    (``add``), then ``grid()``. Chunks bound the memory a long history's millions of cohorts need: each
    keeps only its events' slot, column in block and weight.

    ``h`` (T, C): each tier's log survival at each column, non-increasing along the columns."""

    def __init__(self, h: np.ndarray, ncells: int, split_tiers: bool = True) -> None:
        self.h, self.ncells, self.split_tiers = h, ncells, split_tiers
        t, ncol = h.shape
        self.starts = _blocks(h, BLOCK_COLUMNS) if ncol else np.zeros(1, dtype=np.int64)
        nblocks = len(self.starts) - 1
        self.wide = int(np.diff(self.starts).max()) if ncol else 1
        block_of = np.repeat(np.arange(nblocks, dtype=np.int32), np.diff(self.starts))
        self.nkeys = ncells * t
        self.nslots = nblocks * self.nkeys
        self.index = np.int64 if self.nslots * self.wide >= 1 << 31 else np.int32
        self.slot_base = block_of.astype(self.index) * self.nkeys  # per column: its block's first (block, key) slot
        self.pos_of = (np.arange(ncol) - self.starts[:-1][block_of]).astype(np.int32)  # column within its block
        self.h0 = h[:, self.starts[:-1]][:, block_of].ravel()  # (T * C): H at each column's block start
        # the compiled walk (big grids): events kept as column, (tier, cell), weight, sign
        self.kernel = ncol * ncells * t >= KERNEL_CELLS and kernel_on()
        self.seen = np.zeros(self.nslots, dtype=bool) if self.nslots <= TABLE_LIMIT and not self.kernel else None
        self.events: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []  # slot, column in block, weight, sign
        self.walk_events: list[tuple[np.ndarray, ...]] = []  # column, tier * ncells + cell, weight, death (0/1)

    def add(
        self, appear: np.ndarray, gone: np.ndarray, cell: np.ndarray, tier: np.ndarray, usd: np.ndarray,
        log_birth: np.ndarray,
    ) -> None:
        """Cohorts: ``appear`` the first column that shows one, ``gone`` the first column that no longer
        does (C: none; appear < gone), ``cell`` its cell, ``tier`` its row of ``h``, ``usd`` its notional
        at birth and ``log_birth`` the log survival F[tier, birth] it was born at."""
        t, ncol = self.h.shape
        if len(appear) == 0 or ncol == 0:
            return
        tier = tier.astype(np.int32, copy=False)
        key = cell.astype(self.index, copy=False) * t  # (cell, tier): a cell's tiers side by side
        key += tier
        at_h = tier * np.int32(ncol)  # where each cohort's tier starts in h0
        ends = np.flatnonzero(gone < ncol)
        dcol = gone[ends]
        for col, k, where, sign in ((appear, key, at_h, 1), (dcol, key[ends], at_h[ends], -1)):
            # an event's weight in its block's units: usd * exp(H[tier, block start] - F[tier, birth])
            weight = self.h0[where + col]
            weight -= log_birth if sign > 0 else log_birth[ends]
            np.exp(weight, out=weight)
            weight *= usd if sign > 0 else usd[ends]
            if self.kernel:
                on = (tier if sign > 0 else tier[ends]).astype(np.int64) * self.ncells
                on += cell if sign > 0 else cell[ends]
                self.walk_events.append((col, on, weight, np.full(len(col), sign < 0, dtype=np.int8)))
                continue
            slot = self.slot_base[col] + k
            if self.seen is not None:
                self.seen[slot] = True
            self.events.append((slot, self.pos_of[col], weight, sign))

    def _rows(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The (block, key) slots that see an event, ascending, and each event set's start in a table of
        ``wide`` columns per slot (row * wide)."""
        wide, index = self.wide, self.index
        if self.seen is not None:
            rows = np.flatnonzero(self.seen)
            row_of = np.zeros(self.nslots, dtype=index)
            row_of[rows] = np.arange(0, len(rows) * wide, wide, dtype=index)
            return rows, [row_of[slot] for slot, *_ in self.events]
        # very narrow blocks (survival falling by SPAN e-folds within a few columns): too many slots for a
        # table, so the sort
        slots = [slot for slot, *_ in self.events]
        rows, inverse = np.unique(np.concatenate(slots), return_inverse=True)
        inverse = inverse.astype(index)
        inverse *= wide
        return rows, np.split(inverse, np.cumsum([len(x) for x in slots])[:-1])

    @staticmethod
    def _summed_block(
        flat: np.ndarray, product: np.ndarray, scratch: np.ndarray, c0: int, c1: int, scale: np.ndarray,
        carry: np.ndarray, units: np.ndarray, events: np.ndarray, p_cell: np.ndarray, p_tier: np.ndarray,
    ) -> None:
        """One block of the grid summed over tiers, written into ``flat`` (C, cells).

        Every cell as if nothing happened inside the block: one float32 (columns x T) @ (T x cells) product,
        always ``product``'s full height so that a column's value does not depend on how wide its block
        turned out (a shorter history ends its last block sooner). A cell that sees events: from its first
        event on, the sum over all its tiers in tier order (float64), each tier carry * scale or its touched
        pair's value. Both rules read nothing after the column, so the past does not change when the
        future arrives."""
        width = c1 - c0
        t = scale.shape[0]
        if width == len(product):
            np.matmul(scale.T.astype(np.float32), carry.astype(np.float32), out=flat[c0:c1])
        else:
            padded = np.zeros((len(product), t), dtype=np.float32)
            padded[:width] = scale.T
            np.matmul(padded, carry.astype(np.float32), out=product)
            flat[c0:c1] = product[:width]
        if not len(p_cell):
            return
        # keys are ascending, so a cell's pairs are side by side
        starts_cell = np.empty(len(p_cell), dtype=bool)
        starts_cell[0] = True
        np.not_equal(p_cell[1:], p_cell[:-1], out=starts_cell[1:])
        first = np.flatnonzero(starts_cell)
        cells = p_cell[first]
        which = np.cumsum(starts_cell) - 1  # each pair's cell among ``cells``
        # (T, cells, width) in a scratch buffer (a fresh one per block costs page faults)
        tiers = scratch[:, : len(cells), :width]
        np.multiply(carry[:, cells][:, :, None], scale[:, None, :], out=tiers)
        tiers[p_tier, which] = units
        total = tiers[0]
        for row in tiers[1:]:  # in tier order, whatever the shape
            total += row
        # the column of each cell's first event: before it, the product stands
        begun = np.minimum.reduceat(np.argmax(events != 0, axis=1), first)
        np.copyto(total, flat[c0:c1, cells].T, where=np.arange(width)[None, :] < begun[:, None])
        flat[c0:c1, cells] = total.T

    def grid(self) -> np.ndarray:
        """Float32 (C, ncells, T), or (C, ncells, 1) summed over tiers when ``split_tiers`` is False."""
        h, ncells, split_tiers = self.h, self.ncells, self.split_tiers
        t, ncol = h.shape
        if ncol == 0 or not (self.walk_events if self.kernel else self.events):
            return np.zeros((ncol, ncells, t if split_tiers else 1), dtype=np.float32)
        if self.kernel:
            from .binning_kernel import walk

            col, key, weight, dead = (np.concatenate(x) for x in zip(*self.walk_events, strict=True))
            self.walk_events = []
            return walk(h, self.starts, col, key, weight, dead, ncells, split_tiers, TINY)
        out = np.empty((ncol, ncells, t if split_tiers else 1), dtype=np.float32)  # every cell is written below
        starts, wide, nkeys = self.starts, self.wide, self.nkeys
        nblocks = len(starts) - 1
        rows, row_at = self._rows()
        block_rows = np.searchsorted(rows, np.arange(nblocks + 1, dtype=np.int64) * nkeys)
        # one table: a row per touched (block, key), a column per column of the block; births minus deaths,
        # then the running sum along the block. Beside it the events so far, births in the low 32 bits and
        # deaths in the high ones (one pass for both): alive = births - deaths, and "has seen an event".
        added = np.zeros((len(rows), wide))
        events = np.zeros((len(rows), wide), dtype=np.int64)  # (int64: np.add.at on int32 takes a slow path)
        added_flat, events_flat = added.reshape(-1), events.reshape(-1)
        for (_, pos, weight, sign), at in zip(self.events, row_at, strict=True):
            at += pos
            (np.add if sign > 0 else np.subtract).at(added_flat, at, weight)
            np.add.at(events_flat, at, 1 if sign > 0 else 1 << 32)
        self.events = []
        np.cumsum(added, axis=1, out=added)
        np.cumsum(events, axis=1, out=events)

        carry = np.zeros((t, ncells))  # USD at the block's first column, per (tier, cell)
        count = np.zeros((t, ncells), dtype=np.int64)  # alive cohorts per (tier, cell)
        flat = out.reshape(ncol, -1)
        # summed: see _summed_block
        product = np.empty((wide if not split_tiers else 0, ncells), dtype=np.float32)
        scratch = np.empty((t, ncells if not split_tiers else 0, wide))
        with one_blas_thread():
            for k in range(nblocks):
                c0, c1 = int(starts[k]), int(starts[k + 1])
                width = c1 - c0
                scale = np.exp(h[:, c0:c1] - h[:, c0 : c0 + 1])  # (T, width): survival since the block's start
                r0, r1 = int(block_rows[k]), int(block_rows[k + 1])
                keys = rows[r0:r1] - k * nkeys
                p_cell, p_tier = keys // t, keys % t
                # the touched pairs over the block: what they carried plus what their events added, aged
                # (before a pair's first event exactly carry * scale, as for a pair that sees none)
                units = added[r0:r1, :width] + carry[p_tier, p_cell][:, None]
                units *= scale[p_tier]
                so_far = events[r0:r1, :width]
                alive = (so_far & 0xFFFFFFFF) - (so_far >> 32)  # births - deaths so far in the block
                alive += count[p_tier, p_cell][:, None]
                units[alive <= 0] = 0.0
                np.maximum(units, 0.0, out=units)
                if split_tiers:
                    # every pair as if nothing happened inside the block, then the touched pairs over it
                    np.multiply(scale.T[:, None, :], np.ascontiguousarray(carry.T)[None], out=out[c0:c1], casting="same_kind")
                    out[c0:c1, p_cell, p_tier] = units.T
                else:
                    self._summed_block(flat, product, scratch, c0, c1, scale, carry, units, so_far, p_cell, p_tier)
                # what is alive at the block's end, aged to the next block's first column
                if r1 > r0:
                    carry[p_tier, p_cell] += added[r0:r1, width - 1]
                    count[p_tier, p_cell] = alive[:, -1]
                    gone_now = count[p_tier, p_cell] <= 0
                    carry[p_tier[gone_now], p_cell[gone_now]] = 0.0
                carry *= scale[:, -1:] if c1 == ncol else np.exp(h[:, c1] - h[:, c0])[:, None]
                carry[carry < TINY] = 0.0
        return out


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
    over tiers when ``split_tiers`` is False — for cohorts given at once (see Binning.add)."""
    binning = Binning(h, ncells, split_tiers)
    binning.add(appear, gone, cell, tier, usd, log_birth)
    return binning.grid()
