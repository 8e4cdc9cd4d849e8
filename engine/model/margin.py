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


def tier_table(exchange: str, coin: str, on: str | None = None) -> TierTable:
    """The table in force for ``exchange``/``coin`` on ISO date ``on`` (default: the newest).
    Coins without their own table use the exchange's BTC table (the most common brackets)."""
    ex = exchange.lower().replace("usdm", "")
    if ex not in EXCHANGES:
        ex = "binance"
    c = coin.upper()
    candidates = [t for t in TIER_TABLES if t.exchange == ex and t.symbol == c]
    if not candidates:
        candidates = [t for t in TIER_TABLES if t.exchange == ex and t.symbol == "BTC"]
    if on is not None:
        dated = [t for t in candidates if t.effective <= on]
        candidates = dated or candidates
    return max(candidates, key=lambda t: t.effective)
