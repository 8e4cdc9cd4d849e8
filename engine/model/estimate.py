"""The batch estimate: every cohort of a history, when each one is liquidated, and the views over time.

Value of a cohort born in bar b, seen after bar j closed (j >= b): usd * exp(F[tier, j] - F[tier, b]),
where F = cumulative log survival from OI drops - decay rate * time. Both are separable in b and j, which
is what lets a heatmap column be built for all cohorts at once instead of walking bar by bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bars import TIMEFRAMES, WEEK_OFFSET, Bars, typical_price
from .binning import Binning
from .cohorts import Cohorts, LevelGrid, SeedCarry, build_cohorts, seed_exposure
from .ladder import ModelParams
from .lifetime import FirstTouch
from .margin import LONG, SHORT
from .views import (
    Heatmap,
    LiquidationMap,
    ViewError,
    Zone,
    bin_levels,
    bin_of,
    find_zones,
    level_shares,
    price_edges,
)

WICK, BODY = 0, 1  # which part of a bar clears a piece (body only matters with partial wick clearing)
_CHUNK = 1 << 18  # cohorts per chunk in the realised pass (temporaries stay in cache)
_CHUNK_HEATMAP = 1 << 20  # cohorts per chunk in the heatmap (bounds its temporaries, few Python calls)


@dataclass(frozen=True)
class Realised:
    """Estimated liquidations per bar (USD): what the model says was force-closed in that bar."""

    time: np.ndarray
    long_usd: np.ndarray
    short_usd: np.ndarray


@dataclass(frozen=True)
class LevelBook:
    """Outstanding notional per level-book price level, side and tier, at one moment."""

    grid: LevelGrid
    kmin: int
    usd: np.ndarray  # (2, T, K)
    price: float  # last close
    time: int  # when (UNIX seconds, close of the last bar included)
    tiers: tuple[str, ...]

    def prices(self) -> np.ndarray:
        return self.grid.price(np.arange(self.kmin, self.kmin + self.usd.shape[2]))

    def binned(self, edges: np.ndarray, spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(long, short) USD per (bin, tier). ``spread``: each level's USD split over the bins its grid cell
        overlaps, as the heatmap's columns are (for drawing; zones and scoring keep whole levels)."""
        nb, t = len(edges) - 1, self.usd.shape[1]
        if self.usd.shape[2] == 0:
            return np.zeros((nb, t)), np.zeros((nb, t))
        k = self.usd.shape[2]
        prices = np.broadcast_to(self.prices(), (2, t, k))
        side = np.broadcast_to(np.arange(2)[:, None, None], (2, t, k))
        tier = np.broadcast_to(np.arange(t)[None, :, None], (2, t, k))
        nz = self.usd > 0
        return bin_levels(prices[nz], self.usd[nz], side[nz], tier[nz], edges, t, step=self.grid.step if spread else None)

    def liquidation_map(
        self, edges: np.ndarray | None = None, bins: int = 200, span: float = 0.25, log: bool = False,
        spread: bool = False,
    ) -> LiquidationMap:
        if edges is None:
            if not (0.0 < span < 0.95):
                raise ViewError("map span must be between 0 and 0.95 of the price")
            edges = price_edges(self.price * (1 - span), self.price * (1 + span), bins, log)
        longs, shorts = self.binned(edges, spread)
        return LiquidationMap(self.price, edges, longs, shorts, self.tiers)

    def zones(self, daily_volume_usd: float | None = None, bins: int = 200, span: float = 0.25) -> list[Zone]:
        return find_zones(self.liquidation_map(bins=bins, span=span), daily_volume_usd)

    def total(self) -> tuple[float, float]:
        return float(self.usd[LONG].sum()), float(self.usd[SHORT].sum())


def reach_arrays(bars: Bars, grid: LevelGrid, wick_clear: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per piece kind, (long reach, short reach negated): bar j clears long level k if long_reach[j] <= k
    and short level k if short_reach[j] <= -k."""
    kinds = [(grid.touched_long(bars.low), -grid.touched_short(bars.high))]
    if wick_clear < 1.0:
        body_lo = np.minimum(bars.open, bars.close)
        body_hi = np.maximum(bars.open, bars.close)
        kinds.append((grid.touched_long(body_lo), -grid.touched_short(body_hi)))
    return kinds


def piece_shares(wick_clear: float) -> tuple[float, ...]:
    """A cohort splits into a piece cleared by any touch (wick) and, with partial wick clearing, a piece
    cleared only when a candle body reaches the level."""
    return (wick_clear,) if wick_clear >= 1.0 else (wick_clear, 1.0 - wick_clear)


def log_factor(bars: Bars, params: ModelParams, log_shrink: np.ndarray) -> np.ndarray:
    """F[tier, j]: cumulative log survival up to and including bar j (time measured from the first close)."""
    rates = params.decay_rates()
    t = (bars.close_time - bars.close_time[0]).astype(np.float64)
    F = np.multiply.outer(rates, t)  # (T, n), then the survival minus it in place: no (T, n) temporaries
    return np.subtract(np.cumsum(log_shrink), F, out=F)


def daily_volume_usd(bars: Bars, days: float = 30.0) -> float | None:
    """Average traded USD per day over the last ``days`` (None without volume)."""
    if bars.volume is None or len(bars) == 0:
        return None
    start = bars.close_time[-1] - days * 86_400
    sel = bars.time >= start
    span_days = max((bars.close_time[-1] - bars.time[sel][0]) / 86_400, 1e-9)
    return float(np.nansum(bars.volume[sel] * typical_price(bars)[sel]) / span_days)


class Estimate:
    """Batch estimate over a whole history. Build with :func:`estimate`."""

    NORMALISED_SPAN = 600.0  # see heatmap(): exp(600) * any USD amount stays far below float overflow

    def __init__(self, bars: Bars, params: ModelParams) -> None:
        self.bars = bars
        self.params = params
        self.grid = LevelGrid.for_resolution(params.resolution)
        self.tiers = params.ladder.labels
        carry = SeedCarry()
        seeds = seed_exposure(bars, params, carry)
        self.seed_mode = carry.mode()
        self.seed_carry = carry
        base = build_cohorts(bars, params, seeds, self.grid)
        self.F = log_factor(bars, params, seeds.log_shrink)
        shares = piece_shares(params.wick_clear)
        reaches = reach_arrays(bars, self.grid, params.wick_clear)
        nlong = int(np.searchsorted(base.side, SHORT))  # cohorts come longs first
        pieces: list[Cohorts] = []
        deaths: list[np.ndarray] = []
        for share, (long_reach, short_reach) in zip(shares, reaches, strict=True):
            death = np.empty(len(base), dtype=np.int32)  # bar index, len(bars) = never (in the data)
            FirstTouch(long_reach).first(base.birth[:nlong] + 1, base.level[:nlong], out=death[:nlong])
            FirstTouch(short_reach).first(base.birth[nlong:] + 1, -base.level[nlong:], out=death[nlong:])
            pieces.append(Cohorts(base.birth, base.side, base.tier, base.level, base.usd * share if share != 1.0 else base.usd))
            deaths.append(death)
        # piece[i]: 0 = cleared by any touch (wick), 1 = cleared only by a candle body (wick_clear < 1)
        self.piece = np.repeat(np.arange(len(pieces), dtype=np.int8), len(base))
        if len(pieces) == 1:
            self.cohorts, self.death = pieces[0], deaths[0]
        else:
            self.cohorts = Cohorts(
                *(np.concatenate([getattr(p, f) for p in pieces]) for f in ("birth", "side", "tier", "level", "usd"))
            )
            self.death = np.concatenate(deaths)

    # ---- views ------------------------------------------------------------------------------------
    @property
    def realised(self) -> Realised:
        """Each cohort's value when the bar that reached it closed out, summed per bar and side."""
        n = len(self.bars)
        c = self.cohorts
        f = self.F.ravel()
        out = np.zeros(2 * n)  # long bars, then short bars
        for lo in range(0, len(c), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            d = self.death[sl]
            dead = np.flatnonzero(d < n)
            dd = d[dead].astype(np.int64)
            row = c.tier[sl][dead].astype(np.int64) * n
            value = f[row + dd - 1] - f[row + c.birth[sl][dead]]  # aged up to the bar before the touch
            np.exp(value, out=value)
            value *= c.usd[sl][dead]
            np.add.at(out, c.side[sl][dead].astype(np.int64) * n + dd, value)
        return Realised(self.bars.time.copy(), out[:n].copy(), out[n:].copy())

    def book(self, n: int | None = None) -> LevelBook:
        """The level book after the first ``n`` bars closed (default: all)."""
        nbars = len(self.bars)
        n = nbars if n is None else int(n)
        t = len(self.tiers)
        if n <= 0:
            return LevelBook(self.grid, 0, np.zeros((2, t, 0)), float(self.bars.open[0]), int(self.bars.time[0]), self.tiers)
        c = self.cohorts
        alive = (c.birth < n) & (self.death >= n)
        lv = c.level[alive]
        kmin = int(lv.min()) if len(lv) else 0
        k = int(lv.max()) - kmin + 1 if len(lv) else 0
        value = c.usd[alive] * np.exp(self.F[c.tier[alive], n - 1] - self.F[c.tier[alive], c.birth[alive]])
        flat = (c.side[alive].astype(np.int64) * t + c.tier[alive]) * k + (lv - kmin)
        usd = np.bincount(flat, weights=value, minlength=2 * t * k).reshape(2, t, k)
        return LevelBook(self.grid, kmin, usd, float(self.bars.close[n - 1]), int(self.bars.close_time[n - 1]), self.tiers)

    def liquidation_map(self, bins: int = 200, span: float = 0.25, log: bool = False) -> LiquidationMap:
        return self.book().liquidation_map(bins=bins, span=span, log=log)

    def zones(self, bins: int = 200, span: float = 0.25) -> list[Zone]:
        return self.book().zones(daily_volume_usd(self.bars), bins=bins, span=span)

    def column_times(self, step: int, columns: int | None = None) -> np.ndarray:
        """Column times every ``step`` seconds (aligned to UTC multiples of the step), ending at the last
        close; at most ``columns`` of the newest."""
        first = int(self.bars.close_time[0])
        last = int(self.bars.close_time[-1])
        offset = WEEK_OFFSET if step % TIMEFRAMES["1w"] == 0 else 0  # weekly columns on Mondays, like candles
        start = -(-(first - offset) // step) * step + offset
        times = np.arange(start, last + 1, step, dtype=np.int64)
        if len(times) == 0 or times[-1] != last:
            times = np.r_[times, last]
        if columns is not None:
            times = times[-columns:]
        return times

    def heatmap(
        self,
        times: np.ndarray | None = None,
        edges: np.ndarray | None = None,
        step: int | None = None,
        columns: int | None = None,
        bins: int = 200,
        log: bool = False,
        by_tier: bool = True,
        tier: int | None = None,
        spread: bool = False,
    ) -> Heatmap:
        """Outstanding notional at each column time, binned on ``edges`` (default: the traded price range
        widened by 10% each side), as float32. Per tier unless ``by_tier`` is False (one summed tier,
        "all"); only tier ``tier`` when given. ``spread``: each level's USD split over the bins its grid
        cell overlaps (level_shares: no striping where bins and grid disagree), else all of it in the bin
        holding the level's price."""
        if times is None:
            times = self.column_times(step or self.bars.timeframe, columns)
        times = np.asarray(times, dtype=np.int64)
        if len(times) > 1 and np.any(np.diff(times) < 0):
            raise ViewError("column times must be ascending")
        if edges is None:
            edges = price_edges(float(self.bars.low.min()) * 0.9, float(self.bars.high.max()) * 1.1, bins, log)
        if tier is not None and not (0 <= tier < len(self.tiers)):
            raise ViewError(f"tier must be between 0 and {len(self.tiers) - 1}")
        labels = (self.tiers[tier],) if tier is not None else self.tiers if by_tier else ("all",)
        ncol, nb = len(times), len(edges) - 1
        c = self.cohorts
        n = len(self.bars)
        closed = np.searchsorted(self.bars.close_time, times, side="right")  # bars closed by each column
        # first column that sees bar i closed (i = n: never), so a birth or a death maps to a column
        col_of = np.searchsorted(closed, np.arange(n + 1), side="right").astype(np.int32)
        sel = np.flatnonzero(c.tier == tier) if tier is not None else None
        levels = c.level[sel] if sel is not None else c.level
        # display bins of each level and its share of each (a level's USD is split over the bins its
        # grid cell overlaps: no stripes where bins and grid disagree), through a lookup table over the
        # levels in use; every (cohort, bin) piece then counts as a cohort of its own
        kmin = int(levels.min()) if len(levels) else 0
        kmax = int(levels.max()) if len(levels) else -1
        if spread:
            lut_bin, lut_share = level_shares(edges, np.arange(kmin, kmax + 1) * self.grid.step, self.grid.step)
        else:
            lut_bin = bin_of(edges, self.grid.price(np.arange(kmin, kmax + 1)))[:, None]
            lut_share = np.ones(lut_bin.shape)
        # per piece: each level's display bin (-1: none) and its share of the level, as contiguous columns
        luts = [(np.ascontiguousarray(lut_bin[:, j]).astype(np.int32), np.ascontiguousarray(lut_share[:, j]))
                for j in range(lut_bin.shape[1])]
        H = self.F[:, np.maximum(closed - 1, 0)]  # (T, C): each tier's log survival at each column
        binning = Binning(H[tier : tier + 1] if tier is not None else H, 2 * nb, split_tiers=by_tier or tier is not None)
        f_flat = self.F.ravel()
        total = len(sel) if sel is not None else len(c)
        # in chunks of cohorts: a long history's millions of cohorts never make full-length temporaries
        for lo in range(0, total, _CHUNK_HEATMAP):
            part = sel[lo : lo + _CHUNK_HEATMAP] if sel is not None else slice(lo, lo + _CHUNK_HEATMAP)
            birth = c.birth[part]
            appear, gone = col_of[birth], col_of[self.death[part]]
            seen = appear < gone
            level = c.level[part] - kmin
            for disp_of, share_of in luts:
                disp = disp_of[level]
                keep = np.flatnonzero(seen & (disp >= 0))
                if not len(keep):
                    continue
                cohort_tier = c.tier[part][keep].astype(np.int32)
                usd = c.usd[part][keep]
                if spread:
                    usd = usd * share_of[level[keep]]
                binning.add(
                    appear[keep], gone[keep], c.side[part][keep].astype(np.int32) * np.int32(nb) + disp[keep],
                    np.zeros(len(keep), dtype=np.int32) if tier is not None else cohort_tier, usd,
                    f_flat[cohort_tier * n + birth[keep]],
                )
        grid = binning.grid().reshape(ncol, 2, nb, -1)
        return Heatmap(times, edges, grid[:, LONG], grid[:, SHORT], labels)


def estimate(bars: Bars, params: ModelParams | None = None) -> Estimate:
    return Estimate(bars, params or ModelParams())
