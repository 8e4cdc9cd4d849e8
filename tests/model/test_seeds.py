"""Seeding (engine/model/cohorts.py seed_exposure) read from its inputs: which side a bar's new exposure
leans to, and how much of the older exposure survives an OI drop."""

from dataclasses import replace

import numpy as np

from engine.model import ModelParams
from engine.model.cohorts import SeedCarry, seed_exposure
from engine.model.synthetic import synthetic_bars


def test_sides_lean_with_taker_flow_and_with_the_candle_where_no_taker_volume_traded():
    bars = synthetic_bars(500, seed=11)
    buy, sell = bars.taker_buy_volume.copy(), bars.taker_sell_volume.copy()
    quiet = np.arange(0, 500, 7)  # bars with no taker volume at all
    buy[quiet] = 0.0
    sell[quiet] = 0.0
    bars = replace(bars, taker_buy_volume=buy, taker_sell_volume=sell)
    params = ModelParams()
    seeds = seed_exposure(bars, params, SeedCarry())
    total = seeds.long_usd + seeds.short_usd
    opened = total > 0
    lean = np.divide(seeds.long_usd - seeds.short_usd, total, out=np.zeros(len(total)), where=opened)

    flow = (buy - sell) / np.where(buy + sell > 0, buy + sell, 1.0)
    rng = bars.high - bars.low
    candle = np.where(rng > 0, (bars.close - bars.open) / np.where(rng > 0, rng, 1.0), 0.0)
    by_flow = opened & ~np.isin(np.arange(500), quiet)
    by_candle = opened & np.isin(np.arange(500), quiet)
    assert by_flow.sum() > 150 and by_candle.sum() > 20
    np.testing.assert_allclose(lean[by_flow], params.side_tilt * np.clip(flow[by_flow], -1, 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lean[by_candle], params.side_tilt * np.clip(candle[by_candle], -1, 1), rtol=1e-12, atol=1e-15)


def test_older_exposure_shrinks_by_the_share_of_open_interest_that_closed():
    bars = synthetic_bars(400, seed=12)
    oi = bars.oi_usd.copy()
    oi[50] = np.nan  # a gap: the change is read across it, from the last known figure
    bars = replace(bars, oi_usd=oi)
    seeds = seed_exposure(bars, ModelParams(), SeedCarry())
    prev = np.r_[np.nan, oi[:-1]]
    prev[51] = oi[49]
    fell = np.isfinite(oi) & np.isfinite(prev) & (oi < prev)
    assert 100 < fell.sum() < 300
    np.testing.assert_allclose(seeds.log_shrink[fell], np.log(oi[fell] / prev[fell]), rtol=1e-12)
    assert (seeds.log_shrink[~fell] == 0.0).all()  # OI rose, stayed, or is unknown: everyone survives
    flat = seed_exposure(bars, ModelParams(shrink_on_oi_drop=False), SeedCarry())
    assert (flat.log_shrink == 0.0).all()
