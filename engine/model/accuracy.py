"""Accuracy measurement: the estimated book at many moments, and the figures that say whether it points
where liquidations happen. Pure numpy (no IO): engine/accuracy.py feeds it real recordings.

Why a separate path from :meth:`Estimate.book`: the scores need the book at every hour of months of
bars. ``Estimate.book(n)`` walks every cohort once per moment (months x hours x cohorts); here one pass
over the moments keeps a dense per-level book up to date — births added, deaths removed, everyone aged —
and bins each moment's book into price buckets centred on that moment's price. Same arithmetic, same
numbers (tests/analytics/test_accuracy_suite.py holds the two to it).

Moments ("windows") are scored against the events of the ``H`` hours after them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from .bars import Bars
from .estimate import Estimate


def bucket_count(bucket_pct: float, span_pct: float) -> int:
    """Log buckets of ``bucket_pct`` covering price /(1+span) .. price *(1+span) (the zone protocol's)."""
    return max(2, int(round(2 * math.log1p(span_pct / 100) / math.log1p(bucket_pct / 100))))


@dataclass(frozen=True)
class WindowBooks:
    """The book at each window time, per tier, binned on buckets centred on that window's price."""

    times: np.ndarray  # (W,) UNIX s: window start (the book is the one after the bars closed by then)
    closed: np.ndarray  # (W,) bars closed by each window time
    price: np.ndarray  # (W,) last close
    edges: np.ndarray  # (W, nb + 1) bucket edges
    usd: np.ndarray  # (T, W, 2, nb): USD per tier, window, side, bucket

    @property
    def buckets(self) -> int:
        return self.edges.shape[1] - 1


def window_books(est: Estimate, times: np.ndarray, bucket_pct: float = 0.25, span_pct: float = 10.0) -> WindowBooks:
    """The estimate's book after the bars closed by each of ``times`` (ascending), binned per tier."""
    bars = est.bars
    times = np.asarray(times, dtype=np.int64)
    closed = np.searchsorted(bars.close_time, times, side="right")
    w, t = len(times), len(est.tiers)
    nb = bucket_count(bucket_pct, span_pct)
    price = np.where(closed > 0, bars.close[np.maximum(closed - 1, 0)], bars.open[0])
    grow = 1 + span_pct / 100
    edges = np.exp(np.linspace(np.log(price / grow), np.log(price * grow), nb + 1, axis=1)) if w else np.zeros((0, nb + 1))
    out = np.zeros((t, w, 2, nb))
    c = est.cohorts
    if w == 0 or len(c) == 0:
        return WindowBooks(times, closed, price, edges, out)
    grid = est.grid
    # Only levels some window can see matter.
    klo = int(grid.level(np.array([float(edges[:, 0].min())]))[0]) - 1
    khi = int(grid.level(np.array([float(edges[:, -1].max())]))[0]) + 1
    cb = np.searchsorted(closed, c.birth, side="right")  # first window that sees the cohort born
    cd = np.searchsorted(closed, est.death, side="right")  # first window that sees it dead (w: none)
    keep = (cb < cd) & (c.level >= klo) & (c.level <= khi)
    birth, side, tier, level, usd = c.birth[keep], c.side[keep], c.tier[keep].astype(np.int64), c.level[keep], c.usd[keep]
    cb, cd = cb[keep], cd[keep]
    F = est.F
    H = F[:, np.maximum(closed - 1, 0)]  # (T, W) log survival at each window
    fb = F[tier, birth]
    val_b = usd * np.exp(H[tier, cb] - fb)  # value when first seen (exponent <= 0)
    dead = cd < w
    val_d = usd[dead] * np.exp(H[tier[dead], cd[dead]] - fb[dead])
    k = khi - klo + 1
    cell = (side.astype(np.int64) * t + tier) * k + (level - klo)
    # births and deaths as sparse per-window lists
    ob = np.argsort(cb, kind="stable")
    bstart = np.searchsorted(cb[ob], np.arange(w + 1))
    cell_b, vb = cell[ob], val_b[ob]
    od = np.argsort(cd[dead], kind="stable")
    dstart = np.searchsorted(cd[dead][od], np.arange(w + 1))
    cell_d, vd = cell[dead][od], val_d[od]
    state = np.zeros(2 * t * k)
    state3 = state.reshape(2, t, k)
    step = np.exp(np.diff(H, axis=1, prepend=H[:, :1]))  # (T, W) survival between windows
    # each window sees the m levels from its lowest edge up: gathered into a buffer, binned in chunks
    m = int(math.ceil((math.log(edges[0, -1]) - math.log(edges[0, 0])) / grid.step)) + 3
    lo = np.clip(np.floor(np.log(edges[:, 0]) / grid.step).astype(np.int64) - 1 - klo, 0, max(k - m, 0))
    m = min(m, k)
    chunk = max(1, min(w, (1 << 20) // (2 * t * m)))
    buf = np.empty((chunk, 2 * t, m))
    for c0 in range(0, w, chunk):
        c1 = min(w, c0 + chunk)
        for j in range(c0, c1):
            if j and closed[j] > closed[j - 1]:
                state3 *= step[None, :, j, None]
            a, b = bstart[j], bstart[j + 1]
            if b > a:
                np.add.at(state, cell_b[a:b], vb[a:b])
            a, b = dstart[j], dstart[j + 1]
            if b > a:
                np.subtract.at(state, cell_d[a:b], vd[a:b])
            buf[j - c0] = state3[:, :, lo[j] : lo[j] + m].reshape(2 * t, m)
        log_level = (klo + lo[c0:c1, None] + np.arange(m)[None, :]) * grid.step
        binned = _bin_chunk(buf[: c1 - c0], edges[c0:c1], log_level, nb)
        out[:, c0:c1] = binned.reshape(c1 - c0, 2, t, nb).transpose(2, 0, 1, 3)
    return WindowBooks(times, closed, price, edges, out)


def _bin_chunk(state: np.ndarray, edges: np.ndarray, log_level: np.ndarray, nb: int) -> np.ndarray:
    """(C, R, K) per-level USD -> (C, R, nb) per bucket, each window on its own geometric edges."""
    c, r, k = state.shape
    e0 = np.log(edges[:, :1])
    width = (np.log(edges[:, -1:]) - e0) / nb
    b = np.floor((log_level - e0) / width).astype(np.int64)  # (C, K), then exact against the edges
    lp = np.exp(log_level)
    bc = np.clip(b, 0, nb - 1)
    b = np.where(lp < np.take_along_axis(edges, bc, axis=1), b - 1, b)
    bc = np.clip(b, -1, nb - 1)
    b = np.where(lp >= np.take_along_axis(edges, bc + 1, axis=1), b + 1, b)
    ok = (b >= 0) & (b < nb)
    flat = (np.arange(c)[:, None, None] * r + np.arange(r)[None, :, None]) * nb + np.where(ok, b, 0)[:, None, :]
    weights = np.where(ok[:, None, :], np.maximum(state, 0.0), 0.0)
    return np.bincount(flat.ravel(), weights=weights.ravel(), minlength=c * r * nb).reshape(c, r, nb)


def realised_per_tier(est: Estimate) -> np.ndarray:
    """(T, 2, n): the estimate's realised liquidations per tier, side and bar (Estimate.realised, split)."""
    n, t = len(est.bars), len(est.tiers)
    c = est.cohorts
    d = est.death
    dead = np.flatnonzero(d < n)
    dd = d[dead].astype(np.int64)
    tier = c.tier[dead].astype(np.int64)
    value = c.usd[dead] * np.exp(est.F[tier, dd - 1] - est.F[tier, c.birth[dead]])
    flat = (tier * 2 + c.side[dead].astype(np.int64)) * n + dd
    return np.bincount(flat, weights=value, minlength=t * 2 * n).reshape(t, 2, n)


def touch_matrix(bars: Bars, books: WindowBooks, horizon_hours: float) -> np.ndarray:
    """(W, nb) chance price touches each bucket's near edge within the horizon: engine.model.touch's
    Student-t reflection model with its volatility (72 h) and kurtosis (720 h) windows, computed for every
    window at once from running sums of returns."""
    from .touch import _NU_MAX, KURTOSIS_DECAY, TAIL_REFERENCE_HOURS

    n = books.closed.astype(np.int64)
    r = np.diff(np.log(bars.close))
    sums = [np.r_[0.0, np.cumsum(r**p)] for p in (1, 2, 3, 4)]

    def moments(length: int) -> tuple[np.ndarray, ...]:
        end = np.maximum(n - 1, 0)  # returns r[0 .. n-2] exist once n bars closed
        start = np.maximum(end - length, 0)
        m = np.maximum(end - start, 1)
        return (m, *((s[end] - s[start]) / m for s in sums))

    per_window = max(int(72 * 3600 // bars.timeframe), 10)
    per_kurt = max(int(720 * 3600 // bars.timeframe), 10)
    _, mu, m2, _, _ = moments(per_window)
    sigma_bar = np.sqrt(np.maximum(m2 - mu * mu, 0.0))
    _, mu, m2, m3, m4 = moments(per_kurt)
    var = m2 - mu * mu
    c4 = m4 - 4 * mu * m3 + 6 * mu * mu * m2 - 3 * mu**4
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.maximum(np.where(var > 0, c4 / (var * var) - 3.0, 0.0), 0.0)
    bar_hours = bars.timeframe / 3600.0
    k = kurt * (max(TAIL_REFERENCE_HOURS, bar_hours) / bar_hours) ** -KURTOSIS_DECAY
    with np.errstate(divide="ignore"):
        nu = np.where(k > 6.0 / (_NU_MAX - 4.0), 4.0 + 6.0 / np.where(k > 0, k, 1.0), np.inf)
    s = sigma_bar * math.sqrt(3600.0 / bars.timeframe) * math.sqrt(horizon_hours)
    e, p = books.edges, books.price[:, None]
    near = np.where(e[:, 1:] < p, e[:, 1:], np.where(e[:, :-1] > p, e[:, :-1], p))
    d = np.abs(np.log(near / p))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = d / s[:, None]
        fat = np.isfinite(nu)
        zz = np.where(fat[:, None], z * np.sqrt(np.where(fat, nu / (nu - 2.0), 1.0))[:, None], z)
        prob = 2.0 * t_sf(np.nan_to_num(zz, nan=np.inf), np.broadcast_to(nu[:, None], zz.shape))
    prob = np.where((s > 0)[:, None], prob, (d == 0).astype(np.float64))
    prob[n < 11] = 0.0
    return np.clip(prob, 0.0, 1.0)


def t_sf(t: np.ndarray, nu: np.ndarray) -> np.ndarray:
    """P(T > t) for Student-t's with ``nu`` degrees of freedom, element-wise (nu = inf: the normal);
    engine.model.touch.student_t_sf with a degrees-of-freedom array."""
    t = np.asarray(t, dtype=np.float64)
    nu = np.asarray(nu, dtype=np.float64)
    return np.where(np.isfinite(nu), special.stdtr(np.where(np.isfinite(nu), nu, 1.0), -t), special.ndtr(-t))


# ---- recorded events per window ---------------------------------------------------------------------
@dataclass(frozen=True)
class WindowTruth:
    """What happened after each window: recorded USD per bucket, which buckets price traded through."""

    usd: np.ndarray  # (W, nb) recorded liquidated USD in the next H hours, per bucket (both sides)
    in_range_usd: np.ndarray  # (W,) recorded USD inside the bucket range
    total_usd: np.ndarray  # (W,) all recorded USD in the next H hours
    events: np.ndarray  # (W,) event count
    touched: np.ndarray  # (W, nb) bool: the bucket overlaps [lowest low, highest high] of the next H hours
    usd_sq: np.ndarray  # (W,) sum of squared event USD (for the effective number of events)


def window_truth(
    books: WindowBooks, event_time: np.ndarray, event_price: np.ndarray, event_usd: np.ndarray,
    bar_time: np.ndarray, bar_close_time: np.ndarray, bar_low: np.ndarray, bar_high: np.ndarray, horizon_s: int,
) -> WindowTruth:
    w, nb = len(books.times), books.buckets
    usd = np.zeros((w, nb))
    in_range = np.zeros(w)
    total = np.zeros(w)
    count = np.zeros(w, dtype=np.int64)
    sq = np.zeros(w)
    touched = np.zeros((w, nb), dtype=bool)
    lo_ev = np.searchsorted(event_time, books.times, side="right")
    hi_ev = np.searchsorted(event_time, books.times + horizon_s, side="right")
    lo_bar = np.searchsorted(bar_time, books.times, side="left")
    hi_bar = np.searchsorted(bar_close_time, books.times + horizon_s, side="right")
    for j in range(w):
        a, b = lo_ev[j], hi_ev[j]
        e = books.edges[j]
        if b > a:
            p, u = event_price[a:b], event_usd[a:b]
            bk = np.searchsorted(e, p, side="right") - 1
            ok = (bk >= 0) & (bk < nb)
            usd[j] = np.bincount(bk[ok], weights=u[ok], minlength=nb)
            in_range[j] = u[ok].sum()
            total[j] = u.sum()
            count[j] = b - a
            sq[j] = float((u * u).sum())
        if hi_bar[j] > lo_bar[j]:
            lo = float(bar_low[lo_bar[j] : hi_bar[j]].min())
            hi = float(bar_high[lo_bar[j] : hi_bar[j]].max())
            touched[j] = (e[1:] >= lo) & (e[:-1] <= hi)
    return WindowTruth(usd, in_range, total, count, touched, sq)


# ---- statistics --------------------------------------------------------------------------------------
def row_ranks(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average ranks per row among the masked entries (ties get their mean rank); NaN elsewhere."""
    x = np.where(mask, x, np.inf)
    order = np.argsort(x, axis=1, kind="mergesort")
    xs = np.take_along_axis(x, order, axis=1)
    w, m = x.shape
    pos = np.broadcast_to(np.arange(m, dtype=np.float64), (w, m))
    new = np.ones((w, m), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    grp = np.cumsum(new, axis=1) - 1 + (np.arange(w) * m)[:, None]
    first = np.full(w * m, np.inf)
    last = np.full(w * m, -np.inf)
    np.minimum.at(first, grp.ravel(), pos.ravel())
    np.maximum.at(last, grp.ravel(), pos.ravel())
    avg = 0.5 * (first[grp] + last[grp]) + 1.0
    ranks = np.empty((w, m))
    np.put_along_axis(ranks, order, avg, axis=1)
    return np.where(mask, ranks, np.nan)


def row_rank_corr(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spearman's rho per row over the masked entries; NaN where fewer than 3 or a side is constant."""
    rx, ry = row_ranks(x, mask), row_ranks(y, mask)
    return _row_pearson(rx, ry, mask)


def _row_pearson(rx: np.ndarray, ry: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return _PearsonY(ry, mask).corr(rx)


class _PearsonY:
    """Per-row Pearson correlation against one fixed ``ry``: its side of the sums worked out once (the
    shuffled baseline correlates hundreds of shuffles against the same ranks)."""

    def __init__(self, ry: np.ndarray, mask: np.ndarray) -> None:
        self.mask = mask
        self.n = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            my = np.nansum(ry, axis=1) / self.n
            self.dy = np.where(mask, ry - my[:, None], 0.0)
        self.syy = (self.dy * self.dy).sum(axis=1)

    def corr(self, rx: np.ndarray) -> np.ndarray:
        mask, n = self.mask, self.n
        with np.errstate(invalid="ignore", divide="ignore"):
            mx = np.nansum(rx, axis=1) / n
            dx = np.where(mask, rx - mx[:, None], 0.0)
            den = np.sqrt((dx * dx).sum(axis=1) * self.syy)
            r = (dx * self.dy).sum(axis=1) / den
        return np.where((n >= 3) & (den > 0), r, np.nan)


def shuffled_rank_corr_quantile(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, rows: np.ndarray, reps: int = 200, q: float = 0.99, seed: int = 0
) -> float:
    """The ``q`` quantile of the mean per-row rank correlation when ``x`` is shuffled among each row's
    masked entries (the map's USD dealt to the touched buckets at random): what chance alone reaches."""
    rng = np.random.default_rng(seed)
    x, y, mask = x[rows], y[rows], mask[rows]
    ry = row_ranks(y, mask)
    rx = row_ranks(x, mask)
    against = _PearsonY(ry, mask)
    order = np.argsort(np.where(mask, 0, 1), axis=1, kind="stable")  # masked positions, in place order
    means = np.empty(reps)
    for i in range(reps):
        key = np.where(mask, rng.random(mask.shape), np.inf)
        perm = np.argsort(key, axis=1)  # masked entries first, in random order
        shuffled = np.full_like(rx, np.nan)
        np.put_along_axis(shuffled, order, np.take_along_axis(rx, perm, axis=1), axis=1)
        means[i] = float(np.nanmean(against.corr(shuffled)))
    return float(np.quantile(means, q))


def day_blocks(times: np.ndarray) -> np.ndarray:
    """UTC day index of each time (the block of the block bootstrap)."""
    return (np.asarray(times, dtype=np.int64) // 86_400).astype(np.int64)


def block_bootstrap(
    stat: Callable[[np.ndarray], float], days: np.ndarray, reps: int = 300, seed: int = 1, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile interval of ``stat(index array)`` over resampled whole days (``days``: block per item).
    Days keep their hours together, so hour-to-hour dependence does not shrink the interval."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(days, return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(len(uniq))]
    vals = []
    for _ in range(reps):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[i] for i in pick]) if len(pick) else np.zeros(0, dtype=np.int64)
        v = stat(idx)
        if v == v:
            vals.append(v)
    if not vals:
        return (math.nan, math.nan)
    return (float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2)))


def week_index(times: np.ndarray) -> np.ndarray:
    """Monday-based UTC week number (1970-01-05 was a Monday)."""
    return ((np.asarray(times, dtype=np.int64) - 4 * 86_400) // (7 * 86_400)).astype(np.int64)
