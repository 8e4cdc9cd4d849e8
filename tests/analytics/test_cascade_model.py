"""Cascade simulation: forced orders against a power-law book, never against the cascade's direction."""

import numpy as np
import pytest
from analytics_data import DEPTH, need
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model.cascade import (
    BINANCE_BTCUSDT_2024_08_08,
    DEFAULT_DEPTH,
    CascadeError,
    DepthCurve,
    DepthModel,
    calibrate_depth_curve,
    cascade_risk,
    cumulative_depth,
    depth_from_book,
    simulate_cascade,
)
from engine.model.views import LiquidationMap, Zone


def linear_depth(usd_at_ref=10e6):
    """$10M within 0.1%, linear: selling V moves price 0.1% * V / $10M."""
    return DepthCurve(usd_at_ref, 1.0)


def test_depth_curve_inverts():
    c = BINANCE_BTCUSDT_2024_08_08
    for usd in (1e5, 1e7, 5e8):
        assert float(c.usd_within(c.move_for(usd))) == pytest.approx(usd)
    assert float(c.move_for(0.0)) == 0.0


def test_known_chain_of_two_clusters_stops_before_the_third():
    # price 100, shock to 99.9 liquidates A ($10M at 99.9): 0.1% impact -> 99.8001 reaches B ($10M at
    # 99.81): $20M -> 0.2% below the trigger = 99.7002; C ($50M at 99.0) is out of reach.
    prices = np.array([99.9, 99.81, 99.0])
    usd = np.array([10e6, 10e6, 50e6])
    c = simulate_cascade(prices, usd, 100.0, "down", linear_depth(), trigger_price=99.9)
    assert c.end_price == pytest.approx(99.9 * 0.998)
    assert c.total_usd == pytest.approx(20e6)
    assert c.forced_usd == pytest.approx(10e6)
    assert [round(s.usd) for s in c.steps] == [10_000_000, 10_000_000, 0]
    assert c.steps[0].trigger and c.steps[0].price_to == 99.9


def test_a_thinner_book_carries_price_into_the_third_cluster():
    prices = np.array([99.9, 99.81, 99.5])
    usd = np.array([10e6, 10e6, 50e6])
    deep = simulate_cascade(prices, usd, 100.0, "down", linear_depth(10e6), trigger_price=99.9)
    thin = simulate_cascade(prices, usd, 100.0, "down", linear_depth(4e6), trigger_price=99.9)
    assert deep.total_usd == pytest.approx(20e6)
    assert thin.total_usd == pytest.approx(70e6)  # all three
    assert thin.end_price < deep.end_price


def test_upward_cascade_mirrors_the_downward_one():
    prices = np.array([100.1, 100.19, 101.0])
    usd = np.array([10e6, 10e6, 50e6])
    c = simulate_cascade(prices, usd, 100.0, "up", linear_depth(), trigger_price=100.1)
    assert c.end_price == pytest.approx(100.1 * 1.002)
    assert c.total_usd == pytest.approx(20e6)


def test_levels_on_the_wrong_side_are_ignored_and_a_bad_trigger_is_refused():
    c = simulate_cascade(np.array([101.0]), np.array([1e9]), 100.0, "down", linear_depth())
    assert c.end_price == 100.0 and c.total_usd == 0.0
    with pytest.raises(CascadeError):
        simulate_cascade(np.array([99.0]), np.array([1e6]), 100.0, "down", linear_depth(), trigger_price=100.5)
    with pytest.raises(CascadeError):
        simulate_cascade(np.array([99.0]), np.array([1e6]), 100.0, "sideways", linear_depth())


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 60),
    shock=st.floats(0.0, 0.05),
    usd_at_ref=st.floats(1e5, 1e9),
    beta=st.floats(0.5, 3.0),
    direction=st.sampled_from(["down", "up"]),
)
def test_a_cascade_never_moves_price_against_its_direction(seed, n, shock, usd_at_ref, beta, direction):
    rng = np.random.default_rng(seed)
    prices = 100.0 * np.exp(rng.uniform(-0.2, 0.2, n))
    usd = rng.lognormal(15, 2, n) * (rng.random(n) < 0.8)
    sign = -1 if direction == "down" else 1
    trigger = 100.0 * (1 + sign * shock)
    c = simulate_cascade(prices, usd, 100.0, direction, DepthCurve(usd_at_ref, beta), trigger_price=trigger)
    path = [c.start_price] + [s.price_to for s in c.steps]
    assert all(sign * (b - a) >= 0 for a, b in zip(path, path[1:], strict=False))
    assert sign * (c.end_price - c.trigger_price) >= 0 and sign * (c.trigger_price - c.start_price) >= 0
    assert c.total_usd >= 0 and c.forced_usd >= -1e-6
    # what it liquidated is exactly the levels between the start and the end price
    lo, hi = min(c.start_price, c.end_price), max(c.start_price, c.end_price)
    expected = usd[(prices >= lo - 1e-9) & (prices <= hi + 1e-9)].sum()
    assert c.total_usd == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_cumulative_depth_and_a_power_law_book_fit_back_exactly():
    mid = 100.0
    offsets = np.arange(1, 31) * 0.0001  # a level every 0.01%, out to 0.3%
    # a book whose cumulative USD within x is 2e6 * (x / 0.001) ** 1.4
    cum = 2e6 * (offsets / 0.001) ** 1.4
    usd = np.diff(np.r_[0.0, cum])
    bids = np.c_[mid * (1 - offsets), usd / (mid * (1 - offsets))]
    asks = np.c_[mid * (1 + offsets), usd / (mid * (1 + offsets))]
    got = cumulative_depth(bids, mid, "bid", np.array([0.001, 0.002]))
    assert got == pytest.approx(2e6 * np.array([1.0, 2.0**1.4]), rel=1e-6)
    model = depth_from_book(bids, asks)
    assert model.bid.beta == pytest.approx(1.4, abs=1e-6)
    assert float(model.ask.usd_within(0.001)) == pytest.approx(2e6, rel=1e-6)


def test_default_depth_constants_rederived_from_the_real_binance_capture():
    from engine.depth_capture import book_samples

    samples = book_samples(need(DEPTH))
    assert len(samples) >= 30
    assert all(s.bids[0, 0] < s.asks[0, 0] for s in samples)
    fitted = calibrate_depth_curve([(s.bids, s.asks) for s in samples])
    assert fitted.usd_at_ref == pytest.approx(BINANCE_BTCUSDT_2024_08_08.usd_at_ref, rel=0.01)
    assert fitted.beta == pytest.approx(BINANCE_BTCUSDT_2024_08_08.beta, abs=0.005)


def _map(price, edges, longs, shorts):
    return LiquidationMap(price, edges, np.asarray(longs, float)[:, None], np.asarray(shorts, float)[:, None], ("10x",))


def test_cascade_risk_triggers_at_the_nearest_zone_and_reports_both_directions():
    edges = np.linspace(90.0, 110.0, 201)  # 0.1-wide bins
    longs = np.zeros(200)
    shorts = np.zeros(200)
    longs[80:85] = 5e6  # 98.0..98.5
    shorts[130:132] = 2e6  # 103.0..103.2
    lmap = _map(100.0, edges, longs, shorts)
    z_long = Zone("long", 98.0, 98.5, 98.2, 25e6, "high", None, 99.0, -1.5, (25e6,))
    z_short = Zone("short", 103.0, 103.2, 103.1, 4e6, "elevated", None, 95.0, 3.0, (4e6,))
    summary = cascade_risk(lmap, [z_long, z_short], DEFAULT_DEPTH)
    assert summary.down.trigger_price == pytest.approx(98.5)
    assert summary.up.trigger_price == pytest.approx(103.0)
    assert summary.down.end_price <= 98.5 and summary.up.end_price >= 103.0
    assert z_long in summary.down.zones_reached
    d = summary.to_dict()
    assert d["down"]["direction"] == "down" and d["up"]["total_usd"] > 0
    z_far = Zone("long", 97.0, 97.5, 97.2, 1e6, "low", None, 80.0, -2.5, (1e6,))
    chain = cascade_risk(lmap, [z_far, z_long], DepthModel(DepthCurve(1e6, 1.0), DepthCurve(1e6, 1.0)))
    assert chain.down.zones_reached == (z_long, z_far)  # in the order the cascade meets them
    none = cascade_risk(lmap, [z_long, z_short], DEFAULT_DEPTH, trigger="none")
    assert none.down.end_price == 100.0 and none.down.total_usd == 0.0
    shocked = cascade_risk(lmap, [], DEFAULT_DEPTH, trigger=2.0)
    assert shocked.down.trigger_price == pytest.approx(98.0)
    assert shocked.down.total_usd >= 25e6 - 1


def test_cascade_on_a_real_estimate_only_moves_outward(synth_est):
    lmap = synth_est.liquidation_map(bins=400)
    s = cascade_risk(lmap, synth_est.zones(bins=400), DEFAULT_DEPTH.scaled(0.05))
    assert s.down.end_price <= s.down.trigger_price <= lmap.price
    assert s.up.end_price >= s.up.trigger_price >= lmap.price
