"""Touch probabilities, position risk and alerts for the dashboard, from the engine's analytics modules
(engine/model/touch.py, risk.py, cascade.py, engine/alerts.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from engine import alerts as alert_rules
from engine.model import Bars, LiquidationMap, Zone
from engine.model import cascade as cascade_model
from engine.model import risk as risk_model
from engine.model import touch as touch_model

TOUCH_HORIZON_HOURS = 4.0


ALERT_EVERY_S = 5.0


@dataclass
class Analytics:
    touch: ModuleType = touch_model
    risk: ModuleType = risk_model
    alerts: ModuleType = alert_rules
    cascade: ModuleType = cascade_model
    _vol_key: tuple[int, int] = (-1, -1)
    _vol: Any = None
    _engine: Any = None
    _last_alert_check: float = field(default=-1e9)

    @classmethod
    def load(cls) -> Analytics:
        return cls()

    def check_alerts(self, symbol: str, price: float, zones: list[Zone], lmap: LiquidationMap | None,
                     now: float | None = None) -> list[dict[str, Any]]:
        """Price near a strong zone, a zone upgraded, a cascade that would move price 3%+ (the server's
        default rules, same cooldowns); checked at most every few seconds."""
        mono = time.monotonic()
        if mono - self._last_alert_check < ALERT_EVERY_S:
            return []
        self._last_alert_check = mono
        if self._engine is None or self._engine.symbol != symbol:
            a = self.alerts
            rules = [
                a.ProximityRule(within_pct=1.0, min_grade="elevated"),
                a.GradeChangeRule(upgrades_only=True),
                a.CascadeRule(min_move_pct=3.0),
            ]
            self._engine = a.AlertEngine(rules, symbol=symbol)
        summary = None
        if lmap is not None:
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                summary = self.cascade.cascade_risk(lmap, zones)
        return list(self._engine.feed(price, zones, summary, now=now))

    def volatility(self, bars: Bars) -> Any:
        """Recent volatility from hourly candles (the touch model is calibrated on hourly returns),
        measured once per new bar."""
        if len(bars) < 11:
            return None
        key = (len(bars), int(bars.time[-1]))
        if key != self._vol_key:
            hourly = bars
            if bars.timeframe < 3600 and 3600 % bars.timeframe == 0:
                hourly = bars.resample("1h")
            try:
                self._vol = self.touch.realised_volatility(hourly)
            except ValueError:  # too little history to measure it: no probabilities, not a guess
                self._vol = None
            self._vol_key = key
        return self._vol

    def zone_touch(self, zones: list[Zone], price: float, bars: Bars) -> dict[int, float] | None:
        """P(price reaches each zone's near edge within 4h), by zone index; {} until volatility is known."""
        vol = self.volatility(bars)
        if vol is None or not zones:
            return {}
        with np.errstate(over="ignore", under="ignore"):  # far zones underflow to 0: fine
            touches = self.touch.zone_touch(zones, price, vol, horizons=(TOUCH_HORIZON_HOURS,))
        return {i: t.probability[TOUCH_HORIZON_HOURS] for i, t in enumerate(touches)}

    def position_risk(
        self,
        side: str,
        entry: float,
        leverage: float,
        size_usd: float,
        price: float,
        zones: list[Zone],
        lmap: LiquidationMap | None,
        bars: Bars | None,
        exchange: str = "binance",
        coin: str = "BTC",
    ) -> Any:
        """engine.model.risk.PositionRisk; raises ValueError (one line) on a position that makes no sense."""
        pos = self.risk.Position(side, entry, leverage, size_usd, exchange=exchange, coin=coin)
        vol = self.volatility(bars) if bars is not None else None
        with np.errstate(over="ignore", under="ignore"):
            return self.risk.position_risk(pos, price, zones=zones, lmap=lmap, vol=vol)
