"""The accuracy suite: every real recording in ../shared/data (and the simulated market) scored with one
protocol, the model beside its baselines, in sample and out of sample.

    liqheat backtest --suite [--data-dir DIR] [--json] [--write-readme README.md]
    python -m benchmarks accuracy

Out of sample means walk-forward: for each week scored, the model's free choices (which half-lives, which
leverage mix — a preset or an NNLS fit) are made on the windows whose whole horizon ended before that week
began, then frozen and scored on the week. The model itself is causal (the book at an hour uses only bars
closed by then), so computing it once over the whole history and selecting per week is the same as
re-running it week by week.

Sets:
- bybit-15m: Bybit BTCUSDT events 2024-02..06 on Bybit 15m candles (volume-proxy seeds, no intraday OI).
- binance-5m: the same events on Binance USD-M 5m candles, with the taker buy/sell split.
- okx-1h: 12.5 h of OKX BTC-USDT-SWAP events (2026-03-04/05) on the OKX 1h candles. Too short to fit on:
  scored with the parameters fitted on the Bybit set (which never saw it).
- simulated: the built-in simulated market (14 days), its events and its traders' true book.
- coinalyze: daily long/short liquidations vs daily open interest per venue (the scale question).

Events: Bybit and OKX print *bankruptcy* prices; every event is moved to its liquidation price (one
maintenance margin nearer the entry, engine.model.margin.liquidation_from_bankruptcy) before bucketing.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from engine.model import Bars, Ladder, ModelParams, estimate
from engine.model.accuracy import (
    WindowBooks,
    WindowTruth,
    block_bootstrap,
    day_blocks,
    realised_per_tier,
    row_rank_corr,
    shuffled_rank_corr_quantile,
    touch_matrix,
    week_index,
    window_books,
    window_truth,
)
from engine.model.ladder import default_half_life_hours
from engine.model.margin import liquidation_from_bankruptcy
from engine.model.scoring import (
    Events,
    aggregate_bars,
    baseline_realised,
    rank_correlation,
)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
HORIZONS = (1.0, 4.0, 24.0)
FIT_HORIZON = 4.0  # the horizon the free choices are made on (the zone protocol's headline)
BUCKET_PCT, SPAN_PCT, TOP, MIN_EVENTS = 0.25, 10.0, 0.1, 10
BOOT = 400  # block-bootstrap resamples per interval
LEVERAGES = (5.0, 10.0, 25.0, 50.0, 100.0)
# Half-life groups: the field's per-leverage table, it divided by 4 and 16, and flat values.
HALF_LIFE_GROUPS: dict[str, tuple[float, ...]] = {
    "field": tuple(default_half_life_hours(x) for x in LEVERAGES),
    "field/4": tuple(default_half_life_hours(x) / 4 for x in LEVERAGES),
    "field/16": tuple(default_half_life_hours(x) / 16 for x in LEVERAGES),
    "48h": (48.0,) * 5,
    "12h": (12.0,) * 5,
    "3h": (3.0,) * 5,
}
WEIGHT_PRESETS: dict[str, tuple[float, ...]] = {
    "field": (0.15, 0.30, 0.25, 0.20, 0.10),
    "even": (0.2, 0.2, 0.2, 0.2, 0.2),
    "25x+": (0.0, 0.0, 0.3, 0.4, 0.3),
    "50x+": (0.0, 0.0, 0.0, 0.5, 0.5),
    "10x-": (0.5, 0.5, 0.0, 0.0, 0.0),
}


class SuiteError(ValueError):
    """A data file the suite cannot use (one line)."""


# ---- loading (numpy + gzip: a few columns of a few files, no general CSV machinery) -------------------
def _read_text(path: Path) -> str:
    if not path.exists():
        raise SuiteError(f"{path.name}: not found in {path.parent} (give --data-dir)")
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as fh:  # noqa: SIM115
        return fh.read()


def _numeric(text: str, keep: str | None = None) -> tuple[list[str], np.ndarray]:
    head, _, body = text.partition("\n")
    cols = head.strip().split(",")
    if keep is not None:
        body = "\n".join(line for line in body.splitlines() if keep in line)
        body = re.sub(r",[A-Za-z]+,[A-Za-z]+,", ",", body)  # venue,coin gone: the rest is numeric
        cols = [c for c in cols if c not in ("venue", "coin")]
    arr = np.loadtxt(io.StringIO(body), delimiter=",", ndmin=2) if body.strip() else np.zeros((0, len(cols)))
    return cols, arr


def _bars(cols: list[str], a: np.ndarray, timeframe: int, volume_scale: float = 1.0) -> Bars:
    c = {name: a[:, i] for i, name in enumerate(cols)}
    buy = c.get("taker_buy_volume")
    vol = c["volume"] * volume_scale
    return Bars.from_columns(
        timeframe,
        time=(c["timestamp_ms"] // 1000).astype(np.int64),
        open=c["open"], high=c["high"], low=c["low"], close=c["close"], volume=vol,
        taker_buy_volume=None if buy is None else buy * volume_scale,
        taker_sell_volume=None if buy is None else (c["volume"] - buy) * volume_scale,
    )


def _events_from(time_ms: np.ndarray, long: np.ndarray, bankruptcy: np.ndarray, usd: np.ndarray, exchange: str,
                 day: str) -> Events:
    price = liquidation_from_bankruptcy(bankruptcy, np.where(long, 0, 1), exchange, "BTC", day)
    return Events.from_arrays(time_ms / 1000.0, long, price, usd)


def bybit_events(data: Path) -> Events:
    text = _read_text(data / "bybit_btcusdt_liquidations_2024-02_06.csv.gz")
    head, _, body = text.partition("\n")
    body = body.replace(",long,", ",1,").replace(",short,", ",0,")
    a = np.loadtxt(io.StringIO(body), delimiter=",", ndmin=2)
    return _events_from(a[:, 0], a[:, 1] == 1, a[:, 2], a[:, 4], "bybit", "2024-02-12")


def okx_events(data: Path) -> Events:
    text = _read_text(data / "okx_liquidations_2026-03-04.csv.gz")
    rows = [line.split(",") for line in text.splitlines()[1:] if ",BTC," in line]
    a = np.array([[float(r[0]), 1.0 if r[2] == "long" else 0.0, float(r[3]), float(r[5])] for r in rows])
    return _events_from(a[:, 0], a[:, 1] == 1, a[:, 2], a[:, 3], "okx", "2026-03-04")


@dataclass
class DataSet:
    key: str
    label: str
    bars: Bars
    events: Events
    exchange: str  # whose margin tiers the model uses
    walk_forward: bool  # enough weeks to fit on earlier ones
    truth: dict[str, Any] | None = None
    days: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # UTC days with events

    def __post_init__(self) -> None:
        if not len(self.days):
            self.days = np.unique(day_blocks(self.events.time))


def coinalyze(data: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """(liquidations, open interest): column -> {UTC day: USD}. Liquidation columns end in _long/_short."""
    out = []
    for name in ("coinalyze_btc_perps_daily_liquidations_2022-01_2024-06.csv.gz",
                 "coinalyze_btc_perps_daily_open_interest_2022-01_2024-09.csv.gz"):
        reader = csv.reader(io.StringIO(_read_text(data / name)))
        head = next(reader)
        cols: dict[str, dict[int, float]] = {h: {} for h in head[1:]}
        for row in reader:
            day = int(datetime.strptime(row[0], "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) // 86_400
            for h, v in zip(head[1:], row[1:], strict=False):
                if v.strip():
                    cols[h][day] = float(v)
        out.append(cols)
    return out[0], out[1]


SETS = ("bybit-15m", "binance-5m", "okx-1h", "simulated")  # the suite's order
FITTED_ON_BYBIT = ("okx-1h",)  # too short to fit on: scored with the Bybit set's fit


def set_keys(which: tuple[str, ...] | None = None) -> list[str]:
    """The sets asked for, checked, in the suite's order."""
    want = which or SETS
    unknown = [w for w in want if w not in SETS]
    if unknown:
        raise SuiteError(f"unknown set {unknown[0]!r}; sets: {', '.join(SETS)}")
    return [k for k in SETS if k in want]


def load_sets(data: Path, which: tuple[str, ...] | None = None, sim_days: float = 14.0) -> list[DataSet]:
    want = set_keys(which)
    sets: list[DataSet] = []
    need_bybit = any(k in want for k in ("bybit-15m", "binance-5m"))
    ev = bybit_events(data) if need_bybit else None
    if "bybit-15m" in want:
        cols, a = _numeric(_read_text(data / "bybit_btcusdt_15m_2024-01_06.csv.gz"))
        assert ev is not None
        sets.append(DataSet("bybit-15m", "Bybit BTCUSDT events 2024 on Bybit 15m candles", _bars(cols, a, 900), ev,
                            "bybit", True))
    if "binance-5m" in want:
        cols, a = _numeric(_read_text(data / "binance_usdm_btcusdt_5m_2024-02_06.csv.gz"))
        assert ev is not None
        sets.append(DataSet("binance-5m", "same events on Binance 5m candles + taker flow", _bars(cols, a, 300), ev,
                            "binance", True))
    if "okx-1h" in want:
        cols, a = _numeric(_read_text(data / "candles_1h_binance_bybit_okx_2025-03_2026-03.csv.gz"), keep=",okx,BTC,")
        sets.append(DataSet("okx-1h", "OKX BTC events 2026-03-04/05 on OKX 1h candles", _bars(cols, a, 3600, 0.01),
                            okx_events(data), "okx", False))
    if "simulated" in want:
        from engine.feeds.demo import DemoFeed

        feed = DemoFeed(seed=7, history_days=sim_days, now=1_772_323_200)
        sym = "BTC/USDT:USDT"
        bars = feed.history_now(sym)
        liqs = feed.liquidations(sym, until_ms=int(bars.close_time[-1]) * 1000)
        sim = Events.from_arrays(
            np.array([e.time_ms for e in liqs], dtype=np.float64) / 1000.0, np.array([e.side for e in liqs]),
            np.array([e.price for e in liqs]), np.array([e.usd for e in liqs]),
        )
        truth = feed.ground_truth(sym)
        sets.append(DataSet("simulated", f"simulated market, {sim_days:g} days of 1m bars", bars, sim, "binance", True,
                            truth={"prices": truth.prices, "usd": truth.long_usd + truth.short_usd, "time": truth.time}))
    return sets


# ---- candidates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    group: str  # half-life group
    weights: tuple[float, ...]  # over LEVERAGES
    how: str  # preset name or "nnls"

    @property
    def name(self) -> str:
        return f"{self.how} weights, {self.group} half-lives"

    def ladder(self, name: str) -> Ladder:
        """As a Ladder; tiers under 1% of the mix are dropped (NNLS leaves dust on unused tiers)."""
        keep = [w >= 0.01 * sum(self.weights) for w in self.weights]
        lev = [x for x, k in zip(LEVERAGES, keep, strict=True) if k]
        hl = [h for h, k in zip(HALF_LIFE_GROUPS[self.group], keep, strict=True) if k]
        ws = [w for w, k in zip(self.weights, keep, strict=True) if k]
        return Ladder(name, tuple(lev), tuple(ws), tuple(round(h, 2) for h in hl))


DEFAULT_CANDIDATE = Candidate("field", WEIGHT_PRESETS["field"], "field")


@dataclass
class Basis:
    """Per half-life group: the book per leverage tier at each window, the realised series per tier."""

    books: dict[str, WindowBooks]
    realised: dict[str, np.ndarray]  # (T, 2, n) per unit weight
    flat: dict[str, np.ndarray] = field(default_factory=dict)  # (T, W * nb): both sides summed, contiguous

    def pred(self, group: str, weights: tuple[float, ...]) -> np.ndarray:
        """(W, nb) both sides' book USD for a leverage mix in one half-life group."""
        if group not in self.flat:
            u = self.books[group].usd
            self.flat[group] = np.ascontiguousarray(u.sum(axis=2).reshape(u.shape[0], -1))
        w, nb = self.books[group].usd.shape[1], self.books[group].buckets
        return (np.asarray(weights, dtype=np.float64) @ self.flat[group]).reshape(w, nb)


def build_basis(ds: DataSet, times: np.ndarray, params: ModelParams) -> Basis:
    books, realised = {}, {}
    t = len(LEVERAGES)
    for g, hl in HALF_LIFE_GROUPS.items():
        p = replace(params, ladder=Ladder(f"basis {g}", LEVERAGES, (1.0,) * t, hl))
        est = estimate(ds.bars, p)
        wb = window_books(est, times, BUCKET_PCT, SPAN_PCT)
        books[g] = WindowBooks(wb.times, wb.closed, wb.price, wb.edges, wb.usd * t)  # per unit weight
        realised[g] = realised_per_tier(est) * t
    return Basis(books, realised)


# ---- per-window figures for one candidate -----------------------------------------------------------
def _top(pred: np.ndarray, k: int) -> np.ndarray:
    """(W, nb) bool: each row's top-k buckets, only where the prediction is positive (exact ties at the
    cut: whichever argpartition keeps — with continuous USD books they do not happen)."""
    kth = np.partition(pred, pred.shape[1] - k, axis=1)[:, pred.shape[1] - k]
    return (pred >= kth[:, None]) & (pred > 0)


@dataclass
class ZoneRows:
    hit: np.ndarray  # (W,) recorded USD inside the chosen buckets
    near: np.ndarray  # (W,) inside as many buckets nearest the price
    rand: np.ndarray  # (W,) expected for as many random buckets
    total: np.ndarray  # (W,) all recorded USD


def distance_rank(books: WindowBooks) -> np.ndarray:
    """(W, nb) 0 for the bucket nearest the price, 1 for the next, ..."""
    centers = np.sqrt(books.edges[:, 1:] * books.edges[:, :-1])
    dist = np.abs(np.log(centers / books.price[:, None]))
    order = np.argsort(dist, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(books.buckets), order.shape), axis=1)
    return rank


def precision(pred: np.ndarray, truth_usd: np.ndarray, total: np.ndarray) -> float:
    """Share of the recorded USD inside each window's top 10% buckets (the selection objective)."""
    k = max(1, math.ceil(TOP * pred.shape[1]))
    t = float(total.sum())
    return float((truth_usd * _top(pred, k)).sum()) / t if t > 0 else math.nan


def zone_rows(pred: np.ndarray, truth: WindowTruth, books: WindowBooks, near_rank: np.ndarray | None = None) -> ZoneRows:
    nb = books.buckets
    k = max(1, math.ceil(TOP * nb))
    chosen = _top(pred, k)
    nchosen = chosen.sum(axis=1)
    rank = distance_rank(books) if near_rank is None else near_rank
    nearest = rank < nchosen[:, None]
    return ZoneRows(
        (truth.usd * chosen).sum(axis=1), (truth.usd * nearest).sum(axis=1), truth.in_range_usd * nchosen / nb,
        truth.total_usd,
    )


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> float:
    d = float(den[idx].sum())
    return float(num[idx].sum()) / d if d > 0 else math.nan


# ---- the suite ---------------------------------------------------------------------------------------
@dataclass
class SetResult:
    key: str
    label: str
    rows: list[dict[str, Any]]
    chosen_in_sample: str
    chosen_out_of_sample: list[str]
    extra: dict[str, Any]


@dataclass
class Prepared:
    ds: DataSet
    times: np.ndarray
    basis: Basis
    truth: dict[float, WindowTruth]
    valid: dict[float, np.ndarray]  # windows scored per horizon (enough events)
    touch: np.ndarray  # (W, nb) at the fit horizon
    week: np.ndarray
    hours: np.ndarray  # hourly bar times for "when"
    hour_mask: np.ndarray
    actual_h: np.ndarray
    baseline_h: np.ndarray
    params: ModelParams
    near_rank: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    _gram: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _hits: dict[Candidate, np.ndarray] = field(default_factory=dict)

    def hits(self, c: Candidate) -> np.ndarray:
        """(W,) recorded USD (fit horizon) inside each window's top-10% buckets of this candidate's map;
        remembered for the presets, which every week of the walk-forward tries again."""
        if c in self._hits:
            return self._hits[c]
        tr = self.truth[FIT_HORIZON]
        pred = candidate_pred(self, c)
        k = max(1, math.ceil(TOP * pred.shape[1]))
        out = (tr.usd * _top(pred, k)).sum(axis=1)
        if c.how != "nnls":
            self._hits[c] = out
        return out

    def gram(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """Per window: (T, T) A'A and (T,) A'b of the NNLS rows (buckets), each window scaled by 1/total."""
        if group not in self._gram:
            tr = self.truth[FIT_HORIZON]
            a = self.basis.books[group].usd.sum(axis=2)  # (T, W, nb)
            s = 1.0 / np.maximum(tr.total_usd, 1.0)
            a = a * s[None, :, None]
            b = tr.usd * s[:, None]
            self._gram[group] = (np.einsum("twb,uwb->wtu", a, a), np.einsum("twb,wb->wt", a, b))
        return self._gram[group]


def prepare(ds: DataSet) -> Prepared:
    bars, ev = ds.bars, ds.events
    start, end = ev.span
    times = np.arange(max(math.ceil(start / 3600) * 3600, int(bars.close_time[0])), int(end) - 3600 + 1, 3600,
                      dtype=np.int64)
    day_ok = np.isin(day_blocks(times), ds.days)
    times = times[day_ok]
    params = ModelParams(exchange=ds.exchange, coin="BTC", seed_mode="volume" if ds.key != "simulated" else "auto")
    basis = build_basis(ds, times, params)
    any_books = basis.books["field"]
    truth, valid = {}, {}
    for h in HORIZONS:
        hs = int(h * 3600)
        tr = window_truth(any_books, ev.time, ev.price, ev.usd, bars.time, bars.close_time, bars.low, bars.high, hs)
        truth[h] = tr
        # the whole horizon inside a day that has data, and enough events to say anything
        end_ok = np.isin(day_blocks(times + hs - 1), ds.days) & (times + hs <= end)
        valid[h] = end_ok & (tr.events >= MIN_EVENTS)
    touch = touch_matrix(bars, any_books, FIT_HORIZON)
    # per hour: recorded vs estimated realised, on hours inside days that have data
    actual = np.zeros((2, len(bars)))
    j = np.searchsorted(bars.time, ev.time, side="right") - 1
    ok = (j >= 0) & (ev.time < bars.close_time[np.clip(j, 0, len(bars) - 1)])
    np.add.at(actual, (np.where(ev.long, 0, 1)[ok], j[ok]), ev.usd[ok])
    tf = max(3600, bars.timeframe)
    hours, actual_h, hmask = aggregate_bars(bars.time, actual, tf, start, end)
    hmask &= np.isin(day_blocks(hours), ds.days)
    _, baseline_h, _ = aggregate_bars(bars.time, baseline_realised(bars), tf, start, end)
    return Prepared(ds, times, basis, truth, valid, touch, week_index(times), hours, hmask, actual_h, baseline_h, params,
                    distance_rank(any_books))


def candidate_pred(pp: Prepared, c: Candidate) -> np.ndarray:
    return pp.basis.pred(c.group, c.weights)  # (W, nb)


def fit_nnls(pp: Prepared, group: str, train: np.ndarray) -> tuple[float, ...] | None:
    """Leverage weights by NNLS (scipy): recorded USD per (window, bucket) on the tiers' book USD, each
    training window normalised by its recorded total so a violent day does not outvote the rest. Solved
    on the normal equations' Cholesky factor (same minimiser, a T x T problem)."""
    from scipy.optimize import nnls

    gram, rhs = pp.gram(group)
    rows = np.flatnonzero(train)
    if len(rows) < 5:
        return None
    g = gram[rows].sum(axis=0)
    r = rhs[rows].sum(axis=0)
    d = np.sqrt(np.maximum(np.diag(g), 0.0))
    seen = d > 0
    if not seen.any():
        return None
    gs = g[np.ix_(seen, seen)] / np.outer(d[seen], d[seen])
    rs = r[seen] / d[seen]
    try:
        chol = np.linalg.cholesky(gs + 1e-12 * np.eye(int(seen.sum())))
    except np.linalg.LinAlgError:
        return None
    x_s, _ = nnls(chol.T, np.linalg.solve(chol, rs))
    x = np.zeros(len(d))
    x[seen] = x_s / d[seen]
    if x.sum() <= 0:
        return None
    return tuple(float(v) for v in x / x.sum())


def candidates(pp: Prepared, train: np.ndarray) -> list[Candidate]:
    out = []
    for g in HALF_LIFE_GROUPS:
        out += [Candidate(g, w, name) for name, w in WEIGHT_PRESETS.items()]
        fitted = fit_nnls(pp, g, train)
        if fitted is not None:
            out.append(Candidate(g, fitted, "nnls"))
    return out


def choose(pp: Prepared, train: np.ndarray) -> Candidate:
    """The candidate with the best map-as-drawn precision (fit horizon) over the training windows."""
    tr = pp.truth[FIT_HORIZON]
    idx = np.flatnonzero(train)
    if len(idx) == 0:
        return DEFAULT_CANDIDATE
    best, best_p = DEFAULT_CANDIDATE, -1.0
    total = float(tr.total_usd[idx].sum())
    for c in candidates(pp, train):
        p = float(pp.hits(c)[idx].sum()) / total if total > 0 else math.nan
        if p > best_p + 1e-12:
            best, best_p = c, p
    return best


def walk_forward(pp: Prepared) -> tuple[dict[int, Candidate], np.ndarray]:
    """Per scored week: the candidate chosen on windows whose horizon ended before the week began."""
    valid = pp.valid[FIT_HORIZON]
    weeks = np.unique(pp.week[valid])
    picks: dict[int, Candidate] = {}
    scored = np.zeros(len(pp.times), dtype=bool)
    h = int(FIT_HORIZON * 3600)
    for wk in weeks[1:]:
        week_start = int(wk) * 7 * 86_400 + 4 * 86_400
        train = valid & (pp.times + h <= week_start)
        if not train.any():
            continue
        picks[int(wk)] = choose(pp, train)
        scored |= pp.week == wk
    return picks, scored


def score_set(pp: Prepared, fixed: Candidate | None = None, reps: int = 100, fixed_scale: float | None = None) -> SetResult:
    """The table rows for one set. ``fixed``: score these parameters out of sample instead of a
    walk-forward (sets too short to fit on)."""
    ds = pp.ds
    if fixed is None and ds.walk_forward:
        picks, scored = walk_forward(pp)
        insample = choose(pp, pp.valid[FIT_HORIZON])
    else:
        picks, scored = {}, np.ones(len(pp.times), dtype=bool)
        insample = choose(pp, pp.valid[FIT_HORIZON])
    oos_pred: dict[str, np.ndarray] = {}

    def pred_for(kind: str) -> np.ndarray:
        if kind in oos_pred:
            return oos_pred[kind]
        if kind == "default":
            p = candidate_pred(pp, DEFAULT_CANDIDATE)
        elif kind == "in":
            p = candidate_pred(pp, insample)
        elif fixed is not None or not picks:
            p = candidate_pred(pp, fixed or insample)
        else:
            p = np.zeros((len(pp.times), pp.basis.books["field"].buckets))
            for wk, c in picks.items():
                sel = pp.week == wk
                p[sel] = candidate_pred(pp, c)[sel]
        oos_pred[kind] = p
        return p

    books = pp.basis.books["field"]
    rows: list[dict[str, Any]] = []
    days_w = day_blocks(pp.times)
    kinds = ("default", "in", "out")
    # where, conditional on touch
    for h in HORIZONS:
        tr = pp.truth[h]
        sel = pp.valid[h] & scored & (tr.touched.sum(axis=1) >= 3)
        idx = np.flatnonzero(sel)
        if len(idx) < 3:
            continue
        row: dict[str, Any] = {"metric": f"where, given touch {h:g}h (rank corr)", "n": int(len(idx)), "unit": "rho"}
        for kind in kinds:
            rho = row_rank_corr(pred_for(kind), tr.usd, tr.touched)
            row[kind] = float(np.nanmean(rho[idx]))
            if kind == "out":
                row["out_ci"] = block_bootstrap(partial(_mean_of, rho[idx]), days_w[idx], BOOT)
        centers = np.sqrt(books.edges[:, 1:] * books.edges[:, :-1])
        near_score = -np.abs(np.log(centers / books.price[:, None]))
        row["nearest"] = float(np.nanmean(row_rank_corr(near_score, tr.usd, tr.touched)[idx]))
        row["random"] = shuffled_rank_corr_quantile(pred_for("out"), tr.usd, tr.touched, idx, reps=reps)
        row["random_label"] = "shuffled 99th pct"
        rows.append(row)
    # where, unconditional: zone protocol at the fit horizon, as drawn and x touch probability
    tr = pp.truth[FIT_HORIZON]
    sel = pp.valid[FIT_HORIZON] & scored
    idx = np.flatnonzero(sel)
    # rankings: the map as drawn, USD x touch probability, and USD^(1/4) x touch (the USD still orders
    # buckets the price is equally likely to reach, but no longer outvotes the distance)
    for label, weight, power in (("map as drawn", None, 1.0), ("map x touch", pp.touch, 1.0),
                                 ("map^1/4 x touch", pp.touch, 0.25)):
        row = {"metric": f"where {FIT_HORIZON:g}h: {label} (precision@10%)", "n": int(len(idx)), "unit": "pct"}
        for kind in kinds:
            base_pred = pred_for(kind) if power == 1.0 else pred_for(kind) ** power
            pred = base_pred if weight is None else base_pred * weight
            z = zone_rows(pred, tr, books, pp.near_rank)
            row[kind] = _ratio(z.hit, z.total, idx)
            if kind == "out":
                row["out_ci"] = block_bootstrap(partial(_ratio, z.hit[idx], z.total[idx]), days_w[idx], BOOT)
                row["nearest"] = _ratio(z.near, z.total, idx)
                row["random"] = _ratio(z.rand, z.total, idx)
        row["lift_out"] = row["out"] / row["random"] if row["random"] else math.nan
        row["lift_default"] = row["default"] / row["random"] if row["random"] else math.nan
        row["lift_in"] = row["in"] / row["random"] if row["random"] else math.nan
        rows.append(row)
    # when: per hour
    hm = pp.hour_mask & _hours_scored(pp, scored)
    hidx = np.flatnonzero(hm)
    if len(hidx) >= 10:
        real = {}
        for kind, cand in (("default", DEFAULT_CANDIDATE), ("in", insample)):
            real[kind] = _hourly(pp, np.einsum("t,tsn->sn", np.asarray(cand.weights), pp.basis.realised[cand.group]))
        if picks and fixed is None:
            out = np.zeros_like(pp.actual_h)
            wk_h = week_index(pp.hours)
            for wk, c in picks.items():
                r = _hourly(pp, np.einsum("t,tsn->sn", np.asarray(c.weights), pp.basis.realised[c.group]))
                out[:, wk_h == wk] = r[:, wk_h == wk]
            real["out"] = out
        else:
            real["out"] = _hourly(pp, np.einsum("t,tsn->sn", np.asarray((fixed or insample).weights),
                                                pp.basis.realised[(fixed or insample).group]))
        a = pp.actual_h.sum(axis=0)
        days_h = day_blocks(pp.hours)
        for metric, fn in (("rank corr", _rc), ("top-decile share", _td)):
            row = {"metric": f"when, per hour: {metric}", "n": int(len(hidx)), "unit": "rho" if fn is _rc else "pct"}
            for kind in kinds:
                row[kind] = fn(real[kind].sum(axis=0)[hidx], a[hidx])
            base = pp.baseline_h.sum(axis=0)
            row["no_levels"] = fn(base[hidx], a[hidx])
            ro = real["out"].sum(axis=0)
            row["out_ci"] = block_bootstrap(partial(_stat_of, fn, ro[hidx], a[hidx]), days_h[hidx], BOOT)
            row["diff_ci"] = block_bootstrap(partial(_diff_of, fn, ro[hidx], base[hidx], a[hidx]), days_h[hidx], BOOT)
            row["random"] = 0.0 if fn is _rc else math.ceil(0.1 * len(hidx)) / len(hidx)
            rows.append(row)
        # scale: estimated realised / recorded over the scored hours
        row = {"metric": "scale: estimated realised / recorded, seed fraction 0.1", "n": int(len(hidx)), "unit": "x"}
        rec = float(a[hidx].sum())
        for kind in kinds:
            row[kind] = float(real[kind].sum(axis=0)[hidx].sum()) / rec if rec > 0 else math.nan
        rows.append(row)
        # the seed scale fitted to the recorded USD of the training weeks, then frozen for the week scored
        scale_rows_ = _fitted_scale(pp, real, hidx, picks, fixed, fixed_scale)
        if scale_rows_ is not None:
            rows.append(scale_rows_)
    extra: dict[str, Any] = {}
    if ds.truth is not None:
        extra["truth"] = _truth_rows(pp, insample)
    chosen_oos = sorted({c.name for c in picks.values()}) if picks else [(fixed or insample).name]
    return SetResult(ds.key, ds.label, rows, insample.name, chosen_oos,
                     {**extra, "insample_candidate": insample, "picks": picks})


def _fitted_scale(pp: Prepared, real: dict[str, np.ndarray], hidx: np.ndarray, picks: dict[int, Candidate],
                  fixed: Candidate | None, seed_scale: float | None) -> dict[str, Any] | None:
    """Estimated realised / recorded when the seed scale is fitted (sum recorded / sum estimated) on the
    hours before each scored week — in sample the ratio is 1 by construction."""
    a = pp.actual_h.sum(axis=0)
    wk_h = week_index(pp.hours)
    covered = pp.hour_mask
    row: dict[str, Any] = {"metric": "scale: estimated realised / recorded, seed scale fitted", "n": int(len(hidx)),
                           "unit": "x"}
    if fixed is not None or not picks:
        src = seed_scale
        if src is None:
            return None
        est = real["out"].sum(axis=0)
        row["out"] = float(est[hidx].sum()) * src / float(a[hidx].sum())
        row["in"] = 1.0
        return row
    num = den = 0.0
    per_day_num = np.zeros(len(a))
    for wk, c in picks.items():
        r = np.einsum("t,tsn->sn", np.asarray(c.weights), pp.basis.realised[c.group])
        est = _hourly(pp, r).sum(axis=0)
        week_start = int(wk) * 7 * 86_400 + 4 * 86_400
        train = covered & (pp.hours + 3600 <= week_start)
        if not train.any() or est[train].sum() <= 0:
            continue
        s = float(a[train].sum()) / float(est[train].sum())
        sel = (wk_h == wk) & np.isin(np.arange(len(a)), hidx)
        num += s * float(est[sel].sum())
        den += float(a[sel].sum())
        per_day_num[sel] = s * est[sel]
    if den <= 0:
        return None
    row["out"] = num / den
    row["in"] = 1.0
    days = day_blocks(pp.hours)
    row["out_ci"] = block_bootstrap(
        lambda ii: float(per_day_num[hidx][ii].sum()) / max(float(a[hidx][ii].sum()), 1e-9), days[hidx], BOOT)
    return row


def seed_scale(pp: Prepared, cand: Candidate) -> float:
    """Recorded USD / the candidate's estimated realised USD over every covered hour (in sample)."""
    est = _hourly(pp, np.einsum("t,tsn->sn", np.asarray(cand.weights), pp.basis.realised[cand.group])).sum(axis=0)
    a = pp.actual_h.sum(axis=0)
    m = pp.hour_mask
    return float(a[m].sum()) / max(float(est[m].sum()), 1e-300)


def _mean_of(values: np.ndarray, ii: np.ndarray) -> float:
    return float(np.nanmean(values[ii])) if len(ii) else math.nan


def _stat_of(fn: Callable[[np.ndarray, np.ndarray], float], p: np.ndarray, a: np.ndarray, ii: np.ndarray) -> float:
    return fn(p[ii], a[ii])


def _diff_of(fn: Callable[[np.ndarray, np.ndarray], float], p: np.ndarray, b: np.ndarray, a: np.ndarray,
             ii: np.ndarray) -> float:
    return fn(p[ii], a[ii]) - fn(b[ii], a[ii])


def _hours_scored(pp: Prepared, scored: np.ndarray) -> np.ndarray:
    """Hours inside the weeks scored out of sample."""
    wk = np.unique(pp.week[scored])
    return np.isin(week_index(pp.hours), wk)


def _hourly(pp: Prepared, per_bar: np.ndarray) -> np.ndarray:
    bars = pp.ds.bars
    start, end = pp.ds.events.span
    _, out, _ = aggregate_bars(bars.time, per_bar, max(3600, bars.timeframe), start, end)
    return out


def _rc(p: np.ndarray, a: np.ndarray) -> float:
    return rank_correlation(p, a)


def _td(p: np.ndarray, a: np.ndarray) -> float:
    total = float(a.sum())
    if total <= 0 or len(p) == 0:
        return math.nan
    k = max(1, math.ceil(0.1 * len(p)))
    return float(a[np.argsort(-p, kind="stable")[:k]].sum()) / total


def _truth_rows(pp: Prepared, cand: Candidate) -> dict[str, float]:
    """The simulated traders' true book at the end vs the estimated one (rank corr over buckets)."""
    from engine.model.scoring import truth_agreement

    t = pp.ds.truth
    assert t is not None
    out = {}
    for kind, c in (("default", DEFAULT_CANDIDATE), ("chosen", cand)):
        est = estimate(pp.ds.bars, replace(pp.params, ladder=c.ladder(kind)))
        book = est.book()
        agree = truth_agreement(book.prices(), book.usd.sum(axis=(0, 1)), t["prices"], t["usd"], book.price,
                                BUCKET_PCT, SPAN_PCT)
        out[f"{kind}_rank_corr"] = agree.rank_corr
        out[f"{kind}_top_decile_share"] = agree.top_decile_share
        out[f"{kind}_usd_ratio"] = agree.estimated_usd / agree.true_usd if agree.true_usd else math.nan
    return out


# ---- scale: Coinalyze --------------------------------------------------------------------------------
def scale_rows(data: Path, bybit: Prepared | None) -> dict[str, Any]:
    liq, oi = coinalyze(data)
    venues = sorted({c.rsplit("_", 1)[0] for c in liq})
    out: dict[str, Any] = {"venues": {}}
    for v in venues:
        if v not in oi:
            continue
        days = sorted(set(liq.get(f"{v}_long", {})) & set(liq.get(f"{v}_short", {})) & set(oi[v]))
        share = np.array([(liq[f"{v}_long"][d] + liq[f"{v}_short"][d]) / oi[v][d] for d in days if oi[v][d] > 0])
        if len(share) < 30:
            continue
        out["venues"][v] = {"days": len(share), "median_pct": float(np.median(share) * 100),
                            "p90_pct": float(np.quantile(share, 0.9) * 100)}
    if bybit is not None:
        col = "BTC/USDT - Bybit"
        days = [int(d) for d in bybit.ds.days if int(d) in oi.get(col, {})]
        ev = bybit.ds.events
        rec = np.bincount(day_blocks(ev.time) - min(days), weights=ev.usd, minlength=max(days) - min(days) + 1)
        cz = np.array([liq[f"{col}_long"].get(d, np.nan) + liq[f"{col}_short"].get(d, np.nan) for d in days])
        ois = np.array([oi[col][d] for d in days])
        r = rec[np.array(days) - min(days)]
        out["bybit_2024"] = {
            "days": len(days),
            "recorded_share_median_pct": float(np.median(r / ois) * 100),
            "coinalyze_share_median_pct": float(np.nanmedian(cz / ois) * 100),
            "recorded_over_coinalyze": float(np.nansum(r) / np.nansum(cz)),
            "oi_median_usd": float(np.median(ois)),
        }
    return out


# ---- run and render ------------------------------------------------------------------------------
@dataclass
class SuiteReport:
    sets: list[SetResult]
    scale: dict[str, Any]
    seconds: float
    final: Candidate  # fitted on every Bybit week: what the product ships
    final_fit_span: str
    final_seed_scale: float | None = None  # recorded / estimated realised USD at seed fraction 0.1

    def to_dict(self) -> dict[str, Any]:
        return {
            "sets": [
                {"key": s.key, "label": s.label, "rows": s.rows, "chosen_in_sample": s.chosen_in_sample,
                 "chosen_out_of_sample": s.chosen_out_of_sample,
                 "truth": s.extra.get("truth")}
                for s in self.sets
            ],
            "scale": self.scale,
            "seconds": self.seconds,
            "final": {"name": self.final.name, "weights": dict(zip([f"{x:g}x" for x in LEVERAGES], self.final.weights, strict=True)),
                      "half_life_hours": list(HALF_LIFE_GROUPS[self.final.group]), "fitted_on": self.final_fit_span},
        }


@dataclass
class BybitFit:
    """What the Bybit set fits on all its weeks: the shipped preset, its seed scale, and the scale rows."""

    final: Candidate
    scale: float
    span: str
    scale_rows: dict[str, Any]


@dataclass(frozen=True)
class SetJob:
    data: Path
    key: str
    reps: int
    fit: BybitFit | None = None  # the Bybit fit, for the sets scored with it


def score_one_set(job: SetJob) -> tuple[SetResult, BybitFit | None]:
    """One set, loaded, prepared and scored (in a pool process under ``--jobs``); the Bybit set also
    returns its fit for the sets scored with it."""
    pp = prepare(load_sets(job.data, (job.key,))[0])
    fit = job.fit
    if job.key == "bybit-15m":
        final = choose(pp, pp.valid[FIT_HORIZON])
        span = f"Bybit BTCUSDT liquidations {_day(pp.ds.events.span[0])} → {_day(pp.ds.events.span[1])} (15m candles)"
        fit = BybitFit(final, seed_scale(pp, final), span, scale_rows(job.data, pp))
    fixed = None if pp.ds.walk_forward else (fit.final if fit else DEFAULT_CANDIDATE)
    return score_set(pp, fixed, job.reps, fit.scale if fit else None), fit if job.key == "bybit-15m" else None


def run_suite(data: Path | None = None, which: tuple[str, ...] | None = None, reps: int = 100,
              jobs: int = 1) -> SuiteReport:
    """Every set asked for; ``jobs`` > 1 scores the sets in that many processes side by side. The sets are
    independent except that okx-1h is scored with the Bybit fit, so it starts once the Bybit set is done;
    the figures are the same for any ``jobs`` (the same functions on the same data, in the same order)."""
    from engine.batch import side_by_side

    started = time.perf_counter()
    data = data or DEFAULT_DATA_DIR
    keys = set_keys(which)
    first = [k for k in keys if k not in FITTED_ON_BYBIT]
    results: dict[str, SetResult] = {}
    fit: BybitFit | None = None
    for key, (res, got) in zip(first, side_by_side(score_one_set, [SetJob(data, k, reps) for k in first], jobs),
                                strict=True):
        results[key], fit = res, got or fit
    # A walk-forward set that found no week to score falls back on the Bybit seed scale (score_set):
    # with the fit known now, it is scored again with it, as a one-process run would have.
    again = [k for k in first if fit is not None and k != "bybit-15m" and not results[k].extra["picks"]]
    later = [k for k in keys if k in FITTED_ON_BYBIT] + again
    for key, (res, _) in zip(later, side_by_side(score_one_set, [SetJob(data, k, reps, fit) for k in later], jobs),
                             strict=True):
        results[key] = res
    final = fit.final if fit else DEFAULT_CANDIDATE
    return SuiteReport([results[k] for k in keys], fit.scale_rows if fit else {}, time.perf_counter() - started,
                       final, fit.span if fit else "", fit.scale if fit else None)


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _fmt(x: Any, unit: str) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if unit == "pct":
        return f"{x * 100:.1f}%"
    if unit == "x":
        return f"{x:.2f}x"
    return f"{x:+.2f}"


def _ci(ci: tuple[float, float] | None, unit: str) -> str:
    if not ci or ci[0] != ci[0]:
        return ""
    return f" [{_fmt(ci[0], unit)}, {_fmt(ci[1], unit)}]"


def render_table(rep: SuiteReport) -> str:
    """One markdown table: set x metric x {default ladder, chosen in/out of sample, baselines}."""
    lines = [
        "| set | metric | n | default ladder | chosen, in-sample | chosen, out-of-sample [95% CI] | no-levels | nearest | random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rep.sets:
        for r in s.rows:
            u = r["unit"]
            rnd = _fmt(r.get("random"), u) + (" (" + r["random_label"] + ")" if r.get("random_label") else "")
            lines.append(
                f"| {s.key} | {r['metric']} | {r['n']} | {_fmt(r.get('default'), u)} | {_fmt(r.get('in'), u)} | "
                f"{_fmt(r.get('out'), u)}{_ci(r.get('out_ci'), u)} | {_fmt(r.get('no_levels'), u) if 'no_levels' in r else '—'} | "
                f"{_fmt(r.get('nearest'), u) if 'nearest' in r else '—'} | {rnd if 'random' in r else '—'} |"
            )
    return "\n".join(lines)


def render(rep: SuiteReport) -> str:
    out = [
        "liqheat accuracy suite — the model's ESTIMATE scored against recorded liquidations",
        "events at their liquidation price (Bybit/OKX bankruptcy prices moved one maintenance margin nearer the entry);",
        "out-of-sample = walk-forward by week (parameters chosen on windows that ended before the week scored);",
        "okx-1h is scored with the parameters fitted on the Bybit set. CI: block bootstrap over days.",
        "",
        render_table(rep),
        "",
    ]
    for s in rep.sets:
        out.append(f"{s.key}: {s.label}; chosen in-sample: {s.chosen_in_sample}; out-of-sample picks: "
                   + "; ".join(s.chosen_out_of_sample))
        for r in s.rows:
            if "diff_ci" in r and r.get("no_levels") is not None:
                u = r["unit"]
                d = r["out"] - r["no_levels"]
                sign = "+" if d >= 0 else ""
                diff = f"{sign}{d * 100:.1f} points" if u == "pct" else f"{d:+.2f}"
                lo, hi = r["diff_ci"]
                ci = f"{lo * 100:+.1f}, {hi * 100:+.1f}" if u == "pct" else f"{lo:+.2f}, {hi:+.2f}"
                out.append(f"  {r['metric']}: out-of-sample model minus no-levels baseline {diff} [95% CI {ci}]")
        if s.extra.get("truth"):
            t = s.extra["truth"]
            out.append(f"  vs the simulated TRUE book: rank corr default {t['default_rank_corr']:+.2f}, chosen "
                       f"{t['chosen_rank_corr']:+.2f}; estimated/true USD default {t['default_usd_ratio']:.2f}x, "
                       f"chosen {t['chosen_usd_ratio']:.2f}x")
    sc = rep.scale
    if sc.get("bybit_2024"):
        b = sc["bybit_2024"]
        out.append(
            f"scale (Coinalyze, BTC/USDT Bybit, {b['days']} event days): recorded events = {b['recorded_over_coinalyze']:.2f}x "
            f"Coinalyze's daily sums; median share of OI liquidated per day: events {b['recorded_share_median_pct']:.2f}%, "
            f"Coinalyze {b['coinalyze_share_median_pct']:.2f}%"
        )
    if sc.get("venues"):
        out.append("Coinalyze median (90th pct) share of OI liquidated per day: " + "; ".join(
            f"{v} {d['median_pct']:.2f}% ({d['p90_pct']:.2f}%)" for v, d in sc["venues"].items()))
    lad = rep.final.ladder("near")
    hl = ", ".join(f"{h:g}h" for h in (lad.half_life_hours or ()))
    out.append(f"fitted preset `near` (chosen on every week of {rep.final_fit_span}): {rep.final.name}: "
               f"{lad.describe()}, half-lives {hl}; volume fraction 0.1 x fitted seed scale "
               f"{rep.final_seed_scale or math.nan:.3g} = {0.1 * (rep.final_seed_scale or math.nan):.3g}. Not made the default: it loses to the default ladder on the simulated market "
               "(map x touch, when, rank corr with the true book) and on long horizons (where, given touch 24h there).")
    out.append(f"suite ran in {rep.seconds:.1f} s")
    return "\n".join(out)


README_BEGIN = "<!-- accuracy-suite:begin (generated by `liqheat backtest --suite --write-readme README.md`) -->"
README_END = "<!-- accuracy-suite:end -->"


def write_readme(rep: SuiteReport, path: Path) -> None:
    """Replace the text between the markers in ``path`` with the suite's report (table and notes)."""
    text = path.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise SuiteError(f"{path}: no accuracy-suite markers to write between")
    head, _, rest = text.partition(README_BEGIN)
    _, _, tail = rest.partition(README_END)
    lines = render(rep).splitlines()
    table = render_table(rep).splitlines()
    at = lines.index(table[0])
    intro = [ln for ln in lines[1:at] if ln.strip()]
    notes = [f"- {ln.strip()}" for ln in lines[at + len(table):] if ln.strip() and not ln.startswith("suite ran")]
    body = "\n".join([" ".join(intro), "", *table, "", *notes])
    path.write_text(f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}", encoding="utf-8")


def headline(rep: SuiteReport, kind: str) -> str:
    """One line for the UIs: the Bybit set's out-of-sample zone figures for the default ladder or the fit."""
    by = next((s for s in rep.sets if s.key == "bybit-15m"), None)
    if by is None:
        return ""
    rows = {r["metric"]: r for r in by.rows}
    drawn = rows.get(f"where {FIT_HORIZON:g}h: map as drawn (precision@10%)")
    touch = rows.get(f"where {FIT_HORIZON:g}h: map x touch (precision@10%)")
    cond = rows.get("where, given touch 1h (rank corr)")
    if drawn is None or touch is None:
        return ""
    col = "default" if kind == "default" else "out"
    text = (
        f"out of sample on Bybit BTCUSDT 2024 liquidations (weeks not fitted on): brightest 10% of 0.25% buckets "
        f"caught {drawn[col] * 100:.1f}% of the next 4h's liquidated USD (random {drawn['random'] * 100:.1f}%, "
        f"nearest buckets {drawn['nearest'] * 100:.1f}%); ranked by USD x touch probability {touch[col] * 100:.1f}%"
    )
    if cond is not None:
        text += f"; where price went within 1h, rank corr of map USD vs liquidated USD {cond[col]:+.2f}"
    return text


def write_fitted(rep: SuiteReport, path: Path) -> None:
    """The fitted preset and the headline figures as a small generated module (engine/model/fitted.py)."""
    final = rep.final
    lad = final.ladder("near")
    fraction = None if rep.final_seed_scale is None else 0.1 * rep.final_seed_scale
    doc = {
        "near": {
            "leverage": list(lad.leverage), "weights": [round(w, 4) for w in lad.weights],
            "half_life_hours": list(lad.half_life_hours or ()),
            "fitted_on": f"{rep.final_fit_span}; chosen by the accuracy suite ({final.name})",
            "volume_proxy_fraction": None if fraction is None else float(f"{fraction:.4g}"),
        }
    }
    heads = {"default": headline(rep, "default"), "near": headline(rep, "near")}
    text = (
        '"""Fitted presets and the accuracy suite\'s headline figures.\n\n'
        "GENERATED by `liqheat backtest --suite --write-fitted engine/model/fitted.py` (engine/accuracy.py);\n"
        'do not edit by hand: re-run the suite."""\n\n'
        f"FITTED_LADDERS: dict[str, dict[str, object]] = {doc!r}\n\n"
        f"HEADLINE: dict[str, str] = {heads!r}\n\n"
        'SUITE = "liqheat backtest --suite (README: Accuracy)"\n'
    )
    path.write_text(text, encoding="utf-8")
