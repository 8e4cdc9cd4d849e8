"""The first-touch search (engine/model/lifetime.py) against the definition, scanned bar by bar: the
run-start merge, its chunking, and the sparse-table fallback, on random price paths."""

import numpy as np
import pytest

from benchmarks.estimate_before import before
from engine.model import ModelParams, estimate, lifetime
from engine.model.lifetime import FirstTouch
from engine.model.synthetic import synthetic_bars


def scan(reach: np.ndarray, start: np.ndarray, q: np.ndarray) -> list[int]:
    """First j >= start with reach[j] <= q, else len(reach): the definition, one bar at a time."""
    n = len(reach)
    return [next((j for j in range(int(s), n) if reach[j] <= k), n) for s, k in zip(start, q, strict=True)]


def random_case(rng: np.random.Generator, n: int, m: int, jump: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    reach = np.cumsum(rng.integers(-jump, jump + 1, n))  # a random walk of bar lows, in levels
    start = rng.integers(0, n + 2, m)  # past the end too: nothing left to touch
    q = rng.integers(int(reach.min()) - 3, int(reach.max()) + 4, m)
    return reach, start, q


@pytest.mark.parametrize("chunk_bits", [1, 3, 19])
def test_run_starts_merge_equals_the_scan_in_any_chunking(monkeypatch, chunk_bits):
    monkeypatch.setattr(lifetime, "_CHUNK_BITS", chunk_bits)  # 2, 8 queries a chunk, or all in one
    rng = np.random.default_rng(chunk_bits)
    for _ in range(150):
        reach, start, q = random_case(rng, int(rng.integers(1, 50)), int(rng.integers(1, 40)), int(rng.integers(1, 6)))
        ft = FirstTouch(reach)
        assert lifetime._run_keys(ft.reach, int(q.min()), int(q.max()), budget=10**9) is not None  # the merge ran
        want = scan(reach, start, q)
        assert ft.first(start, q).tolist() == want
        out = np.full(len(q), -1, dtype=np.int32)  # the estimate's own dtypes: int32 starts, levels, deaths
        ft.first(start.astype(np.int32), q.astype(np.int32), out=out)
        assert out.tolist() == want


def test_many_queries_on_one_level_and_repeated_queries():
    """Equal (level, start) keys side by side, and starts on and just after every run start."""
    rng = np.random.default_rng(3)
    reach = np.cumsum(rng.integers(-2, 3, 300))
    start = np.repeat(np.arange(0, 302), 3)
    q = np.full(len(start), int(np.median(reach)))
    assert FirstTouch(reach).first(start, q).tolist() == scan(reach, start, q)
    q = np.tile(np.arange(int(reach.min()) - 1, int(reach.max()) + 2), 7)
    start = rng.integers(0, 301, len(q))
    assert FirstTouch(reach).first(start, q).tolist() == scan(reach, start, q)


def test_the_sparse_table_answers_when_run_starts_would_be_too_many(monkeypatch):
    rng = np.random.default_rng(5)
    monkeypatch.setattr(FirstTouch, "run_budget", 0)
    by_table = 0
    for _ in range(100):
        # jagged: every bar a wide swing, so run starts outnumber twice the queries
        reach, start, q = random_case(rng, int(rng.integers(2, 60)), int(rng.integers(1, 5)), 40)
        ft = FirstTouch(reach)
        by_table += lifetime._run_keys(ft.reach, int(q.min()), int(q.max()), budget=2 * len(q)) is None
        assert ft.first(start, q).tolist() == scan(reach, start, q)
        assert ft.first_by_table(start, q).tolist() == scan(reach, start, q)
    assert by_table > 50  # most of these went to the table


def test_levels_too_wide_for_the_packed_keys_go_to_the_table():
    reach = np.array([0, -(1 << 40), 5, 1 << 40])  # a span of 2^41 levels cannot share 62 bits with a bar
    start, q = np.array([0, 2, 3]), np.array([-(1 << 40), 1 << 40, 0])
    assert lifetime._run_keys(reach, int(q.min()), int(q.max()), budget=10**9) is None
    assert FirstTouch(reach).first(start, q).tolist() == scan(reach, start, q)


def test_no_bars_or_no_queries():
    assert FirstTouch(np.array([], dtype=np.int64)).first(np.array([0, 1]), np.array([3, 4])).tolist() == [0, 0]
    assert FirstTouch(np.array([1, 2])).first(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == []


@pytest.mark.parametrize("params", [ModelParams(), ModelParams(wick_clear=0.5, resolution=0.0002)])
def test_the_estimate_equals_the_one_before_the_merge_to_the_bit(params):
    """benchmarks/estimate_before.py (the per-level search and the seeding it replaced, which the
    benchmarks time beside today's) makes the very same cohorts, deaths and survival."""
    bars = synthetic_bars(3000, seed=4, timeframe=300)
    now = estimate(bars, params)
    with before():
        then = estimate(bars, params)
    assert len(now.cohorts) > 5000
    assert np.array_equal(now.death, then.death) and np.array_equal(now.F, then.F)
    assert np.array_equal(now.cohorts.usd, then.cohorts.usd) and np.array_equal(now.cohorts.level, then.cohorts.level)
