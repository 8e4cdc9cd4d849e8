"""Alerts in a cluster fire once: the worker that owns the market computes them and POSTs each to the
``--webhook`` URL; replicas only show them. A loopback receiver must get each alert exactly once with two
replicas up, and every alert the replicas' charts were shown must have reached it."""

from __future__ import annotations

import asyncio
import collections
import time

import aiohttp
import pytest
from aiohttp import web
from cluster import Client, replica, wait_healthy, worker
from real_servers import free_port

pytestmark = pytest.mark.timeout(240)

# Every zone within 50% of the price, any grade, evaluated twice a (wall) second: alerts come quickly
# from the 60x demo market; a minute of market time between repeats of one zone.
CONFIG = """
[alerts]
within_pct = 50
min_grade = "low"
interval_s = 0.5
cooldown_s = 60
"""


async def test_each_alert_reaches_the_webhook_once_with_two_replicas_up(redis_server, tmp_path):
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    p_a, p_b = free_port(), free_port()
    w = worker(redis_server.url, tmp_path, extra=["--webhook", f"http://127.0.0.1:{hook_port}/hook", "--config", str(cfg)])
    procs = [w.start(), replica(redis_server.url, p_a, tmp_path, "replica-a").start(),
             replica(redis_server.url, p_b, tmp_path, "replica-b").start()]
    clients = [Client(p_a), Client(p_b)]
    try:
        for port in (p_a, p_b):
            await wait_healthy(port, procs)
        for c in clients:
            await c.connect()
        deadline = time.monotonic() + 90
        while len(got) < 6 or min(c.count("alert") for c in clients) < 3:
            assert time.monotonic() < deadline, (len(got), [c.count("alert") for c in clients], w.tail())
            await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http:  # each replica lists the owner's alerts: the same book
            books = []
            for port in (p_a, p_b):
                async with http.get(f"http://127.0.0.1:{port}/api/v1/alerts?symbol=BTC") as r:
                    assert r.status == 200
                    books.append(await r.json())
        for book in books:  # both answered by the owning worker, which holds the webhook
            assert book["webhook"]["url"] == f"http://127.0.0.1:{hook_port}/hook" and book["alerts"]
    finally:
        for c in clients:
            await c.close()
        w.stop()  # a clean stop drains the webhook queue
        for p in procs:
            p.stop()
        await runner.cleanup()
    # an alert is its rule, its zone/direction key and its (market) time: a key fires again after the cooldown
    ident = lambda a: (a.get("rule", a.get("kind")), a["key"], a["time"])  # noqa: E731
    fired = collections.Counter(ident(a) for a in got)
    assert fired and max(fired.values()) == 1, [k for k, n in fired.items() if n > 1]  # once, not once per replica
    assert {a["symbol"] for a in got} == {"demo:BTC/USDT:USDT"}
    # what the charts on both replicas were shown is what the webhook received
    for c in clients:
        shown = [ident(m) for m in c.messages if m["type"] == "alert"]
        assert shown and set(shown) <= set(fired), set(shown) - set(fired)
    assert books[0]["webhook"]["failed"] == 0
    for book in books:
        assert {ident(a) for a in book["alerts"]} <= set(fired)
