"""Server and overlay performance, measured on loopback in this run:

1. ``GET /api/v1/heatmap`` with 200 concurrent clients: p50/p99 latency and throughput, on a still market
   (cache warm) and on a live one (bars every 250 ms invalidate the cache).
2. WebSocket fan-out to 1,000 subscribed clients: delivery lag of live events (feed → client), p50/p99.
3. The overlay's draw time per frame in headless Chromium at 2,000 columns x 400 bins, next to a naive
   per-cell ``fillRect`` renderer.

The server runs in its own process (a real ``create_app`` over the engine's Hub and a synthetic feed);
clients run in this one. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import re
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

HEATMAP_CLIENTS = 200
HEATMAP_SECONDS = 6.0
HEATMAP_GOAL_P99_MS = 50.0
WS_CLIENTS = 1000
WS_SECONDS = 10.0
WS_GOAL_P99_MS = 250.0
TICK_S = 0.25
DRAW_COLUMNS, DRAW_BINS = 2000, 400
DRAW_GOAL_MS = 4.0
HISTORY_BARS = 7 * 1440
HEATMAP_QUERY = "/api/v1/heatmap?symbol=BTC&timeframe=5m&bins=200&columns=300"


# ---- the server process ------------------------------------------------------------------------------
def _serve(port_q: Any, stop_q: Any, tick_s: float | None) -> None:
    asyncio.run(_serve_async(port_q, stop_q, tick_s))


async def _serve_async(port_q: Any, stop_q: Any, tick_s: float | None) -> None:
    from aiohttp import web

    from engine.feeds.base import BarUpdate, Liquidation, Market
    from engine.model import Bars
    from engine.model.synthetic import synthetic_bars
    from engine.service import Hub
    from server.app import create_app
    from server.config import ServerConfig

    class BenchFeed:
        """History, then (if ticking) a forming update, a close and a liquidation stamped with the wall
        clock every ``tick_s``: the stamp is how clients measure delivery lag."""

        exchange = "bench"
        timeframe = 60

        def __init__(self) -> None:
            self.bars = synthetic_bars(HISTORY_BARS + 20_000, seed=7)

        async def markets(self) -> list[Market]:
            return [Market("bench", "BTC/USDT:USDT", "BTC")]

        async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
            return self.bars.slice(0, HISTORY_BARS)

        async def stream(self, symbol: str) -> AsyncIterator[Any]:
            if tick_s is None:
                await asyncio.Event().wait()
            j = HISTORY_BARS
            while j < len(self.bars):
                await asyncio.sleep(tick_s)
                bar = self.bars.slice(j, j + 1)
                yield BarUpdate(bar, closed=True)
                price = float(bar.close[0])
                yield Liquidation(int(time.time() * 1000), "bench", symbol, "long", price, 1.0, price)
                j += 1

        async def close(self) -> None:
            return None

    hub = Hub(BenchFeed(), history_days=0)
    await hub.start()
    runner = web.AppRunner(create_app(hub, ServerConfig(queue_size=512, heartbeat_s=30.0, max_clients=4 * WS_CLIENTS,
                                                          max_clients_per_ip=4 * WS_CLIENTS)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
    await site.start()
    port_q.put(runner.addresses[0][1])
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, stop_q.get)
    await runner.cleanup()
    await hub.stop()


@contextlib.contextmanager
def server(tick_s: float | None) -> Any:
    ctx = mp.get_context("spawn")
    port_q, stop_q = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_serve, args=(port_q, stop_q, tick_s), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_q.put(None)
        proc.join(20)
        if proc.is_alive():
            proc.kill()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


# ---- 1. heatmap endpoint --------------------------------------------------------------------------
async def heatmap_load(base: str, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` keep-alive connections, each asking again as soon as it has the whole answer. The
    client is a minimal HTTP/1.1 reader (asyncio streams) so that on a two-core machine the figure is the
    server's, not the client library's; it asks for gzip like a browser and keeps the body compressed."""
    host, port = base.removeprefix("http://").split(":")
    request = (f"GET {HEATMAP_QUERY} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept-Encoding: gzip\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    lat: list[float] = []
    errors = 0
    size = 0
    deadline = time.perf_counter() + seconds

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await reader.readexactly(length)
        return status if body or length == 0 else 0

    async def client() -> None:
        nonlocal errors, size
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(10_000):
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                status = await one(reader, writer)
                lat.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    reader, writer = await asyncio.open_connection(host, int(port))
    await one(reader, writer)  # the first one computes
    writer.close()
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "rps": len(lat) / elapsed, "n": len(lat), "errors": errors}


# ---- 2. WebSocket fan-out --------------------------------------------------------------------------
_STAMP = re.compile(r'"type":"liquidation","sub":"b","seq":\d+,"time_ms":(\d+)')


async def ws_fanout(base: str, clients: int, seconds: float, batch: bool) -> dict[str, float]:
    """Every client subscribes to the same view; lags are measured from the wall-clock stamp the feed put
    on each tick's liquidation event, to its arrival (event lag) and to the arrival of the heatmap column
    computed for the same tick (column lag)."""
    import aiohttp

    lags: list[float] = []
    column_lags: list[float] = []
    snapshots = 0
    resyncs = 0
    frames = 0
    conn = aiohttp.TCPConnector(limit=0)
    sub = {"op": "subscribe", "id": "b", "symbol": "BTC", "timeframe": "5m", "bins": 100, "columns": 100}
    measuring = asyncio.Event()
    url = base + "/api/v1/ws" + ("?batch=1" if batch else "")
    async with aiohttp.ClientSession(connector=conn) as session:

        async def client() -> None:
            nonlocal snapshots, resyncs, frames
            stamp: int | None = None
            async with session.ws_connect(url, max_msg_size=0) as ws:
                await ws.send_str(json.dumps(sub))
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = msg.data
                    now = time.time() * 1000
                    frames += 1
                    found = _STAMP.search(data)
                    if found:
                        stamp = int(found.group(1))
                        if measuring.is_set():
                            lags.append(now - stamp)
                    if '"type":"column"' in data:
                        if measuring.is_set() and stamp is not None:
                            column_lags.append(now - stamp)
                        stamp = None
                    if '"type":"snapshot"' in data:
                        snapshots += 1
                    if '"type":"resync"' in data:
                        resyncs += 1

        t0 = time.perf_counter()
        tasks = []
        for start in range(0, clients, 100):  # connect in waves: the listen backlog is finite
            tasks += [asyncio.create_task(client()) for _ in range(start, min(clients, start + 100))]
            await asyncio.sleep(0.05)
        for _ in range(1200):
            if snapshots >= clients:
                break
            await asyncio.sleep(0.05)
        connect_s = time.perf_counter() - t0
        connected_snapshots = snapshots
        frames = 0
        measuring.set()
        await asyncio.sleep(seconds)
        got = frames
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags) if lags else math.nan, "events": len(lags),
        "col_p50": pct(column_lags, 50), "col_p99": pct(column_lags, 99), "columns": len(column_lags),
        "snapshots": connected_snapshots, "resyncs": resyncs, "connect_s": connect_s, "frames_per_s": got / seconds,
    }


# ---- 3. overlay draw time --------------------------------------------------------------------------
DRAW_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="/static/vendor/lightweight-charts.standalone.production.js"></script></head>
<body style="margin:0;background:#0d0f17"><div id="c" style="width:1400px;height:800px"></div>
<script type="module">
import { attachLiquidationHeatmap } from "/static/liqheat-overlay.js";
const C = %(C)d, B = %(B)d, LWC = window.LightweightCharts;
const chart = LWC.createChart(document.getElementById("c"), { width: 1400, height: 800,
  layout: { background: { color: "#0d0f17" }, textColor: "#aaa" }, timeScale: { rightOffset: 0 } });
const series = chart.addSeries(LWC.CandlestickSeries, {});
const t0 = 1700000000, bars = []; let p = 60000;
let seed = 1; const rnd = () => (seed = (seed * 16807) %% 2147483647) / 2147483647;
for (let i = 0; i < C; i++) { const o = p; p *= 1 + (rnd() - 0.5) * 0.004;
  bars.push({ time: t0 + i * 300, open: o, high: Math.max(o, p) * 1.001, low: Math.min(o, p) * 0.999, close: p }); }
series.setData(bars);
const lo = 52000, hi = 68000, edges = Array.from({ length: B + 1 }, (_, i) => lo + (hi - lo) * i / B);
const bytes = new Uint8Array(C * B);
for (let c = 0; c < C; c++) for (let b = 0; b < B; b++) bytes[c * B + b] = (rnd() < 0.6) ? Math.floor(rnd() * 256) : 0;
let bin = ""; for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
const enc = btoa(bin);
const heatmap = { times: bars.map((b) => b.time), edges, encoding: "sqrt-u8", max_usd: 5e7, long: enc, short: enc, tiers: ["all"] };
const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));

async function measure(draw, frames) {
  const times = [];
  for (let i = 0; i < frames; i++) {
    chart.timeScale().scrollToPosition((i %% 2) ? 0.5 : 0, false);
    await frame();
    times.push(draw());
  }
  return times;
}
window.bench = async (frames, naiveFrames) => {
  const heat = attachLiquidationHeatmap(chart, series, { connect: false, profile: false, legend: false, tooltip: false, extendLive: false });
  heat.setData(heatmap, null);
  chart.timeScale().fitContent();
  await frame(); await frame();
  const visible = chart.timeScale().getVisibleLogicalRange();
  // Canvas 2D records drawing and rasterises later: read a pixel before and after the overlay's draw so
  // the figure includes the real raster work, not just the call.
  const flush = (target) => target.useBitmapCoordinateSpace((sc) => sc.context.getImageData(0, 0, 1, 1));
  const renderer = heat.primitive.paneViews()[0].renderer();
  const drawOverlay = renderer.drawBackground.bind(renderer);
  let flushed = 0;
  renderer.drawBackground = (target) => { flush(target); const t = performance.now(); drawOverlay(target); flush(target); flushed = performance.now() - t; };
  const fast = await measure(() => flushed, frames);
  const draws = heat.stats.draws;
  const imageStart = performance.now(); heat._rebuildImage(); const imageMs = performance.now() - imageStart;
  heat.detach();
  // the naive renderer: one fillRect per non-empty visible cell
  let last = 0;
  const naive = { paneViews: () => [{ zOrder: () => "normal", renderer: () => ({ draw() {}, drawBackground(target) {
    target.useBitmapCoordinateSpace((sc) => sc.context.getImageData(0, 0, 1, 1));
    const t1 = performance.now();
    target.useBitmapCoordinateSpace((s) => {
      const ctx = s.context, ts = chart.timeScale();
      const x0 = ts.logicalToCoordinate(0), dx = ts.logicalToCoordinate(1) - x0;
      const ys = edges.map((e) => series.priceToCoordinate(e));
      for (let c = 0; c < C; c++) { const x = (x0 + dx * c - dx / 2) * s.horizontalPixelRatio;
        for (let b = 0; b < B; b++) { const v = bytes[c * B + b]; if (!v) continue;
          ctx.fillStyle = `rgba(${v},${255 - v},120,0.8)`;
          ctx.fillRect(x, ys[b + 1] * s.verticalPixelRatio, dx * s.horizontalPixelRatio, (ys[b] - ys[b + 1]) * s.verticalPixelRatio); } }
      ctx.getImageData(0, 0, 1, 1);
    });
    last = performance.now() - t1; } }) }] };
  series.attachPrimitive(naive);
  const slow = await measure(() => last, naiveFrames);
  series.detachPrimitive(naive);
  return { fast, slow, draws, imageMs, visible: visible ? visible.to - visible.from : null };
};
window.ready = true;
</script></body></html>"""


def draw_bench(base: str, frames: int = 120, naive_frames: int = 6) -> dict[str, float] | None:
    chromium = os.environ.get("LIQHEAT_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        return None
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    html = DRAW_PAGE % {"C": DRAW_COLUMNS, "B": DRAW_BINS}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800}, device_scale_factor=1)
            page.route(base + "/bench.html", lambda route: route.fulfill(body=html, content_type="text/html"))
            page.goto(base + "/bench.html")
            page.wait_for_function("window.ready === true", timeout=30_000)
            r = page.evaluate(f"window.bench({frames}, {naive_frames})")
        finally:
            browser.close()
    fast, slow = r["fast"], r["slow"]
    return {"p50": pct(fast, 50), "p99": pct(fast, 99), "mean": statistics.fmean(fast), "frames": len(fast),
            "naive_mean": statistics.fmean(slow), "image_ms": r["imageMs"], "visible": r["visible"] or 0}


def vendor_ready() -> bool:
    return (Path(__file__).resolve().parents[1] / "server" / "static" / "vendor"
            / "lightweight-charts.standalone.production.js").exists()


def main() -> None:
    rows: list[tuple[str, str, str, str]] = []

    with server(None) as base:
        still = asyncio.run(heatmap_load(base, HEATMAP_CLIENTS, HEATMAP_SECONDS))
        draw = draw_bench(base) if vendor_ready() else None
    with server(TICK_S) as base:
        live = asyncio.run(heatmap_load(base, HEATMAP_CLIENTS, HEATMAP_SECONDS))
    with server(TICK_S) as base:
        fan = asyncio.run(ws_fanout(base, WS_CLIENTS, WS_SECONDS, batch=False))
    with server(TICK_S) as base:
        fan_b = asyncio.run(ws_fanout(base, WS_CLIENTS, WS_SECONDS, batch=True))

    def ratio(value: float, goal: float) -> str:
        return f"{value / goal:.2f}x goal" if math.isfinite(value) else "n/a"

    rows.append((f"heatmap, {HEATMAP_CLIENTS} clients, still market: p50", f"{still['p50']:.1f} ms", "", ""))
    rows.append(("heatmap, still market: p99", f"{still['p99']:.1f} ms", f"<= {HEATMAP_GOAL_P99_MS:.0f} ms", ratio(still["p99"], HEATMAP_GOAL_P99_MS)))
    rows.append(("heatmap, still market: throughput", f"{still['rps']:.0f} req/s", "", f"{still['n']} req, {still['errors']} errors"))
    rows.append((f"heatmap, live market (bar every {TICK_S * 1000:.0f} ms): p50", f"{live['p50']:.1f} ms", "", ""))
    rows.append(("heatmap, live market: p99", f"{live['p99']:.1f} ms", f"<= {HEATMAP_GOAL_P99_MS:.0f} ms", ratio(live["p99"], HEATMAP_GOAL_P99_MS)))
    rows.append(("heatmap, live market: throughput", f"{live['rps']:.0f} req/s", "",
                 f"{live['n']} req, live/still {live['rps'] / still['rps']:.2f}"))
    sent = WS_SECONDS / TICK_S * WS_CLIENTS
    for label, f in (("one message per frame", fan), ("?batch=1", fan_b)):
        rows.append((f"ws fan-out {WS_CLIENTS} clients, {label}: event lag p50", f"{f['p50']:.1f} ms", "", "feed event -> client"))
        rows.append(("  event lag p99", f"{f['p99']:.1f} ms", f"<= {WS_GOAL_P99_MS:.0f} ms", ratio(f["p99"], WS_GOAL_P99_MS)))
        rows.append(("  heatmap column lag p50", f"{f['col_p50']:.1f} ms", "", "bar -> its column at the client"))
        rows.append(("  heatmap column lag p99", f"{f['col_p99']:.1f} ms", f"<= {WS_GOAL_P99_MS:.0f} ms", ratio(f["col_p99"], WS_GOAL_P99_MS)))
        rows.append(("  delivered events", f"{f['events']}", f"{sent:.0f} sent",
                     f"{f['events'] / sent:.2f} delivered, {f['frames_per_s']:.0f} frames/s, {f['resyncs']} resyncs, "
                     f"{f['snapshots']} snapshots in {f['connect_s']:.1f} s"))
    rows.append(("  batched / unbatched column lag p99", f"{fan_b['col_p99'] / fan['col_p99']:.2f}", "", ""))
    if draw is None:
        rows.append(("overlay draw", "skipped", "", "no chromium or chart library (make assets)"))
    else:
        rows.append((f"overlay draw {DRAW_COLUMNS}x{DRAW_BINS}: p50", f"{draw['p50']:.2f} ms", "", f"{draw['frames']} frames"))
        rows.append(("overlay draw: p99", f"{draw['p99']:.2f} ms", f"<= {DRAW_GOAL_MS:.0f} ms", ratio(draw["p99"], DRAW_GOAL_MS)))
        rows.append(("naive fillRect renderer, same grid", f"{draw['naive_mean']:.1f} ms", "",
                     f"{draw['naive_mean'] / max(draw['mean'], 0.01):.0f}x slower"))
        rows.append(("rebuild of the cell image (new data)", f"{draw['image_ms']:.1f} ms", "", "once per snapshot/new candle"))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'value':>14}  {'goal':>14}  ratio / notes")
    for name, value, goal, note in rows:
        print(f"{name:<{w}}  {value:>14}  {goal:>14}  {note}")


if __name__ == "__main__":
    main()
