"""A naive reference implementation of the estimation model: one bar at a time, plain Python floats,
lists and dicts, no numpy in the arithmetic.

It exists to pin the engine down. The engine's batch path is vectorised and clever (a sparse-table
first-touch search, cohorts merged per level, separable survival factors, a scan over heatmap columns);
this file is the model as a trader would describe it, written out literally, so that the engine can be
checked against it (tests/model/test_reference.py) and its speed-up measured (benchmarks/bench_engine.py).

Per bar, in order:
  1. clear: every outstanding slice whose liquidation level the bar reached is liquidated (its current
     value is the bar's realised liquidation on that side);
  2. age: every outstanding slice shrinks by the bar's OI drop and its tier's half-life decay;
  3. seed: the bar's new exposure is split over sides, entry anchors and leverage tiers, and each slice
     is placed at its liquidation price snapped to the level grid (level k = price exp(k * step)).

Only the model's *inputs* come from the engine: the Bars columns, the ladder and the margin brackets
(tables of numbers). The formulas are re-derived here from the exchanges' published ones.

At the end, a second kind of reference: the zone protocol's scoring one window at a time (numpy per
window), as it was before the engine did every window in whole-array passes.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from engine.model import Bars, ModelParams

LONG, SHORT = 0, 1


def _f(x: object) -> float:
    return float(x)  # type: ignore[arg-type]


def _finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


def liquidation_factor(exchange: str, contract: str, lev: float, mmr: float, cum_rate: float, side: int) -> float:
    """Liquidation price / entry, from each exchange's published isolated formula (fees ignored).
    0 (long) / inf (short) when the position can never be liquidated."""
    ex = exchange.lower().replace("usdm", "")
    if ex not in ("binance", "bybit", "okx"):
        ex = "binance"
    c = 0.0 if ex == "okx" else cum_rate
    if contract == "linear":
        if ex == "bybit":  # maintenance margin on the entry value: LP = E -/+ (IM - MM)/Q
            f = 1 - 1 / lev + mmr - c if side == LONG else 1 + 1 / lev - mmr + c
        else:  # Binance / OKX: maintenance margin on the value at the liquidation price
            f = (1 - 1 / lev - c) / (1 - mmr) if side == LONG else (1 + 1 / lev + c) / (1 + mmr)
    else:  # inverse (coin-margined)
        if side == LONG:
            f = (1 + mmr) / (1 + 1 / lev + c)
        else:
            den = 1 - 1 / lev - c
            f = (1 - mmr) / den if den > 0 else math.inf
    if not (_finite(f) and f > 0):
        return 0.0 if side == LONG else math.inf
    return f


@dataclass
class ReferenceResult:
    times: list[int]  # bar open times
    realised_long: list[float]
    realised_short: list[float]
    seed_mode: str
    # book snapshots: for each requested column, {(side, tier, level): usd} (pieces summed)
    column_books: list[dict[tuple[int, int, int], float]] = field(default_factory=list)
    final_book: dict[tuple[int, int, int], float] = field(default_factory=dict)
    step: float = 0.0

    def level_price(self, level: int) -> float:
        return math.exp(level * self.step)

    def heatmap(self, edges: list[float], n_tiers: int) -> list[list[list[list[float]]]]:
        """grid[column][side][bin][tier] in USD, binned on ``edges`` (outside: dropped). A level stands for
        its cell of the level grid (one step wide in log price, centred on it) and is split over the bins
        by how much of the cell each one covers."""
        nb = len(edges) - 1
        log_edges = [math.log(e) for e in edges]
        out = []
        for book in self.column_books:
            grid = [[[0.0] * n_tiers for _ in range(nb)] for _ in range(2)]
            for (side, tier, level), usd in book.items():
                low = level * self.step - self.step / 2
                high = low + self.step
                for b in range(bisect.bisect_right(log_edges, low) - 1, bisect.bisect_left(log_edges, high)):
                    if 0 <= b < nb:
                        share = (min(high, log_edges[b + 1]) - max(low, log_edges[b])) / self.step
                        if share > 0:
                            grid[side][b][tier] += usd * share
            out.append(grid)
        return out


def run_reference(bars: Bars, params: ModelParams, column_times: list[int] | None = None) -> ReferenceResult:
    """Walk the bars one by one. ``column_times``: UNIX seconds at which to snapshot the book (the book
    after every bar that had closed by then), ascending."""
    n = len(bars)
    step = math.log1p(params.resolution)
    tf = bars.timeframe
    time = [int(t) for t in bars.time]
    o = [_f(x) for x in bars.open]
    h = [_f(x) for x in bars.high]
    lo = [_f(x) for x in bars.low]
    c = [_f(x) for x in bars.close]
    vol = None if bars.volume is None else [_f(x) for x in bars.volume]
    buy = None if bars.taker_buy_volume is None else [_f(x) for x in bars.taker_buy_volume]
    sell = None if bars.taker_sell_volume is None else [_f(x) for x in bars.taker_sell_volume]
    oi = None if (bars.oi_usd is None or params.seed_mode == "volume") else [_f(x) for x in bars.oi_usd]
    if oi is None and params.seed_mode == "oi":
        raise ValueError("seed mode 'oi' needs open interest")
    if oi is None and vol is None:
        raise ValueError("bars need volume or open interest")

    # ladder, brackets, formulas
    levs = [float(x) for x in params.ladder.leverage]
    w_tier = [float(x) for x in params.ladder.weights]
    brackets = params.brackets()
    factors = [
        [
            liquidation_factor(
                params.exchange, params.contract, levs[t], brackets[t].mmr, brackets[t].cum / params.typical_position_usd, side
            )
            for t in range(len(levs))
        ]
        for side in (LONG, SHORT)
    ]
    rates = []
    for hl in params.ladder.half_lives():
        rates.append(math.log(2.0) / (hl * 3600.0) if (params.decay and hl > 0) else 0.0)
    w_sum = sum(params.entry_weights)
    anchors = list(zip(params.entry_anchors, [w / w_sum for w in params.entry_weights], strict=True))
    shares = [params.wick_clear] if params.wick_clear >= 1.0 else [params.wick_clear, 1.0 - params.wick_clear]

    # state: one dict per piece, (side, tier, level) -> usd
    state: list[dict[tuple[int, int, int], float]] = [{} for _ in shares]
    prev_oi = math.nan
    sum_new, sum_turn = 0.0, 0.0
    bars_oi = bars_vol = 0
    realised_long, realised_short = [], []
    cols = list(column_times or [])
    books: list[dict[tuple[int, int, int], float]] = []
    ci = 0

    def snapshot() -> dict[tuple[int, int, int], float]:
        total: dict[tuple[int, int, int], float] = {}
        for piece in state:
            for key, usd in piece.items():
                total[key] = total.get(key, 0.0) + usd
        return total

    # columns before the first close see an empty book
    while ci < len(cols) and cols[ci] < time[0] + tf:
        books.append({})
        ci += 1

    for j in range(n):
        # ---- 1. clear what this bar reached (slices opened in earlier bars only) ----
        r_long = r_short = 0.0
        reach = [(lo[j], h[j])]
        if len(shares) == 2:
            reach.append((min(o[j], c[j]), max(o[j], c[j])))
        for p, (low_p, high_p) in enumerate(reach):
            long_from = math.ceil(math.log(low_p) / step - 1e-9)  # long levels >= this are reached
            short_to = math.floor(math.log(high_p) / step + 1e-9)  # short levels <= this are reached
            for key in list(state[p]):
                side, _tier, level = key
                if (side == LONG and level >= long_from) or (side == SHORT and level <= short_to):
                    usd = state[p].pop(key)
                    if side == LONG:
                        r_long += usd
                    else:
                        r_short += usd
        realised_long.append(r_long)
        realised_short.append(r_short)

        # ---- seeding inputs: new exposure and the OI-drop survival ----
        price = (h[j] + lo[j] + c[j]) / 3.0
        turnover = None
        if vol is not None:
            v = vol[j]
            turnover = (0.0 if math.isnan(v) else v) * price
        known = opening = False
        new_oi = 0.0
        log_shrink = 0.0
        if oi is not None:
            now = oi[j]
            known = _finite(now) and _finite(prev_oi)
            opening = _finite(now) and not _finite(prev_oi)  # where the OI series begins
            if known:
                d = now - prev_oi
                new_oi = max(d, 0.0)
                if params.shrink_on_oi_drop and d < 0 and prev_oi > 0:
                    log_shrink = math.log(min(max(now / prev_oi, 1e-12), 1.0))
            if _finite(now):
                prev_oi = now
        if turnover is None:
            seed = new_oi
            proxy = False
        else:
            if params.seed_mode == "volume" or oi is None:
                scale = params.volume_proxy_fraction
            else:
                if known and turnover > 0:
                    sum_new += new_oi
                    sum_turn += turnover
                scale = sum_new / sum_turn if sum_turn > 0 else params.volume_proxy_fraction
            proxy = (not known) and params.seed_mode != "oi"
            seed = new_oi if known else (turnover * scale if proxy else 0.0)
        bars_oi += int(known)
        bars_vol += int(proxy and not opening)

        # ---- 2. age the book: OI drop and decay over the time since the previous close ----
        if j > 0:
            dt = float(time[j] - time[j - 1])  # closes are one timeframe after the opens
            for p in range(len(shares)):
                for key in state[p]:
                    state[p][key] *= math.exp(log_shrink - rates[key[1]] * dt)

        # ---- 3. sides, entries, tiers: place the bar's new slices ----
        rng = h[j] - lo[j]
        candle = (c[j] - o[j]) / rng if rng > 0 else 0.0
        imb = candle
        if buy is not None and sell is not None:
            b = 0.0 if math.isnan(buy[j]) else buy[j]
            s = 0.0 if math.isnan(sell[j]) else sell[j]
            imb = (b - s) / (b + s) if b + s > 0 else candle
        tilt = params.side_tilt * min(max(imb, -1.0), 1.0)
        side_usd = (seed * (1.0 + tilt), seed * (1.0 - tilt))
        for side in (LONG, SHORT):
            for t in range(len(levs)):
                f = factors[side][t]
                if f == 0.0 or math.isinf(f):
                    continue
                for a, wa in anchors:
                    usd = side_usd[side] * w_tier[t] * wa
                    if usd <= 0:
                        continue
                    entry = lo[j] + a * rng
                    level = round(math.log(entry * f) / step)
                    for p, share in enumerate(shares):
                        key = (side, t, level)
                        state[p][key] = state[p].get(key, 0.0) + usd * share

        close_time = time[j] + tf
        nxt = time[j + 1] + tf if j + 1 < n else None
        while ci < len(cols) and cols[ci] >= close_time and (nxt is None or cols[ci] < nxt):
            books.append(snapshot())
            ci += 1

    mode = "oi" if (bars_vol == 0 and bars_oi > 0) else "volume" if bars_oi == 0 else "hybrid"
    return ReferenceResult(time, realised_long, realised_short, mode, books, snapshot(), step)


# ---- the zone protocol, one window at a time ---------------------------------------------------------
def zone_protocol_one_by_one(
    est: Any, events: Any, horizon_hours: float = 4.0, step_s: int = 3600, bucket_pct: float = 0.25,
    span_pct: float = 10.0, top: float = 0.1, min_events: int = 10, coverage: tuple[float, float] | None = None,
    rank: str = "usd",
) -> Any:
    """engine.model.scoring.zone_protocol as it was written before it went whole-array: the same books
    and touch probabilities, then a loop over the windows choosing each one's buckets and bucketing its
    events with numpy calls per window. The engine must give the same ZoneScore to the last bit
    (tests/analytics/test_backtest_scoring.py); benchmarks/bench_peers.py times the two side by side."""
    import numpy as np

    from engine.model.accuracy import touch_matrix
    from engine.model.scoring import ZoneScore, effective_n, est_window_books, wilson_lower

    start, end = coverage or events.span
    h = int(round(horizon_hours * 3600))
    bars = est.bars
    first = max(math.ceil(start / step_s) * step_s, int(bars.close_time[0]))
    times = np.arange(first, int(end) - h + 1, step_s, dtype=np.int64)
    nb = max(2, int(round(2 * math.log1p(span_pct / 100) / math.log1p(bucket_pct / 100))))
    hit_usd = tot_usd = rand_usd = near_usd = 0.0
    per_window: list[dict[str, float]] = []
    weight_per_event = np.zeros(len(events))
    n_closed_all = np.searchsorted(bars.close_time, times, side="right")
    lo_ev = np.searchsorted(events.time, times, side="right")
    hi_ev = np.searchsorted(events.time, times + h, side="right")
    has_bars = n_closed_all > 0
    enough = (hi_ev - lo_ev) >= min_events
    excluded = int((has_bars & ~enough).sum())
    kept = has_bars & enough
    books = est_window_books(est, times[kept], bucket_pct, span_pct)
    preds = books.usd.sum(axis=(0, 2))
    if rank == "risk" and len(books.times):
        preds = preds * touch_matrix(bars, books, horizon_hours)
    for j, t in enumerate(books.times):
        a, b_ = int(lo_ev[kept][j]), int(hi_ev[kept][j])
        sel = slice(a, b_)
        price = float(books.price[j])
        edges = books.edges[j]
        pred = preds[j]
        k = max(1, math.ceil(top * nb))
        order = np.argsort(-pred, kind="stable")
        chosen = order[:k][pred[order[:k]] > 0]
        centers = np.sqrt(edges[1:] * edges[:-1])
        nearest = np.argsort(np.abs(np.log(centers / price)), kind="stable")[: len(chosen)]
        b = np.searchsorted(edges, events.price[sel], side="right") - 1
        inside = (b >= 0) & (b < nb)
        b = np.where(inside, b, nb)
        is_chosen = np.zeros(nb + 1, dtype=bool)
        is_chosen[chosen] = True
        is_near = np.zeros(nb + 1, dtype=bool)
        is_near[nearest] = True
        w = events.usd[sel]
        total = float(w.sum())
        in_range = float(w[inside].sum())
        hit = float(w[is_chosen[b]].sum())
        near = float(w[is_near[b]].sum())
        rand = in_range * len(chosen) / nb
        hit_usd += hit
        tot_usd += total
        rand_usd += rand
        near_usd += near
        weight_per_event[sel] += w
        per_window.append(
            {"time": int(t), "price": price, "events": int(b_ - a), "usd": total, "precision": hit / total,
             "random": rand / total, "nearest": near / total, "buckets_chosen": int(len(chosen))}
        )
    precision = hit_usd / tot_usd
    random = rand_usd / tot_usd
    n_eff = effective_n(weight_per_event[weight_per_event > 0])
    lo = wilson_lower(precision, n_eff)
    return ZoneScore(
        rank, horizon_hours, bucket_pct, span_pct, len(per_window), excluded, int((weight_per_event > 0).sum()),
        tot_usd, precision, random, precision / random if random > 0 else math.nan, lo,
        lo / random if random > 0 else math.nan, n_eff, near_usd / tot_usd,
        (near_usd / tot_usd) / random if random > 0 else math.nan, tuple(per_window),
    )
