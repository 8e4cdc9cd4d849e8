"""From bars to cohorts: how much new leveraged exposure each bar opened, on which side, at which
entries and leverage tiers, and where each slice would be liquidated.

A *cohort* is one (bar, side, tier, entry anchor) slice. Its liquidation price is snapped to a fine
log-spaced price grid (the level book, 0.05% by default) so the batch and the incremental paths agree to
the bin: a level ``k`` stands for the price exp(k * step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bars import Bars, BarsError
from .ladder import ModelParams
from .margin import LONG, SHORT, liquidation_price


@dataclass(frozen=True)
class LevelGrid:
    """Integer price levels: level k is the price exp(k * step)."""

    step: float

    @classmethod
    def for_resolution(cls, resolution: float) -> LevelGrid:
        return cls(math.log1p(resolution))

    def level(self, price: np.ndarray) -> np.ndarray:
        return np.rint(np.log(price) / self.step).astype(np.int64)

    def price(self, level: np.ndarray | int) -> np.ndarray:
        return np.exp(np.asarray(level, dtype=np.float64) * self.step)

    def touched_long(self, low: np.ndarray) -> np.ndarray:
        """Long levels k >= this are reached by a bar with this low (low <= price_k)."""
        return np.ceil(np.log(low) / self.step - 1e-9).astype(np.int64)

    def touched_short(self, high: np.ndarray) -> np.ndarray:
        """Short levels k <= this are reached by a bar with this high (high >= price_k)."""
        return np.floor(np.log(high) / self.step + 1e-9).astype(np.int64)


@dataclass
class SeedCarry:
    """What seeding needs to remember between calls, so seeding bar by bar equals seeding a whole series."""

    prev_oi: float = math.nan
    sum_new_oi: float = 0.0  # sum of positive OI changes where turnover was also known
    sum_turnover: float = 0.0  # sum of traded USD over those same bars
    bars_oi: int = 0  # bars seeded from OI changes
    bars_volume: int = 0  # bars seeded from the volume proxy

    def mode(self) -> str:
        if self.bars_volume == 0 and self.bars_oi > 0:
            return "oi"
        if self.bars_oi == 0:
            return "volume"
        return "hybrid"


@dataclass(frozen=True)
class Seeds:
    long_usd: np.ndarray  # new leveraged long exposure opened in each bar (USD)
    short_usd: np.ndarray
    log_shrink: np.ndarray  # log of the share of positions that survive the bar's OI drop (<= 0)


def seed_exposure(bars: Bars, params: ModelParams, carry: SeedCarry) -> Seeds:
    """Seeds per bar. Updates ``carry`` in place. Causal: bar j uses only bars up to j."""
    n = len(bars)
    price = (bars.high + bars.low + bars.close) / 3.0
    turnover = None if bars.volume is None else np.nan_to_num(bars.volume, nan=0.0) * price

    oi = bars.oi_usd if (bars.oi_usd is not None and params.seed_mode != "volume") else None
    if oi is not None:
        # previous known OI (forward-filled across gaps, carried in from earlier calls)
        idx = np.where(np.isfinite(oi), np.arange(n), -1)
        last = np.maximum.accumulate(idx)
        prev_idx = np.r_[-1, last[:-1]]
        prev = np.where(prev_idx >= 0, oi[np.maximum(prev_idx, 0)], carry.prev_oi)
        known = np.isfinite(oi) & np.isfinite(prev)
        d_oi = np.where(known, oi - np.where(known, prev, 0.0), 0.0)
        new_oi = np.maximum(d_oi, 0.0)
        if params.shrink_on_oi_drop:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(known & (d_oi < 0) & (prev > 0), oi / np.where(prev > 0, prev, 1.0), 1.0)
            log_shrink = np.log(np.clip(ratio, 1e-12, 1.0))
        else:
            log_shrink = np.zeros(n)
        if np.isfinite(oi).any():
            carry.prev_oi = float(oi[last[-1]])
    else:
        if params.seed_mode == "oi":
            raise BarsError("seed mode 'oi' needs an oi_usd column; use 'auto' or 'volume'")
        known = np.zeros(n, dtype=bool)
        new_oi = np.zeros(n)
        log_shrink = np.zeros(n)

    if turnover is None:
        if not known.any() and params.seed_mode != "oi":
            raise BarsError("bars need a volume column or an oi_usd column to seed exposure")
        seed = new_oi
        proxy_used = np.zeros(n, dtype=bool)
    else:
        if params.seed_mode == "volume" or oi is None:
            scale = np.full(n, params.volume_proxy_fraction)
        else:
            # Causal scale of the proxy: positive OI change per USD traded, over the bars seen so far
            # where both were known. Until there is any, the configured fraction.
            both = known & (turnover > 0)
            num = carry.sum_new_oi + np.cumsum(np.where(both, new_oi, 0.0))
            den = carry.sum_turnover + np.cumsum(np.where(both, turnover, 0.0))
            scale = np.where(den > 0, num / np.where(den > 0, den, 1.0), params.volume_proxy_fraction)
            carry.sum_new_oi = float(num[-1]) if n else carry.sum_new_oi
            carry.sum_turnover = float(den[-1]) if n else carry.sum_turnover
        proxy_used = ~known if params.seed_mode != "oi" else np.zeros(n, dtype=bool)
        seed = np.where(known, new_oi, np.where(proxy_used, turnover * scale, 0.0))

    carry.bars_oi += int(known.sum())
    carry.bars_volume += int(proxy_used.sum())

    # Sides: each new contract has a long and a short; aggressive buying means the leveraged side is
    # more likely long. Imbalance in [-1, 1] from taker volumes, else from the candle's direction.
    if bars.has_taker:
        buy = np.nan_to_num(bars.taker_buy_volume, nan=0.0)  # type: ignore[arg-type]
        sell = np.nan_to_num(bars.taker_sell_volume, nan=0.0)  # type: ignore[arg-type]
        tot = buy + sell
        candle = _candle_direction(bars)
        imb = np.where(tot > 0, (buy - sell) / np.where(tot > 0, tot, 1.0), candle)
    else:
        imb = _candle_direction(bars)
    tilt = params.side_tilt * np.clip(imb, -1.0, 1.0)
    return Seeds(seed * (1.0 + tilt), seed * (1.0 - tilt), log_shrink)


def _candle_direction(bars: Bars) -> np.ndarray:
    rng = bars.high - bars.low
    return np.where(rng > 0, (bars.close - bars.open) / np.where(rng > 0, rng, 1.0), 0.0)


@dataclass(frozen=True)
class Cohorts:
    """Flat arrays, one entry per cohort. ``birth`` indexes the bar it was opened in (global index)."""

    birth: np.ndarray  # int64
    side: np.ndarray  # int8: 0 long, 1 short
    tier: np.ndarray  # int8: index into the ladder
    level: np.ndarray  # int64 level-book index of the liquidation price
    usd: np.ndarray  # float64 notional at birth

    def __len__(self) -> int:
        return len(self.birth)


def build_cohorts(bars: Bars, params: ModelParams, seeds: Seeds, grid: LevelGrid, first_index: int = 0) -> Cohorts:
    """All cohorts opened by ``bars`` (vectorised over bars x sides x tiers x anchors)."""
    n = len(bars)
    lev = np.asarray(params.ladder.leverage)
    w_tier = np.asarray(params.ladder.weights)
    mmr = params.mmr()
    anchors = np.asarray(params.entry_anchors)
    w_anchor = np.asarray(params.entry_weights, dtype=np.float64)
    w_anchor = w_anchor / w_anchor.sum()
    t, e = len(lev), len(anchors)

    entry = bars.low[:, None] + anchors[None, :] * (bars.high - bars.low)[:, None]  # (n, E)
    levels = np.empty((n, 2, t, e), dtype=np.int64)
    for side in (LONG, SHORT):
        liq = liquidation_price(entry[:, None, :], lev[None, :, None], mmr[None, :, None], side, params.contract)
        levels[:, side] = grid.level(np.where(np.isfinite(liq) & (liq > 0), liq, 1e-300))
    side_usd = np.stack([seeds.long_usd, seeds.short_usd], axis=1)  # (n, 2)
    usd = side_usd[:, :, None, None] * w_tier[None, None, :, None] * w_anchor[None, None, None, :]

    keep = usd > 0
    if params.contract == "inverse":
        keep &= levels > grid.level(np.array([1e-300]))[0]
    birth = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None, None, None] + first_index, usd.shape)
    side_ix = np.broadcast_to(np.arange(2, dtype=np.int8)[None, :, None, None], usd.shape)
    tier_ix = np.broadcast_to(np.arange(t, dtype=np.int8)[None, None, :, None], usd.shape)
    return Cohorts(birth[keep], side_ix[keep], tier_ix[keep], levels[keep], usd[keep])
