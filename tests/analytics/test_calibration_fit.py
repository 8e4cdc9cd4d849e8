"""Calibration: NNLS (scipy), per-tier regressors, planted weights recovered, a usable ladder file."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ladderfile import load_ladder
from engine.model import LADDERS, ModelParams, estimate, parse_ladder
from engine.model.calibrate import CalibrationError, calibrate, nnls, tier_regressors
from engine.model.synthetic import synthetic_bars


def projected_gradient(a, b, iters=50_000):
    """A slow, obviously-correct reference: projected gradient descent on 0.5 ||ax - b||^2."""
    step = 1.0 / np.linalg.norm(a, 2) ** 2
    x = np.zeros(a.shape[1])
    for _ in range(iters):
        x = np.maximum(0.0, x - step * (a.T @ (a @ x - b)))
    return x


def test_nnls_recovers_a_non_negative_solution_exactly():
    rng = np.random.default_rng(0)
    a = rng.random((40, 6))
    x_true = np.array([0.0, 2.0, 0.5, 0.0, 1.0, 3.0])
    x, res = nnls(a, a @ x_true)
    assert x == pytest.approx(x_true, abs=1e-9) and res < 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(5, 30), n=st.integers(1, 6))
def test_nnls_satisfies_the_optimality_conditions(seed, m, n):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n)) * rng.lognormal(0, 2, n)  # badly scaled columns
    b = rng.standard_normal(m)
    x, _ = nnls(a, b)
    g = a.T @ (a @ x - b)  # gradient of 0.5||ax-b||^2
    scale = np.linalg.norm(a, axis=0) * (np.linalg.norm(b) + 1)
    assert np.all(x >= 0)
    assert np.all(g >= -1e-7 * scale)  # no descent direction into the feasible set
    assert np.all(np.abs(g[x > 0]) <= 1e-7 * scale[x > 0])  # stationary on the free variables


def test_nnls_agrees_with_projected_gradient():
    rng = np.random.default_rng(3)
    a = rng.random((25, 4))
    b = rng.standard_normal(25)
    x, _ = nnls(a, b)
    assert x == pytest.approx(projected_gradient(a, b), abs=1e-5)


@pytest.fixture(scope="module")
def market():
    return synthetic_bars(3000, seed=21)


def test_the_model_is_linear_in_the_ladder_weights(market):
    params = ModelParams()
    reg = tier_regressors(market, params)
    full = estimate(market, params).realised
    combined = np.tensordot(np.asarray(params.ladder.weights), reg, axes=1)
    assert combined[0] == pytest.approx(full.long_usd, rel=1e-9, abs=1e-3)
    assert combined[1] == pytest.approx(full.short_usd, rel=1e-9, abs=1e-3)


def test_planted_weights_and_seed_scale_are_recovered(market):
    # 50 hours of 1m bars never move price 20%: the 5x tier is never liquidated, so the recording says
    # nothing about it; it keeps the default ladder's 15% and the seen tiers share the other 85%.
    truth = parse_ladder('{"5": 0.15, "10": 0.4, "25": 0.0, "50": 0.3, "100": 0.15}')
    params = ModelParams()  # starts from the default ladder (5x 15%) on the same tiers
    r = estimate(market, replace(params, ladder=truth)).realised
    actual = 0.25 * np.stack([r.long_usd, r.short_usd])
    cal = calibrate(market, actual, params)
    assert cal.unidentified == ("5x",)
    assert cal.ladder.weights == pytest.approx(truth.weights, abs=1e-6)
    assert cal.seed_scale == pytest.approx(0.25, rel=1e-6)
    assert cal.r2 == pytest.approx(1.0, abs=1e-9) and cal.r2_prior < cal.r2
    shrunk = calibrate(market, actual, params, shrink=10.0)
    # pulled toward the default ladder: the 25x tier the truth lacks gets weight back
    assert shrunk.ladder.weights[2] > cal.ladder.weights[2]


def test_the_fitted_ladder_is_a_file_every_command_reads(market, tmp_path):
    r = estimate(market).realised
    cal = calibrate(market, np.stack([r.long_usd, r.short_usd]) * 2.0, ModelParams(), name="mine")
    path = tmp_path / "mine.json"
    path.write_text(cal.to_json())
    ladder = load_ladder(str(path))
    assert ladder.name == "mine" and ladder.leverage == LADDERS["default"].leverage
    assert ladder.weights == pytest.approx(LADDERS["default"].weights, abs=1e-5)
    assert parse_ladder(cal.to_json()).weights == ladder.weights
    assert estimate(market, ModelParams(ladder=ladder)).realised.long_usd.sum() > 0
    assert load_ladder("high") is LADDERS["high"]


def test_calibration_refuses_what_it_cannot_fit(market):
    n = len(market)
    with pytest.raises(CalibrationError):
        calibrate(market, np.zeros((2, n)), ModelParams())
    with pytest.raises(CalibrationError):
        calibrate(market, np.ones((2, n)), ModelParams(), mask=np.zeros(n, dtype=bool))
    with pytest.raises(CalibrationError):
        calibrate(market, np.ones((3, n)), ModelParams())
