"""Position risk: where *your* position is liquidated, what the estimated book looks like there, and
whether a cascade from the current price could carry price to it.

Liquidation price: isolated margin, wallet = initial margin (size / leverage), fees ignored, with the
maintenance-margin bracket the position's notional falls in (engine.model.margin.tier_table), by the
exchange's published formula (engine.model.margin.liquidation_factor — the same one the model uses for
its levels). For Binance that is ``(WB + cum - s*Q*E) / (Q*m - s*Q)``, which in the first bracket
(``cum = 0``) is exactly ``E(1-1/L)/(1-m)`` (long) / ``E(1+1/L)/(1+m)`` (short); larger positions sit in
higher brackets whose maintenance amount ``cum`` moves the price back a little. Bybit takes maintenance
margin on the entry value, OKX has no maintenance amount; inverse contracts use the coin-margined form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cascade import DEFAULT_DEPTH, Cascade, DepthModel, cascade_risk
from .margin import Bracket, liquidation_factor, tier_table
from .touch import HORIZONS_HOURS, Volatility, touch_probability
from .views import GRADES, LiquidationMap, Zone


class RiskError(ValueError):
    """A position the exchange would not accept, or inputs that make no sense (one line)."""


@dataclass(frozen=True)
class Position:
    side: str  # "long" | "short"
    entry: float
    leverage: float
    size_usd: float  # notional at entry
    exchange: str = "binance"
    coin: str = "BTC"
    contract: str = "linear"

    def __post_init__(self) -> None:
        if self.side not in ("long", "short"):
            raise RiskError(f"side {self.side!r}: use long or short")
        if not (self.entry > 0 and math.isfinite(self.entry)):
            raise RiskError("entry price must be positive")
        if not (1.0 <= self.leverage <= 200.0):
            raise RiskError("leverage must be between 1x and 200x")
        if not (self.size_usd > 0 and math.isfinite(self.size_usd)):
            raise RiskError("position size must be a positive USD amount")
        if self.contract not in ("linear", "inverse"):
            raise RiskError(f"contract {self.contract!r}: use linear or inverse")


def position_bracket(pos: Position) -> Bracket:
    """The maintenance bracket the position's notional sits in; the exchange refuses the leverage if that
    bracket's maximum is lower."""
    table = tier_table(pos.exchange, pos.coin)
    for b in table.brackets:
        if pos.size_usd <= b.notional_cap:
            if pos.leverage > b.max_leverage + 1e-9:
                raise RiskError(
                    f"{table.exchange} allows at most {b.max_leverage:g}x on a ${pos.size_usd:,.0f} "
                    f"{pos.coin} position (asked {pos.leverage:g}x)"
                )
            return b
    raise RiskError(f"${pos.size_usd:,.0f} is above {table.exchange}'s largest {pos.coin} bracket")


def position_liquidation_price(pos: Position) -> float:
    b = position_bracket(pos)
    factor = liquidation_factor(pos.leverage, b.mmr, pos.side, pos.contract, pos.exchange, b.cum / pos.size_usd)
    return float(pos.entry * factor)


@dataclass(frozen=True)
class PositionRisk:
    position: Position
    price: float  # current price
    liquidation_price: float
    mmr: float
    distance_pct: float  # signed, from the current price to the liquidation price
    zone: Zone | None  # the estimated zone (same side) the liquidation price sits in
    grade: str  # that zone's grade, or "none"
    nearest_high: Zone | None  # closest high-grade same-side cluster to the liquidation price
    nearest_high_distance_pct: float | None  # signed, from the liquidation price to that cluster's near edge
    high_between: int  # high-grade clusters between the current price and the liquidation price
    cascade: Cascade | None  # the adverse cascade from the current price (nearest-cluster trigger)
    cascade_reaches: bool | None  # would that cascade carry price to the liquidation price?
    touch: dict[float, float]  # horizon hours -> P(price reaches the liquidation price)

    def to_dict(self) -> dict[str, object]:
        p = self.position
        return {
            "position": {
                "side": p.side, "entry": p.entry, "leverage": p.leverage, "size_usd": p.size_usd,
                "exchange": p.exchange, "coin": p.coin, "contract": p.contract,
            },
            "price": self.price,
            "liquidation_price": self.liquidation_price,
            "mmr": self.mmr,
            "distance_pct": self.distance_pct,
            "zone": None if self.zone is None else self.zone.to_dict(),
            "grade": self.grade,
            "nearest_high": None if self.nearest_high is None else self.nearest_high.to_dict(),
            "nearest_high_distance_pct": self.nearest_high_distance_pct,
            "high_between": self.high_between,
            "cascade": None if self.cascade is None else self.cascade.to_dict(),
            "cascade_reaches": self.cascade_reaches,
            "touch": {f"{h:g}h": v for h, v in self.touch.items()},
        }


def position_risk(
    pos: Position,
    price: float,
    zones: list[Zone] | None = None,
    lmap: LiquidationMap | None = None,
    depth: DepthModel = DEFAULT_DEPTH,
    vol: Volatility | None = None,
    horizons: tuple[float, ...] = HORIZONS_HOURS,
) -> PositionRisk:
    """Everything about one position against the current estimate. ``zones`` and ``lmap`` are optional
    (without them only the price figures are filled in)."""
    if not (price > 0 and math.isfinite(price)):
        raise RiskError("current price must be positive")
    liq = position_liquidation_price(pos)
    mmr = position_bracket(pos).mmr
    if (pos.side == "long" and liq >= price) or (pos.side == "short" and liq <= price):
        # Already past it at this price: say so rather than report a negative distance as risk.
        raise RiskError(f"a {pos.side} from {pos.entry:g} at {pos.leverage:g}x is liquidated at {liq:.2f}, "
                        f"already reached at the current price {price:g}")
    zones = zones or []
    same = [z for z in zones if z.side == pos.side]
    inside = [z for z in same if z.price_low <= liq <= z.price_high]
    zone = max(inside, key=lambda z: z.usd) if inside else None
    high = [z for z in same if z.grade == GRADES[-1]]

    def edge_distance(z: Zone) -> float:
        if z.price_low <= liq <= z.price_high:
            return 0.0
        edge = z.price_high if z.price_high < liq else z.price_low
        return (edge / liq - 1.0) * 100.0

    # A position that cannot be liquidated (1x long: price 0; 1x inverse short: infinity) has no nearest cluster.
    liquidatable = 0.0 < liq < math.inf
    nearest = min(high, key=lambda z: abs(edge_distance(z))) if high and liquidatable else None
    lo, hi = min(liq, price), max(liq, price)
    between = sum(1 for z in high if z.price_high >= lo and z.price_low <= hi)
    cascade = reaches = None
    if lmap is not None:
        summary = cascade_risk(lmap, zones, depth)
        cascade = summary.down if pos.side == "long" else summary.up
        reaches = cascade.end_price <= liq if pos.side == "long" else cascade.end_price >= liq
    touch = {h: float(touch_probability(price, liq, vol, h)) for h in horizons} if vol is not None else {}
    return PositionRisk(
        pos,
        float(price),
        float(liq),
        float(mmr),
        (liq / price - 1.0) * 100.0,
        zone,
        zone.grade if zone else "none",
        nearest,
        None if nearest is None else edge_distance(nearest),
        between,
        cascade,
        reaches,
        touch,
    )
