"""Time to the first picture, measured in this run (issue 14: "the map takes 4.2-5.1 s to appear"):

1. ``liqheat tui`` on the demo market in a real pty: launch -> the header -> the map with its USD legend
   ("/cell"), with the default 30 days of history next to ``--history-days 2`` (what the recent-window
   pass alone costs: the floor the two-pass load aims at).
2. ``liqheat serve`` on the demo market: launch -> the first 200 answer of ``/api/v1/heatmap`` (and
   whether it still stood on the recent days), then the chart page in headless Chromium: navigation ->
   first chart drawn, and the overlay's draw time per frame on the real page (panels included) during a
   few seconds of live updates.

Wall-clock figures on a shared machine are noisy: each row is the median of a few runs taken
alternately, and the ratios are what to compare.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.bench_tui import _env, run_in_pty

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("LIQHEAT_BENCH_RUNS", "3"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tui_first_map(args: list[str]) -> dict[str, float]:
    argv = [sys.executable, "-m", "engine.cli", "tui", *args]
    chunks, data, t0 = run_in_pty(argv, _env(), 90.0, stop_when=b"/cell")
    out: dict[str, float] = {}
    total = 0
    marks = {"header": b"ESTIMATED", "map": b"/cell"}
    for t, n in chunks:
        total += n
        for name, needle in list(marks.items()):
            if needle in data[:total]:
                out[name] = t - t0
                del marks[name]
    return out


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback only
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


class Served:
    """``liqheat serve`` in a child process on a free port."""

    def __init__(self, args: list[str]) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.t0 = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(self.port), *args],
                                     cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def first_heatmap(self, timeout: float = 120.0) -> tuple[float, str]:
        """Seconds from launch to the first heatmap answer, and the history phase it stood on."""
        end = self.t0 + timeout
        while time.time() < end:
            status, body = _get(f"{self.base}/api/v1/heatmap?symbol=BTC&timeframe=5m&encoding=json")
            if status == 200 and body and body.get("columns"):
                return time.time() - self.t0, str((body.get("history") or {}).get("phase", "?"))
            time.sleep(0.05)
        raise RuntimeError("the server did not answer in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


PAGE_READY = "() => window.liqheat && window.liqheat.ready === true && window.liqheat.heat.stats.draws > 0"


def page_draw(base: str, seconds: float = 8.0) -> dict[str, float] | None:
    """The real page: navigation -> first chart drawn; then the overlay's own draw time per frame."""
    chromium = os.environ.get("LIQHEAT_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        return None
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
            t0 = time.time()
            page.goto(base + "/")
            page.wait_for_function(PAGE_READY, timeout=60_000)
            ready = time.time() - t0
            # every draw's time from here on (the overlay's own timer around its canvas work)
            page.evaluate("""() => { const s = window.liqheat.heat.stats; window.__draws = [];
                let last = s.draws; (function poll() { if (s.draws !== last) { last = s.draws; window.__draws.push(s.lastDrawMs); }
                requestAnimationFrame(poll); })(); }""")
            page.wait_for_timeout(seconds * 1000)
            draws = page.evaluate("() => window.__draws")
        finally:
            browser.close()
    draws = draws or [float("nan")]
    q = statistics.quantiles(draws, n=100, method="inclusive") if len(draws) > 1 else [draws[0]] * 99
    return {"ready_s": ready, "draws": len(draws), "p50": q[49], "p95": q[94]}


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores shared; medians of {RUNS} alternating runs)")
    variants = (("30 days (default)", []), ("--history-days 2", ["--history-days", "2"]))
    tui: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    page: dict[str, list[tuple[float, str]]] = {name: [] for name, _ in variants}
    for _ in range(RUNS):
        for name, args in variants:
            tui[name].append(tui_first_map(args))
            served = Served(args)
            try:
                page[name].append(served.first_heatmap())
            finally:
                served.stop()
    print("\n`liqheat tui` (demo, 236x76 pty): launch -> ...")
    print(f"  {'history':<22}{'header':>10}{'map + USD legend':>18}")
    for name, _ in variants:
        print(f"  {name:<22}{_median([r.get('header', float('nan')) for r in tui[name]]):>9.2f}s"
              f"{_median([r.get('map', float('nan')) for r in tui[name]]):>17.2f}s")
    a = _median([r.get("map", float("nan")) for r in tui[variants[0][0]]])
    b = _median([r.get("map", float("nan")) for r in tui[variants[1][0]]])
    print(f"  30 days take {a / b:.2f}x the time of 2 days to the first map")
    print("\n`liqheat serve` (demo): launch -> first /api/v1/heatmap answer")
    for name, _ in variants:
        phases = sorted({ph for _, ph in page[name]})
        print(f"  {name:<22}{_median([s for s, _ in page[name]]):>9.2f}s   first answer's history: {', '.join(phases)}")
    served = Served([])
    try:
        served.first_heatmap()
        draw = page_draw(served.base)
    finally:
        served.stop()
    if draw is None:
        print("\nchart page: skipped (no chromium)")
    else:
        print(f"\nchart page in headless Chromium (1400x900, demo, panels included): first chart drawn "
              f"{draw['ready_s']:.2f}s after navigation; overlay draw per frame p50 {draw['p50']:.2f} ms, "
              f"p95 {draw['p95']:.2f} ms ({draw['draws']} draws in 8 s of live updates)")


if __name__ == "__main__":
    main()
