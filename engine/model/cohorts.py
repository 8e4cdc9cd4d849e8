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
from .margin import LONG, SHORT


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
    bars_volume: int = 0  # bars seeded from the volume proxy because their OI was missing

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
        # the bar where the OI series begins has no change to read yet: it is seeded by the proxy, but
        # it is the start of OI data, not OI missing, so it does not make an all-OI input "hybrid"
        opening = np.isfinite(oi) & ~np.isfinite(prev)
        d_oi = np.where(known, oi - np.where(known, prev, 0.0), 0.0)
        new_oi = np.maximum(d_oi, 0.0)
        if params.shrink_on_oi_drop:
            # log of the surviving share where OI fell; 0 (log 1) elsewhere, without taking it
            drop = np.flatnonzero(known & (d_oi < 0) & (prev > 0))
            log_shrink = np.zeros(n)
            log_shrink[drop] = np.log(np.clip(oi[drop] / prev[drop], 1e-12, 1.0))
        else:
            log_shrink = np.zeros(n)
        if np.isfinite(oi).any():
            carry.prev_oi = float(oi[last[-1]])
    else:
        if params.seed_mode == "oi":
            raise BarsError("seed mode 'oi' needs an oi_usd column; use 'auto' or 'volume'")
        known = np.zeros(n, dtype=bool)
        opening = known
        new_oi = np.zeros(n)
        log_shrink = np.zeros(n)

    if turnover is None:
        # Decided by the columns, not by the values: a first bar whose OI change is not known yet must
        # seed nothing (as it does inside a longer batch), not fail when fed on its own.
        if oi is None:
            raise BarsError(
                "seed mode 'volume' needs a volume column"
                if params.seed_mode == "volume"
                else "bars need a volume column or an oi_usd column to seed exposure"
            )
        seed = new_oi
        proxy_used = np.zeros(n, dtype=bool)
    else:
        if params.seed_mode == "volume" or oi is None:
            scale = np.full(n, params.proxy_fraction)
        else:
            # Causal scale of the proxy: positive OI change per USD traded, over the bars seen so far
            # where both were known. Until there is any, the configured fraction.
            both = known & (turnover > 0)
            num = carry.sum_new_oi + np.cumsum(np.where(both, new_oi, 0.0))
            den = carry.sum_turnover + np.cumsum(np.where(both, turnover, 0.0))
            scale = np.where(den > 0, num / np.where(den > 0, den, 1.0), params.proxy_fraction)
            carry.sum_new_oi = float(num[-1]) if n else carry.sum_new_oi
            carry.sum_turnover = float(den[-1]) if n else carry.sum_turnover
        proxy_used = ~known if params.seed_mode != "oi" else np.zeros(n, dtype=bool)
        seed = np.where(known, new_oi, np.where(proxy_used, turnover * scale, 0.0))

    carry.bars_oi += int(known.sum())
    carry.bars_volume += int((proxy_used & ~opening).sum())

    # Sides: each new contract has a long and a short; aggressive buying means the leveraged side is
    # more likely long. Imbalance in [-1, 1] from taker volumes, else from the candle's direction.
    if bars.has_taker:
        buy = np.nan_to_num(bars.taker_buy_volume, nan=0.0)  # type: ignore[arg-type]
        sell = np.nan_to_num(bars.taker_sell_volume, nan=0.0)  # type: ignore[arg-type]
        tot = buy + sell
        flow = tot > 0
        imb = (buy - sell) / np.where(flow, tot, 1.0)
        if not flow.all():  # the candle's direction where no taker volume is known
            imb = np.where(flow, imb, _candle_direction(bars))
    else:
        imb = _candle_direction(bars)
    tilt = params.side_tilt * np.clip(imb, -1.0, 1.0)
    return Seeds(seed * (1.0 + tilt), seed * (1.0 - tilt), log_shrink)


def _candle_direction(bars: Bars) -> np.ndarray:
    rng = bars.high - bars.low
    return np.where(rng > 0, (bars.close - bars.open) / np.where(rng > 0, rng, 1.0), 0.0)


@dataclass(frozen=True)
class Cohorts:
    """Flat arrays, one entry per cohort: all longs, then all shorts (nothing else about the order is
    promised). ``birth`` indexes the bar it was opened in (global index). Entry anchors of one bar that
    snap to the same level are one cohort: they share a birth, a level and so a death, and keeping them
    apart would only cost time. 32-bit indices: a year of 1-minute bars makes tens of millions of cohorts,
    and memory traffic, not arithmetic, is what they cost."""

    birth: np.ndarray  # int32
    side: np.ndarray  # int8: 0 long, 1 short
    tier: np.ndarray  # int8: index into the ladder
    level: np.ndarray  # int32 level-book index of the liquidation price
    usd: np.ndarray  # float64 notional at birth

    def __len__(self) -> int:
        return len(self.birth)


def build_cohorts(bars: Bars, params: ModelParams, seeds: Seeds, grid: LevelGrid, first_index: int = 0) -> Cohorts:
    """All cohorts opened by ``bars`` (vectorised over bars x sides x tiers x anchors).

    Every published isolated formula is proportional to the entry (``ModelParams.liquidation_factors``),
    so a level is rint((log(entry) + log(factor)) / step): one logarithm per (bar, anchor), not per
    cohort. Positions that can never be liquidated (a 1x long) are not liquidation levels and are left out.
    """
    w_tier = np.asarray(params.ladder.weights, dtype=np.float64)
    factors = params.liquidation_factors()  # (2, T)
    tier_ok = np.isfinite(factors) & (factors > 0) & (w_tier[None, :] > 0)
    log_f = np.log(np.where(tier_ok, factors, 1.0))
    # anchors ascending, so levels along the anchor axis are sorted and equal ones sit side by side
    order = np.argsort(np.asarray(params.entry_anchors, dtype=np.float64), kind="stable")
    anchors = np.asarray(params.entry_anchors, dtype=np.float64)[order]
    w_anchor = np.asarray(params.entry_weights, dtype=np.float64)[order]
    w_anchor = w_anchor / w_anchor.sum()
    t, e = len(w_tier), len(anchors)
    if first_index + len(bars) >= 2**31:
        raise BarsError("more than 2^31 bars in one history")

    opened = []
    for side, side_usd in ((LONG, seeds.long_usd), (SHORT, seeds.short_usd)):
        rows = np.flatnonzero(side_usd > 0)  # bars that opened anything on this side
        opened.append(rows if tier_ok[side].any() else rows[:0])
    # Written straight into arrays sized for the most cohorts there could be; np.empty does not touch
    # the memory, so the unused tail costs address space only, and no concatenation copies it all again.
    most = sum(len(r) for r in opened) * t * e
    out = Cohorts(
        np.empty(most, np.int32), np.empty(most, np.int8), np.empty(most, np.int8), np.empty(most, np.int32),
        np.empty(most, np.float64),
    )
    pos = 0
    for side, side_usd in ((LONG, seeds.long_usd), (SHORT, seeds.short_usd)):
        # in chunks of bars, so the (tier, anchor, bar) temporaries stay small
        for lo in range(0, len(opened[side]), _ROWS):
            rows = opened[side][lo : lo + _ROWS]
            pos = _side_cohorts(
                bars, rows, side_usd, side, log_f[side], tier_ok[side], anchors, w_anchor, w_tier, grid, out, pos
            )
    if first_index:
        out.birth[:pos] += first_index
    return Cohorts(out.birth[:pos], out.side[:pos], out.tier[:pos], out.level[:pos], out.usd[:pos])


_ROWS = 1 << 14  # bars per chunk when building cohorts (fastest measured: temporaries stay in cache)


def _side_cohorts(
    bars: Bars,
    rows: np.ndarray,
    side_usd: np.ndarray,
    side: int,
    log_f: np.ndarray,
    tier_ok: np.ndarray,
    anchors: np.ndarray,
    w_anchor: np.ndarray,
    w_tier: np.ndarray,
    grid: LevelGrid,
    out: Cohorts,
    pos: int,
) -> int:
    """Write one side's cohorts opened by the bars ``rows`` into ``out`` from ``pos``; returns the new end."""
    t, e = len(w_tier), len(anchors)
    # Layout (tier, anchor, bar): the long axis innermost keeps every numpy loop long and contiguous.
    low = bars.low[rows]
    log_entry = np.log(low[None, :] + anchors[:, None] * (bars.high[rows] - low)[None, :])  # (E, R)
    x = log_entry[None, :, :] + log_f[:, None, None]  # (T, E, R)
    x *= 1.0 / grid.step
    np.rint(x, out=x)
    levels = x.astype(np.int32)
    del x
    usd = side_usd[rows][None, None, :] * (w_tier[:, None, None] * w_anchor[None, :, None])  # (T, E, R)
    # Anchors that snap to the same level are one cohort: levels rise with the anchor, so equal ones
    # are neighbours; each run's total goes to its first anchor and the others drop out.
    for a in range(e - 1, 0, -1):  # from the last anchor down, so a run collects into its first
        moved = usd[:, a] * (levels[:, a] == levels[:, a - 1])  # plain arithmetic beats masked ufuncs
        usd[:, a - 1] += moved
        usd[:, a] -= moved  # exactly 0 where moved
    if not tier_ok.all():
        usd[~tier_ok] = 0.0
    keep = (usd > 0).ravel()
    kept = np.flatnonzero(keep)
    end = pos + len(kept)
    np.take(usd.ravel(), kept, out=out.usd[pos:end])
    np.take(levels.ravel(), kept, out=out.level[pos:end])
    np.take(np.tile(rows.astype(np.int32), t * e), kept, out=out.birth[pos:end])
    per_tier = np.diff(np.searchsorted(kept, np.arange(t + 1) * (e * len(rows))))  # kept cohorts per tier
    out.tier[pos:end] = np.repeat(np.arange(t, dtype=np.int8), per_tier)
    out.side[pos:end] = side
    return end
