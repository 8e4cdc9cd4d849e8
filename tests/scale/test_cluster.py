"""worker -> Redis -> replicas, as a user runs them: real processes, a real redis-server on loopback, real
WebSocket clients following server/PROTOCOL.md. Each test asserts what a chart would show."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest
from cluster import Client, health, replica, single, wait_healthy, worker
from real_servers import free_port

pytestmark = pytest.mark.timeout(240)


async def test_one_server_and_worker_redis_two_replicas_show_the_same_market(redis_server, tmp_path):
    """Equivalence: the same seeded demo replay through one `liqheat serve` and through a worker and two
    replicas gives the same candles and liquidations, and both replicas forward the same deltas in order."""
    p_single, p_a, p_b = free_port(), free_port(), free_port()
    procs = [single(p_single, tmp_path).start(), worker(redis_server.url, tmp_path).start(),
             replica(redis_server.url, p_a, tmp_path, "replica-a").start(),
             replica(redis_server.url, p_b, tmp_path, "replica-b").start()]
    clients = [Client(p_single), Client(p_a), Client(p_b)]
    crowd = [Client(p_b) for _ in range(5)]  # subscribing all at the same moment on one replica
    try:
        for port in (p_single, p_a, p_b):
            await wait_healthy(port, procs)
        for c in clients:
            await c.connect()
        await asyncio.gather(*(c.connect() for c in crowd))
        for c in clients:  # 60x: a simulated minute a second - a few closed candles each
            await c.wait_for(lambda c=c: len(c.closed_bars()) >= 6, timeout=60, what="six closed candles")
        for c in crowd:
            await c.wait_for(lambda c=c: len(c.closed_bars()) >= 1, timeout=30, what="candles for every one of the crowd")
        # REST and UDF on a replica are answered by the market's owner
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{p_a}/api/v1/symbols") as r:
                assert r.status == 200 and [m["key"] for m in (await r.json())["symbols"]] == ["demo:BTC/USDT:USDT"]
            async with http.get(f"http://127.0.0.1:{p_b}/api/v1/zones?symbol=BTC") as r:
                body = await r.json()
                assert r.status == 200 and body["symbol"] == "demo:BTC/USDT:USDT" and body["estimate"] is True
            async with http.get(f"http://127.0.0.1:{p_a}/api/v1/zones?symbol=NOPE") as r:
                assert r.status == 400 and "unknown symbol" in (await r.json())["error"]
            async with http.get(f"http://127.0.0.1:{p_a}/udf/config") as r:
                assert r.status == 200 and "supported_resolutions" in await r.json()
    finally:
        for c in clients + crowd:
            await c.close()
        for p in procs:
            p.stop()
    one, a, b = clients
    assert a.gaps == b.gaps == one.gaps == 0 and a.resyncs == b.resyncs == 0
    # the same candles, value for value, wherever both were shown a closed candle (their snapshots and
    # the live candles that closed after them; the two started a few simulated minutes apart)
    for other in (a, b):
        mine, theirs = one.closed_history(), other.closed_history()
        common = sorted(set(mine) & set(theirs))
        assert len(common) >= 20, (len(mine), len(theirs))
        assert [mine[t] for t in common] == [theirs[t] for t in common]
    # both replicas forward the one log: from the later subscriber's snapshot on, the same deltas in order
    da, db = a.deltas(), b.deltas()
    assert len(db) > 20
    start = next(i for i in range(len(da)) if da[i:i + 5] == db[:5])
    n = min(len(da) - start, len(db))
    assert n > 20 and da[start:start + n] == db[:n]
    liq = lambda c: {m["time_ms"]: m["usd"] for m in c.messages if m["type"] == "liquidation"}  # noqa: E731
    common_ms = set(liq(one)) & set(liq(a))
    assert all(liq(one)[t] == liq(a)[t] for t in common_ms)


async def test_replica_worker_and_redis_failures_recover_without_losing_the_chart(redis_server, postgres_url, tmp_path):
    """Faults, one after another on one cluster: a replica killed (the client moves to the other and
    resyncs), the worker killed and restarted (health shows it; the new one starts from the PostgreSQL
    history the first recorded; clients resync to it), Redis restarted (the views keep coming), the log
    trimmed under a stopped replica (snapshot fallback)."""
    p_a, p_b = free_port(), free_port()
    store = ["--store", postgres_url]
    w = worker(redis_server.url, tmp_path, extra=store).start()
    ra = replica(redis_server.url, p_a, tmp_path, "replica-a").start()
    rb = replica(redis_server.url, p_b, tmp_path, "replica-b").start()
    procs = [w, ra, rb]
    client, watcher = Client(p_a), Client(p_b)
    recovery: dict[str, float] = {}
    try:
        await wait_healthy(p_a, procs)
        await wait_healthy(p_b, procs)
        await client.connect()
        await watcher.connect()
        await client.wait_for(lambda: len(client.closed_bars()) >= 2, timeout=60, what="candles on replica A")

        # 1. replica A dies: the client reconnects to B and its chart carries on from a fresh snapshot
        seen = max(client.candles)
        ra.kill()
        await client.wait_for(lambda: client.closed, what="the socket to close")
        t0 = time.monotonic()
        await client.close()
        await client.connect(p_b)
        n_snap = len(client.snapshots)
        await client.wait_for(lambda: len(client.snapshots) >= n_snap + 1, what="a snapshot from replica B")
        recovery["replica"] = time.monotonic() - t0
        assert max(client.candles) >= seen  # nothing the chart had is missing
        before = len(client.closed_bars())
        await client.wait_for(lambda: len(client.closed_bars()) > before, what="live candles on B")

        # 2. the worker dies: the replicas say so; a new worker takes over and the charts resync to it
        w.kill()
        deadline = time.monotonic() + 20
        while (h := await health(p_b)) is None or h["status"] == "ok":
            assert time.monotonic() < deadline, h
            await asyncio.sleep(0.2)
        assert h["status"] == "degraded" and h["unowned"] == ["demo:BTC/USDT:USDT"]
        w2 = worker(redis_server.url, tmp_path, "worker-2", extra=store).start()
        procs.append(w2)
        t0 = time.monotonic()
        n_snap = len(client.snapshots)
        await client.wait_for(lambda: len(client.snapshots) > n_snap, timeout=90, what="a snapshot from the new worker")
        recovery["worker"] = time.monotonic() - t0
        assert client.resyncs >= 1  # the client was told to drop what it had, then got the new owner's view
        h = await wait_healthy(p_b, procs)
        (rec,) = h["workers"][0]["recording"]
        assert rec["from_store"] >= 1000 and not rec["error"]  # a day of 1m bars came from the store, not the feed
        before = len(client.closed_bars())
        await client.wait_for(lambda: len(client.closed_bars()) > before, what="live candles from the new worker")
        from engine.stores import open_store

        with open_store(postgres_url) as s:  # the recording goes on: the chart's newest candles are stored
            newest = max(t for t in client.closed_bars())
            stored = s.read_bars("demo:BTC/USDT:USDT")
            await client.wait_for(lambda: (s.last_time("demo:BTC/USDT:USDT") or 0) >= newest, what="recorded")
            assert len(stored.time) == len(set(stored.time.tolist()))

        # 3. Redis restarts (empty): worker and replicas reconnect; the chart keeps moving
        redis_server.stop()
        await asyncio.sleep(1.0)
        redis_server.start()
        t0 = time.monotonic()
        before = len(client.closed_bars())
        await client.wait_for(lambda: len(client.closed_bars()) > before + 1, timeout=30, what="candles after Redis restart")
        recovery["redis"] = time.monotonic() - t0
        await wait_healthy(p_b, procs)

        # 4. replica B is stopped while the log is trimmed past it: on waking it resyncs from a snapshot
        import redis as sync_redis

        r = sync_redis.Redis.from_url(redis_server.url)
        resyncs, n_snap = client.resyncs, len(client.snapshots)
        rb.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(2.0)  # the worker writes on
            r.xtrim("liqheat:log:demo:BTC/USDT:USDT", maxlen=1, approximate=False)
            await asyncio.sleep(1.0)
        finally:
            rb.signal(signal.SIGCONT)
            r.close()
        await client.wait_for(lambda: len(client.snapshots) > n_snap, timeout=30, what="a snapshot after the trim")
        assert client.resyncs > resyncs
        before = len(client.closed_bars())
        await client.wait_for(lambda: len(client.closed_bars()) > before, what="live candles after the trim")
        assert client.gaps == 0  # every gap was the replica's to notice, never the client's
    finally:
        await client.close()
        await watcher.close()
        for p in procs:
            p.stop()
    print(f"\nrecovery to a live view: {', '.join(f'{k} {v:.1f} s' for k, v in recovery.items())}")
    assert recovery["replica"] < 5 and recovery["redis"] < 10
