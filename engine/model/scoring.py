"""Scoring the estimate against recorded liquidations — the numbers nobody in the field publishes.

Two questions, each with a baseline so a figure means something:

1. **When** (per bar). Rank correlation (Spearman) between the model's estimated realised liquidations per
   bar and the recorded ones, and the share of recorded USD that fell in the model's top-decile bars
   (random: 10%). Baseline "no levels": liquidations ∝ adverse move × open interest (longs: the drop from
   the open to the low; shorts: the rise to the high; × the previous bar's OI, or × traded USD when there
   is no OI) — what you get from volatility alone, without any liquidation levels.

2. **Where** (the zone protocol). At each step (hourly), the book as it stood (bars closed by then) is
   binned into log price buckets around the price; buckets are ranked by estimated USD and the top 10%
   (non-empty ones only) are the "predicted zones". Precision = share of the recorded liquidation notional
   of the next H hours whose price fell inside them. A random 10% of buckets catches 10% of what falls in
   the bucket range in expectation; lift = precision / random. The lower bound is Wilson's score interval
   (95%) on the pooled precision with n = Kish's effective number of events (notional-weighted, each event
   counted once however many windows saw it). Windows with fewer than ``min_events`` events are excluded.
   A second baseline — the buckets *nearest the price* — is reported too: liquidations cluster near the
   price, so beating random is easy and beating "nearest" is the real test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .accuracy import WindowBooks, touch_matrix, window_books
from .bars import Bars, typical_price
from .estimate import Estimate
from .views import price_edges


class ScoringError(ValueError):
    """Nothing to score (one line)."""


@dataclass(frozen=True)
class Events:
    """Recorded liquidations: time in UNIX seconds, ``long`` True when a long position was liquidated."""

    time: np.ndarray  # float64 seconds
    long: np.ndarray  # bool
    price: np.ndarray
    usd: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.time)
        for name in ("long", "price", "usd"):
            if len(getattr(self, name)) != n:
                raise ScoringError(f"events: column {name} has a different length")

    def __len__(self) -> int:
        return len(self.time)

    @classmethod
    def from_arrays(cls, time_s: np.ndarray, side: np.ndarray, price: np.ndarray, usd: np.ndarray) -> Events:
        """``side``: "long"/"short" strings (the liquidated position) or booleans (True = long)."""
        side = np.asarray(side)
        long = side if side.dtype == bool else np.char.lower(side.astype(str)) == "long"
        t = np.asarray(time_s, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        return cls(t[order], long[order], np.asarray(price, dtype=np.float64)[order], np.asarray(usd, dtype=np.float64)[order])

    @property
    def span(self) -> tuple[float, float]:
        return (float(self.time[0]), float(self.time[-1])) if len(self) else (0.0, 0.0)


# ---- statistics -----------------------------------------------------------------------------------
def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = 0.5 * (starts + ends - 1) + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson on average ranks); NaN when either side is constant or n < 3."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ScoringError("rank correlation needs two series of the same length")
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def top_share(predicted: np.ndarray, actual: np.ndarray, fraction: float = 0.1) -> float:
    """Share of ``actual`` total in the items whose ``predicted`` ranks in the top ``fraction`` (at least
    one item; ties at the cut broken by position)."""
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    total = float(actual.sum())
    if len(predicted) == 0 or total <= 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(predicted)))
    top = np.argsort(-predicted, kind="stable")[:k]
    return float(actual[top].sum()) / total


def wilson_lower(p: float, n: float, z: float = 1.96) -> float:
    """Lower end of Wilson's score interval for a proportion ``p`` seen over ``n`` trials."""
    if n <= 0 or not math.isfinite(p):
        return math.nan
    if p <= 0.0:
        return 0.0
    p = min(p, 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


def effective_n(weights: np.ndarray) -> float:
    """Kish's effective sample size: (sum w)^2 / sum w^2."""
    w = np.asarray(weights, dtype=np.float64)
    s2 = float((w * w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0


# ---- per bar --------------------------------------------------------------------------------------
def actual_per_bar(bars: Bars, events: Events) -> np.ndarray:
    """(2, n) recorded long/short USD summed into the bars they fell in (outside: dropped)."""
    n = len(bars)
    j = np.searchsorted(bars.time, events.time, side="right") - 1
    ok = (j >= 0) & (events.time < bars.close_time[np.clip(j, 0, max(n - 1, 0))])
    out = np.zeros((2, n))
    np.add.at(out, (np.where(events.long, 0, 1)[ok], j[ok]), events.usd[ok])
    return out


def covered_bars(bars: Bars, start: float, end: float) -> np.ndarray:
    """Bars lying entirely inside the recording's [start, end] (partly covered bars would undercount)."""
    return (bars.time >= start) & (bars.close_time <= end)


def baseline_realised(bars: Bars) -> np.ndarray:
    """(2, n) the no-levels baseline: adverse move x previous OI (or x traded USD without OI)."""
    down = np.maximum(bars.open - bars.low, 0.0) / bars.open
    up = np.maximum(bars.high - bars.open, 0.0) / bars.open
    if bars.has_oi:
        oi = bars.oi_usd
        assert oi is not None
        idx = np.where(np.isfinite(oi), np.arange(len(oi)), -1)
        last = np.maximum.accumulate(idx)
        filled = np.where(last >= 0, oi[np.maximum(last, 0)], np.nan)
        weight = np.r_[filled[0], filled[:-1]]
        weight = np.where(np.isfinite(weight), weight, np.nanmean(filled))
    elif bars.volume is not None:
        weight = np.nan_to_num(bars.volume) * typical_price(bars)
    else:
        weight = np.ones(len(bars))
    return np.stack([down * weight, up * weight])


@dataclass(frozen=True)
class BarScore:
    bars: int
    active: int  # bars with any recorded liquidation (the rest are quiet bars both may agree on)
    rank_corr: float  # per bar, long + short
    rank_corr_sides: float  # per (bar, side)
    top_decile_share: float  # share of recorded USD in the top-decile predicted bars
    random_share: float  # what random bars get (the top-decile fraction of bars)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score_bars(predicted: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> BarScore:
    """``predicted`` and ``actual``: (2, n) long/short USD per bar; scored over ``mask``."""
    p, a = predicted[:, mask], actual[:, mask]
    n = int(mask.sum())
    if n < 3:
        raise ScoringError(f"only {n} bars are covered by the recorded liquidations; need at least 3")
    k = max(1, math.ceil(0.1 * n))
    return BarScore(
        n,
        int((a.sum(axis=0) > 0).sum()),
        rank_correlation(p.sum(axis=0), a.sum(axis=0)),
        rank_correlation(p.reshape(-1), a.reshape(-1)),
        top_share(p.sum(axis=0), a.sum(axis=0)),
        k / n,
    )


# ---- the zone protocol ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ZoneScore:
    rank: str  # "usd" (book notional) or "risk" (notional x touch probability)
    horizon_hours: float
    bucket_pct: float
    span_pct: float
    windows: int  # scored
    windows_excluded: int  # too few events
    events: int  # distinct events inside scored windows
    notional_usd: float  # recorded notional over scored windows (an event counts once per window)
    precision: float  # share of that notional inside the predicted buckets
    random: float  # expected share for a random choice of the same number of buckets
    lift: float
    wilson_low: float  # 95% lower bound of precision (n = effective events)
    lift_low: float
    effective_events: float
    nearest_precision: float  # the "buckets nearest the price" baseline
    nearest_lift: float
    per_window: tuple[dict[str, float], ...]

    def to_dict(self) -> dict[str, object]:
        # not asdict(): it deep-copies every per-window dict (most of a long backtest's time)
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["per_window"] = [dict(w) for w in self.per_window]
        return out


def zone_protocol(
    est: Estimate,
    events: Events,
    horizon_hours: float = 4.0,
    step_s: int = 3600,
    bucket_pct: float = 0.25,
    span_pct: float = 10.0,
    top: float = 0.1,
    min_events: int = 10,
    coverage: tuple[float, float] | None = None,
    rank: str = "usd",
) -> ZoneScore:
    """Precision@top-``top`` of the estimated book against the next ``horizon_hours`` of events, every
    ``step_s`` seconds across the recording (a window must lie inside ``coverage``, default the events'
    first..last time).

    ``rank``: "usd" ranks buckets by estimated notional (the map as drawn); "risk" by notional times the
    chance price touches the bucket within the horizon (engine.model.touch, volatility from the bars
    closed by then) — the risk-weighted view."""
    if len(events) == 0:
        raise ScoringError("no recorded liquidations to score against")
    if rank not in ("usd", "risk"):
        raise ScoringError(f"rank {rank!r}: use usd or risk")
    start, end = coverage or events.span
    h = int(round(horizon_hours * 3600))
    bars = est.bars
    first = max(math.ceil(start / step_s) * step_s, int(bars.close_time[0]))
    times = np.arange(first, int(end) - h + 1, step_s, dtype=np.int64)
    nb = max(2, int(round(2 * math.log1p(span_pct / 100) / math.log1p(bucket_pct / 100))))
    hit_usd = tot_usd = rand_usd = near_usd = 0.0
    excluded = 0
    per_window: list[dict[str, float]] = []
    weight_per_event = np.zeros(len(events))
    # which windows count: some bars closed, enough events in the horizon
    n_closed_all = np.searchsorted(bars.close_time, times, side="right")
    lo_ev = np.searchsorted(events.time, times, side="right")
    hi_ev = np.searchsorted(events.time, times + h, side="right")
    has_bars = n_closed_all > 0
    enough = (hi_ev - lo_ev) >= min_events
    excluded = int((has_bars & ~enough).sum())
    kept = has_bars & enough
    # every kept window's book in one pass over the cohorts (engine.model.accuracy.window_books)
    books = est_window_books(est, times[kept], bucket_pct, span_pct)
    preds = books.usd.sum(axis=(0, 2))  # (W, nb)
    if rank == "risk" and len(books.times):
        if int(books.closed.min()) < 11:
            raise ScoringError("risk ranking needs at least 11 bars before the first window")
        # touch the bucket's near edge: the upper edge below the price, the lower edge above it
        preds = preds * touch_matrix(bars, books, horizon_hours)
    lo_k, hi_k = lo_ev[kept], hi_ev[kept]
    hits = _window_hits(books, preds, events, lo_k, hi_k, max(1, math.ceil(top * nb)))
    # per window in order, so the running totals add up exactly as they always have
    for j, t in enumerate(books.times.tolist()):
        total, hit, near, rand = hits.total[j], hits.hit[j], hits.near[j], hits.rand[j]
        hit_usd += hit
        tot_usd += total
        rand_usd += rand
        near_usd += near
        per_window.append(
            {"time": int(t), "price": float(books.price[j]), "events": int(hi_k[j] - lo_k[j]), "usd": total,
             "precision": hit / total, "random": rand / total, "nearest": near / total,
             "buckets_chosen": int(hits.chosen[j])}
        )
    # each event's weight: its USD once per window that saw it, added window by window
    np.add.at(weight_per_event, hits.event, hits.usd)
    if not per_window:
        raise ScoringError(
            f"no {horizon_hours:g}h window has {min_events}+ recorded liquidations "
            f"({len(times)} windows tried, {excluded} too thin)"
        )
    precision = hit_usd / tot_usd
    random = rand_usd / tot_usd
    n_eff = effective_n(weight_per_event[weight_per_event > 0])
    lo = wilson_lower(precision, n_eff)
    return ZoneScore(
        rank,
        horizon_hours,
        bucket_pct,
        span_pct,
        len(per_window),
        excluded,
        int((weight_per_event > 0).sum()),
        tot_usd,
        precision,
        random,
        precision / random if random > 0 else math.nan,
        lo,
        lo / random if random > 0 else math.nan,
        n_eff,
        near_usd / tot_usd,
        (near_usd / tot_usd) / random if random > 0 else math.nan,
        tuple(per_window),
    )


@dataclass(frozen=True)
class _Hits:
    """Per window: recorded USD in the horizon, inside the chosen / nearest buckets, what random gets,
    and how many buckets were chosen; ``event``/``usd`` list every (window, event) pair's event and USD."""

    total: list[float]
    hit: list[float]
    near: list[float]
    rand: list[float]
    chosen: np.ndarray
    event: np.ndarray
    usd: np.ndarray


def _window_hits(books: WindowBooks, preds: np.ndarray, events: Events, lo: np.ndarray, hi: np.ndarray, k: int) -> _Hits:
    """Every window of the zone protocol at once: its top-``k`` non-empty buckets by ``preds``, as many
    buckets nearest its price, and the events of its horizon bucketed on its own edges, as whole-array
    numpy passes over all (window, event) pairs. Only the per-window sums stay a loop: each is taken over
    the same values in the same order as one window at a time, so the figures are the same to the last bit."""
    w, nb = preds.shape
    order = np.argsort(-preds, axis=1, kind="stable")[:, :k]
    top_pred = np.take_along_axis(preds, order, axis=1)
    is_chosen = np.zeros((w, nb + 1), dtype=bool)  # one spare slot per window: events outside the buckets
    np.put_along_axis(is_chosen, order, top_pred > 0, axis=1)
    chosen = (top_pred > 0).sum(axis=1)
    edges = books.edges
    centers = np.sqrt(edges[:, 1:] * edges[:, :-1])
    by_distance = np.argsort(np.abs(np.log(centers / books.price[:, None])), axis=1, kind="stable")
    is_near = np.zeros((w, nb + 1), dtype=bool)
    np.put_along_axis(is_near, by_distance, np.arange(nb)[None, :] < chosen[:, None], axis=1)
    # (window, event) pairs, window by window, events in time order inside each
    count = (hi - lo).astype(np.int64)
    win = np.repeat(np.arange(w), count)
    ev = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    price = events.price[ev]
    # the bucket searchsorted(edges[win], price, "right") - 1 would give: from the log spacing, then
    # made exact against the edges themselves (-1: below the first edge, nb: at or above the last)
    e0 = np.log(edges[:, 0])
    width = (np.log(edges[:, -1]) - e0) / nb
    unordered = np.isnan(price)  # searchsorted puts NaN after everything: outside the buckets
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (np.log(price) - e0[win]) / width[win]
    b = np.clip(np.floor(np.nan_to_num(x, nan=nb)), -1, nb).astype(np.int64)
    while True:
        low_ok = (b < 0) | (edges[win, np.clip(b, 0, nb)] <= price) | unordered
        high_ok = (b >= nb) | (price < edges[win, np.clip(b + 1, 0, nb)]) | unordered
        if low_ok.all() and high_ok.all():
            break
        b = b - ~low_ok + ~high_ok
    inside = (b >= 0) & (b < nb)
    b = np.where(inside, b, nb)
    usd = events.usd[ev]
    masks = {"total": np.ones(len(ev), dtype=bool), "hit": is_chosen[win, b], "near": is_near[win, b], "inside": inside}
    sums: dict[str, list[float]] = {}
    for name, keep in masks.items():
        # one small sum per window over its kept values, in order: what summing window by window gave
        # (numpy's pairwise summation depends on where a run starts, so np.add.reduceat would differ in
        # the last bits)
        kept = usd[keep]
        bounds = np.r_[0, np.cumsum(np.bincount(win[keep], minlength=w))].tolist()
        sums[name] = [float(kept[bounds[j] : bounds[j + 1]].sum()) for j in range(w)]
    return _Hits(
        sums["total"], sums["hit"], sums["near"], (np.asarray(sums["inside"]) * chosen / nb).tolist(), chosen, ev, usd,
    )


def est_window_books(est: Estimate, times: np.ndarray, bucket_pct: float, span_pct: float) -> WindowBooks:
    """window_books, remembered on the estimate for the same windows (a backtest ranks them twice)."""
    key = (times.tobytes(), bucket_pct, span_pct)
    cache: dict[tuple[bytes, float, float], WindowBooks] = est.__dict__.setdefault("_window_books", {})
    if key not in cache:
        cache.clear()  # one set of windows at a time: bounded
        cache[key] = window_books(est, times, bucket_pct, span_pct)
    return cache[key]


# ---- coarser scoring bars, and the simulated market's truth -------------------------------------------
def aggregate_bars(times: np.ndarray, values: np.ndarray, timeframe: int, start: float, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum (2, n) per-bar values into UTC-aligned ``timeframe`` buckets. Returns (bucket times, (2, m)
    sums, covered mask: buckets lying entirely inside [start, end])."""
    times = np.asarray(times, dtype=np.int64)
    bucket = times // timeframe * timeframe
    uniq, inv = np.unique(bucket, return_inverse=True)
    out = np.zeros((values.shape[0], len(uniq)))
    for row in range(values.shape[0]):
        out[row] = np.bincount(inv, weights=values[row], minlength=len(uniq))
    covered = (uniq >= start) & (uniq + timeframe <= end)
    return uniq, out, covered


@dataclass(frozen=True)
class TruthScore:
    """The estimated book against what the simulated traders really hold, per price bucket."""

    buckets: int  # buckets where either the estimate or the truth has notional
    rank_corr: float
    top_decile_share: float  # share of the true notional inside the top 10% estimated buckets
    random_share: float  # what 10% of buckets chosen at random holds on average
    estimated_usd: float
    true_usd: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def truth_agreement(
    est_prices: np.ndarray,
    est_usd: np.ndarray,
    true_prices: np.ndarray,
    true_usd: np.ndarray,
    price: float,
    bucket_pct: float = 0.25,
    span_pct: float = 10.0,
) -> TruthScore:
    """Compare two books (price levels with USD, both sides together) on log buckets around ``price``."""
    nb = max(2, int(round(2 * math.log1p(span_pct / 100) / math.log1p(bucket_pct / 100))))
    edges = price_edges(price / (1 + span_pct / 100), price * (1 + span_pct / 100), nb, log=True)

    def binned(p: np.ndarray, u: np.ndarray) -> np.ndarray:
        b = np.searchsorted(edges, np.asarray(p, dtype=np.float64), side="right") - 1
        ok = (b >= 0) & (b < nb)
        return np.bincount(b[ok], weights=np.asarray(u, dtype=np.float64)[ok], minlength=nb)

    e, t = binned(est_prices, est_usd), binned(true_prices, true_usd)
    used = (e > 0) | (t > 0)
    if used.sum() < 3 or t.sum() <= 0:
        raise ScoringError("the true book and the estimate share fewer than 3 non-empty buckets")
    return TruthScore(
        int(used.sum()),
        rank_correlation(e[used], t[used]),
        top_share(e, t),
        math.ceil(0.1 * nb) / nb,
        float(e.sum()),
        float(t.sum()),
    )
