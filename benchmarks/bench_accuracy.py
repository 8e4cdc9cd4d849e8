"""``python -m benchmarks accuracy``: the accuracy suite (the same code as ``liqheat backtest --suite``), its
wall time, and the scoring path's speed-up measured side by side on the Bybit 2024 set: the book at every
hourly window by ``Estimate.book`` per window (what the zone protocol did) vs one pass (window_books), and
touch probabilities per window (engine.model.touch) vs all windows at once (touch_matrix).

Absolute times on a shared 2-core machine are noisy; the ratios are measured in the same run."""

from __future__ import annotations

import time

import numpy as np

from engine.accuracy import DEFAULT_DATA_DIR, load_sets, render, run_suite
from engine.model import ModelParams, estimate
from engine.model.accuracy import touch_matrix, window_books
from engine.model.touch import realised_volatility, touch_probability


def _clock(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    if not DEFAULT_DATA_DIR.exists():
        print(f"no shared data at {DEFAULT_DATA_DIR}: skipped")
        return
    ds = load_sets(DEFAULT_DATA_DIR, ("bybit-15m",))[0]
    est = estimate(ds.bars, ModelParams(exchange="bybit"))
    start, end = ds.events.span
    times = np.arange(int(start) // 3600 * 3600 + 3600, int(end) - 4 * 3600, 3600, dtype=np.int64)
    t_new, books = _clock(window_books, est, times)
    sample = times[:: max(1, len(times) // 150)]
    closed = np.searchsorted(ds.bars.close_time, sample, side="right")

    def per_window_books() -> None:
        for j, n in enumerate(closed):
            est.book(int(n)).binned(books.edges[j * max(1, len(times) // 150)])

    t_old_sample, _ = _clock(per_window_books)
    t_old = t_old_sample * len(times) / len(sample)
    t_touch_new, _ = _clock(touch_matrix, ds.bars, books, 4.0)

    def per_window_touch() -> None:
        step = max(1, len(times) // 150)
        for j in range(0, len(times), step):
            n = int(books.closed[j])
            vol = realised_volatility(ds.bars.slice(0, n))
            e, p = books.edges[j], float(books.price[j])
            near = np.where(e[1:] < p, e[1:], np.where(e[:-1] > p, e[:-1], p))
            touch_probability(p, near, vol, 4.0)

    t_touch_old_sample, _ = _clock(per_window_touch)
    t_touch_old = t_touch_old_sample * len(times) / len(range(0, len(times), max(1, len(times) // 150)))
    print(f"Bybit 15m set, {len(times)} hourly windows (old path timed on a sample of {len(sample)}, scaled):")
    print(f"  book at every window   per-window Estimate.book {t_old:7.2f} s   one pass {t_new:6.2f} s   "
          f"ratio {t_old / t_new:5.1f}x")
    print(f"  touch probabilities    per-window touch model   {t_touch_old:7.2f} s   all at once {t_touch_new:6.2f} s   "
          f"ratio {t_touch_old / t_touch_new:5.1f}x")
    t_suite, rep = _clock(run_suite)
    print()
    print(render(rep))
    print(f"\nsuite over every set: {t_suite:.1f} s wall (goal: <= 60 s on 2 cores)")
