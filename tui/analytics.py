"""Touch probabilities and position risk for the dashboard, from the engine's analytics modules
(engine/model/touch.py, risk.py, cascade.py). The dashboard runs without them: ``available`` says whether
they are installed, and the zones table simply has no touch column then."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from engine.model import Bars, LiquidationMap, Zone

TOUCH_HORIZON_HOURS = 4.0


@dataclass
class Analytics:
    touch: Any = None
    risk: Any = None
    _vol_key: tuple[int, int] = (-1, -1)
    _vol: Any = None

    @classmethod
    def load(cls) -> Analytics:
        try:
            touch = importlib.import_module("engine.model.touch")
        except ImportError:
            touch = None
        try:
            risk = importlib.import_module("engine.model.risk")
        except ImportError:
            risk = None
        return cls(touch, risk)

    @property
    def available(self) -> bool:
        return self.touch is not None

    @property
    def risk_available(self) -> bool:
        return self.risk is not None

    def volatility(self, bars: Bars) -> Any:
        """Recent volatility, measured once per new bar (it needs days of returns)."""
        if self.touch is None or len(bars) < 11:
            return None
        key = (len(bars), int(bars.time[-1]))
        if key != self._vol_key:
            try:
                self._vol = self.touch.realised_volatility(bars)
            except ValueError:
                self._vol = None
            self._vol_key = key
        return self._vol

    def zone_touch(self, zones: list[Zone], price: float, bars: Bars) -> dict[int, float] | None:
        """P(price reaches each zone's near edge within 4h), by zone index; None without the module."""
        vol = self.volatility(bars) if self.touch is not None else None
        if vol is None or not zones:
            return None if self.touch is None else {}
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
        if self.risk is None:
            raise ValueError("position risk needs engine/model/risk.py, which is not installed")
        pos = self.risk.Position(side, entry, leverage, size_usd, exchange=exchange, coin=coin)
        vol = self.volatility(bars) if bars is not None else None
        return self.risk.position_risk(pos, price, zones=zones, lmap=lmap, vol=vol)
