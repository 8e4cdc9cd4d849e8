"""A chart opened while the cluster lists no market (Redis just restarted empty: the owners come back with
the workers' next heartbeat) gets its view once they are back, not an "unknown symbol" error."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import pytest
import redis as sync_redis
from cluster import replica, wait_healthy, worker
from real_servers import free_port

pytestmark = pytest.mark.timeout(120)


async def test_subscribe_while_no_owner_is_registered_waits_for_the_heartbeat(redis_server, tmp_path):
    port = free_port()
    w = worker(redis_server.url, tmp_path).start()
    rb = replica(redis_server.url, port, tmp_path, "replica").start()
    r = sync_redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await wait_healthy(port, [w, rb])
        # what a Redis restart leaves: no owners, no worker metadata, until the worker's next heartbeat.
        # The worker is held still so that window lasts long enough to open a chart in it.
        w.signal(signal.SIGSTOP)
        try:
            r.delete("liqheat:owners", *r.keys("liqheat:worker:*"))
            await asyncio.sleep(1.5)  # the replica's upkeep has seen the empty cluster
            async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{port}/api/v1/ws") as ws:
                await ws.send_json({"op": "subscribe", "id": "m", "symbol": "BTC", "timeframe": "1m", "bins": 40, "columns": 30})
                await asyncio.sleep(1.0)
                w.signal(signal.SIGCONT)  # the heartbeat registers the market again
                kinds = []
                while "snapshot" not in kinds:
                    msg = await ws.receive(timeout=30)
                    assert msg.type == aiohttp.WSMsgType.TEXT, (msg, kinds)
                    m = json.loads(msg.data)
                    kinds.append(m["type"])
                    assert m["type"] != "error", m
                assert "subscribed" in kinds
        finally:
            w.signal(signal.SIGCONT)
        # a name the cluster does not have is still refused at once
        async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{port}/api/v1/ws") as ws:
            await ws.send_json({"op": "subscribe", "id": "x", "symbol": "NOPE", "timeframe": "1m"})
            while True:
                m = json.loads((await ws.receive(timeout=5)).data)
                if m["type"] == "error":
                    assert "unknown symbol" in m["error"]
                    break
    finally:
        r.close()
        w.stop()
        rb.stop()
