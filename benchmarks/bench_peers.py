"""liqheat against its peers on their own work (issue 12), each goal printed beside the measured figure.

    python -m benchmarks peers

The peers are not in this repository: liqmap (TypeScript, Node 20, ``buildHeatmap``) and gptpm (Python
with Decimal, ``calculate_time_evolving_heatmap``) were measured outside it, on this machine kind, on
8,015 real 5m BTC bars with open interest, one column per bar, 1,100 price bins; their figures are
constants below. Ours are measured here, each in a fresh subprocess so its peak memory is its own, on
the real 5m BTC price path of ../shared/data (Binance, 2024) with a seeded open-interest walk (no
intraday OI exists in the shared data), beside the per-bar reference (benchmarks/reference.py) on the
same model. "CPU" is the process's user + system time (all threads), "wall" elapsed time; on a shared
2-core machine the wall figures are noisy, the CPU figures less so.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "binance_usdm_btcusdt_5m_2024-02_06.csv.gz"

# measured outside this repo (issue 12), same machine kind, same input and output shape
LIQMAP_S = (0.26, 0.36)
LIQMAP_RSS_MB = 331.0
GPTPM_S = 28.0
BEFORE_S = (0.91, 1.4)  # liqheat before this change: estimate + per-tier float64 heatmap (issue 12)
BEFORE_RSS_MB = 1900.0
BEFORE_EXPORT_S = (4.9, 5.9)  # a year of 1m bars CSV -> heatmap export, before (issue 12)
BEFORE_CSV_READ_S = 3.7
BEFORE_BACKTEST_S = 9.7  # `liqheat backtest` on 5 months of 15m bars, before (issue 12)
BYBIT_15M = REPO.parent / "shared" / "data" / "bybit_btcusdt_15m_2024-01_06.csv.gz"
BYBIT_LIQ = REPO.parent / "shared" / "data" / "bybit_btcusdt_liquidations_2024-02_06.csv.gz"

N_5M, BINS = 8015, 1100
YEAR_1M = 525_600


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peer_bars() -> Any:
    """8,015 real 5m BTC bars (when the shared data is there) with a seeded open-interest walk."""
    from engine.model import Bars
    from engine.model.synthetic import synthetic_bars

    if not DATA.exists():
        return synthetic_bars(N_5M, seed=7, timeframe=300), "synthetic 5m bars (shared data absent)"
    from engine.formats import read_bars_file

    real = read_bars_file(DATA).slice(0, N_5M)
    rng = np.random.default_rng(7)
    oi = 8e9 * np.exp(np.cumsum(rng.normal(0, 0.002, len(real))))
    return Bars(real.timeframe, real.time, real.open, real.high, real.low, real.close, real.volume,
                real.taker_buy_volume, real.taker_sell_volume, oi), "real Binance 5m BTC bars + seeded OI walk"


# ---- children ---------------------------------------------------------------------------------------
def child_peer(runs: int, numpy_only: bool = False) -> dict[str, Any]:
    """The peers' job ``runs`` times. Big grids take the compiled walk when numba is there; with
    ``numpy_only`` every grid stays on the numpy blocks (the side-by-side figure, its own process so its
    peak memory is its own)."""
    from benchmarks.estimate_before import before
    from engine.model import ModelParams, binning, estimate, price_edges

    bars, what = _peer_bars()
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, BINS)
    walls, cpus, hm_cpu, est_cpu, est_before = [], [], [], [], []
    if numpy_only:
        binning.KERNEL_CELLS = 10**18
    compiled = binning.kernel_on() and len(bars) * 2 * BINS * 5 >= binning.KERNEL_CELLS
    c0 = _cpu()  # the compiled walk's once-per-process cost: importing numba, loading its machine code
    if compiled:
        from engine.model.binning_kernel import walk

        walk(np.zeros((1, 2)), np.array([0, 2]), np.array([0]), np.array([0]), np.array([1.0]), np.zeros(1, np.int8), 1, False, 1e-9)
    first_cpu = _cpu() - c0
    for _ in range(runs):
        w0, c0 = time.perf_counter(), _cpu()
        est = estimate(bars, ModelParams())
        c1 = _cpu()
        hm = est.heatmap(times=est.column_times(bars.timeframe), edges=edges, by_tier=False)
        walls.append(time.perf_counter() - w0)
        cpus.append(_cpu() - c0)
        hm_cpu.append(_cpu() - c1)
        est_cpu.append(c1 - c0)
        assert hm.long_usd.shape == (len(bars), BINS, 1)
        grid_sum = float(hm.long_usd.sum(dtype=np.float64) + hm.short_usd.sum(dtype=np.float64))
        del hm  # (the estimate before is timed without the grid alive: peak memory is the job's own)
        with before():  # the estimate's code paths before issue 12's estimate round, same bars
            c2 = _cpu()
            old = estimate(bars, ModelParams())
            est_before.append(_cpu() - c2)
        assert np.array_equal(old.death, est.death)
        del est, old
    return {"what": what, "bars": len(bars), "wall": statistics.median(walls), "cpu": statistics.median(cpus),
            "best_cpu": min(cpus), "heatmap_cpu": statistics.median(hm_cpu), "estimate_cpu": statistics.median(est_cpu),
            "estimate_before_cpu": statistics.median(est_before), "compiled": compiled, "first_cpu": first_cpu,
            "grid_sum": grid_sum,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_reference(n: int) -> dict[str, Any]:
    """The per-bar reference on the first ``n`` of the same bars, one column per bar: same answer, time."""
    from benchmarks.reference import run_reference
    from engine.model import ModelParams, estimate, price_edges

    bars, _ = _peer_bars()
    bars = bars.slice(0, n)
    params = ModelParams()
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, BINS)
    s = time.perf_counter()
    est = estimate(bars, params)
    times = est.column_times(bars.timeframe)
    hm = est.heatmap(times=times, edges=edges, spread=True)  # the reference splits each level over the bins
    engine_s = time.perf_counter() - s
    s = time.perf_counter()
    ref = run_reference(bars, params, [int(t) for t in times])
    grid = np.array(ref.heatmap(list(edges), len(params.ladder.leverage)))
    ref_s = time.perf_counter() - s
    diff = max(float(np.abs(hm.long_usd - grid[:, 0]).max()), float(np.abs(hm.short_usd - grid[:, 1]).max()))
    return {"bars": n, "engine_s": engine_s, "reference_s": ref_s, "relative_diff": diff / float(grid.max())}


def child_page(columns: int) -> dict[str, Any]:
    """The page's largest request: a year of 1m bars, ``columns`` columns x 1,100 bins (estimate + heatmap)."""
    from engine.model import ModelParams, estimate, price_edges
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(YEAR_1M, seed=7)
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, BINS)
    out: dict[str, Any] = {}
    for by_tier in (False, True):
        cpus = []
        for _ in range(3):
            c0 = _cpu()
            est = estimate(bars, ModelParams())
            c1 = _cpu()
            est.heatmap(times=est.column_times(3600 * 4)[-columns:], edges=edges, by_tier=by_tier)
            cpus.append((_cpu() - c0, c1 - c0))
            del est
        out["tiers" if by_tier else "summed"] = min(cpus)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child_csv(path: str) -> dict[str, Any]:
    from engine.formats import read_bars_file

    walls, cpus = [], []
    for _ in range(3):
        w0, c0 = time.perf_counter(), _cpu()
        read_bars_file(path)
        walls.append(time.perf_counter() - w0)
        cpus.append(_cpu() - c0)
    return {"wall": min(walls), "cpu": min(cpus), "mb": os.path.getsize(path) / 1e6}


def child_close(n: int, closes: int) -> dict[str, Any]:
    """Closing a bar on a year of 1m history: the history append + the incremental engine's step, as the
    service does it; beside it, what Bars.concat (the old history append) cost alone."""
    from engine.model import IncrementalEngine, ModelParams, estimate
    from engine.model.bars import BarHistory
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(n + closes, seed=7)
    history = bars.slice(0, n)
    eng = IncrementalEngine.from_estimate(estimate(history, ModelParams()))
    hist = BarHistory(history, keep=n)
    one = [bars.slice(n + j, n + j + 1) for j in range(closes)]
    close_ms, concat_ms = [], []
    for b in one:
        s = time.perf_counter()
        hist.append(b)
        _ = hist.bars
        eng.append(b)
        close_ms.append((time.perf_counter() - s) * 1000)
    joined = history
    for b in one[:30]:
        s = time.perf_counter()
        joined = joined.concat(b)
        concat_ms.append((time.perf_counter() - s) * 1000)
    return {"close_median_ms": statistics.median(close_ms), "close_p99_ms": float(np.percentile(close_ms, 99)),
            "concat_median_ms": statistics.median(concat_ms)}


def child_export_stages(path: str) -> dict[str, Any]:
    """Where an export's CPU goes, stage by stage (what `liqheat export --what heatmap --step 1d --bins
    400` does), and the CSV writer and the estimate beside the code they replaced, on the same input."""
    import io

    from benchmarks.estimate_before import before
    from engine.commands.export import _heatmap_table
    from engine.formats import _csv_cells, read_bars_file, write_csv_stream
    from engine.model import ModelParams, estimate, price_edges

    c0 = _cpu()
    bars = read_bars_file(path)
    c1 = _cpu()
    est = estimate(bars, ModelParams())
    c2 = _cpu()
    edges = price_edges(float(bars.low.min()) * 0.9, float(bars.high.max()) * 1.1, 400)
    hm = est.heatmap(times=est.column_times(86_400), edges=edges, by_tier=False)
    c3 = _cpu()
    table = _heatmap_table(hm)
    write_csv_stream(io.StringIO(), table.columns, table.formats)
    c4 = _cpu()
    write = c4 - c3
    after_s, before_s = [], []
    for _ in range(3):  # the estimate again, and before issue 12's estimate round, alternately
        del est
        a0 = _cpu()
        est = estimate(bars, ModelParams())
        a1 = _cpu()
        with before():
            old = estimate(bars, ModelParams())
        a2 = _cpu()
        assert np.array_equal(old.death, est.death)
        del old
        after_s.append(a1 - a0)
        before_s.append(a2 - a1)
    c4 = _cpu()
    out = io.StringIO()  # the writer before: every cell formatted and joined on its own
    names = list(table.columns)
    out.write(",".join(names) + "\n")
    for lo in range(0, len(table), 50_000):
        cells = [_csv_cells(table.columns[k][lo : lo + 50_000], table.formats.get(k)) for k in names]
        out.write("".join(",".join(row) + "\n" for row in zip(*cells, strict=True)))
    c5 = _cpu()
    return {"read": c1 - c0, "estimate": c2 - c1, "heatmap": c3 - c2, "write": write, "write_before": c5 - c4,
            "rows": len(table), "estimate_again": min(after_s), "estimate_before": min(before_s)}


def child_backtest_stages(runs: int) -> dict[str, Any]:
    """The Bybit 2024 backtest's own stages beside the code paths they replaced, in one process: the
    events read as columns vs as one object per event; the zone protocol whole-array vs one window at a
    time (benchmarks/reference.py; same figures to the last bit)."""
    from benchmarks.reference import zone_protocol_one_by_one
    from engine.formats import read_liquidation_columns, read_liquidations_file
    from engine.model import ModelParams, estimate
    from engine.model.scoring import Events, zone_protocol

    cols, objs, zone, zone_before = [], [], [], []
    for _ in range(runs):
        c0 = _cpu()
        liq = read_liquidation_columns(BYBIT_LIQ)
        events = Events.from_arrays(liq.time_ms / 1000.0, liq.long, liq.price, liq.usd)
        c1 = _cpu()
        old = read_liquidations_file(BYBIT_LIQ)
        Events.from_arrays(np.array([e.time_ms for e in old], dtype=np.float64) / 1000.0, np.array([e.side for e in old]),
                           np.array([e.price for e in old]), np.array([e.usd for e in old]))
        c2 = _cpu()
        cols.append(c1 - c0)
        objs.append(c2 - c1)
    from engine.formats import read_bars_file

    est = estimate(read_bars_file(BYBIT_15M), ModelParams(exchange="bybit"))
    span = events.span
    zone_protocol(est, events, 4.0, coverage=span)  # the window books, built once and shared by both paths
    for _ in range(runs):
        c0 = _cpu()
        a = [zone_protocol(est, events, 4.0, coverage=span, rank=r) for r in ("usd", "risk")]
        c1 = _cpu()
        b = [zone_protocol_one_by_one(est, events, 4.0, coverage=span, rank=r) for r in ("usd", "risk")]
        c2 = _cpu()
        assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
        zone.append(c1 - c0)
        zone_before.append(c2 - c1)
    return {"events": len(events), "read_columns": min(cols), "read_objects": min(objs), "zones": min(zone),
            "zones_before": min(zone_before), "windows": a[0].windows}


def child_matvec(reps: int) -> dict[str, Any]:
    """The accuracy suite's ladder search: a 6-weight mix times a (6, windows x buckets) table, as many
    times as it tries mixes; CPU per product (OpenBLAS threads as the environment says)."""
    table = np.random.default_rng(0).random((6, 1558 * 77))
    w = np.full(6, 1 / 6)
    c0 = _cpu()
    for _ in range(reps):
        _ = w @ table
    return {"ms": (_cpu() - c0) / reps * 1000}


CHILDREN = {"peer": child_peer, "reference": child_reference, "page": child_page, "csv": child_csv, "close": child_close,
            "export_stages": child_export_stages, "backtest_stages": child_backtest_stages, "matvec": child_matvec}


def _spawn(kind: str, env_extra: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_peers", "--child", kind, json.dumps(kw)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _year_csv(folder: str) -> str:
    """A year of 1m bars as an exchange export writes them (prices to 0.1, volumes to 0.001): ~39 MB."""
    from engine.model.synthetic import synthetic_bars

    b = synthetic_bars(YEAR_1M, seed=7)
    o, h, lo, c = (np.round(getattr(b, k), 1) for k in ("open", "high", "low", "close"))
    h, lo = np.maximum.reduce([h, o, c]), np.minimum.reduce([lo, o, c])
    path = os.path.join(folder, "year_1m.csv")
    rows = zip(*(x.tolist() for x in (b.time * 1000, o, h, lo, c, np.round(b.volume, 3), np.round(b.taker_buy_volume, 3),
                                       np.round(b.oi_usd, 0))), strict=True)
    with open(path, "w") as f:
        f.write("timestamp_ms,open,high,low,close,volume,taker_buy_volume,oi_usd\n")
        f.write("".join(f"{t},{o:.1f},{h:.1f},{lo:.1f},{c:.1f},{v:.3f},{tb:.3f},{oi:.0f}\n" for t, o, h, lo, c, v, tb, oi in rows))
    return path


def _row(what: str, value: str, goal: str = "", ok: bool | None = None) -> str:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    return f"  {what:<64} {value:>18}  {goal:<22} {mark}"


def _command_cpu(args: list[str], runs: int = 3) -> tuple[float, float]:
    """Best (CPU, wall) of ``runs`` runs of ``python -m engine.cli ARGS`` (or ``python ARGS`` when they
    start with -c; CPU: the child's user + system)."""
    best = []
    cmd = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "engine.cli", *args]
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        s = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, time.perf_counter() - s))
    return min(best)


def batch_commands(path: str) -> None:
    """issue 12's batch goals: export and backtest end to end, where their CPU goes, and what the code
    paths they replaced cost in this same run (the engine's bytecode compiled first, see main)."""
    st = _spawn("export_stages", path=path)
    start, _ = _command_cpu(["-c", "import engine.cli, engine.commands.export, engine.formats, engine.ladderfile, engine.model"])
    print(_row("  of which: start-up (python, numpy, pyarrow, the command) CPU", f"{start:.2f} s"))
    print(_row("    read CSV / estimate / heatmap binning CPU", f"{st['read']:.2f} / {st['estimate']:.2f} / {st['heatmap']:.2f} s"))
    print(_row("    the estimate again / the estimate before (warm process), CPU best of 3",
               f"{st['estimate_again']:.2f} / {st['estimate_before']:.2f} s",
               f"x{st['estimate_before'] / max(st['estimate_again'], 1e-9):.2f}"))
    print(_row(f"    table + CSV writer ({st['rows']:,} rows) / the writer before, CPU",
               f"{st['write']:.3f} / {st['write_before']:.3f} s", f"x{st['write_before'] / max(st['write'], 1e-9):.1f}"))
    if not (BYBIT_15M.exists() and BYBIT_LIQ.exists()):
        print(_row("liqheat backtest on the Bybit 2024 set", "shared data absent"))
        return
    cpu, wall = _command_cpu(["backtest", "--bars", str(BYBIT_15M), "--liquidations", str(BYBIT_LIQ), "--exchange", "bybit"])
    print(_row("liqheat backtest, Bybit 2024 (72 event days, 15m bars), CPU / wall", f"{cpu:.2f} / {wall:.2f} s",
               f"<= 2 s (before {BEFORE_BACKTEST_S} s*)", cpu <= 2.0))
    bt = _spawn("backtest_stages", runs=3)
    print(_row(f"  read {bt['events']:,} events as columns / one object each (before), CPU",
               f"{bt['read_columns']:.3f} / {bt['read_objects']:.3f} s", f"x{bt['read_objects'] / max(bt['read_columns'], 1e-9):.1f}"))
    print(_row(f"  zone protocol, {bt['windows']:,} windows x 2 ranks: whole-array / per window (before)",
               f"{bt['zones']:.3f} / {bt['zones_before']:.3f} s", f"x{bt['zones_before'] / max(bt['zones'], 1e-9):.1f}, same figures"))
    suite, _ = _command_cpu(["backtest", "--suite", "--sets", "bybit-15m"], runs=1)
    print(_row("liqheat backtest --suite --sets bybit-15m (ladder search, bootstraps), CPU", f"{suite:.2f} s"))
    one = _spawn("matvec", env_extra={"OPENBLAS_NUM_THREADS": "1"}, reps=200)["ms"]
    many = _spawn("matvec", env_extra={"OPENBLAS_NUM_THREADS": str(os.cpu_count() or 2)}, reps=200)["ms"]
    print(_row("  its ladder-mix product: 1 OpenBLAS thread (the CLI's) / all cores, CPU each",
               f"{one:.2f} / {many:.2f} ms", f"x{many / max(one, 1e-9):.0f}"))
    print("  * the 9.7 s was 5 months of 15m bars before pyarrow and this round; the 2 s goal is the Bybit set")


def main() -> None:
    print(f"machine: {os.cpu_count()} cores, numpy {np.__version__}, python {sys.version.split()[0]}; "
          "peers' figures measured outside this repo")
    print(_row("measure", "value", "goal / peer"))
    peer = _spawn("peer", runs=5)
    peer_numpy = _spawn("peer", runs=5, numpy_only=True) if peer["compiled"] else None
    goal_s = LIQMAP_S[0] / 5
    print(_row(f"{peer['bars']:,} 5m bars, 1 column per bar x {BINS:,} bins ({peer['what']})", ""))
    print(_row("  liqmap (TypeScript) time / peak RSS [outside]", f"{LIQMAP_S[0]}-{LIQMAP_S[1]} s / {LIQMAP_RSS_MB:.0f} MB"))
    print(_row("  gptpm (Python, Decimal) time [outside]", f"{GPTPM_S:.0f} s"))
    print(_row("  liqheat before (issue 12) time / peak RSS", f"{BEFORE_S[0]}-{BEFORE_S[1]} s / {BEFORE_RSS_MB:.0f} MB"))
    print(_row("  liqheat estimate + heatmap, CPU median (best)", f"{peer['cpu'] * 1000:.0f} ({peer['best_cpu'] * 1000:.0f}) ms",
               f"<= {goal_s * 1000:.0f} ms (liqmap/5)", peer["cpu"] <= goal_s))
    print(_row("    of which the heatmap binning (CPU median)", f"{peer['heatmap_cpu'] * 1000:.0f} ms",
               "compiled walk" if peer["compiled"] else "numpy blocks (numba absent)"))
    if peer_numpy is not None:
        same = abs(peer_numpy["grid_sum"] - peer["grid_sum"]) <= 1e-6 * peer["grid_sum"]
        print(_row("      the numpy blocks on the same job (CPU median; total / binning / peak RSS)",
                   f"{peer_numpy['cpu'] * 1000:.0f} / {peer_numpy['heatmap_cpu'] * 1000:.0f} ms / {peer_numpy['peak_rss_mb']:.0f} MB",
                   f"binning x{peer_numpy['heatmap_cpu'] / max(peer['heatmap_cpu'], 1e-9):.1f}, "
                   + ("same USD total" if same else "USD TOTALS DIFFER")))
        print(_row("      once per process: import numba, load the compiled walk (CPU)", f"{peer['first_cpu']:.2f} s"))
    print(_row("    of which the estimate / the estimate before (CPU median)",
               f"{peer['estimate_cpu'] * 1000:.1f} / {peer['estimate_before_cpu'] * 1000:.1f} ms",
               f"x{peer['estimate_before_cpu'] / max(peer['estimate_cpu'], 1e-9):.1f}"))
    print(_row("  liqheat wall median", f"{peer['wall'] * 1000:.0f} ms"))
    print(_row("  liqheat peak RSS (whole process)", f"{peer['peak_rss_mb']:.0f} MB", f"<= {LIQMAP_RSS_MB:.0f} MB (liqmap)",
               peer["peak_rss_mb"] <= LIQMAP_RSS_MB))
    print(_row("  faster than liqmap (its best / our CPU)", f"x{LIQMAP_S[0] / peer['cpu']:.1f}", ">= x5", LIQMAP_S[0] / peer["cpu"] >= 5))
    print(_row("  faster than gptpm", f"x{GPTPM_S / peer['cpu']:.0f}", ">= x500", GPTPM_S / peer["cpu"] >= 500))
    print(_row("  faster than liqheat before (its best / ours)", f"x{BEFORE_S[0] / peer['cpu']:.0f}"))
    ref = _spawn("reference", n=600)
    print(_row(f"per-bar reference on the first {ref['bars']} of those bars, 1 col/bar x {BINS} bins", f"{ref['reference_s']:.2f} s"))
    print(_row("  engine on the same (estimate + per-tier heatmap)", f"{ref['engine_s'] * 1000:.0f} ms"))
    print(_row("  speed-up over the reference / largest difference (rel.)",
               f"x{ref['reference_s'] / ref['engine_s']:.0f} / {ref['relative_diff']:.1e}", "rel < 1e-6 (float32)",
               ref["relative_diff"] < 1e-6))
    page = _spawn("page", columns=2000)
    for key, label in (("summed", "tiers summed"), ("tiers", "per tier")):
        total, est_cpu = page[key]
        print(_row(f"year of 1m bars -> 2,000 cols x {BINS:,} bins ({label}), CPU best", f"{total:.2f} s (est. {est_cpu:.2f})",
                   "<= 1 s", total <= 1.0))
    print(_row("  peak RSS", f"{page['peak_rss_mb']:.0f} MB"))
    with tempfile.TemporaryDirectory() as tmp:
        path = _year_csv(tmp)
        csv = _spawn("csv", path=path)
        print(_row(f"read a year of 1m bars from CSV ({csv['mb']:.0f} MB), CPU / wall best",
                   f"{csv['cpu']:.2f} / {csv['wall']:.2f} s", f"<= 0.3 s (before {BEFORE_CSV_READ_S} s)", csv["cpu"] <= 0.3))
        out = os.path.join(tmp, "heat.csv")
        # commands timed as installed: pip compiles the package's bytecode, while a checkout run with
        # PYTHONDONTWRITEBYTECODE=1 would recompile every module at every start (~0.1 s CPU a command)
        compileall.compile_dir(str(REPO / "engine"), quiet=1)
        runs = []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            s = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine.cli", "export", "--bars", path, "--what", "heatmap",
                            "--step", "1d", "--bins", "400", "--quiet", "--out", out], cwd=REPO, check=True,
                           capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            runs.append((cpu, time.perf_counter() - s))
        cpu, wall = min(runs)
        print(_row("CSV -> heatmap export end to end (liqheat export, 1d x 400 bins), CPU / wall",
                   f"{cpu:.2f} / {wall:.2f} s", f"<= 1.5 s (before {BEFORE_EXPORT_S[0]}-{BEFORE_EXPORT_S[1]})", cpu <= 1.5))
        batch_commands(path)
    close = _spawn("close", n=YEAR_1M, closes=300)
    print(_row("live: close a bar on a year of 1m history (history + engine), median",
               f"{close['close_median_ms']:.2f} ms", "<= 1 ms", close["close_median_ms"] <= 1.0))
    print(_row("  p99", f"{close['close_p99_ms']:.2f} ms"))
    print(_row("  Bars.concat alone (the history append before), median", f"{close['concat_median_ms']:.2f} ms"))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        result = CHILDREN[sys.argv[2]](**json.loads(sys.argv[3] if len(sys.argv) > 3 else "{}"))
        print(json.dumps(result))
    else:
        main()
