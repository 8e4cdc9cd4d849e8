"""Properties that must hold for any market and any settings (hypothesis draws both)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import (
    IncrementalEngine,
    Ladder,
    ModelParams,
    daily_volume_usd,
    estimate,
    find_zones,
    price_edges,
)
from engine.model.lifetime import FirstTouch
from engine.model.synthetic import synthetic_bars

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

ladders = st.sampled_from(
    [Ladder("default", (5, 10, 25, 50, 100), (0.15, 0.3, 0.25, 0.2, 0.1)), Ladder("two", (20, 100), (1, 1), (3.0, 0.5))]
)
params_st = st.builds(
    ModelParams,
    ladder=ladders,
    exchange=st.sampled_from(["binance", "bybit", "okx"]),
    contract=st.sampled_from(["linear", "inverse"]),
    seed_mode=st.sampled_from(["auto", "volume"]),
    wick_clear=st.sampled_from([1.0, 0.5]),
    decay=st.booleans(),
    resolution=st.sampled_from([0.0005, 0.002]),
)
markets = st.builds(
    synthetic_bars,
    n=st.integers(20, 400),
    seed=st.integers(0, 10_000),
    timeframe=st.sampled_from([60, 300, 3600]),
    vol_per_bar=st.sampled_from([0.0005, 0.002, 0.01]),
    with_oi=st.booleans(),
    with_taker=st.booleans(),
)


def _book_edges(est):
    """Bin edges wide enough to hold every level the estimate ever used."""
    prices = est.grid.price(np.array([est.cohorts.level.min(), est.cohorts.level.max()]))
    return price_edges(float(prices[0]) * 0.99, float(prices[1]) * 1.01, 97, log=True)


@SETTINGS
@given(bars=markets, params=params_st, ncols=st.integers(1, 12))
def test_binning_conserves_notional_and_the_grid_is_never_negative(bars, params, ncols):
    est = estimate(bars, params)
    if not len(est.cohorts):
        return
    times = np.linspace(bars.time[0], bars.close_time[-1] + 60, ncols).astype(np.int64)
    hm = est.heatmap(times=times, edges=_book_edges(est))
    assert (hm.long_usd >= 0).all() and (hm.short_usd >= 0).all()
    for c, t in enumerate(times):
        book = est.book(int(np.searchsorted(bars.close_time, t, side="right")))
        longs, shorts = book.total()
        # the grid is float32: equal to its precision (the sum itself in float64)
        assert np.isclose(hm.long_usd[c].sum(dtype=np.float64), longs, rtol=1e-6, atol=1e-6)
        assert np.isclose(hm.short_usd[c].sum(dtype=np.float64), shorts, rtol=1e-6, atol=1e-6)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bars=markets, params=params_st, cut=st.floats(0.1, 0.9), step=st.sampled_from([60, 600, 3600]))
def test_appending_future_bars_never_changes_past_heatmap_columns(bars, params, cut, step):
    n = max(2, int(len(bars) * cut))
    past, full = estimate(bars.slice(0, n), params), estimate(bars, params)
    if not len(past.cohorts):
        return
    times = past.column_times(step)
    edges = _book_edges(past)
    a = past.heatmap(times=times, edges=edges)
    b = full.heatmap(times=times, edges=edges)
    assert np.array_equal(a.long_usd, b.long_usd) and np.array_equal(a.short_usd, b.short_usd)
    r_past, r_full = past.realised, full.realised
    assert np.allclose(r_past.long_usd, r_full.long_usd[:n], rtol=1e-9, atol=1e-6)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bars=markets, params=params_st, split=st.lists(st.floats(0.0, 1.0), max_size=4))
def test_incremental_equals_batch(bars, params, split):
    bars = bars.slice(0, 150)
    est = estimate(bars, params)
    eng = IncrementalEngine(params, bars.timeframe)
    cuts = sorted({0, len(bars), *(int(x * len(bars)) for x in split)})
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        eng.append(bars.slice(lo, hi))
    r, ri = est.realised, eng.realised
    assert np.allclose(ri.long_usd, r.long_usd, rtol=1e-9, atol=1e-6)
    assert np.allclose(ri.short_usd, r.short_usd, rtol=1e-9, atol=1e-6)
    a, b = est.book(), eng.book()
    assert np.allclose(a.total(), b.total(), rtol=1e-9, atol=1e-6)
    edges = _book_edges(est) if len(est.cohorts) else price_edges(1.0, 2.0, 3)
    assert np.allclose(a.binned(edges), b.binned(edges), rtol=1e-9, atol=1e-6)


@SETTINGS
@given(bars=markets, params=params_st, bins=st.integers(5, 300), span=st.floats(0.01, 0.9), log=st.booleans())
def test_zones_inside_the_range_and_cumulative_curves_monotone(bars, params, bins, span, log):
    est = estimate(bars, params)
    m = est.liquidation_map(bins=bins, span=span, log=log)
    below, above = m.cumulative()
    c = m.centers
    assert (np.diff(below[c <= m.price]) <= 1e-9).all()  # grows going down from the price
    assert (np.diff(above[c >= m.price]) >= -1e-9).all()  # grows going up from the price
    assert (below[c > m.price] == 0).all() and (above[c < m.price] == 0).all()
    for z in find_zones(m, daily_volume_usd(bars)):
        assert m.edges[0] <= z.price_low < z.price_high <= m.edges[-1]
        assert (z.side == "long" and z.price_low <= m.price) or (z.side == "short" and z.price_high >= m.price)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    reach=st.lists(st.integers(-6, 6), min_size=1, max_size=60),
    queries=st.lists(st.tuples(st.integers(0, 61), st.integers(-8, 8)), min_size=1, max_size=40),
)
def test_first_touch_equals_a_plain_scan(reach, queries):
    """Both search strategies (run starts, sparse table) against the definition."""
    ft = FirstTouch(np.array(reach))
    start = np.array([s for s, _ in queries])
    q = np.array([k for _, k in queries])
    want = [next((j for j in range(s, len(reach)) if reach[j] <= k), len(reach)) for s, k in queries]
    assert ft.first(start, q).tolist() == want
    assert ft.first_by_table(start, q).tolist() == want
    out = np.full(len(q), -1, dtype=np.int32)
    ft.first(start.astype(np.int32), q.astype(np.int32), out=out)
    assert out.tolist() == want


def test_first_touch_falls_back_to_the_table_when_runs_would_be_too_many(monkeypatch):
    reach = np.tile([0, 1000], 50)  # every bar a 1000-level swing: 50,000 run starts for 2 queries
    ft = FirstTouch(reach)
    monkeypatch.setattr(FirstTouch, "run_budget", 0)
    monkeypatch.setattr(FirstTouch, "first_by_table", lambda self, s, q: np.array([1, 2]))
    assert ft.first(np.array([1, 2]), np.array([500, 999])).tolist() == [1, 2]  # the table answered
