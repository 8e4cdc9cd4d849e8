"""Touch probability: how likely price is to reach a level within 1h, 4h, 24h — *when*, not just where.

Model. Log price is a driftless random walk with the volatility of recent returns. For a driftless
Brownian motion the reflection principle gives the chance of touching a level at log-distance ``d`` within
``h`` hours as ``P = 2 * (1 - Phi(d / (sigma * sqrt(h))))``.

Fat tails. Real returns are not normal: on Binance BTC and ETH 1h candles (2025-03 → 2026-03, the shared
file) the excess kurtosis of returns is ≈10 at 1h, ≈5 at 4h and ≈3.5 at 24h; a log-log fit over
1h…24h gives kurtosis ∝ h^-0.3 for both coins (independent returns would give h^-1: volatility
clustering keeps longer returns fat-tailed). So the normal tail is replaced by a Student-t with the same
variance: the bar returns' kurtosis is carried to a 4-hour reference horizon,
``kappa_4h = kappa_bar * (4h / bar) ** -0.3``, ``nu = 4 + 6 / kappa_4h`` (a t's excess kurtosis is
6 / (nu - 4)), and ``P = 2 * (1 - T_nu(d / (sigma * sqrt(h)) * sqrt(nu / (nu - 2))))``. One tail shape
serves every horizon — a shape that changed with h could make a far level *less* likely over a longer
horizon, which is impossible for "touched within h"; with it fixed, P grows with h by construction. The
cost: 1h tails a little too thin, 24h tails a little too fat. Far levels get likelier than under the
normal, near ones slightly less likely — what fat tails mean. The reflection step is exact only for the
Brownian case; with t increments it is the usual approximation.

Probabilities are clipped to [0, 1] and grow with the horizon (a test holds them to both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from .bars import Bars
from .views import LiquidationMap, Zone

HORIZONS_HOURS = (1.0, 4.0, 24.0)
KURTOSIS_DECAY = 0.3  # kurtosis ∝ horizon^-0.3 (fit on real BTC/ETH 1h returns; module docstring)
TAIL_REFERENCE_HOURS = 4.0  # the horizon whose kurtosis sets the one tail shape used for all horizons
_NU_MAX = 200.0  # beyond this a Student-t is a normal for our purposes


class TouchError(ValueError):
    """Inputs the touch model cannot use (one line for the user)."""


@dataclass(frozen=True)
class Volatility:
    """Recent realised volatility: ``sigma_hour`` is the std of log returns per sqrt(hour); the excess
    kurtosis is that of bar returns (over a longer window: the fourth moment needs more data)."""

    sigma_hour: float
    excess_kurtosis: float
    timeframe: int  # seconds per bar the figures came from
    bars: int  # returns used for sigma

    def sigma(self, horizon_hours: float) -> float:
        return self.sigma_hour * math.sqrt(horizon_hours)

    def dof(self, horizon_hours: float = TAIL_REFERENCE_HOURS) -> float:
        """Student-t degrees of freedom matching the kurtosis expected at a horizon (inf = normal);
        touch probabilities use the reference horizon's for every horizon."""
        if self.excess_kurtosis <= 0:
            return math.inf
        bar_hours = self.timeframe / 3600.0
        k = self.excess_kurtosis * (max(horizon_hours, bar_hours) / bar_hours) ** -KURTOSIS_DECAY
        if k <= 6.0 / (_NU_MAX - 4.0):
            return math.inf
        return 4.0 + 6.0 / k

    def to_dict(self) -> dict[str, object]:
        return {
            "sigma_hour_pct": self.sigma_hour * 100.0,
            "sigma_day_pct": self.sigma(24.0) * 100.0,
            "excess_kurtosis": self.excess_kurtosis,
            "timeframe": self.timeframe,
            "bars": self.bars,
        }


def realised_volatility(bars: Bars, window_hours: float = 72.0, kurtosis_window_hours: float = 720.0) -> Volatility:
    """Volatility from close-to-close log returns of the last ``window_hours``; kurtosis from the last
    ``kurtosis_window_hours``. Needs at least 10 returns."""
    if len(bars) < 11:
        raise TouchError(f"need at least 11 bars to measure volatility, got {len(bars)}")
    per_window = max(int(window_hours * 3600 // bars.timeframe), 10)
    per_kurt = max(int(kurtosis_window_hours * 3600 // bars.timeframe), 10)
    ret = np.diff(np.log(bars.close[-(max(per_window, per_kurt) + 1) :]))  # only the windows used
    r = ret[-per_window:]
    sigma_bar = float(np.std(r))
    rk = ret[-per_kurt:]
    rk = rk - rk.mean()
    m2 = float(np.mean(rk**2))
    kurt = float(np.mean(rk**4)) / (m2 * m2) - 3.0 if m2 > 0 else 0.0
    return Volatility(sigma_bar * math.sqrt(3600.0 / bars.timeframe), max(kurt, 0.0), bars.timeframe, len(r))


# ---- distributions (scipy's, vectorised) -----------------------------------------------------------
def normal_sf(z: np.ndarray) -> np.ndarray:
    """1 - Phi(z)."""
    return np.asarray(special.ndtr(-np.asarray(z, dtype=np.float64)), dtype=np.float64)


def student_t_sf(t: np.ndarray, nu: float) -> np.ndarray:
    """P(T > t) for a Student-t with ``nu`` degrees of freedom (nu = inf: the normal)."""
    t = np.asarray(t, dtype=np.float64)
    if not math.isfinite(nu):
        return normal_sf(t)
    return np.asarray(special.stdtr(nu, -t), dtype=np.float64)


# ---- touch probability ---------------------------------------------------------------------------
def touch_probability(
    price: float,
    target: np.ndarray | float,
    vol: Volatility,
    horizon_hours: float,
    fat_tails: bool = True,
) -> np.ndarray:
    """P(price touches ``target`` within ``horizon_hours``), element-wise over targets; 1 at the price."""
    if not (price > 0 and math.isfinite(price)):
        raise TouchError("price must be positive")
    if horizon_hours <= 0:
        raise TouchError("horizon must be positive")
    target = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(np.log(np.where(target > 0, target, np.nan) / price))
    s = vol.sigma(horizon_hours)
    if s <= 0:
        return np.where(d == 0, 1.0, 0.0)
    z = d / s
    nu = vol.dof(TAIL_REFERENCE_HOURS) if fat_tails else math.inf
    if math.isfinite(nu):
        z = z * math.sqrt(nu / (nu - 2.0))  # a t with the same variance as the measured returns
    p = 2.0 * student_t_sf(np.nan_to_num(z, nan=np.inf), nu)
    return np.clip(np.where(np.isnan(d), 0.0, p), 0.0, 1.0)


def zone_near_edge(zone: Zone, price: float) -> float:
    """The price at which a zone starts to be liquidated from here (the price itself when inside it)."""
    if zone.price_low <= price <= zone.price_high:
        return price
    return zone.price_high if zone.price_high < price else zone.price_low


@dataclass(frozen=True)
class ZoneTouch:
    zone: Zone
    probability: dict[float, float]  # horizon hours -> P(touch)
    risk_usd: dict[float, float]  # horizon hours -> zone USD x P(touch)

    def to_dict(self) -> dict[str, object]:
        out = dict(self.zone.to_dict())
        for h, p in self.probability.items():
            out[f"touch_{h:g}h"] = p
            out[f"risk_usd_{h:g}h"] = self.risk_usd[h]
        return out


def zone_touch(
    zones: list[Zone],
    price: float,
    vol: Volatility,
    horizons: tuple[float, ...] = HORIZONS_HOURS,
    fat_tails: bool = True,
) -> list[ZoneTouch]:
    """Touch probability and risk-weighted notional per zone (same order as ``zones``)."""
    edges = np.array([zone_near_edge(z, price) for z in zones], dtype=np.float64)
    probs = {h: touch_probability(price, edges, vol, h, fat_tails) for h in horizons}
    return [
        ZoneTouch(
            z,
            {h: float(probs[h][i]) for h in horizons},
            {h: float(probs[h][i]) * z.usd for h in horizons},
        )
        for i, z in enumerate(zones)
    ]


def risk_weighted_map(lmap: LiquidationMap, vol: Volatility, horizon_hours: float, fat_tails: bool = True) -> LiquidationMap:
    """The liquidation map with every bin's USD times the chance price reaches the bin within the horizon
    (longs: its upper edge, shorts: its lower edge) — what is likely to be liquidated, not just where."""
    p_long = touch_probability(lmap.price, np.minimum(lmap.edges[1:], lmap.price), vol, horizon_hours, fat_tails)
    p_short = touch_probability(lmap.price, np.maximum(lmap.edges[:-1], lmap.price), vol, horizon_hours, fat_tails)
    return LiquidationMap(
        lmap.price,
        lmap.edges,
        lmap.long_usd * p_long[:, None],
        lmap.short_usd * p_short[:, None],
        lmap.tiers,
    )


def expected_liquidations(lmap: LiquidationMap, vol: Volatility, horizons: tuple[float, ...] = HORIZONS_HOURS) -> dict[str, dict[str, float]]:
    """Sum of risk-weighted USD per side and horizon: {"1h": {"long": .., "short": ..}, ...}."""
    out: dict[str, dict[str, float]] = {}
    for h in horizons:
        rw = risk_weighted_map(lmap, vol, h)
        out[f"{h:g}h"] = {"long": float(rw.long_usd.sum()), "short": float(rw.short_usd.sum())}
    return out
