"""Engine performance: a year of 1-minute bars recomputed in full, one live bar appended to that history,
and the vectorised engine against the naive per-bar reference (benchmarks/reference.py).

    python -m benchmarks engine

Each heavy figure is measured in a fresh subprocess, so its peak memory is its own. "CPU" is the
process's user + system time (what one core spent, whatever else the machine is doing); "wall" is
elapsed time. "cold" is the first run in a fresh process: it includes the kernel handing the process new
memory pages, which on a small VM can cost as much as the arithmetic; "warm" is the median of the runs
after it, the steady state of a long-lived service.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
YEAR_1M = 525_600
COLUMNS, BINS = 1000, 500
GOAL_RECOMPUTE_S = 1.0
GOAL_PEAK_GB = 1.5
GOAL_APPEND_MS = 2.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---- children (run in their own process) ----------------------------------------------------------
def child_recompute(n: int, with_oi: bool, runs: int) -> dict[str, Any]:
    """Full recompute: estimate + a COLUMNS x BINS heatmap over the whole history."""
    from engine.model import ModelParams, estimate, price_edges
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(n, seed=7, with_oi=with_oi)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = int((bars.close_time[-1] - bars.close_time[0]) // COLUMNS) // 60 * 60
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, BINS)
    walls, cpus, est_cpu, hm_cpu = [], [], [], []
    cohorts = 0
    mode = ""
    for _ in range(runs):
        w0, c0 = time.perf_counter(), _cpu()
        est = estimate(bars, ModelParams())
        c1 = _cpu()
        hm = est.heatmap(step=step, columns=COLUMNS, edges=edges)
        c2, w2 = _cpu(), time.perf_counter()
        walls.append(w2 - w0)
        cpus.append(c2 - c0)
        est_cpu.append(c1 - c0)
        hm_cpu.append(c2 - c1)
        cohorts, mode = len(est.cohorts), est.seed_mode
        assert hm.long_usd.shape == (COLUMNS, BINS, 5)
        del est, hm
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "bars": n, "cohorts": cohorts, "seed_mode": mode, "cold_wall": walls[0], "cold_cpu": cpus[0],
        "warm_wall": statistics.median(walls[1:]) if runs > 1 else walls[0],
        "warm_cpu": statistics.median(cpus[1:]) if runs > 1 else cpus[0],
        "best_cpu": min(cpus[1:]) if runs > 1 else cpus[0],
        "warm_estimate_cpu": statistics.median(est_cpu[1:]) if runs > 1 else est_cpu[0],
        "warm_heatmap_cpu": statistics.median(hm_cpu[1:]) if runs > 1 else hm_cpu[0],
        "peak_rss_mb": peak_rss / 1024, "engine_rss_mb": (peak_rss - base_rss) / 1024,
    }


def child_traced(n: int) -> dict[str, Any]:
    """Peak of the engine's own allocations (numpy reports them to tracemalloc), one recompute."""
    import tracemalloc

    from engine.model import ModelParams, estimate, price_edges
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(n, seed=7)
    step = int((bars.close_time[-1] - bars.close_time[0]) // COLUMNS) // 60 * 60
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, BINS)
    tracemalloc.start()
    est = estimate(bars, ModelParams())
    est.heatmap(step=step, columns=COLUMNS, edges=edges)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"traced_peak_mb": peak / 2**20}


def child_append(n: int, appends: int) -> dict[str, Any]:
    """One closed bar appended to the live book of a year of history (IncrementalEngine.from_estimate)."""
    from engine.model import IncrementalEngine, ModelParams, estimate
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(n + appends, seed=7)
    history, live = bars.slice(0, n), bars.slice(n)
    t0 = time.perf_counter()
    eng = IncrementalEngine.from_estimate(estimate(history, ModelParams()))
    warm_start = time.perf_counter() - t0
    one = [live.slice(j, j + 1) for j in range(appends)]
    times = []
    for b in one:
        s = time.perf_counter()
        eng.append(b)
        times.append((time.perf_counter() - s) * 1000)
    previews = []
    for b in one[:50]:
        s = time.perf_counter()
        eng.preview(b)
        previews.append((time.perf_counter() - s) * 1000)
    return {
        "from_estimate_s": warm_start, "levels": int(eng.state.shape[-1]),
        "append_median_ms": statistics.median(times), "append_p99_ms": float(np.percentile(times, 99)),
        "preview_median_ms": statistics.median(previews),
    }


def child_reference(n: int) -> dict[str, Any]:
    """The naive per-bar reference against the engine on the same small input: equal, and how much faster."""
    from benchmarks.reference import run_reference
    from engine.model import ModelParams, estimate, price_edges
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(n, seed=9, vol_per_bar=0.0015)
    params = ModelParams()
    edges = price_edges(float(bars.low.min()) * 0.8, float(bars.high.max()) * 1.25, 200)
    engine_s = []
    for _ in range(5):
        s = time.perf_counter()
        est = estimate(bars, params)
        times = est.column_times(3600)
        hm = est.heatmap(times=times, edges=edges, spread=True)  # the reference splits each level over the bins
        realised = est.realised
        engine_s.append(time.perf_counter() - s)
    s = time.perf_counter()
    ref = run_reference(bars, params, [int(t) for t in times])
    grid = np.array(ref.heatmap(list(edges), len(params.ladder.leverage)))
    ref_s = time.perf_counter() - s
    scale = float(grid.max())
    diff = max(
        float(np.abs(hm.long_usd - grid[:, 0]).max()), float(np.abs(hm.short_usd - grid[:, 1]).max()),
        float(np.abs(realised.long_usd - np.array(ref.realised_long)).max()),
        float(np.abs(realised.short_usd - np.array(ref.realised_short)).max()),
    )
    return {
        "bars": n, "engine_s": statistics.median(engine_s), "reference_s": ref_s,
        "max_abs_diff_usd": diff, "relative_diff": diff / scale, "cells": int(grid[:, 0].size * 2),
    }


CHILDREN = {"recompute": child_recompute, "traced": child_traced, "append": child_append, "reference": child_reference}


def _spawn(kind: str, **kw: Any) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_engine", "--child", kind, json.dumps(kw)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(what: str, value: str, goal: str = "", ok: bool | None = None) -> str:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    return f"  {what:<58} {value:>16}  {goal:<12} {mark}"


def main() -> None:
    print(f"machine: {os.cpu_count()} cores, numpy {np.__version__}, python {sys.version.split()[0]}")
    print(_row("measure", "value", "goal"))
    year = _spawn("recompute", n=YEAR_1M, with_oi=True, runs=6)
    print(_row(f"year of 1m bars ({year['bars']:,}), OI seeds: cohorts", f"{year['cohorts']:,}"))
    print(_row(f"  full recompute -> {COLUMNS} cols x {BINS} bins, warm CPU (median)", f"{year['warm_cpu']:.2f} s",
               f"<= {GOAL_RECOMPUTE_S:g} s", year["warm_cpu"] <= GOAL_RECOMPUTE_S))
    print(_row("  full recompute, warm CPU (best run)", f"{year['best_cpu']:.2f} s"))
    print(_row("    of which estimate / heatmap (warm CPU)",
               f"{year['warm_estimate_cpu']:.2f} / {year['warm_heatmap_cpu']:.2f} s"))
    print(_row("  full recompute, warm wall", f"{year['warm_wall']:.2f} s"))
    print(_row("  full recompute, cold (first in a fresh process) CPU / wall",
               f"{year['cold_cpu']:.2f} / {year['cold_wall']:.2f} s"))
    print(_row("  peak memory, whole process (maxrss)", f"{year['peak_rss_mb'] / 1024:.2f} GB",
               f"<= {GOAL_PEAK_GB:g} GB", year["peak_rss_mb"] / 1024 <= GOAL_PEAK_GB))
    traced = _spawn("traced", n=YEAR_1M)
    print(_row("  peak of the engine's allocations (tracemalloc)", f"{traced['traced_peak_mb']:.0f} MB"))
    vol = _spawn("recompute", n=YEAR_1M, with_oi=False, runs=4)
    print(_row("year of 1m bars, volume proxy (every bar seeds): cohorts", f"{vol['cohorts']:,}"))
    print(_row("  full recompute, warm CPU (median)", f"{vol['warm_cpu']:.2f} s", f"<= {GOAL_RECOMPUTE_S:g} s",
               vol["warm_cpu"] <= GOAL_RECOMPUTE_S))
    print(_row("  full recompute, warm CPU (best run) / wall (median)", f"{vol['best_cpu']:.2f} / {vol['warm_wall']:.2f} s"))
    print(_row("  peak memory (maxrss)", f"{vol['peak_rss_mb'] / 1024:.2f} GB", f"<= {GOAL_PEAK_GB:g} GB",
               vol["peak_rss_mb"] / 1024 <= GOAL_PEAK_GB))
    app = _spawn("append", n=YEAR_1M, appends=300)
    print(_row("live: IncrementalEngine.from_estimate(year of 1m)", f"{app['from_estimate_s']:.2f} s"))
    print(_row(f"  append one closed bar ({app['levels']:,} levels held), median", f"{app['append_median_ms']:.2f} ms",
               f"<= {GOAL_APPEND_MS:g} ms", app["append_median_ms"] <= GOAL_APPEND_MS))
    print(_row("  append one closed bar, p99", f"{app['append_p99_ms']:.2f} ms"))
    print(_row("  preview the forming bar, median", f"{app['preview_median_ms']:.2f} ms"))
    ref = _spawn("reference", n=3000)
    print(_row(f"reference (pure Python, per bar) on {ref['bars']:,} bars", f"{ref['reference_s']:.2f} s"))
    print(_row("  engine on the same bars (estimate + heatmap + realised)", f"{ref['engine_s'] * 1000:.1f} ms"))
    print(_row("  speed-up, engine over reference", f"x{ref['reference_s'] / ref['engine_s']:.0f}"))
    same = ref["relative_diff"] < 1e-6  # the heatmap is float32
    print(_row("  largest difference (heatmap cells and realised)", f"{ref['max_abs_diff_usd']:.2e} USD",
               "rel < 1e-6 (float32)", same))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        result = CHILDREN[sys.argv[2]](**json.loads(sys.argv[3] if len(sys.argv) > 3 else "{}"))
        print(json.dumps(result))
    else:
        main()
