"""What the faces show: heatmap grids, the liquidation map, zones. Plain containers plus the pure
functions that build them from outstanding notional per price level."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ViewError(ValueError):
    """Bad view parameters (one line for the user)."""


MAX_BINS = 5000
MAX_COLUMNS = 20000


def price_edges(low: float, high: float, bins: int, log: bool = False) -> np.ndarray:
    """Bin edges over [low, high]: ``bins`` linear or log-spaced bins."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 or high <= low:
        raise ViewError(f"price range must be positive and increasing, got {low}..{high}")
    if not (1 <= bins <= MAX_BINS):
        raise ViewError(f"bins must be between 1 and {MAX_BINS}, got {bins}")
    if log:
        return np.exp(np.linspace(np.log(low), np.log(high), bins + 1))
    return np.linspace(low, high, bins + 1)


def bin_of(edges: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Bin index per price; -1 outside [edges[0], edges[-1])."""
    b = np.searchsorted(edges, price, side="right") - 1
    return np.where((b >= 0) & (b < len(edges) - 1), b, -1)


@dataclass(frozen=True)
class Heatmap:
    """Outstanding estimated notional (USD) per column time x price bin x tier, per side.
    Column c is the book as it stood at ``times[c]`` (only bars closed by then)."""

    times: np.ndarray  # (C,) UNIX seconds
    edges: np.ndarray  # (B + 1,) prices
    long_usd: np.ndarray  # (C, B, T)
    short_usd: np.ndarray  # (C, B, T)
    tiers: tuple[str, ...]

    def total(self, tier: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(long, short) as (C, B), summed over tiers or for one tier."""
        if tier is None:
            return self.long_usd.sum(axis=2), self.short_usd.sum(axis=2)
        return self.long_usd[:, :, tier], self.short_usd[:, :, tier]


@dataclass(frozen=True)
class LiquidationMap:
    """The book now: outstanding notional per price bin and tier, plus cumulative curves running
    outward from the current price (longs below it, shorts above it)."""

    price: float
    edges: np.ndarray  # (B + 1,)
    long_usd: np.ndarray  # (B, T)
    short_usd: np.ndarray  # (B, T)
    tiers: tuple[str, ...]

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """(long_below, short_above) per bin: USD of longs liquidated if price falls to that bin,
        shorts if it rises to it. Zero on the far side of the current price."""
        c = self.centers
        longs = self.long_usd.sum(axis=1)
        shorts = self.short_usd.sum(axis=1)
        below = c <= self.price
        above = c >= self.price
        lb = np.where(below, longs, 0.0)
        sa = np.where(above, shorts, 0.0)
        # running outward from the price: reverse cumsum below, forward cumsum above
        long_below = np.where(below, np.cumsum(lb[::-1])[::-1], 0.0)
        short_above = np.where(above, np.cumsum(sa), 0.0)
        return long_below, short_above


GRADES = ("low", "elevated", "high")


@dataclass(frozen=True)
class Zone:
    side: str  # "long" (liquidated if price falls into it) or "short"
    price_low: float
    price_high: float
    peak_price: float
    usd: float
    grade: str  # low | elevated | high
    share_of_daily_volume: float | None  # zone USD / average daily traded USD
    percentile: float  # of the zone's peak bin among all non-empty bins (0-100)
    distance_pct: float  # from the current price to the nearest edge, signed (+ above)
    tier_usd: tuple[float, ...]  # breakdown by tier

    def to_dict(self) -> dict[str, object]:
        return {
            "side": self.side,
            "price_low": self.price_low,
            "price_high": self.price_high,
            "peak_price": self.peak_price,
            "usd": self.usd,
            "grade": self.grade,
            "share_of_daily_volume": self.share_of_daily_volume,
            "percentile": self.percentile,
            "distance_pct": self.distance_pct,
            "tier_usd": list(self.tier_usd),
        }


# Grade thresholds: share of average daily traded USD sitting in one zone. Chosen so that on a month of
# BTC only the few largest clusters (several % of a day's volume) read "high".
HIGH_SHARE, ELEVATED_SHARE = 0.05, 0.015
# Without volume: percentile of the zone's peak bin.
HIGH_PCT, ELEVATED_PCT = 97.0, 90.0


def find_zones(
    lmap: LiquidationMap,
    daily_volume_usd: float | None = None,
    threshold_pct: float = 80.0,
    max_zones: int = 20,
) -> list[Zone]:
    """Contiguous price ranges whose bins stand above the ``threshold_pct`` percentile of non-empty bins,
    per side (long zones below the price, short zones above), strongest first."""
    zones: list[Zone] = []
    c = lmap.centers
    for side, by_tier in (("long", lmap.long_usd), ("short", lmap.short_usd)):
        prof = by_tier.sum(axis=1)
        on_side = (c <= lmap.price) if side == "long" else (c >= lmap.price)
        prof = np.where(on_side, prof, 0.0)
        nonzero = prof[prof > 0]
        if len(nonzero) == 0:
            continue
        thr = float(np.percentile(nonzero, threshold_pct))
        sorted_nz = np.sort(nonzero)
        hot = prof >= thr
        hot &= prof > 0
        # runs of consecutive hot bins
        d = np.diff(np.r_[0, hot.astype(np.int8), 0])
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        for s, e in zip(starts, ends, strict=True):
            usd = float(prof[s:e].sum())
            peak = s + int(np.argmax(prof[s:e]))
            pct = 100.0 * float(np.searchsorted(sorted_nz, prof[peak], side="right")) / len(sorted_nz)
            share = usd / daily_volume_usd if daily_volume_usd and daily_volume_usd > 0 else None
            if share is not None:
                grade = "high" if share >= HIGH_SHARE else "elevated" if share >= ELEVATED_SHARE else "low"
            else:
                grade = "high" if pct >= HIGH_PCT else "elevated" if pct >= ELEVATED_PCT else "low"
            lo, hi = float(lmap.edges[s]), float(lmap.edges[e])
            if side == "long":
                dist = (min(hi, lmap.price) - lmap.price) / lmap.price * 100.0
            else:
                dist = (max(lo, lmap.price) - lmap.price) / lmap.price * 100.0
            zones.append(
                Zone(
                    side,
                    lo,
                    hi,
                    float(c[peak]),
                    usd,
                    grade,
                    share,
                    round(pct, 2),
                    dist,
                    tuple(float(x) for x in by_tier[s:e].sum(axis=0)),
                )
            )
    zones.sort(key=lambda z: z.usd, reverse=True)
    return zones[:max_zones]


def level_shares(edges: np.ndarray, centres: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """How each level-book level splits over display bins: (bins, shares), both (K, P), bin -1 = none.

    A level stands for its cell of the log-spaced level grid (``step`` wide in log price, centred on it).
    Putting all of its USD in the bin holding its centre aliases whenever the display bins do not hold a
    whole number of cells: bins alternately get one level or two (or none), and a smooth book shows as
    horizontal stripes. So each level's USD is split by how much of its cell overlaps each bin — the total
    inside the edges is unchanged, only where it is drawn."""
    nb = len(edges) - 1
    le = np.log(np.asarray(edges, dtype=np.float64))
    a = np.asarray(centres, dtype=np.float64) - step / 2
    b = a + step
    first = np.searchsorted(le, a, side="right") - 1  # bin holding the cell's low end (-1: below)
    last = np.searchsorted(le, b, side="left") - 1  # bin holding its high end
    pieces = int((last - first).max()) + 1 if len(a) else 1
    j = first[:, None] + np.arange(pieces)[None, :]
    jc = np.clip(j, 0, nb - 1)
    share = (np.minimum(b[:, None], le[jc + 1]) - np.maximum(a[:, None], le[jc])) / step
    ok = (j >= 0) & (j < nb) & (j <= last[:, None]) & (share > 0)
    return np.where(ok, j, -1), np.where(ok, share, 0.0)


def bin_levels(
    prices: np.ndarray, usd: np.ndarray, side: np.ndarray, tier: np.ndarray, edges: np.ndarray, n_tiers: int,
    step: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum USD into (bins, tiers) per side. Outside the edges is dropped. With ``step`` (the level grid's
    log step) each level is spread over the bins its cell overlaps (see level_shares)."""
    nb = len(edges) - 1
    if step is None:
        b = bin_of(edges, prices)
        ok = b >= 0
        flat = (side[ok].astype(np.int64) * nb + b[ok]) * n_tiers + tier[ok]
        weights = usd[ok]
    else:
        bins, shares = level_shares(edges, np.log(prices), step)
        row, piece = np.nonzero(bins >= 0)
        flat = (side[row].astype(np.int64) * nb + bins[row, piece]) * n_tiers + tier[row]
        weights = usd[row] * shares[row, piece]
    out = np.bincount(flat, weights=weights, minlength=2 * nb * n_tiers).reshape(2, nb, n_tiers)
    return out[0], out[1]
