"""The incremental engine (live path) gives the batch estimate's numbers, however the bars arrive."""

import numpy as np
import pytest

from engine.model import IncrementalEngine, ModelParams, estimate
from engine.model.synthetic import synthetic_bars


def _same_book(a, b):
    """Two LevelBooks hold the same USD per (side, tier, price level), whatever their level offsets."""
    assert (a.price, a.time, a.tiers) == (b.price, b.time, b.tiers)
    for book in (a, b):
        assert (book.usd >= -1e-9).all()
    lo = min(a.kmin, b.kmin)
    hi = max(a.kmin + a.usd.shape[2], b.kmin + b.usd.shape[2])
    pa = np.zeros(a.usd.shape[:2] + (hi - lo,))
    pb = np.zeros_like(pa)
    pa[..., a.kmin - lo : a.kmin - lo + a.usd.shape[2]] = a.usd
    pb[..., b.kmin - lo : b.kmin - lo + b.usd.shape[2]] = b.usd
    assert np.allclose(pa, pb, rtol=1e-9, atol=1e-9 * max(pa.max(), 1.0))


@pytest.mark.parametrize(
    "kw", [dict(), dict(wick_clear=0.5), dict(seed_mode="volume"), dict(contract="inverse", exchange="okx")]
)
def test_feeding_bars_in_chunks_equals_the_batch(kw):
    params = ModelParams(**kw)
    bars = synthetic_bars(1500, seed=12, vol_per_bar=0.0015)
    est = estimate(bars, params)
    eng = IncrementalEngine(params, bars.timeframe)
    got = []
    for lo, hi in ((0, 1), (1, 40), (40, 41), (41, 900), (900, 1500)):
        got.append(eng.append(bars.slice(lo, hi)))
    r = est.realised
    assert np.allclose(np.concatenate([g.long_usd for g in got]), r.long_usd, rtol=1e-9, atol=1e-3)
    assert np.allclose(eng.realised.short_usd, r.short_usd, rtol=1e-9, atol=1e-3)
    assert np.array_equal(eng.realised.time, bars.time)
    assert eng.seed_mode == est.seed_mode
    _same_book(eng.book(), est.book())


def test_from_estimate_then_live_bars_equals_feeding_from_scratch():
    params = ModelParams(wick_clear=0.6)
    bars = synthetic_bars(2000, seed=13, vol_per_bar=0.0015)
    scratch = IncrementalEngine(params, bars.timeframe)
    scratch.append(bars)
    warm = IncrementalEngine.from_estimate(estimate(bars.slice(0, 1300), params))
    _same_book(warm.book(), estimate(bars.slice(0, 1300), params).book())
    for j in range(1300, 2000, 175):
        warm.append(bars.slice(j, j + 175))
    _same_book(warm.book(), scratch.book())
    assert np.allclose(warm.realised.long_usd, scratch.realised.long_usd, rtol=1e-9, atol=1e-3)
    assert warm.carry == scratch.carry  # the seed state (last OI, learnt proxy scale, mode counts) carried over


def test_preview_shows_the_forming_bar_without_committing_it():
    bars = synthetic_bars(600, seed=14, vol_per_bar=0.002)
    eng = IncrementalEngine(ModelParams(), bars.timeframe)
    eng.append(bars.slice(0, 599))
    before = eng.book()
    preview = eng.preview(bars.slice(599, 600))
    _same_book(preview, estimate(bars).book())
    _same_book(eng.book(), before)  # nothing moved
    eng.append(bars.slice(599, 600))
    _same_book(eng.book(), preview)


def test_bars_must_come_in_order():
    bars = synthetic_bars(10, seed=1)
    eng = IncrementalEngine(ModelParams(), bars.timeframe)
    eng.append(bars.slice(5))
    with pytest.raises(ValueError, match="after the last closed bar"):
        eng.append(bars.slice(0, 2))


def test_gaps_in_time_age_the_book_like_the_batch():
    bars = synthetic_bars(400, seed=15)
    gapped = bars.slice(0, 200).concat(bars.slice(200).with_columns(time=bars.time[200:] + 86_400))
    est = estimate(gapped)
    eng = IncrementalEngine(ModelParams(), bars.timeframe)
    eng.append(gapped.slice(0, 200))
    eng.append(gapped.slice(200))
    _same_book(eng.book(), est.book())
