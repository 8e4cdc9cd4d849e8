"""The engine's analytics as API views: zone touch probabilities, cascade risk, position risk, alerts.

Synchronous numpy work (run in the view pool); every function takes a market service and returns
JSON-ready dicts. Volatility comes from hourly candles (the touch model's calibration is hourly).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from engine.alerts import AlertEngine, CascadeRule, GradeChangeRule, ProximityRule, Rule
from engine.model.cascade import cascade_risk
from engine.model.risk import Position, position_risk
from engine.model.touch import Volatility, realised_volatility, zone_touch
from engine.service import MarketService

# Alerts every market gets: price within 1% of an elevated-or-high zone, a zone upgraded, or a simulated
# cascade that would carry price 3% or more. Each has the engine's 15-minute cooldown per zone/direction.
DEFAULT_RULES: tuple[Rule, ...] = (
    ProximityRule(within_pct=1.0, min_grade="elevated"),
    GradeChangeRule(upgrades_only=True),
    CascadeRule(min_move_pct=3.0),
)


def volatility(svc: MarketService) -> Volatility:
    return realised_volatility(svc.candles("1h"))


def zones_with_touch(svc: MarketService, bins: int, span: float) -> dict[str, Any]:
    zones = svc.zones(bins=bins, span=span)
    price = svc.last_price
    out: dict[str, Any] = {"symbol": svc.market.key, "price": price,
                           "daily_volume_usd": svc.daily_volume_usd(), "estimate": True}
    try:
        vol = volatility(svc)
    except ValueError:  # too little history to measure volatility: zones without probabilities
        out["zones"] = [z.to_dict() for z in zones]
        out["volatility"] = None
        return out
    with np.errstate(over="ignore", under="ignore"):  # far zones: probabilities underflow to 0, fine
        touched = zone_touch(zones, price, vol)
    out["zones"] = [t.to_dict() | {"touch_probability": t.probability[24.0]} for t in touched]
    out["volatility"] = vol.to_dict()
    return out


def cascade_view(svc: MarketService, bins: int = 400, span: float = 0.25) -> dict[str, Any]:
    lmap = svc.liquidation_map(bins=bins, span=span)
    summary = cascade_risk(lmap, svc.zones())
    return {"symbol": svc.market.key, "price": lmap.price, **summary.to_dict(), "estimate": True}


def risk_view(svc: MarketService, side: str, entry: float, leverage: float, size_usd: float) -> dict[str, Any]:
    p = svc.params
    pos = Position(side, entry, leverage, size_usd, exchange=p.exchange, coin=p.coin, contract=p.contract)
    lmap = svc.liquidation_map(bins=400, span=0.5)
    try:
        vol: Volatility | None = volatility(svc)
    except ValueError:
        vol = None
    with np.errstate(over="ignore", under="ignore"):
        risk = position_risk(pos, svc.last_price, svc.zones(bins=400, span=0.5), lmap, vol=vol)
    return {"symbol": svc.market.key, **risk.to_dict(), "estimate": True}


class MarketAlerts:
    """One market's alert engine, fed from the live fan-out at most every ``interval_s``."""

    def __init__(self, svc: MarketService, interval_s: float = 5.0, rules: tuple[Rule, ...] = DEFAULT_RULES) -> None:
        self.svc = svc
        self.interval_s = interval_s
        self.engine = AlertEngine(list(rules), symbol=svc.market.key)
        self.last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.interval_s

    def check(self) -> list[dict[str, Any]]:
        """In the pool: the alerts that fire now."""
        self.last = time.monotonic()
        zones = self.svc.zones()
        lmap = self.svc.liquidation_map(bins=400, span=0.25)
        summary = cascade_risk(lmap, zones)
        return self.engine.feed(lmap.price, zones, summary, now=time.time())

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return list(self.engine.history)[-limit:]
