"""Position risk: the exact liquidation price, the estimate around it, and whether a cascade reaches it."""

import numpy as np
import pytest

from engine.model.cascade import DepthCurve, DepthModel
from engine.model.margin import (
    binance_liquidation_price,
    bybit_liquidation_price,
    liquidation_price,
    okx_liquidation_price,
    tier_table,
)
from engine.model.risk import Position, RiskError, position_bracket, position_liquidation_price, position_risk
from engine.model.touch import Volatility
from engine.model.views import LiquidationMap, Zone

# (side, entry, leverage, expected) for a $10k Binance BTC position (first bracket, MMR 0.4%), worked by
# hand from notes/liquidation-math.md: long E(1-1/L)/(1-m), short E(1+1/L)/(1+m).
TABLE = [
    ("long", 60_000.0, 10.0, 60_000 * 0.9 / 0.996),
    ("short", 60_000.0, 10.0, 60_000 * 1.1 / 1.004),
    ("long", 60_000.0, 100.0, 60_000 * 0.99 / 0.996),
    ("short", 60_000.0, 125.0, 60_000 * 1.008 / 1.004),
    ("long", 2_500.0, 25.0, 2_500 * 0.96 / 0.996),
]


@pytest.mark.parametrize(("side", "entry", "lev", "expected"), TABLE)
def test_liquidation_price_matches_the_formula_table(side, entry, lev, expected):
    pos = Position(side, entry, lev, 10_000.0)
    assert position_liquidation_price(pos) == pytest.approx(expected, rel=1e-12)
    assert position_liquidation_price(pos) == pytest.approx(float(liquidation_price(entry, lev, 0.004, side)))


@pytest.mark.parametrize("side", ["long", "short"])
def test_larger_positions_use_their_bracket_and_the_published_exchange_formulas(side):
    entry, lev, size = 60_000.0, 20.0, 1_000_000.0
    b = position_bracket(Position(side, entry, lev, size))
    assert (b.mmr, b.cum) == (0.0065, 950.0)  # Binance 600k-3M bracket
    qty = size / entry
    binance = binance_liquidation_price(size / lev, qty, entry, b.mmr, b.cum, side)
    assert position_liquidation_price(Position(side, entry, lev, size)) == pytest.approx(binance, rel=1e-12)

    bb = position_bracket(Position(side, entry, lev, size, exchange="bybit"))
    bybit = bybit_liquidation_price(entry, qty, lev, bb.mmr, bb.cum, side)
    assert position_liquidation_price(Position(side, entry, lev, size, exchange="bybit")) == pytest.approx(bybit, rel=1e-12)

    ob = position_bracket(Position(side, entry, lev, size, exchange="okx"))
    okx = okx_liquidation_price(size / lev, qty / 0.01, 0.01, entry, ob.mmr, side)
    assert position_liquidation_price(Position(side, entry, lev, size, exchange="okx")) == pytest.approx(okx, rel=1e-12)


def test_the_exchange_refuses_high_leverage_on_a_big_position():
    with pytest.raises(RiskError, match="at most 50x"):
        position_liquidation_price(Position("long", 60_000.0, 100.0, 5_000_000.0))
    top = tier_table("binance", "BTC").brackets[-1].notional_cap
    with pytest.raises(RiskError, match="largest"):
        position_liquidation_price(Position("long", 60_000.0, 2.0, top * 2))
    for bad in (dict(side="flat"), dict(entry=-1.0), dict(leverage=0.5), dict(size_usd=0.0)):
        kw = dict(side="long", entry=100.0, leverage=10.0, size_usd=1e4) | bad
        with pytest.raises(RiskError):
            Position(**kw)


def test_a_position_already_past_its_liquidation_price_is_reported_as_such():
    with pytest.raises(RiskError, match="already reached"):
        position_risk(Position("long", 60_000.0, 50.0, 10_000.0), 58_000.0)


def zone(side, lo, hi, grade, usd=1e7):
    return Zone(side, lo, hi, 0.5 * (lo + hi), usd, grade, None, 95.0, 0.0, (usd,))


def test_grade_at_the_liquidation_price_and_the_nearest_high_cluster():
    pos = Position("long", 100.0, 10.0, 10_000.0)  # liquidated at 100 * 0.9 / 0.996 = 90.36
    zones = [
        zone("long", 90.0, 91.0, "elevated"),
        zone("long", 95.0, 96.0, "high"),
        zone("long", 85.0, 86.0, "high"),
        zone("short", 90.0, 91.0, "high"),  # the other side never counts
    ]
    r = position_risk(pos, 100.0, zones)
    assert r.liquidation_price == pytest.approx(90.3614, abs=1e-4)
    assert r.grade == "elevated" and r.zone is zones[0]
    assert r.nearest_high is zones[2]  # 85..86: 4.8% below the liquidation price; 95..96: 5.1% above it
    assert r.nearest_high_distance_pct == pytest.approx((86.0 / r.liquidation_price - 1) * 100)
    assert r.high_between == 1  # 95..96 lies between the price and the liquidation price
    assert r.distance_pct == pytest.approx((r.liquidation_price / 100 - 1) * 100)
    assert r.cascade is None and r.touch == {}
    empty = position_risk(pos, 100.0, [])
    assert empty.grade == "none" and empty.nearest_high is None


def test_a_cascade_from_the_price_reaches_the_position_only_on_a_thin_book():
    pos = Position("long", 100.0, 20.0, 10_000.0)  # liquidated at 100 * 0.95 / 0.996 = 95.38
    edges = np.linspace(80.0, 120.0, 401)  # 0.1 per bin
    longs = np.zeros(400)
    longs[185:190] = 20e6  # 98.5..99.0: a cluster 1% below
    longs[165:180] = 8e6  # 96.5..98.0: more below it
    lmap = LiquidationMap(100.0, edges, longs[:, None], np.zeros((400, 1)), ("10x",))
    zones = [zone("long", 98.5, 99.0, "high", 100e6), zone("long", 96.5, 98.0, "high", 120e6)]
    thin = DepthModel(DepthCurve(2e6, 1.0), DepthCurve(2e6, 1.0))
    deep = DepthModel(DepthCurve(500e6, 1.0), DepthCurve(500e6, 1.0))
    r_thin = position_risk(pos, 100.0, zones, lmap, thin)
    r_deep = position_risk(pos, 100.0, zones, lmap, deep)
    assert r_thin.cascade_reaches is True and r_thin.cascade.end_price <= r_thin.liquidation_price
    assert r_deep.cascade_reaches is False and r_deep.cascade.end_price > r_deep.liquidation_price
    assert r_thin.to_dict()["cascade"]["direction"] == "down"


def test_touch_probability_of_the_liquidation_price_grows_with_the_horizon():
    pos = Position("short", 100.0, 25.0, 10_000.0)
    r = position_risk(pos, 100.0, vol=Volatility(0.01, 4.0, 3600, 100))
    ps = [r.touch[h] for h in (1.0, 4.0, 24.0)]
    assert 0 < ps[0] < ps[1] < ps[2] <= 1
    assert set(r.to_dict()["touch"]) == {"1h", "4h", "24h"}
