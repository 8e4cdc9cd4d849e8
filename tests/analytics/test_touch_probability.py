"""Touch probability: first passage of a driftless random walk, with a Student-t tail."""

import math

import numpy as np
import pytest
from analytics_data import CANDLES, need
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import Bars
from engine.model.touch import (
    HORIZONS_HOURS,
    KURTOSIS_DECAY,
    TAIL_REFERENCE_HOURS,
    TouchError,
    Volatility,
    expected_liquidations,
    normal_sf,
    realised_volatility,
    risk_weighted_map,
    student_t_sf,
    touch_probability,
    zone_touch,
)
from engine.model.views import Zone


def vol(sigma_hour=0.01, kurt=0.0, timeframe=3600):
    return Volatility(sigma_hour, kurt, timeframe, 100)


def zone(side, lo, hi, usd=1e6, grade="high"):
    return Zone(side, lo, hi, 0.5 * (lo + hi), usd, grade, None, 99.0, 0.0, (usd,))


@settings(max_examples=200, deadline=None)
@given(
    dist=st.floats(-0.4, 0.4),
    sigma=st.floats(1e-4, 0.05),
    kurt=st.floats(0.0, 40.0),
    hours=st.lists(st.floats(0.05, 200.0), min_size=2, max_size=5),
)
def test_probabilities_are_in_unit_interval_and_grow_with_the_horizon(dist, sigma, kurt, hours):
    v = vol(sigma, kurt, 60)
    target = 100.0 * math.exp(dist)
    ps = [float(touch_probability(100.0, target, v, h)) for h in sorted(hours)]
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(b >= a - 1e-12 for a, b in zip(ps, ps[1:], strict=False))


def test_the_price_itself_is_always_touched_and_a_far_level_almost_never_within_an_hour():
    v = vol(0.005)
    assert touch_probability(100.0, 100.0, v, 1.0) == 1.0
    assert touch_probability(100.0, 70.0, v, 1.0, fat_tails=False) < 1e-12


def test_normal_case_is_the_reflection_formula():
    # d / (sigma sqrt h) = 2  ->  P = 2 * (1 - Phi(2)) = 0.0455
    v = vol(0.01)
    target = 100.0 * math.exp(-0.02 * 2.0)  # 4 hours at 1%/sqrt(h): sigma_h = 2%, d = 4% -> z = 2
    p = float(touch_probability(100.0, target, v, 4.0, fat_tails=False))
    assert p == pytest.approx(2 * 0.0227501319, rel=1e-6)


def test_monte_carlo_first_passage_matches_the_formula():
    rng = np.random.default_rng(5)
    sigma_step, steps, paths = 0.001, 400, 20000
    walk = np.cumsum(rng.standard_normal((paths, steps)) * sigma_step, axis=1)
    d = 0.02  # = 1 sigma over the whole horizon
    hit = (walk.min(axis=1) <= -d).mean()
    v = Volatility(sigma_step, 0.0, 3600, steps)  # one step per hour -> horizon = 400 h
    p = float(touch_probability(100.0, 100.0 * math.exp(-d), v, float(steps), fat_tails=False))
    # discrete monitoring misses a few crossings between steps: simulated a little below the formula
    assert p - 0.03 < hit <= p + 0.01


def test_student_t_tail_matches_numerical_integration_and_tends_to_the_normal():
    for nu in (4.3, 6.0, 25.0):
        x = np.linspace(0.0, 400.0, 2_000_001)
        pdf = math.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / math.sqrt(nu * math.pi) * (1 + x * x / nu) ** (-(nu + 1) / 2)
        for t in (0.3, 1.5, 4.0):
            m = x >= t
            assert float(student_t_sf(t, nu)) == pytest.approx(float(np.trapezoid(pdf[m], x[m])), rel=1e-5)
    assert float(student_t_sf(-1.0, 5.0)) == pytest.approx(1 - float(student_t_sf(1.0, 5.0)))
    assert float(student_t_sf(2.0, 1e6)) == pytest.approx(float(normal_sf(np.array(2.0))), rel=1e-4)


def test_fat_tails_make_far_levels_likelier_and_near_ones_no_likelier():
    v = vol(0.01, kurt=10.0)
    far, near = 100.0 * math.exp(-0.06), 100.0 * math.exp(-0.005)
    assert touch_probability(100.0, far, v, 1.0) > 3 * touch_probability(100.0, far, v, 1.0, fat_tails=False)
    assert touch_probability(100.0, near, v, 1.0) <= touch_probability(100.0, near, v, 1.0, fat_tails=False)


def test_kurtosis_fades_with_the_horizon_at_the_documented_rate():
    v = vol(0.01, kurt=10.0, timeframe=3600)
    k4 = 6.0 / (v.dof(4.0) - 4.0)
    assert k4 == pytest.approx(10.0 * 4.0 ** -KURTOSIS_DECAY)
    assert v.dof() == v.dof(TAIL_REFERENCE_HOURS)
    assert math.isinf(vol(0.01, kurt=0.0).dof(1.0))


def test_far_levels_stay_monotone_in_the_horizon_even_deep_in_the_tail():
    # a tail shape that thinned with the horizon would make these fall; one shape keeps them rising
    v = vol(0.002, kurt=0.5, timeframe=60)
    hours = np.geomspace(0.02, 500, 60)
    for d in (0.02, 0.08, 0.3):
        ps = np.array([float(touch_probability(100.0, 100 * math.exp(-d), v, h)) for h in hours])
        assert np.all(np.diff(ps) >= 0)


def test_realised_volatility_recovers_a_known_sigma():
    rng = np.random.default_rng(1)
    n = 5000
    close = 100 * np.exp(np.cumsum(rng.standard_normal(n) * 0.001))
    bars = Bars.from_columns(60, time=np.arange(n) * 60, open=close, high=close, low=close, close=close, volume=np.ones(n))
    v = realised_volatility(bars, window_hours=72)
    assert v.sigma_hour == pytest.approx(0.001 * math.sqrt(60), rel=0.06)
    assert abs(v.excess_kurtosis) < 0.3
    with pytest.raises(TouchError):
        realised_volatility(bars.slice(0, 5))


def test_kurtosis_decay_constant_rederived_from_real_candles():
    """The 0.3 in the module docstring: log-log slope of excess kurtosis over 1h..24h BTC returns."""
    from engine.formats import read_bars_file

    bars = read_bars_file(need(CANDLES), venue="binance", coin="BTC")
    r = np.diff(np.log(bars.close))
    hs = np.array([1, 2, 4, 8, 12, 24])
    ks = []
    for h in hs:
        a = r[: len(r) // h * h].reshape(-1, h).sum(axis=1)
        a = a - a.mean()
        ks.append((a**4).mean() / (a**2).mean() ** 2 - 3)
    slope = np.polyfit(np.log(hs), np.log(ks), 1)[0]
    assert slope == pytest.approx(-KURTOSIS_DECAY, abs=0.05)


def test_zone_touch_weights_notional_by_probability(synth_est):
    lmap = synth_est.liquidation_map()
    zones = synth_est.zones()
    v = realised_volatility(synth_est.bars)
    rows = zone_touch(zones, lmap.price, v)
    assert [r.zone for r in rows] == zones
    for r in rows:
        ps = [r.probability[h] for h in HORIZONS_HOURS]
        assert ps == sorted(ps)
        for h in HORIZONS_HOURS:
            assert r.risk_usd[h] == pytest.approx(r.zone.usd * r.probability[h])
    inside = zone("long", lmap.price * 0.99, lmap.price * 1.01)
    assert zone_touch([inside], lmap.price, v)[0].probability[1.0] == 1.0
    d = rows[0].to_dict()
    assert {"touch_1h", "touch_4h", "touch_24h", "risk_usd_4h"} <= d.keys()


def test_risk_weighted_map_never_exceeds_the_map_and_grows_with_the_horizon(synth_est):
    lmap = synth_est.liquidation_map()
    v = realised_volatility(synth_est.bars)
    prev = 0.0
    for h in (1.0, 4.0, 24.0):
        rw = risk_weighted_map(lmap, v, h)
        assert np.all(rw.long_usd <= lmap.long_usd + 1e-9) and np.all(rw.short_usd <= lmap.short_usd + 1e-9)
        total = rw.long_usd.sum() + rw.short_usd.sum()
        assert total >= prev
        prev = total
    exp = expected_liquidations(lmap, v)
    assert exp["1h"]["long"] <= exp["4h"]["long"] <= exp["24h"]["long"] <= lmap.long_usd.sum()
