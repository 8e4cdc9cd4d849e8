"""Liquidation prices and maintenance-margin tiers.

Formulas are the exact isolated-margin ones (wallet = initial margin, fees ignored); see
../shared/notes/liquidation-math.md. Tier tables are *versioned*: exchanges change them, so every table
carries the date it took effect and where it came from, and lookups can ask for the table in force on a day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LONG, SHORT = 0, 1
SIDES = ("long", "short")


def liquidation_price(
    entry: np.ndarray | float,
    leverage: np.ndarray | float,
    mmr: np.ndarray | float,
    side: str | int,
    contract: str = "linear",
) -> np.ndarray:
    """Price at which an isolated position opened at ``entry`` with ``leverage`` is liquidated.

    linear  (USDT-margined): long E(1-1/lev)/(1-m),  short E(1+1/lev)/(1+m)
    inverse (coin-margined): long E(1+m)/(1+1/lev),  short E(1-m)/(1-1/lev)
    A short at 1x (or less) on an inverse contract can never be liquidated: +inf.
    """
    e = np.asarray(entry, dtype=np.float64)
    inv_lev = 1.0 / np.asarray(leverage, dtype=np.float64)
    m = np.asarray(mmr, dtype=np.float64)
    s = side if isinstance(side, int) else SIDES.index(side)
    if contract == "linear":
        if s == LONG:
            return e * (1.0 - inv_lev) / (1.0 - m)
        return e * (1.0 + inv_lev) / (1.0 + m)
    if contract == "inverse":
        if s == LONG:
            return e * (1.0 + m) / (1.0 + inv_lev)
        with np.errstate(divide="ignore"):
            return np.where(inv_lev < 1.0, e * (1.0 - m) / np.maximum(1.0 - inv_lev, 0.0), np.inf)
    raise ValueError(f"unknown contract type {contract!r}; use linear or inverse")


def binance_liquidation_price(
    wallet: float, size: float, entry: float, mmr: float, cum: float, side: str
) -> float:
    """Binance's published one-position isolated formula: (WB + cum - s*Q*E) / (Q*m - s*Q)."""
    s = 1.0 if side == "long" else -1.0
    return (wallet + cum - s * size * entry) / (size * mmr - s * size)


def bybit_liquidation_price(
    entry: float, size: float, leverage: float, mmr: float, deduction: float, side: str, extra_margin: float = 0.0
) -> float:
    """Bybit's published isolated formula for USDT contracts (help centre, "Liquidation Price (USDT
    Contract)"): LP = E -/+ [(IM - MM) / Q] -/+ extra / Q, with IM = Q*E/lev and MM = Q*E*mmr - deduction,
    i.e. the maintenance margin is taken on the position value *at entry*."""
    im = size * entry / leverage
    mm = size * entry * mmr - deduction
    s = 1.0 if side == "long" else -1.0
    return entry - s * (im - mm) / size - s * extra_margin / size


def okx_liquidation_price(
    margin: float, contracts: float, ct_val: float, entry: float, mmr: float, side: str, fee_rate: float = 0.0
) -> float:
    """OKX isolated USDT-margined swap: liquidation when (margin + PnL) = qty * mark * (mmr + fee), qty =
    contracts * ct_val (OKX help centre, "Isolated margin mode": margin ratio). Solved for the mark price:
    long (q*E - M) / (q * (1 - mmr - fee)), short (M + q*E) / (q * (1 + mmr + fee))."""
    q = contracts * ct_val
    if side == "long":
        return (q * entry - margin) / (q * (1.0 - mmr - fee_rate))
    return (margin + q * entry) / (q * (1.0 + mmr + fee_rate))


def inverse_liquidation_price(
    size_usd: float, entry: float, leverage: float, mmr: float, deduction_coin: float, side: str
) -> float:
    """Coin-margined (inverse) isolated, Bybit's published form (help centre, "Liquidation Price
    Calculation under Isolated Mode", inverse contracts; Binance COIN-M's formula reduces to the same):
    long S*(1 + mmr) / (S/E + S/E/lev + deduction), short S*(1 - mmr) / (S/E - S/E/lev - deduction),
    with S the position size in USD (contracts x contract value) and the deduction in coin."""
    value = size_usd / entry
    if side == "long":
        return size_usd * (1.0 + mmr) / (value + value / leverage + deduction_coin)
    return size_usd * (1.0 - mmr) / (value - value / leverage - deduction_coin)


# Whose published formula turns (leverage, mmr, maintenance amount) into a liquidation price.
#   "mark":  maintenance margin on the position's value at the liquidation price (Binance, OKX)
#   "entry": maintenance margin on the position's value at entry (Bybit, USDT contracts)
# Binance and Bybit subtract a maintenance amount ("cum" / "MM deduction") in the higher brackets; OKX's
# isolated tiers have none. Inverse contracts: the same formula on all three (coin-margined margin and PnL).
MM_BASIS = {"binance": "mark", "okx": "mark", "bybit": "entry"}
USES_MAINTENANCE_AMOUNT = {"binance": True, "okx": False, "bybit": True}


def liquidation_factor(
    leverage: np.ndarray | float,
    mmr: np.ndarray | float,
    side: str | int,
    contract: str = "linear",
    exchange: str = "binance",
    cum_rate: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Liquidation price / entry price by ``exchange``'s published isolated formula (fees ignored).

    ``cum_rate`` is the bracket's maintenance amount as a fraction of the position's entry notional
    (Binance "cum", Bybit "MM deduction"); it moves the price away from the entry. Every formula here
    is proportional to the entry, which is what lets the model compute levels as log(entry) + log(factor).
    Not liquidatable (a 1x long, a 1x inverse short): 0 or +inf.
    """
    inv_lev = 1.0 / np.asarray(leverage, dtype=np.float64)
    m = np.asarray(mmr, dtype=np.float64)
    s = side if isinstance(side, int) else SIDES.index(side)
    ex = canonical_exchange(exchange)
    c = np.asarray(cum_rate, dtype=np.float64) * (1.0 if USES_MAINTENANCE_AMOUNT[ex] else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if contract == "linear":
            if MM_BASIS[ex] == "entry":
                f = 1.0 - inv_lev + m - c if s == LONG else 1.0 + inv_lev - m + c
            else:
                f = (1.0 - inv_lev - c) / (1.0 - m) if s == LONG else (1.0 + inv_lev + c) / (1.0 + m)
        elif contract == "inverse":
            if s == LONG:
                f = (1.0 + m) / (1.0 + inv_lev + c)
            else:
                den = 1.0 - inv_lev - c
                f = np.where(den > 0, (1.0 - m) / np.where(den > 0, den, 1.0), np.inf)
        else:
            raise ValueError(f"unknown contract type {contract!r}; use linear or inverse")
    f = np.asarray(f, dtype=np.float64)
    return np.where(np.isfinite(f) & (f > 0), f, np.where(s == LONG, 0.0, np.inf))


@dataclass(frozen=True)
class Bracket:
    notional_cap: float  # upper bound of position notional (USD) for this bracket
    max_leverage: float
    mmr: float  # maintenance margin rate (fraction)
    cum: float  # maintenance amount (USD), Binance's "cum"


@dataclass(frozen=True)
class TierTable:
    exchange: str
    symbol: str
    effective: str  # ISO date the table took effect (as published)
    source: str
    brackets: tuple[Bracket, ...]

    def bracket_for(self, leverage: float, notional: float) -> Bracket:
        """The bracket a position of this size sits in; if that bracket does not allow the leverage,
        the largest bracket that does (a trader at 100x must be small)."""
        fits = [b for b in self.brackets if b.max_leverage >= leverage]
        if not fits:
            return self.brackets[0]
        for b in fits:
            if notional <= b.notional_cap:
                return b
        return fits[-1]

    def mmr(self, leverage: float, notional: float = 10_000.0) -> float:
        return self.bracket_for(leverage, notional).mmr


def _brackets(rows: list[tuple[float, float, float]]) -> tuple[Bracket, ...]:
    """(cap, max_lev, mmr) rows -> brackets with cum computed the way Binance defines it:
    cum_i = cum_{i-1} + floor_i * (mmr_i - mmr_{i-1})."""
    out: list[Bracket] = []
    cum, prev_mmr, floor = 0.0, 0.0, 0.0
    for cap, lev, mmr in rows:
        cum += floor * (mmr - prev_mmr)
        out.append(Bracket(cap, lev, mmr, round(cum, 6)))
        prev_mmr, floor = mmr, cap
    return tuple(out)


# Tables as published by each exchange on the date given; newer tables are added, never edited, so
# results can be reproduced for any past day. Values are the lowest brackets that matter for retail
# sizes plus the large ones; verify against the exchange before trading on them.
TIER_TABLES: tuple[TierTable, ...] = (
    TierTable(
        "binance",
        "BTC",
        "2024-10-01",
        "Binance USDⓈ-M BTCUSDT leverage & margin table",
        _brackets(
            [
                (50_000, 125, 0.004),
                (600_000, 100, 0.005),
                (3_000_000, 75, 0.0065),
                (12_000_000, 50, 0.01),
                (70_000_000, 25, 0.02),
                (100_000_000, 20, 0.025),
                (230_000_000, 10, 0.05),
                (480_000_000, 5, 0.10),
            ]
        ),
    ),
    TierTable(
        "binance",
        "ETH",
        "2024-10-01",
        "Binance USDⓈ-M ETHUSDT leverage & margin table",
        _brackets(
            [
                (50_000, 125, 0.004),
                (600_000, 100, 0.005),
                (3_000_000, 75, 0.0065),
                (12_000_000, 50, 0.01),
                (50_000_000, 25, 0.02),
                (65_000_000, 20, 0.025),
                (150_000_000, 10, 0.05),
                (320_000_000, 5, 0.10),
            ]
        ),
    ),
    TierTable(
        "bybit",
        "BTC",
        "2024-09-01",
        "Bybit /v5/market/risk-limit BTCUSDT (linear)",
        _brackets(
            [
                (2_000_000, 100, 0.005),
                (4_000_000, 80, 0.0075),
                (6_000_000, 66.67, 0.01),
                (8_000_000, 50, 0.0125),
                (10_000_000, 40, 0.015),
                (50_000_000, 10, 0.05),
            ]
        ),
    ),
    TierTable(
        "bybit",
        "ETH",
        "2024-09-01",
        "Bybit /v5/market/risk-limit ETHUSDT (linear)",
        _brackets(
            [
                (1_000_000, 100, 0.005),
                (2_000_000, 80, 0.0075),
                (3_000_000, 66.67, 0.01),
                (4_000_000, 50, 0.0125),
                (5_000_000, 40, 0.015),
                (25_000_000, 10, 0.05),
            ]
        ),
    ),
    TierTable(
        "okx",
        "BTC",
        "2024-09-01",
        "OKX public/position-tiers BTC-USDT-SWAP (converted from contracts at 0.01 BTC)",
        _brackets(
            [
                (500_000, 100, 0.004),
                (2_000_000, 75, 0.005),
                (5_000_000, 50, 0.008),
                (10_000_000, 25, 0.015),
                (50_000_000, 10, 0.04),
            ]
        ),
    ),
    TierTable(
        "okx",
        "ETH",
        "2024-09-01",
        "OKX public/position-tiers ETH-USDT-SWAP (converted from contracts at 0.1 ETH)",
        _brackets(
            [
                (300_000, 100, 0.004),
                (1_500_000, 75, 0.005),
                (3_000_000, 50, 0.008),
                (8_000_000, 25, 0.015),
                (40_000_000, 10, 0.04),
            ]
        ),
    ),
)

EXCHANGES = ("binance", "bybit", "okx")


def canonical_exchange(exchange: str) -> str:
    """'binanceusdm' -> 'binance'; venues without their own tables (demo, files) use Binance's."""
    ex = exchange.lower().replace("usdm", "")
    return ex if ex in EXCHANGES else "binance"


def tier_table(exchange: str, coin: str, on: str | None = None) -> TierTable:
    """The table in force for ``exchange``/``coin`` on ISO date ``on`` (default: the newest).
    Coins without their own table use the exchange's BTC table (the most common brackets)."""
    ex = canonical_exchange(exchange)
    c = coin.upper()
    candidates = [t for t in TIER_TABLES if t.exchange == ex and t.symbol == c]
    if not candidates:
        candidates = [t for t in TIER_TABLES if t.exchange == ex and t.symbol == "BTC"]
    if on is not None:
        dated = [t for t in candidates if t.effective <= on]
        candidates = dated or candidates
    return max(candidates, key=lambda t: t.effective)


# Venues whose liquidation feeds print the *bankruptcy* price (where the position's margin is gone), not
# the price at which the liquidation was triggered. Binance's forceOrder prints the average fill.
REPORTS_BANKRUPTCY_PRICE = {"binance": False, "bybit": True, "okx": True}


def liquidation_from_bankruptcy(
    price: np.ndarray | float,
    side: np.ndarray | str | int,
    exchange: str,
    coin: str = "BTC",
    on: str | None = None,
) -> np.ndarray:
    """Estimated liquidation (trigger) price of events printed at their bankruptcy price.

    A linear long at leverage L has bankruptcy B = E(1 - 1/L) and is liquidated at about E(1 - 1/L + m):
    one maintenance margin of the entry nearer the entry, i.e. B(1 + m/(1 - 1/L)) ≈ B(1 + m) for the
    leverage that gets liquidated. Shorts mirror it: B(1 - m). ``m`` is the lowest bracket's rate of the
    venue's tier table in force on ``on`` (retail sizes). Venues that print fills are returned unchanged.
    ``side``: "long"/"short", 0/1, or an array of 0/1 (LONG/SHORT).
    """
    p = np.asarray(price, dtype=np.float64)
    ex = canonical_exchange(exchange)
    if not REPORTS_BANKRUPTCY_PRICE.get(ex, False):
        return p.copy()
    m = tier_table(ex, coin, on).brackets[0].mmr
    s = np.asarray(SIDES.index(side) if isinstance(side, str) else side)
    return np.where(s == LONG, p * (1.0 + m), p * (1.0 - m))
