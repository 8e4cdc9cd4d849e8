"""The simulated market's own weather: everything that is *not* caused by the traders being liquidated.

One UTC day at a time, drawn from random generators keyed by (seed, symbol, day): the volatility regime,
the second-by-second price path each minute would take without forced orders, where in each minute new
positions are opened and at what leverage, how much new speculative money arrives, background turnover,
order-book depth, and the hedged open interest that no speculator holds. Because the draws are keyed by
the day, a day comes out the same whether it is generated during a bulk backfill or while ticking live.

Liquidations, their price impact, funding and open interest are *not* here: they come out of the
exchange simulation (demo_exchange.py), which reacts to this flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .demo_markets import SimulatedSymbol, TraderMix

MINUTES_PER_DAY = 1440
TICKS = 60  # price ticks per minute (one per simulated second)
ENTRIES = 4  # moments in each minute where new positions are opened

# Volatility regime: the log of volatility is a sum of slow and fast mean-reverting parts, some shared
# by the whole market and some per coin (persistence in minutes, stationary standard deviation).
_VOL_PARTS = (("market_fast", 30.0, 0.30), ("market_slow", 720.0, 0.35), ("own_fast", 20.0, 0.20), ("own_slow", 1440.0, 0.25))
_VOL_VAR = sum(sd * sd for _, _, sd in _VOL_PARTS)
EXOGENOUS_VOL = 0.85
JUMPS_PER_DAY = 3.0  # news-like jumps per coin per day (fat tails beyond the volatility mixture)
# Most traders pick the round leverage the slider offers; some pick 8x or 12x instead of 10x.
ODD_LEVERAGE_SHARE = 0.3
LEVERAGE_SPREAD = 0.15  # log-normal spread of the odd ones around the tier
HEDGED_SHARE = 0.6  # part of open interest held by hedgers and market makers, never liquidated
# New speculative notional per day, as a share of open interest: with the traders' holding times this
# keeps the speculators' positions near the other 40% of open interest.
SPECULATIVE_TURNOVER = 0.19


@dataclass
class FlowCarry:
    """Slow states that run on from one day into the next (so there is no seam at midnight)."""

    vol: dict[str, float]
    hedge: float  # log deviation of the hedged open interest from its typical level

    @classmethod
    def initial(cls, seed: int, sym_id: int, day: int) -> FlowCarry:
        own = np.random.default_rng([seed, 3, sym_id, day])
        market = np.random.default_rng([seed, 4, day])  # every coin draws the same market state
        vol = {}
        for name, _, sd in _VOL_PARTS:
            vol[name] = float((market if name.startswith("market") else own).normal(0.0, sd))
        return cls(vol, float(own.normal(0.0, 0.05)))


@dataclass(frozen=True)
class DayFlow:
    """One UTC day of exogenous flow for one coin (arrays over the day's 1440 minutes)."""

    day: int  # UNIX day number
    sigma: np.ndarray  # (M,) volatility of a 1-minute log return in this minute
    path: np.ndarray  # (M, TICKS) float32 log move from the minute's base price to each tick (no forced orders)
    low: np.ndarray  # (M,) lowest / highest / last tick of ``path``
    high: np.ndarray
    close: np.ndarray
    low_tick: np.ndarray  # (M,) which tick is the lowest / the highest
    high_tick: np.ndarray
    entry_tick: np.ndarray  # (M, ENTRIES) ticks at which new positions are opened
    entry_move: np.ndarray  # (M, ENTRIES) ``path`` at those ticks
    long_offset: np.ndarray  # (M, T) log(liquidation / entry) of this minute's longs per tier (< 0)
    short_offset: np.ndarray  # (M, T) same for shorts (> 0)
    top_long: np.ndarray  # (M,) highest long liquidation this minute can create, relative to its base
    bottom_short: np.ndarray  # (M,) lowest short liquidation, relative to its base
    open_usd: np.ndarray  # (M,) new speculative notional opened in the minute
    share_noise: np.ndarray  # (M,) standard normal: mood swings in the long/short split
    premium_noise: np.ndarray  # (M,) standard normal: basis noise
    churn_usd: np.ndarray  # (M,) background turnover (market makers, arbitrage, spot hedges)
    churn_tilt: np.ndarray  # (M,) standard normal: noise in the taker buy share of that turnover
    depth: np.ndarray  # (M,) USD of forced orders that move the price by 1 in log terms (100%)
    hedged_base: np.ndarray  # (M,) open interest held by hedgers, in base coin


def ar1(shocks: np.ndarray, phi: float, start: float) -> np.ndarray:
    """y[t] = phi * y[t-1] + shocks[t], y[-1] = start, without a Python loop over t.

    Written as y[t] = phi^t * (phi * y[-1] + sum_i phi^-i * shocks[i]); done in short blocks so that
    phi^-i stays small enough for float64 to keep its precision."""
    n = len(shocks)
    out = np.empty(n)
    block = 240
    powers = phi ** np.arange(block, dtype=np.float64)
    inverse = 1.0 / powers
    y = start
    for s in range(0, n, block):
        e = shocks[s : s + block]
        m = len(e)
        out[s : s + m] = powers[:m] * (phi * y + np.cumsum(e * inverse[:m]))
        y = float(out[s + m - 1])
    return out


def _intraday_season(minute_of_day: np.ndarray, weekday: int) -> np.ndarray:
    """Activity is higher around the US open (13:30-16:00 UTC) and the Asian morning, lower at weekends."""
    m = minute_of_day.astype(np.float64)
    season = 1.0 + 0.35 * np.exp(-(((m - 870.0) / 90.0) ** 2)) + 0.15 * np.exp(-(((m - 90.0) / 120.0) ** 2))
    return season * (0.75 if weekday >= 5 else 1.0)


def day_flow(spec: SimulatedSymbol, mix: TraderMix, seed: int, sym_id: int, day: int, carry: FlowCarry) -> DayFlow:
    """Draw one day. ``carry`` is updated in place to the day's end."""
    own = np.random.default_rng([seed, 1, sym_id, day])
    market = np.random.default_rng([seed, 2, day])
    M = MINUTES_PER_DAY
    # the market's own moves; liquidation cascades add the rest of the catalogue's daily volatility
    sigma_base = EXOGENOUS_VOL * spec.daily_vol / math.sqrt(M)

    # Volatility regime: shared and own mean-reverting parts, each continuing from yesterday.
    logv = np.zeros(M)
    for name, persistence, sd in _VOL_PARTS:
        phi = math.exp(-1.0 / persistence)
        rng = market if name.startswith("market") else own
        part = ar1(rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), M), phi, carry.vol[name])
        carry.vol[name] = float(part[-1])
        logv += part
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (weekday 3 when Monday is 0)
    season = _intraday_season(np.arange(M), weekday)
    sigma = sigma_base * np.exp(logv - _VOL_VAR) * season

    # Second-by-second path: the market factor moves every coin, plus the coin's own moves and jumps.
    # A day of ticks is the bulk of the drawing time, so: float32 (a tick's move needs 7 digits) and
    # uniform steps of unit variance (four times cheaper than normal ones; 60 of them add up to a normal
    # minute, and the fat tails come from the volatility regime, the jumps and the cascades).
    shared = market.random((M, TICKS), dtype=np.float32)
    mine = own.random((M, TICKS), dtype=np.float32)
    root12 = math.sqrt(12.0)
    step = shared * np.float32(spec.beta * root12)
    step += mine * np.float32(math.sqrt(1.0 - spec.beta**2) * root12)
    step -= np.float32(0.5 * root12 * (spec.beta + math.sqrt(1.0 - spec.beta**2)))
    step *= (sigma / math.sqrt(TICKS)).astype(np.float32)[:, None]
    jumps = own.random(M) < JUMPS_PER_DAY / M
    n_jumps = int(jumps.sum())
    jump_tick = own.integers(0, TICKS, n_jumps)
    step[np.flatnonzero(jumps), jump_tick] += (sigma[jumps] * 3.0 * own.standard_t(3, n_jumps)).astype(np.float32)
    path = np.cumsum(step, axis=1)
    low_tick = path.argmin(axis=1)
    high_tick = path.argmax(axis=1)
    rows = np.arange(M)

    entry_tick = own.integers(0, TICKS, (M, ENTRIES))
    entry_move = np.take_along_axis(path, entry_tick, axis=1).astype(np.float64)
    T = len(mix.leverage)
    odd = own.random((M, T)) < ODD_LEVERAGE_SHARE
    spread = np.where(odd, np.exp(LEVERAGE_SPREAD * own.standard_normal((M, T))), 1.0)
    leverage = np.clip(mix.leverage[None, :] * spread, 1.5, 125.0)
    long_off, short_off = mix.liquidation_offsets(leverage)

    activity = sigma / sigma_base
    open_usd = SPECULATIVE_TURNOVER * spec.oi_usd / M * activity**0.6 * own.lognormal(-0.18, 0.6, M)
    churn_usd = spec.turnover_usd / M * activity**0.8 * own.lognormal(-0.08, 0.4, M)
    depth = spec.depth_usd * 100.0 / np.sqrt(activity) * own.lognormal(-0.03, 0.25, M)

    phi_h = math.exp(-1.0 / 2880.0)
    hedge = ar1(own.normal(0.0, 0.05 * math.sqrt(1.0 - phi_h * phi_h), M), phi_h, carry.hedge)
    carry.hedge = float(hedge[-1])
    hedged_base = HEDGED_SHARE * spec.oi_usd / spec.price * np.exp(hedge)

    return DayFlow(
        day=day,
        sigma=sigma,
        path=path,
        low=path[rows, low_tick].astype(np.float64),
        high=path[rows, high_tick].astype(np.float64),
        close=path[:, -1].astype(np.float64),
        low_tick=low_tick,
        high_tick=high_tick,
        entry_tick=entry_tick,
        entry_move=entry_move,
        long_offset=long_off,
        short_offset=short_off,
        top_long=entry_move.max(axis=1) + long_off.max(axis=1),
        bottom_short=entry_move.min(axis=1) + short_off.min(axis=1),
        open_usd=open_usd,
        share_noise=own.standard_normal(M),
        premium_noise=own.standard_normal(M),
        churn_usd=churn_usd,
        churn_tilt=own.standard_normal(M),
        depth=depth,
        hedged_base=hedged_base,
    )
