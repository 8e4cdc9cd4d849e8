"""The closed heatmap columns kept per grid: a close appends one column in place of rebuilding the set,
and what was handed out never changes under its reader."""

from __future__ import annotations

import numpy as np

from engine.columns import ClosedColumns
from engine.model.views import Heatmap

BINS, TIERS = 7, 3
EDGES = np.linspace(90.0, 110.0, BINS + 1)
TIER_NAMES = ("10x", "25x", "50x")


def column(t: int) -> tuple[np.ndarray, np.ndarray]:
    """A column whose every cell says which time it belongs to (so a misplaced row shows)."""
    rng = np.random.default_rng(t)
    return rng.random((BINS, TIERS)) + t, -(rng.random((BINS, TIERS)) + t)


def grid(times: list[int]) -> Heatmap:
    cols = [column(t) for t in times]
    return Heatmap(np.array(times, dtype=np.int64), EDGES, np.stack([c[0] for c in cols]),
                   np.stack([c[1] for c in cols]), TIER_NAMES)


def append(kept: ClosedColumns, times: list[int]) -> bool:
    g = grid(times)
    return kept.append(g.times, g.long_usd, g.short_usd)


def test_closes_keep_the_newest_columns_and_every_view_handed_out_stays_as_it_was() -> None:
    keep = 50
    times = [60 * i for i in range(1, 31)]
    kept = ClosedColumns(grid(times), keep)
    handed: list[tuple[Heatmap, Heatmap]] = []  # (what a reader got, what it must still say)
    reallocations = 0
    for i in range(31, 400):
        reallocations += append(kept, [60 * i])
        times.append(60 * i)
        want = grid(times[-keep:])
        np.testing.assert_array_equal(kept.times, want.times)
        got = kept.select(want.times[-20:])
        assert got is not None
        np.testing.assert_array_equal(got.long_usd, want.long_usd[-20:])
        np.testing.assert_array_equal(got.short_usd, want.short_usd[-20:])
        handed.append((got, Heatmap(got.times.copy(), got.edges, got.long_usd.copy(), got.short_usd.copy(), got.tiers)))
    # the buffer was rebuilt now and then (its spare room ran out), never once per close
    assert 0 < reallocations < (400 - 31) // 8
    for got, copy in handed:
        np.testing.assert_array_equal(got.times, copy.times)
        np.testing.assert_array_equal(got.long_usd, copy.long_usd)
        np.testing.assert_array_equal(got.short_usd, copy.short_usd)


def test_memory_stays_within_an_eighth_over_the_kept_columns() -> None:
    keep = 400
    kept = ClosedColumns(grid([60]), keep)
    per_column = BINS * TIERS * 8 * 2 + 8
    for i in range(2, 1500):
        append(kept, [60 * i])
        assert len(kept) == min(i, keep)
        assert kept.nbytes() <= (len(kept) + max(16, len(kept) // 8) + 1) * per_column + EDGES.nbytes + 256


def test_missing_and_select_answer_for_the_times_asked() -> None:
    kept = ClosedColumns(grid([60, 120, 180, 240, 300]), 100)
    np.testing.assert_array_equal(kept.missing(np.array([0, 120, 250, 300, 360])), [0, 250, 360])
    assert kept.select(np.array([120, 360])) is None  # one of them is not kept
    assert kept.select(np.array([30])) is None
    spaced = kept.select(np.array([60, 180, 300]))  # not consecutive: still the right rows
    assert spaced is not None
    np.testing.assert_array_equal(spaced.long_usd, grid([60, 180, 300]).long_usd)


def test_columns_already_kept_or_older_are_not_added_twice() -> None:
    kept = ClosedColumns(grid([60, 120, 180]), 100)
    append(kept, [120, 180])  # another thread added them first
    append(kept, [180, 240])
    np.testing.assert_array_equal(kept.times, [60, 120, 180, 240])
    hm = kept.select(kept.times)
    assert hm is not None
    np.testing.assert_array_equal(hm.short_usd, grid([60, 120, 180, 240]).short_usd)


def test_a_batch_longer_than_keep_keeps_its_newest_columns() -> None:
    kept = ClosedColumns(grid(list(range(60, 60 * 31, 60))), 10)
    np.testing.assert_array_equal(kept.times, list(range(60 * 21, 60 * 31, 60)))
