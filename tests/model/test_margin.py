"""Liquidation prices against tables of values worked out by hand from each exchange's published formula.

Every expected number below is written out with its arithmetic, from the formula named above its table;
the engine must reproduce it (the published-form functions, and the per-exchange factor the model uses
for every cohort).
"""

import math

import numpy as np
import pytest

from engine.model import TIER_TABLES, Ladder, ModelParams, liquidation_price, tier_table
from engine.model.margin import (
    LONG,
    SHORT,
    binance_liquidation_price,
    bybit_liquidation_price,
    inverse_liquidation_price,
    liquidation_factor,
    okx_liquidation_price,
)

# ---- Binance USDⓈ-M, isolated, one-way mode ------------------------------------------------------------
# Source: Binance Support, "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts":
#   LP = (WB - TMM + UPNL + cum - side*Q*E) / (Q*MMR - side*Q), isolated: TMM = UPNL = 0,
#   side +1 long / -1 short, WB = the position's isolated wallet (initial margin = Q*E/lev here),
#   MMR and cum ("maintenance amount") from the BTCUSDT bracket the notional Q*E falls in.
# Brackets (notes/liquidation-math.md, 2024-10): 0-50k 0.40% cum 0; 50k-600k 0.50% cum 50;
#   3M-12M 1.00% cum 11,450.
BINANCE = [
    # side, Q (BTC), E, lev, MMR, cum, expected LP
    # 60k notional -> 0.5% / 50: (6000 + 50 - 60000) / (0.005 - 1) = -53950 / -0.995
    ("long", 1.0, 60_000.0, 10, 0.005, 50.0, 54_221.10552763819),
    # (6000 + 50 + 60000) / (0.005 + 1) = 66050 / 1.005
    ("short", 1.0, 60_000.0, 10, 0.005, 50.0, 65_721.39303482587),
    # 5k notional at 125x -> 0.4% / 0: WB = 40; (40 - 5000) / (0.0004 - 0.1) = -4960 / -0.0996
    ("long", 0.1, 50_000.0, 125, 0.004, 0.0, 49_799.1967871486),
    # (40 + 5000) / (0.0004 + 0.1) = 5040 / 0.1004
    ("short", 0.1, 50_000.0, 125, 0.004, 0.0, 50_199.203187251),
    # 6M notional at 20x -> 1% / 11,450: WB = 300,000; (300000 + 11450 - 6e6) / (1 - 100) = -5,688,550 / -99
    ("long", 100.0, 60_000.0, 20, 0.01, 11_450.0, 57_460.10101010101),
]


@pytest.mark.parametrize(("side", "qty", "entry", "lev", "mmr", "cum", "expected"), BINANCE)
def test_binance_general_form_matches_the_worked_table(side, qty, entry, lev, mmr, cum, expected):
    wallet = qty * entry / lev
    assert binance_liquidation_price(wallet, qty, entry, mmr, cum, side) == pytest.approx(expected, rel=1e-12)
    # the model's per-cohort factor (cum as a share of the entry notional) gives the same price
    factor = liquidation_factor(lev, mmr, side, "linear", "binance", cum / (qty * entry))
    assert float(factor) * entry == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("side", "qty", "entry", "lev", "mmr", "cum", "expected"), BINANCE)
def test_model_params_pick_the_bracket_binance_would(side, qty, entry, lev, mmr, cum, expected):
    """The ladder tier's typical position size selects the bracket (MMR and cum) from the versioned table."""
    params = ModelParams(ladder=Ladder("one", (lev,), (1.0,)), typical_position_usd=qty * entry)
    bracket = params.brackets()[0]
    assert (bracket.mmr, bracket.cum) == (mmr, pytest.approx(cum))
    s = LONG if side == "long" else SHORT
    assert params.liquidation_factors()[s, 0] * entry == pytest.approx(expected, rel=1e-12)


def test_with_zero_maintenance_amount_binance_is_the_exact_isolated_formula():
    # cum = 0 (every retail bracket-1 position): LP = E(1 - 1/lev)/(1 - m) and E(1 + 1/lev)/(1 + m)
    for lev in (5, 10, 25, 50, 100, 125):
        for m in (0.004, 0.005, 0.01):
            wallet = 1.0 * 42_000.0 / lev
            assert binance_liquidation_price(wallet, 1.0, 42_000.0, m, 0.0, "long") == pytest.approx(
                float(liquidation_price(42_000.0, lev, m, "long")), rel=1e-12
            )
            assert binance_liquidation_price(wallet, 1.0, 42_000.0, m, 0.0, "short") == pytest.approx(
                float(liquidation_price(42_000.0, lev, m, "short")), rel=1e-12
            )


# ---- Bybit USDT contracts, isolated margin -----------------------------------------------------------
# Source: Bybit Help Center, "Liquidation Price (USDT Contract)":
#   LP(long)  = Entry - [(IM - MM) / Qty] - Extra / Qty
#   LP(short) = Entry + [(IM - MM) / Qty] + Extra / Qty
#   IM = Qty*Entry/leverage, MM = Qty*Entry*MMR - MM deduction (maintenance margin on the ENTRY value).
BYBIT = [
    # side, qty, entry, lev, MMR, deduction, expected
    # Bybit's own Example 1: IM = 20000/50 = 400, MM = 20000*0.5% = 100, LP = 20000 - 300
    ("long", 1.0, 20_000.0, 50, 0.005, 0.0, 19_700.0),
    # its mirror: 20000 + 300
    ("short", 1.0, 20_000.0, 50, 0.005, 0.0, 20_300.0),
    # IM = 60000/10 = 6000, MM = 300: 30000 - 5700/2
    ("long", 2.0, 30_000.0, 10, 0.005, 0.0, 27_150.0),
    # 3M notional at 25x sits in the 2M-4M risk limit: MMR 0.75%, deduction 2M*(0.75%-0.5%) = 5000;
    # IM = 120,000, MM = 22,500 - 5,000 = 17,500: 60000 - (120000 - 17500)/50 = 60000 - 2050
    ("long", 50.0, 60_000.0, 25, 0.0075, 5_000.0, 57_950.0),
    # 60000 + 2050
    ("short", 50.0, 60_000.0, 25, 0.0075, 5_000.0, 62_050.0),
]


@pytest.mark.parametrize(("side", "qty", "entry", "lev", "mmr", "ded", "expected"), BYBIT)
def test_bybit_published_formula_matches_the_worked_table(side, qty, entry, lev, mmr, ded, expected):
    assert bybit_liquidation_price(entry, qty, lev, mmr, ded, side) == pytest.approx(expected, rel=1e-12)
    factor = liquidation_factor(lev, mmr, side, "linear", "bybit", ded / (qty * entry))
    assert float(factor) * entry == pytest.approx(expected, rel=1e-12)


def test_bybit_extra_margin_moves_the_price_away():
    # Extra 1,000 USDT on 1 BTC moves the long's price 1,000 lower (Bybit's formula: - Extra/Qty)
    assert bybit_liquidation_price(20_000.0, 1.0, 50, 0.005, 0.0, "long", extra_margin=1_000.0) == 18_700.0


def test_model_uses_bybit_brackets_and_formula_for_bybit():
    params = ModelParams(exchange="bybit", ladder=Ladder("one", (25,), (1.0,)), typical_position_usd=3_000_000)
    assert params.brackets()[0].mmr == 0.0075 and params.brackets()[0].cum == pytest.approx(5_000.0)
    assert params.liquidation_factors()[LONG, 0] * 60_000.0 == pytest.approx(57_950.0, rel=1e-12)
    assert "entry value" in params.describe()["liquidation_formula"]


# ---- OKX USDT-margined swaps, isolated ---------------------------------------------------------------
# Source: OKX Help Center, "Isolated margin mode": margin ratio = (margin balance + PnL) /
#   (face value x |contracts| x mark price x (maintenance margin rate + fee rate)); liquidation at 100%.
#   Solved for the mark price with q = contracts x face value:
#   long  LP = (q*E - M) / (q*(1 - MMR - fee)),  short LP = (M + q*E) / (q*(1 + MMR + fee)).
# BTC-USDT-SWAP face value 0.01 BTC; 10 contracts = 0.1 BTC.
OKX = [
    # side, contracts, entry, lev, MMR, fee, expected
    # M = 0.1*60000/20 = 300: (6000 - 300) / (0.1*0.996) = 5700 / 0.0996
    ("long", 10, 60_000.0, 20, 0.004, 0.0, 57_228.91566265061),
    # (300 + 6000) / (0.1*1.004) = 6300 / 0.1004
    ("short", 10, 60_000.0, 20, 0.004, 0.0, 62_749.00398406374),
    # with a 0.05% taker fee to close: 5700 / (0.1*0.9955) = 5700 / 0.09955
    ("long", 10, 60_000.0, 20, 0.004, 0.0005, 57_257.65946760422),
    # 6300 / (0.1*1.0045)
    ("short", 10, 60_000.0, 20, 0.004, 0.0005, 62_717.770034843204),
]


@pytest.mark.parametrize(("side", "contracts", "entry", "lev", "mmr", "fee", "expected"), OKX)
def test_okx_published_formula_matches_the_worked_table(side, contracts, entry, lev, mmr, fee, expected):
    q = contracts * 0.01
    margin = q * entry / lev
    got = okx_liquidation_price(margin, contracts, 0.01, entry, mmr, side, fee_rate=fee)
    assert got == pytest.approx(expected, rel=1e-12)
    if fee == 0.0:  # the model ignores fees; without them OKX is the exact isolated formula
        assert float(liquidation_factor(lev, mmr, side, "linear", "okx")) * entry == pytest.approx(expected, rel=1e-12)
        assert float(liquidation_price(entry, lev, mmr, side)) == pytest.approx(expected, rel=1e-12)


def test_okx_has_no_maintenance_amount():
    # OKX's isolated tiers carry no deduction: a maintenance amount must not move its price
    assert liquidation_factor(20, 0.004, "long", "linear", "okx", cum_rate=0.01) == liquidation_factor(
        20, 0.004, "long", "linear", "okx"
    )


# ---- inverse (coin-margined) contracts ---------------------------------------------------------------
# Source: Bybit Help Center, "Liquidation Price Calculation under Isolated Mode (Unified Trading Account)",
#   inverse contracts:  LP(long)  = S*(1 + MMR) / (S/E + S/E/lev + Extra + MM deduction)
#                       LP(short) = S*(1 - MMR) / (S/E - S/E/lev - Extra - MM deduction)
#   S = position size in USD (contracts x 1 USD). Binance COIN-M's formula reduces to the same form.
INVERSE = [
    # side, S, E, lev, MMR, expected
    # S/E = 1.25 BTC: 10000*1.005 / (1.25 + 0.025) = 10050 / 1.275
    ("long", 10_000.0, 8_000.0, 50, 0.005, 7_882.352941176471),
    # 10000*0.995 / (1.25 - 0.025) = 9950 / 1.225
    ("short", 10_000.0, 8_000.0, 50, 0.005, 8_122.448979591836),
    # S/E = 1.2 BTC at 10x: 60000*1.005 / (1.2 + 0.12) = 60300 / 1.32
    ("long", 60_000.0, 50_000.0, 10, 0.005, 45_681.81818181818),
]


@pytest.mark.parametrize(("side", "size", "entry", "lev", "mmr", "expected"), INVERSE)
def test_inverse_formula_matches_the_worked_table(side, size, entry, lev, mmr, expected):
    assert inverse_liquidation_price(size, entry, lev, mmr, 0.0, side) == pytest.approx(expected, rel=1e-12)
    assert float(liquidation_price(entry, lev, mmr, side, "inverse")) == pytest.approx(expected, rel=1e-12)
    for exchange in ("binance", "bybit", "okx"):
        f = liquidation_factor(lev, mmr, side, "inverse", exchange)
        assert float(f) * entry == pytest.approx(expected, rel=1e-12)


# ---- shapes that must hold whatever the exchange -------------------------------------------------------
def test_textbook_formula_is_the_zero_maintenance_limit():
    # With MMR = 0 a long at lev is liquidated after a 1/lev fall, a short after a 1/lev rise.
    assert float(liquidation_price(100.0, 10, 0.0, "long")) == pytest.approx(90.0)
    assert float(liquidation_price(100.0, 10, 0.0, "short")) == pytest.approx(110.0)
    assert float(liquidation_price(100.0, 4, 0.0, "short", "inverse")) == pytest.approx(100.0 / 0.75)


def test_maintenance_margin_brings_the_price_closer_to_entry():
    for exchange in ("binance", "bybit", "okx"):
        for contract in ("linear", "inverse"):
            lo = liquidation_factor(100, 0.0, "long", contract, exchange)
            hi = liquidation_factor(100, 0.005, "long", contract, exchange)
            assert lo < hi < 1.0
            lo_s = liquidation_factor(100, 0.005, "short", contract, exchange)
            hi_s = liquidation_factor(100, 0.0, "short", contract, exchange)
            assert 1.0 < lo_s < hi_s


def test_positions_that_cannot_be_liquidated_are_marked():
    # a 1x long (linear) survives a fall to zero; a 1x short on an inverse contract survives any rise
    assert float(liquidation_factor(1, 0.004, "long", "linear", "binance", cum_rate=0.0)) == 0.0
    assert math.isinf(float(liquidation_factor(1, 0.004, "short", "inverse", "binance")))
    params = ModelParams(ladder=Ladder("one", (1.0, 10.0), (0.5, 0.5)), contract="inverse")
    assert math.isinf(params.liquidation_factors()[SHORT, 0])


def test_high_leverage_maintenance_margin_matters():
    # notes: at 125x the 1/lev distance is 0.8% and MMR 0.4% moves the price another ~0.4%
    textbook = float(liquidation_price(50_000.0, 125, 0.0, "long"))
    exact = float(liquidation_price(50_000.0, 125, 0.004, "long"))
    assert (exact - textbook) / 50_000.0 == pytest.approx(0.004, rel=0.01)


def test_tier_tables_are_versioned_and_named():
    for table in TIER_TABLES:
        assert table.effective[:2] == "20" and len(table.effective) == 10
        assert table.source
        caps = [b.notional_cap for b in table.brackets]
        assert caps == sorted(caps)
        # higher brackets: lower max leverage, higher maintenance rate, growing maintenance amount
        assert all(a.max_leverage >= b.max_leverage for a, b in zip(table.brackets, table.brackets[1:], strict=False))
        assert all(a.mmr <= b.mmr and a.cum <= b.cum for a, b in zip(table.brackets, table.brackets[1:], strict=False))
    assert tier_table("binanceusdm", "btc").exchange == "binance"
    assert tier_table("okx", "DOGE").symbol == "BTC"  # coins without a table fall back to the BTC brackets
    assert tier_table("binance", "BTC", on="2030-01-01").effective == "2024-10-01"


def test_bracket_for_keeps_high_leverage_small():
    table = tier_table("binance", "BTC")
    assert table.mmr(125, 10_000) == 0.004
    assert table.mmr(100, 10_000_000) == 0.005  # a 100x position cannot be bigger than the 600k bracket
    assert table.mmr(10, 150_000_000) == 0.05


def test_factors_are_elementwise_over_arrays():
    lev = np.array([5.0, 10.0, 25.0, 50.0, 100.0])
    f = liquidation_factor(lev, 0.004, "long")
    assert f.shape == (5,) and np.all(np.diff(f) > 0)  # higher leverage: closer to entry


def test_bankruptcy_prices_move_one_maintenance_margin_towards_the_entry():
    from engine.model.margin import liquidation_from_bankruptcy, tier_table

    m = tier_table("bybit", "BTC").brackets[0].mmr
    got = liquidation_from_bankruptcy(np.array([60_000.0, 60_000.0]), np.array([0, 1]), "bybit")
    assert got[0] == pytest.approx(60_000 * (1 + m))  # a long's trigger sits above its bankruptcy price
    assert got[1] == pytest.approx(60_000 * (1 - m))
    # Binance prints fills: unchanged
    assert float(liquidation_from_bankruptcy(60_000.0, "long", "binanceusdm")) == 60_000.0
