"""Soak under abuse: a real ``liqheat serve`` process (demo market, ``--memory-budget``) attacked with the
probe mix of issue 11 for ``--minutes`` while 20 normal clients watch live 1m views and poll the page's
heatmap. Loopback only; every loop is bounded in count and in time.

Attack mix (all at once): distinct batch-sized heatmap GETs, subscribe/unsubscribe churn, WebSockets that
subscribe and never read, ping floods that never read, deeply nested JSON frames, half-sent request
headers (slowloris), and 500 idle TCP sockets.

Reported: idle, peak and final RSS of the server process (goal: peak <= budget, final within 20% of
idle), p50/p99 of a normal client's heatmap GET and of its live-bar lag during the attack (goal p99 <=
250 ms), and the count of 5xx answers (goal 0), plus what the server refused and why.

Live-bar lag = the wall time a watcher's loop reads a ``bar`` frame minus its ``server_ms`` stamp: when
the server's fan-out for that market took the engine's update off its queue (the engine publishes on the
server's loop as the feed delivers). So it covers the server computing the view's deltas, queueing and
writing them, the kernel, and the watcher's own loop (reported beside it: the watchers run in this
process, the attack in another one, optionally pinned to another CPU with ``--pin``). The first ``bar``
of a new candle (a candle just closed: the biggest update) is reported apart. Absolute times are noisy
on a shared machine: the load average is printed with each run.

    python -m benchmarks.bench_soak --minutes 5        (or LIQHEAT_SOAK_MINUTES=5 python -m benchmarks soak)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
NORMAL_CLIENTS = 20
IDLE_SOCKETS = 500
SLOW_HEADER_SOCKETS = 100
HEAVY_WORKERS = 4
NON_READERS = 6
PING_FLOODERS = 3
GOAL_LAG_MS = 250.0
SERVER_CPU, ATTACKER_CPU = 0, 1  # --pin
VIEW = {"symbol": "BTC", "timeframe": "1m", "bins": 200, "columns": 300}
PAGE_HEATMAP = "/api/v1/heatmap?symbol=BTC&timeframe=5m&bins=200&columns=300"


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Watchers:
    """The 20 normal clients, in the benchmark's main process (the attack runs in another process, so
    this loop measures the server, not its own work for 600 hostile sockets)."""

    def __init__(self, base: str, pid: int) -> None:
        self.base = base
        self.pid = pid
        self.attacking = False
        self.stop = asyncio.Event()
        self.statuses: Counter[int] = Counter()
        self.ws_closes: Counter[str] = Counter()
        self.phase = "idle"  # idle (before the attack) | attack | after
        self.heatmap_ms: dict[str, list[float]] = {"idle": [], "attack": [], "after": []}
        self.lag_ms: dict[str, list[float]] = {"idle": [], "attack": [], "after": []}
        # the first message of a new candle (a candle just closed: the fan-out's biggest update)
        self.close_lag_ms: dict[str, list[float]] = {"idle": [], "attack": [], "after": []}
        # how late this process's own loop wakes up (a 20 ms sleep): the part of the lag that is ours
        self.own_lag_ms: dict[str, list[float]] = {"idle": [], "attack": [], "after": []}
        self.rss_peak = 0
        self.counts: Counter[str] = Counter()

    async def sample_rss(self) -> None:
        while not self.stop.is_set():
            if self.attacking:
                self.rss_peak = max(self.rss_peak, rss(self.pid))
            await asyncio.sleep(0.25)

    async def own_loop(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.02)
            self.own_lag_ms[self.phase].append((time.perf_counter() - t0) * 1000 - 20.0)

    async def normal_client(self, session: aiohttp.ClientSession, i: int) -> None:
        """Watches a live 1m view (bar lag) and polls the page's heatmap every 2 s."""
        async with session.ws_connect(self.base + "/api/v1/ws", max_msg_size=0) as ws:
            await ws.send_json({"op": "subscribe", "id": "v", **VIEW})

            async def poll() -> None:
                await asyncio.sleep(i * 0.1)
                while not self.stop.is_set():
                    t0 = time.perf_counter()
                    async with session.get(self.base + PAGE_HEATMAP) as r:
                        await r.read()
                        self.statuses[r.status] += 1
                    self.heatmap_ms[self.phase].append((time.perf_counter() - t0) * 1000)
                    await asyncio.sleep(2.0)

            poller = asyncio.create_task(poll())
            newest = 0
            try:
                while not self.stop.is_set():
                    try:
                        msg = await ws.receive(timeout=1.0)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        self.ws_closes[f"normal client closed: {msg.type.name} {msg.data}"] += 1
                        return
                    received = time.time() * 1000
                    m = json.loads(msg.data)
                    if m.get("type") == "bar" and m.get("server_ms"):
                        self.lag_ms[self.phase].append(received - m["server_ms"])
                        if newest and m["time"] > newest:
                            self.close_lag_ms[self.phase].append(received - m["server_ms"])
                        newest = max(newest, m["time"])
                    elif m.get("type") == "resync":
                        self.counts["normal client resyncs"] += 1
            finally:
                poller.cancel()


class Attack:
    """The probe mix of issue 11, run in its own process (``--attack-port``)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.attacking = True
        self.statuses: Counter[int] = Counter()
        self.ws_closes: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    # ---- attacks ------------------------------------------------------------------------------------
    async def heavy_gets(self, session: aiohttp.ClientSession, w: int) -> None:
        n = 0
        while self.attacking and n < 100_000:
            n += 1
            bins = 400 + (w * 50_000 + n) % 600  # never the same query twice: no cache to hit
            q = f"/api/v1/heatmap?symbol=BTC&timeframe=1m&columns=1200&bins={bins}"
            try:
                async with session.get(self.base + q) as r:
                    await r.read()
                    self.statuses[r.status] += 1
                    if r.status in (429, 503):
                        await asyncio.sleep(min(1.0, float(r.headers.get("Retry-After", "1")) / 4))
            except aiohttp.ClientError:
                self.counts["heavy GET connection errors"] += 1

    async def churn(self, session: aiohttp.ClientSession) -> None:
        n = 0
        while self.attacking and n < 100_000:
            try:
                async with session.ws_connect(self.base + "/api/v1/ws", max_msg_size=0) as ws:
                    while self.attacking and not ws.closed and n < 100_000:
                        n += 1
                        sid = f"c{n}"
                        await ws.send_json({"op": "subscribe", "id": sid, "symbol": "ETH", "timeframe": "1m",
                                            "bins": 300 + n % 700, "columns": 1000})
                        await ws.send_json({"op": "unsubscribe", "sub": sid})
                        self.counts["churn pairs sent"] += 1
                        with contextlib.suppress(TimeoutError):
                            while True:  # read what is there (errors, acks), without waiting long
                                msg = await ws.receive(timeout=0.01)
                                if msg.type != aiohttp.WSMsgType.TEXT:
                                    self.ws_closes[f"churn: {msg.type.name} {msg.data}"] += 1
                                    break
                    if ws.close_code:
                        self.ws_closes[f"churn closed {ws.close_code}"] += 1
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.counts[f"churn connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)

    async def non_reader(self, session: aiohttp.ClientSession, ping: bool) -> None:
        """Subscribes to a big view (or floods 60 kB pings) and never reads; reconnects when dropped."""
        pad = "x" * 60_000
        n = 0
        while self.attacking and n < 1000:
            n += 1
            try:
                ws = await session.ws_connect(self.base + "/api/v1/ws", max_msg_size=0)
            except (aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.5)
                continue
            try:
                if not ping:
                    await ws.send_json({"op": "subscribe", "id": "big", "symbol": "BTC", "timeframe": "1m",
                                        "bins": 1000, "columns": 1000})
                k = 0
                while self.attacking and k < 100_000:
                    k += 1
                    if ping:
                        # a socket the server closed (it never reads the close frame) stops taking data
                        await asyncio.wait_for(ws.send_str(json.dumps({"op": "ping", "pad": pad})), 2.0)
                        self.counts["flood pings sent"] += 1
                        await asyncio.sleep(0.01)
                    else:
                        await asyncio.wait_for(ws.send_json({"op": "resync", "sub": "big"}), 2.0)
                        self.counts["non-reader resyncs sent"] += 1
                        await asyncio.sleep(0.3)
            except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError):
                self.counts["non-readers dropped by the server" if not ping else "ping flooders dropped"] += 1
            finally:
                ws._response.close()  # noqa: SLF001 - drop the socket without a close handshake
            await asyncio.sleep(0.2)

    async def nested_json(self, session: aiohttp.ClientSession) -> None:
        n = 0
        while self.attacking and n < 100_000:
            n += 1
            try:
                async with session.ws_connect(self.base + "/api/v1/ws") as ws:
                    await ws.send_str("[" * 2000 + "]" * 2000)
                    while True:
                        msg = await ws.receive(timeout=5)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            self.ws_closes[f"nested JSON: {msg.type.name} {msg.data}"] += 1
                            break
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                self.counts[f"nested JSON: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)

    async def slow_headers(self, host: str, port: int) -> None:
        n = 0
        while self.attacking and n < 100_000:
            n += 1
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            opened = time.monotonic()
            try:
                writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while self.attacking:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                            self.counts["slow-header sockets closed by the server"] += 1
                            self.counts["slow-header seconds held (sum)"] += int(time.monotonic() - opened)
                            break
                    except TimeoutError:
                        continue
            except (OSError, ConnectionError):
                self.counts["slow-header sockets reset"] += 1
            finally:
                writer.close()

    async def idle_socket(self, host: str, port: int) -> None:
        n = 0
        while self.attacking and n < 100_000:
            n += 1
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                self.counts["idle socket connect errors"] += 1
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(OSError, ConnectionError):
                while self.attacking:
                    try:
                        if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                            self.counts["idle sockets closed by the server"] += 1
                            break
                    except TimeoutError:
                        continue
            writer.close()


async def attack(port: int, minutes: float) -> dict[str, Any]:
    """The attacker process: every attack at once for ``minutes``, then its counters (JSON on stdout)."""
    base = f"http://127.0.0.1:{port}"
    a = Attack(base)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        attacks = [a.heavy_gets(session, w) for w in range(HEAVY_WORKERS)]
        attacks += [a.churn(session)]
        attacks += [a.non_reader(session, ping=False) for _ in range(NON_READERS)]
        attacks += [a.non_reader(session, ping=True) for _ in range(PING_FLOODERS)]
        attacks += [a.nested_json(session)]
        attacks += [a.slow_headers("127.0.0.1", port) for _ in range(SLOW_HEADER_SOCKETS)]
        attacks += [a.idle_socket("127.0.0.1", port) for _ in range(IDLE_SOCKETS)]
        tasks = [asyncio.create_task(x) for x in attacks]
        await asyncio.sleep(minutes * 60)
        a.attacking = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"statuses": dict(a.statuses), "ws_closes": dict(a.ws_closes), "counts": dict(a.counts)}


async def run(proc: subprocess.Popen[str], port: int, minutes: float, budget: str, settle_s: float,
              pin: bool) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"budget": budget, "settle_s": settle_s, "rss_after": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            try:
                async with session.get(base + "/api/v1/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            await asyncio.sleep(0.5)
        out["startup_s"] = time.monotonic() - t0
        w = Watchers(base, proc.pid)
        tasks = [asyncio.create_task(w.sample_rss()), asyncio.create_task(w.own_loop())]
        tasks += [asyncio.create_task(w.normal_client(session, i)) for i in range(NORMAL_CLIENTS)]
        await asyncio.sleep(settle_s / 2)
        for by_phase in (w.heatmap_ms, w.lag_ms, w.close_lag_ms, w.own_lag_ms):
            by_phase["idle"].clear()  # the first subscriptions' snapshots are not the idle state
        await asyncio.sleep(settle_s / 2)
        out["rss_idle"] = rss(proc.pid)
        async with session.get(base + "/api/v1/health") as r:
            out["health_idle"] = (await r.json())["memory"]
        out["load_before"] = os.getloadavg()
        w.attacking, w.phase = True, "attack"
        cmd = [sys.executable, "-m", "benchmarks.bench_soak", "--attack-port", str(port), "--minutes", str(minutes)]
        if pin:
            cmd += ["--pin-cpu", str(ATTACKER_CPU)]
        attacker = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        health: dict[str, Any] = {}
        out["live_stats"] = []
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            async with session.get(base + "/api/v1/health") as r:
                w.statuses[r.status] += 1
                if r.status == 200:
                    whole = await r.json()
                    health = whole["memory"]
                    out["live_stats"].append((health.get("loop_late_ms"), whole["live"]["markets"]))
                    out.setdefault("gc_full_ms", []).append(health.get("gc_full_ms") or 0.0)
                    out["peak_cache_bytes"] = max(out.get("peak_cache_bytes", 0), health["cache_bytes"])
                    out["peak_send_queue_bytes"] = max(out.get("peak_send_queue_bytes", 0), health["send_queue_bytes"])
        out["load_during"] = os.getloadavg()
        w.attacking, w.phase = False, "after"
        out["during"] = {"health": health}
        stdout, _ = await attacker.communicate()  # the attacker stops its loops (at most 30 s more)
        out["attacker"] = json.loads(stdout.decode() or "{}")
        ended = time.monotonic()
        while time.monotonic() - ended < settle_s:  # the normal clients keep watching; the server settles
            await asyncio.sleep(min(5.0, settle_s - (time.monotonic() - ended)))
            out["rss_after"].append((round(time.monotonic() - ended), rss(proc.pid)))
        out["rss_final"] = rss(proc.pid)
        async with session.get(base + "/api/v1/health") as r:
            out["health_after"] = (await r.json())["memory"]
        w.stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        statuses = Counter(w.statuses)
        statuses.update({int(k): v for k, v in out["attacker"].get("statuses", {}).items()})
        out.update({"rss_peak": w.rss_peak, "heatmap_ms": w.heatmap_ms, "lag_ms": w.lag_ms,
                    "close_lag_ms": w.close_lag_ms,
                    "own_lag_ms": w.own_lag_ms, "statuses": dict(statuses),
                    "ws_closes": w.ws_closes | Counter(out["attacker"].get("ws_closes", {})),
                    "counts": w.counts | Counter(out["attacker"].get("counts", {}))})
    return out


def _p(values: list[float]) -> str:
    return f"{pct(values, 0.5):.0f} / {pct(values, 0.99):.0f} ms"


def _ratio(by_phase: dict[str, list[float]], phase: str) -> str:
    n = len(by_phase[phase])
    if phase == "idle" or not by_phase["idle"]:
        return f"n={n}"
    return f"n={n}; p99 {pct(by_phase[phase], 0.99) / max(1e-9, pct(by_phase['idle'], 0.99)):.1f}x idle" + (
        f"; goal <= {GOAL_LAG_MS:.0f} ms" if phase == "attack" else "")


def report(r: dict[str, Any], minutes: float, pin: bool) -> None:
    mb = 1024 * 1024
    budget = r["budget"]
    idle, peak, final = r["rss_idle"], r["rss_peak"], r["rss_final"]
    five = sum(n for code, n in r["statuses"].items() if int(code) >= 500)
    load = "load average (1/5/15 min) before the attack {:.1f} {:.1f} {:.1f}; at its end {:.1f} {:.1f} {:.1f}".format(
        *r["load_before"], *r["load_during"])
    pinned = f"pinned to CPU {ATTACKER_CPU}, server and watchers to CPU {SERVER_CPU}" if pin else "not pinned"
    print(f"attacker {pinned}; {load}")
    rows = [
        ("attack length", f"{minutes:g} min", ""),
        ("server RSS idle (20 normal clients)", f"{idle / mb:.0f} MB", ""),
        ("server RSS peak during the attack", f"{peak / mb:.0f} MB", f"budget {budget}; {peak / idle:.2f}x idle"),
        (f"server RSS {r['settle_s']:.0f} s after", f"{final / mb:.0f} MB", f"{final / idle:.2f}x idle (goal <= 1.20x)"),
        ("peak cache bytes (own accounting)", f"{r.get('peak_cache_bytes', 0) / mb:.0f} MB", ""),
        ("peak send-queue bytes (own accounting)", f"{r.get('peak_send_queue_bytes', 0) / mb:.1f} MB", ""),
        *[(f"normal heatmap GET p50 / p99, {ph}", _p(r["heatmap_ms"][ph]), _ratio(r["heatmap_ms"], ph))
          for ph in ("idle", "attack", "after")],
        *[(f"live-bar lag p50 / p99, {ph}", _p(r["lag_ms"][ph]), _ratio(r["lag_ms"], ph))
          for ph in ("idle", "attack", "after")],
        *[(f"  at a candle's close (first bar of the next), {ph}", _p(r["close_lag_ms"][ph]), f"n={len(r['close_lag_ms'][ph])}")
          for ph in ("idle", "attack", "after")],
        *[(f"  the watchers' own loop lateness, {ph}", _p(r["own_lag_ms"][ph]), "")
          for ph in ("idle", "attack")],
        ("5xx answers", str(five), "goal 0"),
        ("tracebacks in the server log", str(r["tracebacks"]), f"{r['server_log_lines']} log lines"),
        ("exit code on SIGTERM", str(r["exit_code"]), "goal 0"),
    ]
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>14}  {c}")
    print("RSS after the attack (s: MB):", ", ".join(f"{s}: {b / mb:.0f}" for s, b in r["rss_after"]))
    for when in ("idle", "after"):
        h = r[f"health_{when}"]
        big = {k: round(v["bytes"] / mb, 1) for k, v in h["caches"].items() if v["bytes"] > mb}
        print(f"server accounting, {when}: cache {h['cache_bytes'] / mb:.1f} MB {big}; send queues "
              f"{h['send_queue_bytes'] / mb:.1f} MB; malloc (MB) "
              + (", ".join(f"{k} {v / mb:.0f}" for k, v in h["malloc"].items() if k != "python_blocks")
                 + f", python blocks {h['malloc']['python_blocks']}" if h.get("malloc") else "n/a"))
    late = [x for x, _ in r["live_stats"] if x is not None]
    comp = [m.get("compute_ms_p99") for _, mk in r["live_stats"] for m in mk.values() if m.get("compute_ms_p99")]
    fan = [m.get("fanout_ms_p99") for _, mk in r["live_stats"] for m in mk.values() if m.get("fanout_ms_p99")]
    heavy = [m.get("compute_heavy_ms_p99") for _, mk in r["live_stats"] for m in mk.values() if m.get("compute_heavy_ms_p99")]
    print(f"server, sampled every 5 s during the attack: event-loop lateness (worst of 2 s) max {max(late, default=0):.0f} ms, "
          f"median {pct(late, 0.5):.0f} ms; live compute p99 (last 512) max {max(comp, default=0):.0f} ms (page-sized "
          f"views; batch-sized ones after them: {max(heavy, default=0):.0f} ms); "
          f"fan-out p99 max {max(fan, default=0):.0f} ms; full garbage-collector pass (stops every thread) "
          f"max {max(r.get('gc_full_ms', []), default=0):.0f} ms")
    print("HTTP statuses:", dict(sorted((int(k), v) for k, v in r["statuses"].items())))
    print("WebSocket closes seen by attackers:", dict(r["ws_closes"]))
    print("attack counters:", dict(r["counts"]))
    lanes = r["during"]["health"].get("lanes", {})
    print("lanes (last sample during the attack):", {k: {x: v.get(x) for x in ("admitted", "refused", "done", "deferred_s")}
                                                     for k, v in lanes.items()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("LIQHEAT_SOAK_MINUTES", "5")))
    parser.add_argument("--budget", default="1GB")
    parser.add_argument("--server-log", default=None, metavar="PATH", help="keep the server's log here")
    parser.add_argument("--profile", default=None, metavar="PATH", help="cProfile the server's main thread into PATH")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before and after the attack")
    parser.add_argument("--pin", action="store_true",
                        help=f"pin the attacker to CPU {ATTACKER_CPU} and the server and watchers to CPU {SERVER_CPU} "
                             "(separates CPU contention from the server's own scheduling)")
    parser.add_argument("--attack-port", type=int, default=None, help=argparse.SUPPRESS)  # the attacker process
    parser.add_argument("--pin-cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args([] if argv is None and __name__ != "__main__" else argv)
    random.seed(0)
    if args.attack_port is not None:
        if args.pin_cpu is not None:
            os.sched_setaffinity(0, {args.pin_cpu})
        print(json.dumps(asyncio.run(attack(args.attack_port, args.minutes))))
        return
    pin = args.pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {SERVER_CPU})  # the watchers, and the server started below, inherit it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    cmd = [sys.executable, *profile, "-m", "engine.cli", "serve", "--port", str(port), "--memory-budget", args.budget]
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, text=True) as proc:
        try:
            result = asyncio.run(run(proc, port, args.minutes, args.budget, args.settle, pin))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code: int | str = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 30 s"
        log.seek(0)
        text = log.read()
    if args.server_log:
        Path(args.server_log).write_text(text)
    result.update({"exit_code": code, "server_log_lines": len(text.splitlines()), "tracebacks": text.count("Traceback")})
    report(result, args.minutes, pin)


if __name__ == "__main__":
    main()
