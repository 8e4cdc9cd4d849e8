"""A replica's own economy: snapshots cached per view (N clients opening one chart cost the owner one
request), and its limits under abuse (a client that does not read, a flood of heavy requests) - against a
real worker process and a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time

import aiohttp
import pytest
from cluster import Client, health, replica, wait_healthy, worker
from real_servers import free_port

from server import sessions
from server.config import ServerConfig
from server.replica import REPLICA, create_replica_app

pytestmark = pytest.mark.timeout(240)

MB = 1024 * 1024
BTC = "demo:BTC/USDT:USDT"


async def owner_demands(port: int, after: float) -> int:
    """The owner's count of requests from replicas, from a heartbeat sent after ``after`` (epoch s)."""
    deadline = time.monotonic() + 15
    while True:
        h = await health(port)
        if h and h["workers"] and h["workers"][0]["heartbeat"] > after:
            return int(h["workers"][0]["demands"])
        assert time.monotonic() < deadline, h
        await asyncio.sleep(0.2)


async def test_twenty_clients_on_one_view_cost_the_owner_one_request_and_a_gap_refetches(redis_server, tmp_path):
    port = free_port()
    procs = [worker(redis_server.url, tmp_path).start(), replica(redis_server.url, port, tmp_path, "replica").start()]
    first = [Client(port) for _ in range(10)]
    later = [Client(port) for _ in range(10)]
    try:
        await wait_healthy(port, procs)
        assert await owner_demands(port, time.time()) == 0
        # ten open the same chart at the same moment: one request to the owner, one snapshot for all
        await asyncio.gather(*(c.connect() for c in first))
        for c in first:
            await c.wait_for(lambda c=c: c.snapshots, what="a snapshot")
        # ten more once it is there: started from the replica's cached snapshot and the deltas since
        await asyncio.sleep(1.5)
        for c in later:
            await c.connect()
        for c in first + later:
            await c.wait_for(lambda c=c: c.snapshots and len(c.closed_bars()) >= 2, timeout=60,
                             what="live candles after the snapshot")
        assert await owner_demands(port, time.time()) == 1
        h = await health(port)
        assert h is not None and h["live"]["snapshot_hits"] >= 10 and h["live"]["owner_asks"] == 1, h["live"]
        snap = h["memory"]["caches"]["snapshots"]
        # served from it (snapshot_hits above) and within its limit; it may be empty by now: the cached
        # snapshot is dropped once the deltas after it pass what a new subscriber may be handed
        assert 0 <= snap["bytes"] <= snap["limit"] and snap["refused"] == 0, snap
        # a client started from the cache shows the same candles as one started from the owner's snapshot
        # (the cached snapshot plus the deltas replayed after it, none missing, none out of order)
        one, cached = first[0], later[-1]
        mine, theirs = one.closed_history(), cached.closed_history()
        common = sorted(set(mine) & set(theirs))
        assert len(common) >= 20 and [mine[t] for t in common] == [theirs[t] for t in common]
        assert all(c.gaps == 0 and c.resyncs == 0 for c in first + later)

        # the log trimmed under the (stopped) replica: a gap - the cached snapshot is dropped, the
        # clients resync from a new one the replica asks the owner for, once for all twenty
        import redis as sync_redis

        r = sync_redis.Redis.from_url(redis_server.url)
        counts = [len(c.snapshots) for c in first + later]
        procs[1].signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(2.0)
            r.xtrim(f"liqheat:log:{BTC}", maxlen=1, approximate=False)
            await asyncio.sleep(1.0)
        finally:
            procs[1].signal(signal.SIGCONT)
            r.close()
        for c, n in zip(first + later, counts, strict=True):
            await c.wait_for(lambda c=c, n=n: len(c.snapshots) > n and c.resyncs >= 1, timeout=30,
                             what="a resync and a new snapshot after the gap")
        await asyncio.sleep(1.5)
        after_gap = await owner_demands(port, time.time())
        assert 2 <= after_gap <= 3, after_gap  # one request for the gap (a retry at most), not twenty
        # the new snapshot is cached again: one more client costs the owner nothing
        extra = Client(port)
        later.append(extra)
        await extra.connect()
        await extra.wait_for(lambda: extra.snapshots, what="a snapshot for the 21st client")
        assert await owner_demands(port, time.time()) == after_gap
    finally:
        for c in first + later:
            await c.close()
        for p in procs:
            p.stop()


async def test_a_replica_closes_a_client_that_does_not_read_and_refuses_a_heavy_flood(
        aiohttp_client, redis_server, tmp_path, caplog, monkeypatch):
    """The replica's own budgets: send queues bounded in bytes (a client that never reads is closed 1008,
    its bytes released), forwarded requests bounded per client and in total (429/503 + Retry-After), and
    the owner's admission counts each client on its own, not the replica as one client."""
    caplog.set_level(logging.INFO, logger="liqheat.server.ws")
    # time for this loaded machine's client to read its way to the close frame (else: TCP reset, 1006)
    monkeypatch.setattr(sessions, "CLOSE_GRACE_S", 30.0)
    w = worker(redis_server.url, tmp_path).start()
    config = ServerConfig(ws_queue_bytes=2 * MB, memory_budget=64 * MB, ws_msg_burst=100_000, ws_msg_rate=100_000.0,
                          light_waiting=8)
    client = await aiohttp_client(create_replica_app(redis_server.url, config))
    hub = client.server.app[REPLICA]
    reader = Client(client.port)
    ws = None
    try:
        deadline = time.monotonic() + 90
        while (await (await client.get("/api/v1/health")).json())["status"] != "ok":
            assert w.p is not None and w.p.poll() is None, w.tail()
            assert time.monotonic() < deadline, w.tail()
            await asyncio.sleep(0.2)

        # a reader on the same replica, to see it is not the one that pays
        await reader.connect()
        await reader.wait_for(lambda: reader.snapshots, what="the reader's snapshot")

        # a socket that sends pings with padding and never reads a byte of the pongs
        ws = await client.ws_connect("/api/v1/ws", max_msg_size=0)
        ping = json.dumps({"op": "ping", "pad": "x" * 60_000})
        async with asyncio.timeout(5):
            while not (idle := [c for c in hub.connections if not c.subs]):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        (conn,) = idle
        peak = 0
        # (WebSocket pings stay 30 s apart: a client that does not answer them is dropped by aiohttp
        # itself, which is not the bound under test)
        async with asyncio.timeout(60):
            for _ in range(3000):
                try:
                    await ws.send_str(ping)
                except (ConnectionResetError, aiohttp.ClientConnectionError):
                    break
                peak = max(peak, hub.queued_bytes)
                assert hub.queued_bytes <= hub.max_bytes
                if conn.closed:
                    break
                await asyncio.sleep(0)
        assert conn.closed and peak <= 2 * MB + 200_000, peak
        # the client reads again: past the pongs already on the wire it finds the server's 1008 - or, if
        # the server gave up on sending even that, the connection gone (1006)
        async with asyncio.timeout(10):
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code in (1008, 1006), msg
        assert any("the client is not reading" in r.getMessage() for r in caplog.records)
        mem = (await (await client.get("/api/v1/health")).json())["memory"]
        assert mem["send_queue_limit"] == hub.max_bytes and mem["send_queue_bytes"] <= mem["send_queue_limit"]
        async with asyncio.timeout(10):
            while conn in hub.connections:  # noqa: ASYNC110 - the server's own bookkeeping
                await asyncio.sleep(0.05)
        assert conn.queued_bytes == 0 and hub.queued_bytes < 256 * 1024  # what is left is the reader's
        await ws.close()
        # the reader never noticed: its chart goes on
        bars = len(reader.closed_bars())
        await reader.wait_for(lambda: len(reader.closed_bars()) > bars, what="live candles for the reader")
        assert reader.gaps == 0 and not reader.closed

        heavy = {"symbol": "BTC", "timeframe": "1m", "columns": 1000, "bins": 150}  # 150k cells: batch-sized

        async def get(session: aiohttp.ClientSession, i: int) -> tuple[int, str | None]:
            async with session.get(f"http://127.0.0.1:{client.port}/api/v1/heatmap", params=heavy | {"bins": 150 + i}) as r:
                await r.read()
                return r.status, r.headers.get("Retry-After")

        # client A floods heavy heatmaps while client B (another address) asks for one: A gets 429 from the
        # owner (its share is two at once), B is served - the owner counts them apart
        async with aiohttp.ClientSession() as a, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as b:
            got = await asyncio.gather(*(get(a, i) for i in range(6)), get(b, 99))
            flood, other = got[:6], got[6]
            assert other[0] == 200, got
            assert any(s == 429 and ra and int(ra) >= 1 for s, ra in flood), got
            assert any(s == 200 for s, _ in flood), got
            # more at once than the replica forwards (light_waiting=8): it refuses the rest itself with 503
            got = await asyncio.gather(*(get(a, 300 + i) for i in range(40)))
            assert {s for s, _ in got} <= {200, 429, 503} and all(ra for s, ra in got if s != 200), got
            assert any(s == 503 for s, _ in got), got
            assert hub.forwarding_total == 0
            # and the flood leaves the replica serving
            async with a.get(f"http://127.0.0.1:{client.port}/api/v1/zones", params={"symbol": "BTC"}) as r:
                assert r.status == 200
    finally:
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.close()
        await reader.close()
        w.stop()
