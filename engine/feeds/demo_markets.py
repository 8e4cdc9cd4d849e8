"""What the simulated exchange lists, and who trades on it.

Each symbol is described by a handful of figures a trader would recognise (price, daily volatility, open
interest, daily turnover, order-book depth); the simulation derives everything else from them. The
traders' leverage mix and holding times are the simulation's *truth*: deliberately not the engine's
default ladder, so measuring the estimate against it is a fair test and not a mirror.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.model.margin import liquidation_price, tier_table


@dataclass(frozen=True)
class SimulatedSymbol:
    symbol: str  # unified, e.g. "BTC/USDT:USDT"
    coin: str
    price: float  # where the market starts (and slowly reverts to)
    daily_vol: float  # standard deviation of daily log returns
    oi_usd: float  # typical open interest
    turnover_usd: float  # typical traded USD per day
    depth_usd: float  # forced-order USD that moves the price 1% (book plus dip buyers; bigger sweeps move less per USD)
    tick: float
    beta: float  # share of the moves that come from the common market factor (crypto moves together)


# Figures are round numbers of the order seen on large USDT-margined venues; they make a plausible
# market, they are not a forecast. BTC, ETH and SOL come first: faces show the first three by default.
CATALOGUE: tuple[SimulatedSymbol, ...] = (
    SimulatedSymbol("BTC/USDT:USDT", "BTC", 90_000.0, 0.025, 8.0e9, 15e9, 600e6, 0.1, 0.95),
    SimulatedSymbol("ETH/USDT:USDT", "ETH", 3_000.0, 0.035, 5.0e9, 10e9, 360e6, 0.01, 0.85),
    SimulatedSymbol("SOL/USDT:USDT", "SOL", 150.0, 0.050, 2.0e9, 4e9, 135e6, 0.01, 0.75),
    SimulatedSymbol("BNB/USDT:USDT", "BNB", 600.0, 0.030, 6.0e8, 8e8, 42e6, 0.01, 0.70),
    SimulatedSymbol("XRP/USDT:USDT", "XRP", 2.2, 0.050, 1.5e9, 3e9, 98e6, 0.0001, 0.70),
    SimulatedSymbol("DOGE/USDT:USDT", "DOGE", 0.16, 0.060, 1.2e9, 2e9, 75e6, 0.00001, 0.70),
    SimulatedSymbol("ADA/USDT:USDT", "ADA", 0.70, 0.055, 5.0e8, 8e8, 33e6, 0.0001, 0.70),
    SimulatedSymbol("AVAX/USDT:USDT", "AVAX", 30.0, 0.060, 4.0e8, 6e8, 27e6, 0.001, 0.70),
    SimulatedSymbol("LINK/USDT:USDT", "LINK", 18.0, 0.055, 4.0e8, 6e8, 27e6, 0.001, 0.70),
    SimulatedSymbol("LTC/USDT:USDT", "LTC", 90.0, 0.045, 3.0e8, 5e8, 21e6, 0.01, 0.65),
    SimulatedSymbol("DOT/USDT:USDT", "DOT", 6.0, 0.055, 2.5e8, 3e8, 16e6, 0.001, 0.65),
    SimulatedSymbol("SUI/USDT:USDT", "SUI", 3.5, 0.070, 6.0e8, 1e9, 38e6, 0.0001, 0.60),
)

DEFAULT_SYMBOLS: tuple[str, ...] = tuple(s.symbol for s in CATALOGUE[:3])


@dataclass(frozen=True)
class TraderTier:
    leverage: float
    share: float  # of new speculative notional
    half_life_hours: float  # how long positions at this leverage are held before closing by choice


# The simulated traders' real habits. High leverage is popular in count but short-lived; low leverage
# is held for days. Shares and holding times differ from every engine preset on purpose.
TRADER_TIERS: tuple[TraderTier, ...] = (
    TraderTier(3, 0.08, 240.0),
    TraderTier(5, 0.14, 144.0),
    TraderTier(10, 0.26, 72.0),
    TraderTier(20, 0.20, 36.0),
    TraderTier(25, 0.10, 24.0),
    TraderTier(50, 0.13, 10.0),
    TraderTier(100, 0.09, 4.0),
)

TRADER_POSITION_USD = 10_000.0  # the size that picks a maintenance-margin bracket (retail dominates)


@dataclass(frozen=True)
class TraderMix:
    """The tiers as arrays, with each tier's maintenance margin from the venue's tier table."""

    leverage: np.ndarray  # (T,)
    share: np.ndarray  # (T,) sums to 1
    mmr: np.ndarray  # (T,)
    close_rate: np.ndarray  # (T,) voluntary closes per second (from the half-life)
    labels: tuple[str, ...]

    @classmethod
    def for_coin(cls, coin: str) -> TraderMix:
        table = tier_table("binance", coin)
        lev = np.array([t.leverage for t in TRADER_TIERS])
        share = np.array([t.share for t in TRADER_TIERS])
        hl = np.array([t.half_life_hours for t in TRADER_TIERS])
        return cls(
            leverage=lev,
            share=share / share.sum(),
            mmr=np.array([table.mmr(float(v), TRADER_POSITION_USD) for v in lev]),
            close_rate=math.log(2.0) / (hl * 3600.0),
            labels=tuple(f"{v:g}x" for v in lev),
        )

    def liquidation_offsets(self, leverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log(liquidation price / entry) for longs (negative) and shorts (positive), per given leverage
        (same shape, one column per tier), by the exact isolated-margin formula."""
        mmr = np.broadcast_to(self.mmr, leverage.shape)
        long_off = np.log(liquidation_price(1.0, leverage, mmr, "long"))
        short_off = np.log(liquidation_price(1.0, leverage, mmr, "short"))
        return long_off, short_off


def find_symbol(name: str, offered: tuple[SimulatedSymbol, ...]) -> SimulatedSymbol | None:
    """The unified symbol, or just the coin ("btc")."""
    for s in offered:
        if name == s.symbol or name.upper() == s.coin:
            return s
    return None
