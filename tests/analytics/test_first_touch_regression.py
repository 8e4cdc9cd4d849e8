"""Regression for a first-touch bug the calibration's linearity test exposed (engine/model/lifetime.py):
when a level's only run start lay *before* the query's start bar and no key sorted after it, the search
returned that earlier bar — a cohort "liquidated" before it was opened."""

import numpy as np

from engine.model.lifetime import FirstTouch


def brute(reach, start, q):
    for j in range(start, len(reach)):
        if reach[j] <= q:
            return j
    return len(reach)


def test_a_run_start_before_the_start_bar_is_not_an_answer():
    reach = np.array([5, 3, 9, 9])  # bar 1 reaches level 4; nothing after bar 1 does
    ft = FirstTouch(reach)
    assert ft.first(np.array([2]), np.array([4])).tolist() == [4]
    assert ft.first_by_table(np.array([2]), np.array([4])).tolist() == [4]


def test_first_touch_matches_brute_force_on_random_paths():
    rng = np.random.default_rng(8)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        reach = np.cumsum(rng.integers(-3, 4, n))
        m = int(rng.integers(1, 30))
        start = rng.integers(0, n + 1, m)
        q = rng.integers(int(reach.min()) - 2, int(reach.max()) + 3, m)
        got = FirstTouch(reach).first(start, q)
        assert got.tolist() == [brute(reach, int(s), int(v)) for s, v in zip(start, q, strict=True)]
