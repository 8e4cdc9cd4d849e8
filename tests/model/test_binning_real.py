"""The heatmap binning on real prices against the per-bar reference (benchmarks/reference.py): real
Binance 5m BTC bars (../shared/data) with a seeded open-interest walk (the file has none intraday), decay
on, one column per bar and coarse columns, per tier, summed over tiers and one tier alone. Also the
binning's own paths (cohorts in chunks, the sorted fallback for very narrow blocks) give the same grid;
each test runs on the numpy blocks and on the compiled walk big grids take."""

import numpy as np
import pytest

from benchmarks.reference import run_reference
from engine.model import Bars, ModelParams, estimate, price_edges

BARS_5M = "binance_usdm_btcusdt_5m_2024-02_06.csv.gz"


@pytest.fixture(scope="module")
def real(shared_data):
    from engine.formats import read_bars_file

    path = shared_data / BARS_5M
    if not path.exists():
        pytest.skip(f"{BARS_5M} is not in the shared data")
    bars = read_bars_file(path).slice(2000, 2700)  # 700 real 5m bars (early March 2024: a rally and dips)
    oi = 8e9 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.004, len(bars))))
    bars = Bars(bars.timeframe, bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume,
                bars.taker_buy_volume, bars.taker_sell_volume, oi)
    params = ModelParams()
    assert params.decay and params.decay_rates().max() > 0  # the tiers age at different rates
    est = estimate(bars, params)
    edges = price_edges(float(bars.low.min()) * 0.85, float(bars.high.max()) * 1.15, 400, log=True)
    per_bar = est.column_times(bars.timeframe)
    coarse = est.column_times(3600)  # 12 bars per column: births and deaths inside a column
    both = np.union1d(per_bar, coarse)  # the reference walks the columns in order
    ref = run_reference(bars, params, [int(t) for t in both])
    grid = np.array(ref.heatmap(list(edges), len(params.ladder.leverage)))  # (C, side, bin, tier)
    return est, edges, {name: (times, grid[np.searchsorted(both, times)])
                        for name, times in (("per bar", per_bar), ("coarse", coarse))}


@pytest.fixture(params=["numpy", "compiled"])
def path(request, monkeypatch):
    """Both ways the binning can go: numpy blocks, and the compiled walk that big grids take."""
    from engine.model import binning

    monkeypatch.setattr(binning, "KERNEL_CELLS", 10**18 if request.param == "numpy" else 0)
    return request.param


@pytest.mark.parametrize("columns", ["per bar", "coarse"])
def test_real_bars_per_tier_summed_and_one_tier_equal_the_reference(real, columns, path):
    est, edges, cases = real
    times, want = cases[columns]
    top = want.max()
    assert top > 1e6 and (want > 0).mean() > 0.02  # a real book, not an empty grid

    split = est.heatmap(times=times, edges=edges, spread=True)
    assert split.long_usd.dtype == np.float32 and split.long_usd.shape == (len(times), 400, 5)
    for got, side in ((split.long_usd, 0), (split.short_usd, 1)):
        assert np.allclose(got, want[:, side], rtol=1e-6, atol=1e-7 * top)
        assert np.array_equal(got > 0, want[:, side] > 0)  # dead cells exactly zero, live ones shown

    summed = est.heatmap(times=times, edges=edges, spread=True, by_tier=False)
    assert summed.tiers == ("all",)
    for got, side in ((summed.long_usd[:, :, 0], 0), (summed.short_usd[:, :, 0], 1)):
        assert np.allclose(got, want[:, side].sum(axis=2), rtol=1e-6, atol=1e-7 * top)
        assert np.array_equal(got > 0, want[:, side].sum(axis=2) > 0)

    one = est.heatmap(times=times, edges=edges, spread=True, tier=3)
    assert one.tiers == (est.tiers[3],)
    for got, side in ((one.long_usd[:, :, 0], 0), (one.short_usd[:, :, 0], 1)):
        assert np.allclose(got, want[:, side, :, 3], rtol=1e-6, atol=1e-7 * top)
        assert np.array_equal(got > 0, want[:, side, :, 3] > 0)


def test_chunks_and_narrow_blocks_give_the_same_grid(real, monkeypatch, path):
    """Cohorts binned in chunks of a few hundred, and the sorted fallback for blocks too narrow for the
    table of touched slots (with blocks of one column), equal the one-shot grid."""
    import sys

    from engine.model import binning

    estimate_module = sys.modules["engine.model.estimate"]  # (the package's name ``estimate`` is the function)

    est, edges, cases = real
    times, _ = cases["per bar"]
    base = est.heatmap(times=times, edges=edges, by_tier=False)
    split = est.heatmap(times=times, edges=edges)
    monkeypatch.setattr(estimate_module, "_CHUNK_HEATMAP", 333)
    assert np.array_equal(est.heatmap(times=times, edges=edges, by_tier=False).long_usd, base.long_usd)
    monkeypatch.setattr(binning, "TABLE_LIMIT", 0)
    monkeypatch.setattr(binning, "SPAN", 0.0)
    narrow = est.heatmap(times=times, edges=edges)
    top = split.long_usd.max()
    assert np.allclose(narrow.long_usd, split.long_usd, rtol=1e-5, atol=1e-6 * top)
    assert np.array_equal(narrow.short_usd > 0, split.short_usd > 0)
