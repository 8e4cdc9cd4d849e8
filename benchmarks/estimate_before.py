"""The batch estimate's code paths as they were before issue 12's estimate round, kept so that the
benchmarks can time them beside today's in one run (the same answers, to the bit).

- first touch: run starts listed per level, the queries radix-sorted by level, then one small binary
  search per level in a Python loop (~1,100 levels for 8,015 5m bars: the loop was most of the estimate).
- seeds: the candle's direction computed for every bar (needed only where no taker volume is known),
  the log of the surviving share taken for every bar (0 where OI did not fall).

``with before(): estimate(bars, params)`` runs the estimate through them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module

import numpy as np

from engine.model.bars import Bars, BarsError
from engine.model.cohorts import SeedCarry, Seeds, _candle_direction
from engine.model.ladder import ModelParams
from engine.model.lifetime import FirstTouch


class FirstTouchBefore(FirstTouch):
    per_level_min = 32  # fewest queries per level (on average) for the per-level search to beat the table

    def first(self, start: np.ndarray, q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        start = np.asarray(start)
        q = np.asarray(q)
        if out is None:
            out = np.empty(len(start), dtype=np.int64)
        if self.n == 0 or len(start) == 0:
            out[:] = self.n
            return out
        runs = _run_starts(self.reach, int(q.min()), int(q.max()), budget=2 * len(q) + self.run_budget)
        if runs is not None:
            return _first_by_runs(self.reach, runs, int(q.min()), start, q, out, self.first_by_table, self.per_level_min)
        out[:] = self.first_by_table(start, q)
        return out


def _run_starts(reach: np.ndarray, kmin: int, kmax: int, budget: int) -> tuple[np.ndarray, np.ndarray] | None:
    n = len(reach)
    r = np.clip(reach, kmin, kmax + 1)
    prev = np.empty_like(r)
    prev[0] = kmax + 1
    prev[1:] = r[:-1]
    count = np.maximum(prev - r, 0)
    total = int(count.sum())
    if total > budget:
        return None
    k = kmax - kmin + 1
    bar = np.repeat(np.arange(n, dtype=np.int64), count)
    level = np.repeat(r - kmin, count) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count))
    order = np.argsort(level, kind="stable")
    level = level[order]
    per_level = np.bincount(level, minlength=k)
    bars = np.full(total + k, n, dtype=np.int64)
    bars[np.arange(total) + level] = bar[order]
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(per_level + 1, out=offsets[1:])
    return bars, offsets


_CHUNK = 1 << 19


def _first_by_runs(
    reach: np.ndarray,
    runs: tuple[np.ndarray, np.ndarray],
    kmin: int,
    start: np.ndarray,
    q: np.ndarray,
    out: np.ndarray,
    fallback: Callable[[np.ndarray, np.ndarray], np.ndarray],
    per_level_min: int,
) -> np.ndarray:
    bars, offsets = runs
    n = len(reach)
    levels = len(offsets) - 1
    reach_ext = np.r_[reach, np.iinfo(np.int64).max]
    for lo in range(0, len(start), _CHUNK):
        s = np.minimum(start[lo : lo + _CHUNK], n)
        qc = q[lo : lo + _CHUNK]
        dst = out[lo : lo + _CHUNK]
        rel = qc.astype(np.int64) - kmin
        per_level = np.bincount(rel, minlength=levels)
        present = np.flatnonzero(per_level)
        if len(present) * per_level_min > len(rel):
            dst[:] = fallback(s, qc)
            continue
        order = np.argsort(rel.astype(np.uint16) if levels <= 1 << 16 else rel, kind="stable")
        starts = s[order]
        found = np.empty(len(starts), dtype=np.int64)
        bounds = np.zeros(levels + 1, dtype=np.int64)
        np.cumsum(per_level, out=bounds[1:])
        for k in present.tolist():
            a, b = bounds[k], bounds[k + 1]
            own = bars[offsets[k] : offsets[k + 1]]
            found[a:b] = own[np.searchsorted(own, starts[a:b])]
        dst[order] = found
        np.copyto(dst, s, where=reach_ext[s] <= qc, casting="unsafe")
    return out


def seed_exposure(bars: Bars, params: ModelParams, carry: SeedCarry) -> Seeds:
    """engine.model.cohorts.seed_exposure before: the candle's direction and the log of every bar."""
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
        candle = _candle_direction(bars)
        imb = np.where(tot > 0, (buy - sell) / np.where(tot > 0, tot, 1.0), candle)
    else:
        imb = _candle_direction(bars)
    tilt = params.side_tilt * np.clip(imb, -1.0, 1.0)
    return Seeds(seed * (1.0 + tilt), seed * (1.0 - tilt), log_shrink)


@contextmanager
def before() -> Iterator[None]:
    """Estimates made inside use the code paths above."""
    names = vars(import_module("engine.model.estimate"))  # the module (engine.model.estimate is also a function)
    saved = {k: names[k] for k in ("FirstTouch", "seed_exposure")}
    names.update(FirstTouch=FirstTouchBefore, seed_exposure=seed_exposure)
    try:
        yield
    finally:
        names.update(saved)
