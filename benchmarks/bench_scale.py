"""Several machines, measured on one: what the Redis bus adds to a view's latency, what a replica and a
worker cost per core, how fast the cluster recovers, and PostgreSQL against SQLite for history.

Everything runs for real on loopback: redis-server, PostgreSQL, ``liqheat worker`` and ``liqheat serve
--bus`` processes. Latency is measured side by side on the same engine: one client on the worker's own
WebSocket (the single-server path) and one on a replica (worker -> Redis -> replica); each delta is matched
by content and the arrival times compared on this machine's clock. CPU costs come from the processes' own
CPU time (/proc), so they are per core whatever else runs. The machine these figures come from has 2 cores
shared with other jobs: absolute times are noisy, ratios taken in the same run are the figures to read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "tests", REPO / "tests" / "scale"):  # the tests' real-server launchers
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from cluster import Proc, wait_healthy  # noqa: E402
from real_servers import PostgresServer, RedisServer, free_port  # noqa: E402

from engine.model.synthetic import synthetic_bars  # noqa: E402
from engine.stores import open_store  # noqa: E402

SECONDS = 20.0  # of streaming per measurement
DEMO = ["--feed", "demo", "--seed", "7", "--speed", "60", "--history-days", "1"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def follow(url: str, symbol: str, out: list[tuple[float, str]], stop: asyncio.Event) -> None:
    """A client on one view: (arrival time, delta content) of every delta."""
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_json({"op": "subscribe", "id": "m", "symbol": symbol, "timeframe": "1m", "bins": 100, "columns": 60})
        while not stop.is_set():
            try:
                msg = await ws.receive(timeout=0.5)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            now = time.monotonic()
            m = json.loads(msg.data)
            if "seq" in m and m["type"] not in ("snapshot",):
                out.append((now, json.dumps({k: v for k, v in m.items() if k not in ("sub", "seq")}, sort_keys=True)))


def matched_delays(direct: list[tuple[float, str]], bused: list[tuple[float, str]]) -> list[float]:
    """Each delta through the bus against the same delta on the direct socket nearest in time (a map or a
    forming bar can repeat the same content later: matching the first would count minutes, not ms)."""
    import bisect

    times: dict[str, list[float]] = {}
    for t, body in direct:
        times.setdefault(body, []).append(t)
    out = []
    for t, body in bused:
        ts = times.get(body)
        if not ts:
            continue
        i = bisect.bisect_left(ts, t)
        near = min((ts[j] for j in (i - 1, i) if 0 <= j < len(ts)), key=lambda x: abs(x - t))
        out.append((t - near) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def latency_and_costs(redis_url: str, tmp: Path, clients: int) -> dict[str, Any]:
    port = free_port()
    w = Proc("w", ["worker", "--bus", redis_url, *DEMO, "--symbols", "BTC", "ETH", "SOL"], tmp).start()
    r = Proc("r", ["serve", "--bus", redis_url, "--port", str(port)], tmp).start()
    try:
        h = await wait_healthy(port, [w, r])
        direct_url = h["workers"][0]["http"] + "/api/v1/ws"
        stop = asyncio.Event()
        direct: list[tuple[float, str]] = []
        via: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
        tasks = [asyncio.ensure_future(follow(direct_url, "BTC", direct, stop))]
        tasks += [asyncio.ensure_future(follow(f"http://127.0.0.1:{port}/api/v1/ws", "BTC", via[i], stop)) for i in range(clients)]
        tasks += [asyncio.ensure_future(follow(f"http://127.0.0.1:{port}/api/v1/ws", s, [], stop)) for s in ("ETH", "SOL")]
        await asyncio.sleep(3.0)  # snapshots and warm-up
        assert w.p is not None and r.p is not None
        c_w, c_r, t0 = cpu_seconds(w.p.pid), cpu_seconds(r.p.pid), time.monotonic()
        n0 = sum(len(v) for v in via)
        await asyncio.sleep(SECONDS)
        wall = time.monotonic() - t0
        d_w, d_r = cpu_seconds(w.p.pid) - c_w, cpu_seconds(r.p.pid) - c_r
        forwarded = sum(len(v) for v in via) - n0
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # steady state only: each subscription's first snapshot holds the view's deltas back while it is
        # computed (for every replica: one shared log), which is the subscribe cost, not the live path's
        delays = [d for v in via for d in matched_delays(direct, [(t, b) for t, b in v if t >= t0])]
        return {"clients": clients, "worker_core": d_w / wall, "replica_core": d_r / wall, "wall": wall,
                "forwarded": forwarded, "delays": delays, "direct": len(direct)}
    finally:
        r.stop()
        w.stop()


# Eight demo markets the rendezvous hash splits four and four between shards 0/2 and 1/2.
SCALE_SYMBOLS = ["BTC", "XRP", "ADA", "LINK", "ETH", "SOL", "DOGE", "BNB"]


async def worker_scaling(redis_url: str, tmp: Path, workers: int, speed: float) -> dict[str, Any]:
    """``workers`` workers sharing the eight markets (shards i/N), one replica, one client per market;
    the demo runs at ``speed`` x so that one worker has more than a core of work. Counts the closed bars
    the clients receive and the workers' CPU."""
    port = free_port()
    ws = [Proc(f"w{workers}-{i}", ["worker", "--bus", redis_url, "--feed", "demo", "--seed", "7", "--speed", str(speed),
                                   "--history-days", "1", "--symbols", *SCALE_SYMBOLS, "--shard", f"{i}/{workers}"], tmp).start()
          for i in range(workers)]
    r = Proc(f"r{workers}", ["serve", "--bus", redis_url, "--port", str(port)], tmp).start()
    try:
        deadline = time.monotonic() + 120
        while True:  # every market owned (the workers load their history first)
            h = await wait_healthy(port, [*ws, r])
            if sum(len(w.get("markets", [])) for w in h.get("workers", [])) >= len(SCALE_SYMBOLS):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"not every market owned: {h.get('workers')}")
            await asyncio.sleep(0.5)
        stop = asyncio.Event()
        seen: list[list[tuple[float, str]]] = [[] for _ in SCALE_SYMBOLS]
        tasks = [asyncio.ensure_future(follow(f"http://127.0.0.1:{port}/api/v1/ws", sym, seen[i], stop))
                 for i, sym in enumerate(SCALE_SYMBOLS)]
        await asyncio.sleep(4.0)  # snapshots and warm-up
        pids = [w.p.pid for w in ws if w.p is not None]
        assert r.p is not None
        c0, r0, t0 = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(r.p.pid), time.monotonic()
        await asyncio.sleep(SECONDS)
        wall = time.monotonic() - t0
        cores = (sum(cpu_seconds(pid) for pid in pids) - c0) / wall
        replica_core = (cpu_seconds(r.p.pid) - r0) / wall
        load = os.getloadavg()[0]
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = sum(1 for v in seen for t, body in v if t0 <= t < t0 + wall and '"closed": true' in body
                     and '"type": "bar"' in body)
        return {"workers": workers, "bars_per_s": closed / wall, "cores": cores, "replica_core": replica_core,
                "load": load, "wanted": len(SCALE_SYMBOLS) * speed / 60}
    finally:
        r.stop()
        for w in ws:
            w.stop()


async def scaling_only() -> None:
    """``python -m benchmarks.bench_scale workers``: 1 -> 2 workers on the same eight markets."""
    tmp = Path(tempfile.mkdtemp(prefix="liqheat-bench-scale-"))
    redis = RedisServer()
    redis.start()
    try:
        await print_worker_scaling(redis.url, tmp)
    finally:
        redis.close()


async def print_worker_scaling(redis_url: str, tmp: Path, speed: float = 1800.0) -> None:
    print(f"\n1 -> 2 workers: {len(SCALE_SYMBOLS)} demo markets at {speed / 60:g} bars/s each "
          f"({len(SCALE_SYMBOLS) * speed / 60:g} closed bars/s wanted), one client per market on one replica, "
          f"{SECONDS:.0f} s; os.cpu_count() = {os.cpu_count()}, shared with other jobs")
    print(f"  {'workers':>8} {'closed bars/s':>14} {'of wanted':>10} {'worker cores':>13} {'core-ms per bar':>16} "
          f"{'markets/worker':>15} {'replica core':>13} {'load avg':>9}")
    rows = [await worker_scaling(redis_url, tmp, n, speed) for n in (1, 2)]
    for row in rows:
        per_bar = row["cores"] / row["bars_per_s"] * 1000 if row["bars_per_s"] else float("nan")
        print(f"  {row['workers']:>8} {row['bars_per_s']:>14.1f} {row['bars_per_s'] / row['wanted']:>10.0%} "
              f"{row['cores']:>13.2f} {per_bar:>16.1f} {len(SCALE_SYMBOLS) / row['workers']:>15.0f} "
              f"{row['replica_core']:>13.2f} {row['load']:>9.1f}")
    print(f"  2 workers / 1 worker: {rows[1]['bars_per_s'] / max(rows[0]['bars_per_s'], 1e-9):.2f}x the closed bars "
          f"delivered, {rows[1]['cores'] / max(rows[0]['cores'], 1e-9):.2f}x the CPU; the replica, Redis, the "
          "clients and the other jobs share the same 2 cores, so this bounds the gain from below")


async def replica_scaling(redis_url: str, tmp: Path, replicas: int, clients: int) -> dict[str, Any]:
    """``clients`` on one view spread over ``replicas`` replicas of one worker (one market at 1 bar/s):
    each replica's CPU, the messages it forwards, the delay against a client on the worker's own socket,
    and how many requests the replicas sent the owner for all those subscriptions (snapshot cache)."""
    ports = [free_port() for _ in range(replicas)]
    w = Proc("sw", ["worker", "--bus", redis_url, *DEMO, "--symbols", "BTC"], tmp).start()
    rs = [Proc(f"sr{i}", ["serve", "--bus", redis_url, "--port", str(port)], tmp).start() for i, port in enumerate(ports)]
    try:
        h = await wait_healthy(ports[0], [w, *rs])
        for port in ports[1:]:
            await wait_healthy(port, [w, *rs])
        stop = asyncio.Event()
        direct: list[tuple[float, str]] = []
        via: list[list[tuple[float, str]]] = [[] for _ in range(clients)]
        tasks = [asyncio.ensure_future(follow(h["workers"][0]["http"] + "/api/v1/ws", "BTC", direct, stop))]
        tasks += [asyncio.ensure_future(follow(f"http://127.0.0.1:{ports[i % replicas]}/api/v1/ws", "BTC", via[i], stop))
                  for i in range(clients)]
        await asyncio.sleep(3.0)
        pids = [r.p.pid for r in rs if r.p is not None]
        c0, t0 = [cpu_seconds(pid) for pid in pids], time.monotonic()
        n0 = sum(len(v) for v in via)
        await asyncio.sleep(SECONDS)
        wall = time.monotonic() - t0
        cores = [(cpu_seconds(pid) - c) / wall for pid, c in zip(pids, c0, strict=True)]
        forwarded = sum(len(v) for v in via) - n0
        healths = [await health_of(port) for port in ports]
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        delays = [d for v in via for d in matched_delays(direct, [(t, b) for t, b in v if t >= t0])]
        return {"replicas": replicas, "clients": clients, "cores": cores, "wall": wall, "forwarded": forwarded,
                "delays": delays, "owner_asks": sum(x["live"]["owner_asks"] for x in healths),
                "snapshot_hits": sum(x["live"]["snapshot_hits"] for x in healths)}
    finally:
        for r in rs:
            r.stop()
        w.stop()


async def health_of(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/api/v1/health") as r:
        return dict(await r.json())


def print_replica_scaling(rows: list[dict[str, Any]]) -> None:
    print(f"  {'replicas':>8} {'clients':>8} {'p50 ms':>7} {'p99 ms':>7} {'replica cores (each)':>22} {'msgs/s out':>11} "
          f"{'core-ms/1k msgs':>16} {'clients/core':>13} {'owner asks':>11} {'cache hits':>11}")
    for res in rows:
        rate = res["forwarded"] / res["wall"]
        total = sum(res["cores"])
        each = " + ".join(f"{c:.1%}" for c in res["cores"])
        print(f"  {res['replicas']:>8} {res['clients']:>8} {pct(res['delays'], 50):>7.1f} {pct(res['delays'], 99):>7.1f} "
              f"{each:>22} {rate:>11.0f} {total / rate * 1e6 if rate else float('nan'):>16.0f} "
              f"{res['clients'] / total if total else float('nan'):>13.0f} {res['owner_asks']:>11} {res['snapshot_hits']:>11}")
    if len(rows) == 2 and rows[0]["forwarded"] and rows[1]["forwarded"]:
        per = [r["forwarded"] / r["wall"] / sum(r["cores"]) for r in rows]
        print(f"  2 replicas / 1: messages out per replica core-second {per[1] / per[0]:.2f}x, messages out "
              f"{rows[1]['forwarded'] / rows[1]['wall'] / (rows[0]['forwarded'] / rows[0]['wall']):.2f}x (same clients: "
              "the same messages go out, split over two processes); the benchmark's clients, the worker and Redis "
              "share the same 2 cores, so capacity can only be read per core")


async def recovery(redis: RedisServer, tmp: Path) -> dict[str, float]:
    p_a, p_b = free_port(), free_port()
    w = Proc("rw", ["worker", "--bus", redis.url, *DEMO, "--symbols", "BTC"], tmp).start()
    ra = Proc("ra", ["serve", "--bus", redis.url, "--port", str(p_a)], tmp).start()
    rb = Proc("rb", ["serve", "--bus", redis.url, "--port", str(p_b)], tmp).start()
    out: dict[str, float] = {}

    async def snapshot_after(url: str) -> float:
        """Seconds from connecting until a live candle delta arrives (after the snapshot); nan past 60 s."""
        t = time.monotonic()
        seen: list[str] = []  # what came instead, said when no live view came (a stall's cause, not just nan)
        while time.monotonic() - t < 60:
            try:
                async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
                    await ws.send_json({"op": "subscribe", "symbol": "BTC", "timeframe": "1m", "bins": 100, "columns": 60})
                    while time.monotonic() - t < 60:
                        msg = await ws.receive(timeout=60)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            seen.append(f"{time.monotonic() - t:.1f}s socket {msg.type.name}")
                            break
                        m = json.loads(msg.data)
                        if m["type"] == "bar":  # a live delta after the snapshot
                            return time.monotonic() - t
                        seen.append(f"{time.monotonic() - t:.1f}s {m['type']} {str(m.get('error') or m.get('reason') or '')[:100]}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                seen.append(f"{time.monotonic() - t:.1f}s {type(exc).__name__}")
                await asyncio.sleep(0.1)  # not up yet: a client retries
        print(f"  no live view in 60 s on {url} (logs in {tmp}); the client got: {'; '.join(seen[-8:])}", file=sys.stderr)
        return float("nan")

    try:
        await wait_healthy(p_a, [w, ra, rb])
        await wait_healthy(p_b, [w, ra, rb])
        ra.kill()
        out["replica killed -> live on the other"] = await snapshot_after(f"http://127.0.0.1:{p_b}/api/v1/ws")
        redis.stop()
        await asyncio.sleep(0.5)
        redis.start()
        t = time.monotonic()
        out["Redis restarted -> live again"] = (time.monotonic() - t) + await snapshot_after(f"http://127.0.0.1:{p_b}/api/v1/ws")
        w.kill()
        t = time.monotonic()
        w2 = Proc("rw2", ["worker", "--bus", redis.url, *DEMO, "--symbols", "BTC"], tmp).start()
        try:
            await wait_healthy(p_b, [w2, rb])
            out["worker killed -> new worker live (incl. its start)"] = (time.monotonic() - t) + await snapshot_after(
                f"http://127.0.0.1:{p_b}/api/v1/ws")
        finally:
            w2.stop()
    finally:
        for p in (ra, rb, w):
            p.stop()
    return out


def store_figures(pg: PostgresServer, tmp: Path) -> list[tuple[str, float, float]]:
    bars = synthetic_bars(30 * 1440, seed=6)
    rows = []
    for name, target in (("SQLite", tmp / "b.sqlite"), ("PostgreSQL", pg.new_database())):
        with open_store(target) as s:
            t = time.perf_counter()
            s.write_bars("bench:BTC/USDT:USDT", bars)
            write = time.perf_counter() - t
            t = time.perf_counter()
            s.write_bars("bench:BTC/USDT:USDT", bars)  # the same rows again: all upserts
            upsert = time.perf_counter() - t
            reads = []
            for _ in range(5):
                t = time.perf_counter()
                s.read_bars("bench:BTC/USDT:USDT")
                reads.append(time.perf_counter() - t)
        rows.append((name, len(bars) / write, len(bars) / upsert, min(reads) * 1000))
    return rows  # type: ignore[return-value]


async def run_all() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="liqheat-bench-scale-"))
    redis = RedisServer()
    redis.start()
    pg = PostgresServer()
    pg.start()
    try:
        print("store, 30 days of 1m bars (43,200 rows), one market")
        print(f"  {'':<11} {'insert rows/s':>14} {'upsert rows/s':>14} {'30-day read ms':>15}")
        st = store_figures(pg, tmp)
        for name, ins, ups, read in st:
            print(f"  {name:<11} {ins:>14,.0f} {ups:>14,.0f} {read:>15.1f}")
        print(f"  PostgreSQL / SQLite: insert {st[1][1] / st[0][1]:.2f}x, upsert {st[1][2] / st[0][2]:.2f}x, "
              f"read time {st[1][3] / st[0][3]:.2f}x")

        print(f"\nlatency a view delta gains through Redis (same engine, one client on the worker's own socket, "
              f"the others on a replica; {SECONDS:.0f} s each; 3 markets at 1 bar/s, 1 view each)")
        print(f"  {'clients':>8} {'p50 ms':>8} {'p99 ms':>8} {'worker core':>12} {'replica core':>13} {'msgs/s out':>11} "
              f"{'replica core-ms per 1k msgs':>28}")
        results = []
        for n in (1, 25, 50):
            res = await latency_and_costs(redis.url, tmp, n)
            results.append(res)
            rate = res["forwarded"] / res["wall"]
            per_k = res["replica_core"] / rate * 1000 * 1000 if rate else float("nan")
            print(f"  {n:>8} {pct(res['delays'], 50):>8.1f} {pct(res['delays'], 99):>8.1f} {res['worker_core']:>12.1%} "
                  f"{res['replica_core']:>13.1%} {rate:>11.0f} {per_k:>28.0f}")
        one = results[0]
        print(f"  worker: {one['worker_core'] / 3:.2%} of a core per market at 1 bar/s with one view "
              f"(=> ~{3 / max(one['worker_core'], 1e-9):.0f} such markets per core)")
        big = results[-1]
        print(f"  replica: {big['replica_core'] / big['clients']:.3%} of a core per client of a 1 bar/s view "
              f"(the benchmark's own clients share these 2 cores: past ~50 they, not the replica, fall behind)")
        await print_worker_scaling(redis.url, tmp)
        print(f"\n1 -> 2 replicas: 60 clients on one view (1 market at 1 bar/s), spread over the replicas; "
              f"{SECONDS:.0f} s each; delays against a client on the worker's own socket")
        print_replica_scaling([await replica_scaling(redis.url, tmp, n, 60) for n in (1, 2)])

        print("\nrecovery to a live view (seconds; goal <= 5)")
        for what, secs in (await recovery(redis, tmp)).items():
            print(f"  {what:<52} {secs:>6.2f}")
    finally:
        redis.close()
        pg.close()


async def run_replicas(clients: int = 60) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="liqheat-bench-scale-"))
    redis = RedisServer()
    redis.start()
    try:
        print(f"\n1 -> 2 replicas: {clients} clients on one view (1 market at 1 bar/s), spread over the replicas; "
              f"{SECONDS:.0f} s each; delays against a client on the worker's own socket")
        print_replica_scaling([await replica_scaling(redis.url, tmp, n, clients) for n in (1, 2)])
    finally:
        redis.close()


async def run_recovery(rounds: int = 1) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="liqheat-bench-scale-"))
    redis = RedisServer()
    redis.start()
    try:
        print(f"\nrecovery to a live view (seconds; goal <= 5; load average {os.getloadavg()[0]:.2f})")
        for i in range(rounds):
            logs = tmp / f"round{i + 1}"  # each round's process logs apart, to read after a stall
            logs.mkdir()
            for what, secs in (await recovery(redis, logs)).items():
                print(f"  {what:<52} {secs:>6.2f}")
    finally:
        redis.close()


def main() -> None:
    if sys.argv[1:2] == ["recovery"]:  # python -m benchmarks.bench_scale recovery [ROUNDS]: only the recovery times
        asyncio.run(run_recovery(int(sys.argv[2]) if sys.argv[2:3] else 1))
    elif sys.argv[1:2] == ["replicas"]:  # python -m benchmarks.bench_scale replicas: only the 1 -> 2 replicas table
        asyncio.run(run_replicas())
    elif sys.argv[1:2] == ["workers"]:  # python -m benchmarks.bench_scale workers: only the 1 -> 2 workers table
        asyncio.run(scaling_only())
    else:
        asyncio.run(run_all())


if __name__ == "__main__":
    main()

