"""The terminal dashboard in a real pseudo-terminal, measured in this run:

1. Time to first frame of ``liqheat tui`` (the installed console script, demo market): first bytes on
   the terminal, first screen with the header, first map (history loaded).
2. Frame time p50/p95 with a 200 x 60 map (a 236 x 76 terminal): from the start of painting a live update
   (or a full history redraw) to the terminal bytes being handed to Textual's writer.
3. A timeframe switch: from the key to the new full map handed to the terminal.
4. Bytes per second to the terminal at steady live updates in 256 colours (TERM=xterm-256color), next to
   the same app made to repaint the whole map on every update (what a single wide widget would cost:
   Textual re-sends each dirty line from the widget's left edge).

The app runs in a child process on a pty (``python -m benchmarks.bench_tui child ...``); this process
reads the pty, counts bytes and timestamps them. Each run is bounded in time.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COLS, ROWS = 236, 76  # a 200-column x 60-row map beside the axis and the profile
STEADY_SECONDS = 12.0
GOAL_KIB_S = 20.0


# ---- the child: the app, instrumented ------------------------------------------------------------------
def child(out: str, speed: float, seconds: float, naive: bool, switch: bool = False) -> None:
    sys.path.insert(0, str(REPO))
    from tui.app import make_app

    app = make_app("demo", colors="256", speed=speed, history_days=2, seed=11)
    frames: dict[str, list[float]] = {"live": [], "history": [], "switch": []}
    switching: list[float] = []  # when the last timeframe key was "pressed"
    painted_after_switch: list[bool] = [False]
    pending: list[tuple[str, float]] = []
    stats: dict[str, Any] = {"pulses": 0, "reloads": 0}

    paint_pulse, paint_history, display = app._paint_pulse, app._paint_history, app._display

    def timed_pulse(pulse: Any) -> None:
        # an update that changed nothing on screen never reaches the terminal: it is not a frame
        pending[:] = [p for p in pending if p[0] != "live"]
        pending.append(("live", time.perf_counter()))
        paint_pulse(pulse)
        stats["pulses"] += 1
        if naive:
            app.map.refresh()  # the whole map goes out again, as if the live column were part of it

    def timed_history() -> None:
        pending.append(("history", time.perf_counter()))
        paint_history()
        stats["reloads"] += 1
        if switching:
            painted_after_switch[0] = True

    def timed_display(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        if renderable is not None and switching and painted_after_switch[0]:
            frames["switch"].append((time.perf_counter() - switching.pop()) * 1000.0)
            painted_after_switch[0] = False
        if renderable is not None and pending:
            now = time.perf_counter()
            for kind, t0 in pending:
                frames[kind].append((now - t0) * 1000.0)
            pending.clear()

    app._paint_pulse = timed_pulse  # type: ignore[method-assign]
    app._paint_history = timed_history  # type: ignore[method-assign]
    app._display = timed_display  # type: ignore[method-assign]

    def finish() -> None:
        stats.update(frames)
        stats["map"] = [app.map.size.width, app.map.size.height]
        Path(out).write_text(json.dumps(stats))
        app.exit(0)

    order = ["15m", "1h", "4h", "1d", "5m"]

    def press_timeframe() -> None:
        tf = order[len(frames["switch"]) % len(order)]
        switching[:] = [time.perf_counter()]
        painted_after_switch[0] = False
        app.action_timeframe(tf)

    def started() -> None:
        if app.backdrop is None:
            app.set_timer(0.2, started)
            return
        stats["loaded_at"] = time.time()
        app.set_timer(seconds, finish)
        if switch:
            app.set_interval(1.0, press_timeframe)

    app.call_later(lambda: app.set_timer(0.2, started))
    app.run()


# ---- the parent: a pty, a byte counter ------------------------------------------------------------------
def run_in_pty(argv: list[str], env: dict[str, str], seconds: float, stop_when: bytes | None = None,
               quit_after: bool = True) -> tuple[list[tuple[float, int]], bytes, float]:
    """Run ``argv`` on a COLS x ROWS pty; return (time, bytes) chunks, all output and the start time."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    t0 = time.time()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
                            start_new_session=True)
    os.close(slave)
    chunks: list[tuple[float, int]] = []
    data = bytearray()
    end = t0 + seconds
    try:
        while time.time() < end and proc.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                block = os.read(master, 1 << 16)
            except OSError:
                break
            chunks.append((time.time(), len(block)))
            data += block
            if stop_when is not None and stop_when in data:
                break
        if quit_after and proc.poll() is None:
            os.write(master, b"q")
        deadline = time.time() + 15
        while proc.poll() is None and time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    os.read(master, 1 << 16)
                except OSError:
                    break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        os.close(master)
    return chunks, bytes(data), t0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL") and k not in ("NO_COLOR", "COLORTERM")}
    env["TERM"] = "xterm-256color"
    env["PYTHONPATH"] = str(REPO)
    return env


def first_frame() -> dict[str, float]:
    script = Path(sys.executable).parent / "liqheat"
    argv = [str(script), "tui"] if script.exists() else [sys.executable, "-m", "engine.cli", "tui"]
    chunks, data, t0 = run_in_pty(argv, _env(), 60.0, stop_when="◀".encode())
    out: dict[str, float] = {}
    if chunks:
        out["first bytes"] = chunks[0][0] - t0
    total = 0
    seen = bytearray()
    marks = {"header drawn": b"ESTIMATED", "map drawn": "◀".encode()}
    for t, n in chunks:
        total += n
        seen = data[:total]  # type: ignore[assignment]
        for name, needle in list(marks.items()):
            if needle in seen:
                out[name] = t - t0
                del marks[name]
    return out


def steady(speed: float, naive: bool, switch: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats.json"
        argv = [sys.executable, "-m", "benchmarks.bench_tui", "child", str(out), str(speed), str(STEADY_SECONDS),
                "1" if naive else "0", "1" if switch else "0"]
        chunks, _, t0 = run_in_pty(argv, _env(), 120.0, quit_after=False)
        if not out.exists():
            raise RuntimeError("the dashboard did not report (did it start?)")
        stats = json.loads(out.read_text())
    start = stats["loaded_at"] + 2.0  # past the first full paint
    stop = stats["loaded_at"] + STEADY_SECONDS - 0.5
    sent = sum(n for t, n in chunks if start <= t < stop)
    stats["bytes_per_s"] = sent / (stop - start)
    stats["pulses_per_s"] = stats["pulses"] / STEADY_SECONDS
    return stats


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ff = first_frame()
    print("Time to first frame, `liqheat tui` on the demo market (30 days of history simulated at start):")
    print(f"  {'first bytes on the terminal':<34}{ff.get('first bytes', float('nan')):>8.2f} s")
    print(f"  {'header drawn (loading state)':<34}{ff.get('header drawn', float('nan')):>8.2f} s")
    print(f"  {'map drawn (history loaded)':<34}{ff.get('map drawn', float('nan')):>8.2f} s")
    print()
    runs = []
    for label, speed, naive in (
        ("demo 1x: one update/s", 1.0, False),
        ("demo 10x: ~10 updates/s, 5m close every 30 s", 10.0, False),
        ("demo 10x, whole map repainted per update", 10.0, True),
    ):
        s = steady(speed, naive)
        runs.append((label, s))
    mw, mh = runs[0][1]["map"]
    print(f"Frame time and bandwidth, 256 colours, {COLS}x{ROWS} terminal, map {mw}x{mh} cells (+1 live column):")
    print(f"  {'run':<48}{'upd/s':>6}{'live p50':>10}{'live p95':>10}{'full p50':>10}{'full p95':>10}{'KiB/s':>9}{'B/upd':>8}")
    for label, s in runs:
        per_update = s["bytes_per_s"] / s["pulses_per_s"] if s["pulses_per_s"] else float("nan")
        print(f"  {label:<48}{s['pulses_per_s']:>6.1f}{_pct(s['live'], 50):>9.2f}ms{_pct(s['live'], 95):>8.2f}ms"
              f"{_pct(s['history'], 50):>8.1f}ms{_pct(s['history'], 95):>8.1f}ms{s['bytes_per_s'] / 1024:>9.1f}{per_update:>8.0f}")
    sw = steady(1.0, False, switch=True)
    print(f"  {'timeframe key -> new 200x60 map on the terminal':<48}{'':>6}{'':>10}{'':>10}"
          f"{_pct(sw['switch'], 50):>8.1f}ms{_pct(sw['switch'], 95):>8.1f}ms   ({len(sw['switch'])} switches"
          f" 15m/1h/4h/1d/5m)")
    ours, naive_run = runs[1][1], runs[2][1]
    ratio = naive_run["bytes_per_s"] / ours["bytes_per_s"] if ours["bytes_per_s"] else float("nan")
    verdict = "meets" if ours["bytes_per_s"] / 1024 <= GOAL_KIB_S else "MISSES"
    print(f"  the narrow live column sends {ratio:.1f}x fewer bytes than repainting the map; "
          f"{ours['bytes_per_s'] / 1024:.1f} KiB/s at ~10 updates/s {verdict} the {GOAL_KIB_S:.0f} KiB/s goal")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1", sys.argv[6] == "1")
    else:
        main()
