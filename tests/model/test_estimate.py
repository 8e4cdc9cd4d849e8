"""The batch estimate on markets small enough to check by hand, and on seeded synthetic ones."""

import math

import numpy as np
import pytest

from engine.model import Bars, BarsError, Ladder, ModelParams, estimate
from engine.model.margin import liquidation_factor
from engine.model.synthetic import synthetic_bars

HOUR = 3600
ONE_10X = Ladder("10x", (10,), (1.0,))


def market(rows, tf=HOUR, **cols):
    """Bars from (open, high, low, close) rows, one per ``tf`` from t=0; volume 1 unless given."""
    a = np.asarray(rows, dtype=np.float64)
    n = len(a)
    cols.setdefault("volume", np.ones(n))
    return Bars.from_columns(tf, time=np.arange(n) * tf, open=a[:, 0], high=a[:, 1], low=a[:, 2], close=a[:, 3], **cols)


FLAT = (100.0, 100.1, 99.9, 100.0)  # a quiet bar: reaches no level of a 10x position


def test_the_output_says_which_seed_mode_ran():
    with_oi = synthetic_bars(500, seed=1)
    assert estimate(with_oi).seed_mode == "oi"
    assert estimate(with_oi.with_columns(oi_usd=None)).seed_mode == "volume"
    gappy = with_oi.oi_usd.copy()
    gappy[100:200] = np.nan
    assert estimate(with_oi.with_columns(oi_usd=gappy)).seed_mode == "hybrid"
    assert estimate(with_oi, ModelParams(seed_mode="volume")).seed_mode == "volume"
    with pytest.raises(BarsError, match="needs an oi_usd column"):
        estimate(with_oi.with_columns(oi_usd=None), ModelParams(seed_mode="oi"))
    no_volume = with_oi.with_columns(volume=None, taker_buy_volume=None, taker_sell_volume=None)
    assert estimate(no_volume).seed_mode == "oi"
    with pytest.raises(BarsError, match="volume"):
        estimate(no_volume.with_columns(oi_usd=None))


def test_new_exposure_is_the_rise_in_open_interest_and_drops_shrink_it():
    # OI 1.0bn -> 1.1bn (+100M opened: a long and a short each) -> 1.045bn (5% of positions closed)
    bars = market([FLAT] * 3, volume=np.zeros(3), oi_usd=np.array([1.0e9, 1.1e9, 1.045e9]))
    est = estimate(bars, ModelParams(ladder=ONE_10X, decay=False))
    assert sum(est.book(2).total()) == pytest.approx(2 * 1e8)
    assert sum(est.book(3).total()) == pytest.approx(2 * 1e8 * 1.045 / 1.1)
    keep = estimate(bars, ModelParams(ladder=ONE_10X, decay=False, shrink_on_oi_drop=False))
    assert sum(keep.book(3).total()) == pytest.approx(2 * 1e8)


def test_volume_proxy_seeds_traded_usd_times_the_fraction():
    bars = market([FLAT, FLAT], volume=np.array([0.0, 50.0]))
    est = estimate(bars, ModelParams(ladder=ONE_10X, decay=False, volume_proxy_fraction=0.2))
    typical = (100.1 + 99.9 + 100.0) / 3
    assert sum(est.book().total()) == pytest.approx(2 * 50.0 * typical * 0.2)


def test_the_proxy_scale_is_learnt_from_the_past_only():
    # bars 1-2 know OI and volume: 20 USD of new OI per 100 USD traded. Bar 3 has no OI: it is seeded
    # at that learnt 20% of its 300 USD traded, not at the configured 10%.
    oi = np.array([1000.0, 1020.0, 1040.0, np.nan])
    vol = np.array([0.0, 1.0, 1.0, 3.0])  # 100 USD per unit at price 100
    rows = [(100.0, 100.0, 100.0, 100.0)] * 4
    est = estimate(market(rows, volume=vol, oi_usd=oi), ModelParams(ladder=ONE_10X, decay=False))
    per_bar = np.diff([0.0] + [sum(est.book(n).total()) for n in range(1, 5)]) / 2
    assert per_bar == pytest.approx([0.0, 20.0, 20.0, 0.2 * 300.0])
    assert est.seed_mode == "hybrid"


def test_taker_imbalance_tilts_sides_and_candles_stand_in_without_it():
    bars = market([FLAT], volume=np.array([4.0]), taker_buy_volume=np.array([3.0]), taker_sell_volume=np.array([1.0]))
    longs, shorts = estimate(bars, ModelParams(ladder=ONE_10X)).book().total()
    # imbalance (3 - 1)/4 = 0.5, tilt 0.5 * 0.5: longs x1.25, shorts x0.75
    assert longs / shorts == pytest.approx(1.25 / 0.75)
    green = market([(100.0, 101.0, 99.0, 100.5)])  # direction (100.5 - 100)/(101 - 99) = 0.25
    longs, shorts = estimate(green, ModelParams(ladder=ONE_10X)).book().total()
    assert longs / shorts == pytest.approx(1.125 / 0.875)
    longs, shorts = estimate(green, ModelParams(ladder=ONE_10X, side_tilt=0.0)).book().total()
    assert longs == pytest.approx(shorts)


def test_entries_spread_inside_the_bar():
    bars = market([(100.0, 110.0, 100.0, 105.0)])
    est = estimate(bars, ModelParams(ladder=ONE_10X, side_tilt=0.0))
    book = est.book()
    f = float(liquidation_factor(10, 0.004, "long"))
    want = {round(e * f, 6): w for e, w in ((102.0, 0.25), (105.0, 0.5), (108.0, 0.25))}
    prices = book.prices()
    held = book.usd[0, 0]
    got = {float(prices[k]): float(held[k]) for k in np.flatnonzero(held)}
    assert len(got) == 3
    total = sum(got.values())
    for (p_want, w), (p_got, usd) in zip(sorted(want.items()), sorted(got.items()), strict=True):
        assert abs(p_got / p_want - 1) <= 0.0005 / 2 + 1e-12  # snapped to the 0.05% level grid
        assert usd / total == pytest.approx(w)


def test_anchors_on_the_same_level_become_one_cohort():
    bars = market([(100.0, 100.01, 100.0, 100.01)])  # all anchors within one 0.05% level
    est = estimate(bars, ModelParams(ladder=ONE_10X))
    assert len(est.cohorts) == 2  # one long, one short
    assert est.cohorts.usd.sum() == pytest.approx(2 * 0.1 * 100.00333, rel=1e-4)


def test_liquidated_in_the_first_later_bar_whose_low_reaches_the_price():
    tiny = (100.0, 100.0, 100.0, 100.0)  # all anchors at 100: the 10x long is liquidated near 90.36
    liq = 100.0 * float(liquidation_factor(10, 0.004, "long"))
    rows = [tiny, (100.0, 100.0, 95.0, 96.0), (96.0, 97.0, liq * 0.999, 91.0), (91.0, 92.0, 80.0, 85.0)]
    vol = np.array([1.0, 0.0, 0.0, 0.0])  # only the first bar opens anything
    est = estimate(market(rows, volume=vol), ModelParams(ladder=ONE_10X, decay=False, side_tilt=0.0))
    r = est.realised
    opened = 0.1 * 100.0  # volume 1 at 100 x proxy fraction 0.1, per side
    assert list(r.long_usd) == pytest.approx([0.0, 0.0, opened, 0.0])
    assert est.book(2).total()[0] == pytest.approx(opened)
    assert est.book(3).total()[0] == 0.0


def test_a_bar_never_liquidates_the_positions_it_opened():
    wide = (100.0, 100.0, 98.0, 99.0)  # 2% range: a 100x long opened at its top sits inside it
    est = estimate(market([wide], volume=np.ones(1)), ModelParams(ladder=Ladder("100x", (100,), (1.0,))))
    assert est.realised.long_usd[0] == 0.0 and est.book().total()[0] > 0


def test_shorts_are_liquidated_by_highs():
    liq = 100.0 * float(liquidation_factor(10, 0.004, "short"))
    rows = [(100.0, 100.0, 100.0, 100.0), (100.0, liq * 1.0001, 100.0, 101.0)]
    est = estimate(market(rows, volume=np.array([1.0, 0.0])), ModelParams(ladder=ONE_10X, decay=False, side_tilt=0.0))
    assert est.realised.short_usd[1] == pytest.approx(10.0) and est.realised.long_usd[1] == 0.0


def test_partial_wick_clearing():
    # wick_clear 0.3: a wick through the level clears 30%; the rest goes when a candle body gets there
    liq = 100.0 * float(liquidation_factor(10, 0.004, "long"))
    rows = [
        (100.0, 100.0, 100.0, 100.0),
        (99.0, 99.5, liq * 0.99, 98.0),  # wick only
        (98.0, 98.5, 97.0, 97.5),  # nothing
        (97.0, 97.0, liq * 0.95, liq * 0.98),  # body closes below the level
    ]
    est = estimate(
        market(rows, volume=np.array([1.0, 0, 0, 0])), ModelParams(ladder=ONE_10X, decay=False, side_tilt=0.0, wick_clear=0.3)
    )
    assert list(est.realised.long_usd) == pytest.approx([0.0, 3.0, 0.0, 7.0])


def test_half_life_decay_per_tier():
    ladder = Ladder("two", (10, 20), (0.5, 0.5), (24.0, 48.0))
    bars = market([FLAT] * 49, volume=np.r_[1.0, np.zeros(48)])
    est = estimate(bars, ModelParams(ladder=ladder, side_tilt=0.0))
    start = est.book(1).usd.sum(axis=(0, 2))
    day = est.book(25).usd.sum(axis=(0, 2))  # 24 hours after the first close
    two = est.book(49).usd.sum(axis=(0, 2))
    assert day / start == pytest.approx([0.5, 2**-0.5])
    assert two / start == pytest.approx([0.25, 0.5])


def test_what_is_seeded_is_outstanding_or_realised_when_nothing_decays():
    bars = synthetic_bars(3000, seed=4, with_oi=False)
    est = estimate(bars, ModelParams(decay=False))
    seeded = est.cohorts.usd.sum()
    r = est.realised
    assert sum(est.book().total()) + r.long_usd.sum() + r.short_usd.sum() == pytest.approx(seeded, rel=1e-9)


def test_the_past_does_not_depend_on_the_future():
    bars = synthetic_bars(2000, seed=8)
    full = estimate(bars)
    part = estimate(bars.slice(0, 1200))
    assert np.allclose(full.realised.long_usd[:1200], part.realised.long_usd, rtol=1e-9, atol=1e-6)
    assert np.allclose(full.realised.short_usd[:1200], part.realised.short_usd, rtol=1e-9, atol=1e-6)
    a, b = full.book(1200), part.book()
    assert (a.kmin, a.price, a.time) == (b.kmin, b.price, b.time)
    assert np.allclose(a.usd, b.usd, rtol=1e-9, atol=1e-6)


def test_inverse_contracts_run_and_differ():
    bars = synthetic_bars(1500, seed=5)
    lin, inv = estimate(bars), estimate(bars, ModelParams(contract="inverse"))
    assert inv.realised.long_usd.sum() > 0 and inv.realised.short_usd.sum() > 0
    assert not np.array_equal(lin.cohorts.level, inv.cohorts.level)


def test_a_one_x_long_is_never_a_liquidation_level():
    bars = synthetic_bars(200, seed=6)
    est = estimate(bars, ModelParams(ladder=Ladder("with 1x", (1.0, 10.0), (0.5, 0.5))))
    longs = est.cohorts.side == 0
    assert set(est.cohorts.tier[longs].tolist()) == {1}
    assert set(est.cohorts.tier[~longs].tolist()) == {0, 1}  # a 1x short is liquidated at ~2x the price


def test_column_times_end_at_the_last_close_and_align_to_the_step():
    bars = synthetic_bars(1000, seed=9, start=1_700_000_000)
    est = estimate(bars)
    times = est.column_times(3600)
    assert times[-1] == bars.close_time[-1]
    assert all(t % 3600 == 0 for t in times[:-1])
    assert list(est.column_times(3600, columns=3)) == list(times[-3:])
    assert math.isclose(est.book().price, bars.close[-1])
