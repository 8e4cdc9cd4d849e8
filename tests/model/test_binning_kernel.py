"""The compiled column walk (engine/model/binning_kernel.py) that big grids take: the same heatmap as the
numpy blocks on real bars (to float32 precision, the same cells exactly zero), the past never changes as
bars arrive, and which grids take it."""

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import ModelParams, binning, estimate, price_edges
from engine.model.synthetic import synthetic_bars

pytestmark = pytest.mark.skipif(not binning.kernel_on(), reason="numba is not installed")


class _Path:
    """Every grid through one path while inside: the compiled walk (compiled=True) or numpy."""

    def __init__(self, compiled: bool) -> None:
        self.compiled = compiled

    def __enter__(self) -> None:
        self.before = binning.KERNEL_CELLS
        binning.KERNEL_CELLS = 0 if self.compiled else 10**18

    def __exit__(self, *exc: object) -> None:
        binning.KERNEL_CELLS = self.before


def _edges(est):
    prices = est.grid.price(np.array([est.cohorts.level.min(), est.cohorts.level.max()]))
    return price_edges(float(prices[0]) * 0.99, float(prices[1]) * 1.01, 97, log=True)


@pytest.fixture(scope="module")
def month(shared_data):
    """A month of real 5m BTC bars with a seeded OI walk: the peers' job's shape, one column per bar."""
    from engine.formats import read_bars_file
    from engine.model import Bars

    path = shared_data / "binance_usdm_btcusdt_5m_2024-02_06.csv.gz"
    if not path.exists():
        pytest.skip("the 5m bars are not in the shared data")
    real = read_bars_file(path).slice(0, 8015)
    oi = 8e9 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.002, len(real))))
    bars = Bars(real.timeframe, real.time, real.open, real.high, real.low, real.close, real.volume,
                real.taker_buy_volume, real.taker_sell_volume, oi)
    est = estimate(bars, ModelParams())
    return est, price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, 1100)


@pytest.mark.parametrize("kind", ["summed", "per tier", "one tier", "spread"])
def test_the_walk_equals_the_numpy_blocks_on_a_month_of_real_bars(month, kind):
    est, edges = month
    kw = {"summed": {"by_tier": False}, "per tier": {}, "one tier": {"tier": 4},
          "spread": {"by_tier": False, "spread": True}}[kind]
    times = est.column_times(est.bars.timeframe)
    with _Path(compiled=False):
        want = est.heatmap(times=times, edges=edges, **kw)
    with _Path(compiled=True):
        got = est.heatmap(times=times, edges=edges, **kw)
    for a, b in ((got.long_usd, want.long_usd), (got.short_usd, want.short_usd)):
        assert a.dtype == np.float32 and a.shape == b.shape
        top = float(b.max())
        assert top > 1e6 and (b > 0).mean() > 0.02  # a real book
        assert np.allclose(a, b, rtol=1e-6, atol=1e-7 * top)
        assert np.array_equal(a > 0, b > 0)  # dead cells exactly zero on both paths, live ones shown


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(30, 400), seed=st.integers(0, 10_000), cut=st.floats(0.1, 0.9),
       step=st.sampled_from([60, 600, 3600]), span=st.sampled_from([600.0, 0.5]))
def test_appending_bars_never_changes_a_past_column_of_the_walk(n, seed, cut, step, span):
    """Narrow blocks too (span: survival may fall by only so much within a block)."""
    bars = synthetic_bars(n, seed=seed, with_oi=True)
    k = max(2, int(n * cut))
    past, full = estimate(bars.slice(0, k), ModelParams()), estimate(bars, ModelParams())
    if not len(past.cohorts):
        return
    times, edges = past.column_times(step), _edges(past)
    before = binning.SPAN
    binning.SPAN = span
    try:
        with _Path(compiled=True):
            a = past.heatmap(times=times, edges=edges)
            b = full.heatmap(times=times, edges=edges)
            c = full.heatmap(times=times, edges=edges, by_tier=False)
    finally:
        binning.SPAN = before
    assert np.array_equal(a.long_usd, b.long_usd) and np.array_equal(a.short_usd, b.short_usd)
    with _Path(compiled=False):
        d = full.heatmap(times=times, edges=edges, by_tier=False)
    top = max(float(d.long_usd.max()), 1.0)
    assert np.allclose(c.long_usd, d.long_usd, rtol=1e-5, atol=1e-6 * top)


def test_big_grids_take_the_walk_and_small_ones_stay_on_numpy(monkeypatch):
    # the page's largest view stays on numpy (no numba in a server for it); the peers' job takes the walk
    assert 2000 * 2200 * 5 < binning.KERNEL_CELLS <= 8015 * 2200 * 5
    calls = []
    kernel = pytest.importorskip("engine.model.binning_kernel")
    monkeypatch.setattr(kernel, "walk", lambda *a, **k: calls.append(a) or np.zeros((a[0].shape[1], a[6], 1), np.float32))
    h = np.zeros((5, 400))
    one = dict(appear=np.array([0]), gone=np.array([400]), cell=np.array([3]), tier=np.array([1]),
               usd=np.array([1e6]), log_birth=np.array([0.0]))
    small = binning.Binning(h, 2200, split_tiers=False)  # 400 x 2200 x 5 = 4.4M values: numpy
    small.add(**one)
    assert small.grid()[:, 3, 0].min() == pytest.approx(1e6) and not calls
    monkeypatch.setattr(binning, "KERNEL_CELLS", 4_000_000)
    big = binning.Binning(h, 2200, split_tiers=False)
    big.add(**one)
    big.grid()
    assert len(calls) == 1 and "engine.model.binning_kernel" in sys.modules
