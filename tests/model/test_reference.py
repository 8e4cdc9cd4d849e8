"""The vectorised engine against the naive per-bar reference (benchmarks/reference.py): the same model
written as plain loops over bars and cohorts. Realised liquidations, the book and heatmap columns agree."""

import numpy as np
import pytest

from benchmarks.reference import run_reference
from engine.model import Ladder, ModelParams, estimate, price_edges
from engine.model.synthetic import synthetic_bars

VARIANTS = {
    "default": dict(),
    "partial wicks": dict(wick_clear=0.4),
    "volume proxy": dict(seed_mode="volume"),
    "bybit formula": dict(exchange="bybit", typical_position_usd=3_000_000),
    "binance big bracket": dict(typical_position_usd=5_000_000),
    "okx": dict(exchange="okx"),
    "inverse": dict(contract="inverse"),
    "no decay, no shrink": dict(decay=False, shrink_on_oi_drop=False),
    "high ladder, coarse grid": dict(ladder=Ladder("h", (25, 50, 100, 125), (1, 2, 3, 1)), resolution=0.002),
    "odd anchors": dict(entry_anchors=(0.9, 0.1, 0.5, 0.0), entry_weights=(1, 2, 0, 1)),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_equals_the_naive_reference(variant):
    params = ModelParams(**VARIANTS[variant])
    bars = synthetic_bars(1200, seed=len(variant), vol_per_bar=0.002)  # volatile: many liquidations
    if variant == "partial wicks":
        oi = bars.oi_usd.copy()
        oi[300:500] = np.nan  # and hybrid seeding
        bars = bars.with_columns(oi_usd=oi)
    est = estimate(bars, params)
    times = np.r_[bars.time[0] - 60, est.column_times(1800), bars.close_time[-1] + 3600]  # incl. before/after
    ref = run_reference(bars, params, [int(t) for t in times])
    assert est.seed_mode == ref.seed_mode

    r = est.realised
    scale = max(r.long_usd.max(), r.short_usd.max())
    assert r.long_usd.sum() > 0 and r.short_usd.sum() > 0
    assert np.allclose(r.long_usd, ref.realised_long, rtol=1e-9, atol=1e-9 * scale)
    assert np.allclose(r.short_usd, ref.realised_short, rtol=1e-9, atol=1e-9 * scale)

    book = est.book()
    want = np.zeros_like(book.usd)
    for (side, tier, level), usd in ref.final_book.items():
        want[side, tier, level - book.kmin] += usd
    assert np.allclose(book.usd, want, rtol=1e-9, atol=1e-9 * book.usd.max())

    edges = price_edges(float(bars.low.min()) * 0.8, float(bars.high.max()) * 1.25, 300, log=True)
    hm = est.heatmap(times=times, edges=edges)
    grid = np.array(ref.heatmap(list(edges), len(params.ladder.leverage)))  # (C, side, bin, tier)
    top = grid.max()
    # the heatmap is float32: equal to float32's precision
    assert np.allclose(hm.long_usd, grid[:, 0], rtol=1e-6, atol=1e-7 * top)
    assert np.allclose(hm.short_usd, grid[:, 1], rtol=1e-6, atol=1e-7 * top)
    # empty cells are exactly empty in both
    assert np.array_equal(hm.long_usd > 0, grid[:, 0] > 0)
    assert np.array_equal(hm.short_usd > 0, grid[:, 1] > 0)
