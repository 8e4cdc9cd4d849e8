"""Views: the heatmap grid, the liquidation map with its cumulative curves, zones, realised bars."""

import numpy as np
import pytest

from engine.model import (
    Heatmap,
    LiquidationMap,
    ModelParams,
    ViewError,
    daily_volume_usd,
    estimate,
    find_zones,
    price_edges,
)
from engine.model.synthetic import synthetic_bars


@pytest.fixture(scope="module")
def est():
    return estimate(synthetic_bars(4000, seed=31, vol_per_bar=0.0012), ModelParams())


def test_each_heatmap_column_is_the_book_as_it_stood_then(est):
    bars = est.bars
    times = np.array([bars.close_time[0] + 17, bars.close_time[999], bars.close_time[2500] - 1, bars.close_time[-1]])
    edges = price_edges(40_000, 90_000, 250, log=True)
    hm = est.heatmap(times=times, edges=edges)
    assert hm.long_usd.shape == (4, 250, 5) and hm.tiers == ("5x", "10x", "25x", "50x", "100x")
    for c, t in enumerate(times):
        n = int(np.searchsorted(bars.close_time, t, side="right"))
        longs, shorts = est.book(n).binned(edges)
        assert np.allclose(hm.long_usd[c], longs, rtol=1e-6, atol=1e-6)
        assert np.allclose(hm.short_usd[c], shorts, rtol=1e-6, atol=1e-6)


def test_default_grid_columns_every_step_and_over_the_traded_range(est):
    hm = est.heatmap(step=3600, bins=120)
    assert hm.times[-1] == est.bars.close_time[-1] and np.all(np.diff(hm.times[:-1]) == 3600)
    assert hm.edges[0] == pytest.approx(est.bars.low.min() * 0.9) and len(hm.edges) == 121
    log = est.heatmap(step=3600, bins=120, log=True)
    ratios = log.edges[1:] / log.edges[:-1]
    assert np.allclose(ratios, ratios[0])  # equal steps in log price
    per_tier = hm.total(tier=4)[0]
    assert np.array_equal(per_tier, hm.long_usd[:, :, 4])
    assert np.allclose(hm.total()[1], hm.short_usd.sum(axis=2))
    assert len(est.heatmap(step=3600, columns=7).times) == 7


def test_heatmap_refuses_descending_columns_and_absurd_bins(est):
    with pytest.raises(ViewError, match="ascending"):
        est.heatmap(times=np.array([200, 100]))
    with pytest.raises(ViewError, match="bins must be between"):
        est.heatmap(bins=0)
    with pytest.raises(ViewError, match="positive and increasing"):
        price_edges(100.0, 50.0, 10)


def test_liquidation_map_and_its_cumulative_curves():
    edges = np.array([80.0, 90.0, 100.0, 110.0, 120.0])  # centres 85, 95, 105, 115; price 100
    longs = np.array([[1.0, 2.0], [3.0, 0.0], [7.0, 0.0], [0.0, 0.0]])
    shorts = np.array([[0.0, 0.0], [5.0, 0.0], [1.0, 1.0], [0.0, 4.0]])
    m = LiquidationMap(100.0, edges, longs, shorts, ("10x", "50x"))
    long_below, short_above = m.cumulative()
    # falling to 85 liquidates the longs at 95 and 85: 3 + 3; shorts above the price only
    assert list(long_below) == [6.0, 3.0, 0.0, 0.0]
    assert list(short_above) == [0.0, 0.0, 2.0, 6.0]


def test_the_map_of_an_estimate_is_its_book_binned(est):
    m = est.liquidation_map(bins=100, span=0.2)
    assert m.price == est.bars.close[-1]
    assert m.edges[0] == pytest.approx(m.price * 0.8) and m.edges[-1] == pytest.approx(m.price * 1.2)
    longs, shorts = est.book().binned(m.edges)
    assert np.array_equal(m.long_usd, longs) and np.array_equal(m.short_usd, shorts)
    with pytest.raises(ViewError, match="span"):
        est.liquidation_map(span=1.5)


def test_zones_are_graded_by_share_of_daily_volume_and_percentile():
    edges = np.linspace(90.0, 110.0, 21)  # 1-wide bins, price 100.5 (bin 10 straddles it)
    longs = np.zeros((20, 1))
    shorts = np.zeros((20, 1))
    longs[:10, 0] = 1.0
    longs[3, 0], longs[4, 0] = 50.0, 60.0  # one strong run of two bins below the price
    shorts[[12, 13, 16, 18], 0] = 1.0
    shorts[15, 0] = 8.0  # above the 80th percentile (2.4) alone
    m = LiquidationMap(100.5, edges, longs, shorts, ("x",))
    zones = find_zones(m, daily_volume_usd=2_000.0)
    assert [z.side for z in zones] == ["long", "short"]
    strong, short = zones
    assert (strong.price_low, strong.price_high, strong.usd) == (93.0, 95.0, 110.0)
    assert strong.peak_price == 94.5 and strong.tier_usd == (110.0,)
    assert strong.share_of_daily_volume == pytest.approx(0.055) and strong.grade == "high"  # >= 2% of the day
    assert short.share_of_daily_volume == pytest.approx(0.004) and short.grade == "low"  # < 0.5%
    assert strong.percentile == 100.0 and strong.distance_pct == pytest.approx((95 - 100.5) / 100.5 * 100)
    assert short.price_low > m.price and short.distance_pct > 0
    # without volume, the peak's percentile grades it
    no_volume = find_zones(m)
    assert no_volume[0].grade == "high" and no_volume[0].share_of_daily_volume is None
    assert no_volume[0].to_dict()["grade"] == "high"


def test_zones_of_an_estimate_lie_inside_the_map_on_their_side(est):
    zones = est.zones(bins=150, span=0.2)
    m = est.liquidation_map(bins=150, span=0.2)
    assert zones and zones == sorted(zones, key=lambda z: z.usd, reverse=True)
    for z in zones:
        assert m.edges[0] <= z.price_low < z.price_high <= m.edges[-1]
        assert z.grade in ("low", "elevated", "high") and 0 < z.percentile <= 100
        assert sum(z.tier_usd) == pytest.approx(z.usd)
        if z.side == "long":
            assert z.price_low < m.price
        else:
            assert z.price_high > m.price


def test_daily_volume_is_the_average_over_the_window():
    bars = synthetic_bars(3 * 1440, seed=2)
    typical = (bars.high + bars.low + bars.close) / 3
    want = float((bars.volume * typical).sum() / 3)
    assert daily_volume_usd(bars) == pytest.approx(want, rel=1e-9)
    assert daily_volume_usd(bars.with_columns(volume=None)) is None


def test_realised_is_one_row_per_bar(est):
    r = est.realised
    assert np.array_equal(r.time, est.bars.time)
    assert r.long_usd.shape == r.short_usd.shape == (len(est.bars),)
    assert (r.long_usd >= 0).all() and (r.short_usd >= 0).all() and r.long_usd.sum() > 0


def test_heatmap_container_totals():
    g = np.arange(24, dtype=float).reshape(2, 3, 4)
    hm = Heatmap(np.array([1, 2]), np.array([1.0, 2.0, 3.0, 4.0]), g, g * 2, ("a", "b", "c", "d"))
    assert np.array_equal(hm.total()[1], (g * 2).sum(axis=2))


def test_heatmap_blocks_of_any_size_give_the_same_grid(est, monkeypatch):
    """The binning walks the columns in blocks, carrying what is alive from one block to the next; blocks
    of one column (as a history whose survival falls by more than binning.SPAN e-folds gets) and the
    default blocks give the same grid, and every dead cell is exactly zero either way."""
    from engine.model import binning

    edges = price_edges(40_000, 90_000, 180, log=True)
    times = est.column_times(1800)
    fast = est.heatmap(times=times, edges=edges)
    monkeypatch.setattr(binning, "SPAN", 0.0)
    narrow = est.heatmap(times=times, edges=edges)
    top = fast.long_usd.max()
    assert fast.long_usd.dtype == np.float32
    assert np.allclose(fast.long_usd, narrow.long_usd, rtol=1e-5, atol=1e-6 * top)
    assert np.allclose(fast.short_usd, narrow.short_usd, rtol=1e-5, atol=1e-6 * top)
    assert np.array_equal(fast.long_usd > 0, narrow.long_usd > 0)


def test_heatmap_summed_over_tiers_or_one_tier_equals_the_split_grid(est):
    edges = price_edges(40_000, 90_000, 120)
    times = est.column_times(3600)
    split = est.heatmap(times=times, edges=edges)
    summed = est.heatmap(times=times, edges=edges, by_tier=False)
    one = est.heatmap(times=times, edges=edges, tier=2)
    top = split.long_usd.sum(axis=2).max()
    assert summed.tiers == ("all",) and summed.long_usd.shape == split.long_usd.shape[:2] + (1,)
    assert np.allclose(summed.total()[0], split.total()[0], rtol=1e-5, atol=1e-6 * top)
    assert np.allclose(summed.total()[1], split.total()[1], rtol=1e-5, atol=1e-6 * top)
    assert one.tiers == (split.tiers[2],)
    assert np.allclose(one.long_usd[:, :, 0], split.long_usd[:, :, 2], rtol=1e-5, atol=1e-6 * top)
    with pytest.raises(ViewError):
        est.heatmap(times=times, edges=edges, tier=len(split.tiers))
