"""The server under abuse (issue 11): each probe that once bloated, stalled or crashed it, against the real
app on loopback. Memory is asserted with the process's own accounting (/api/v1/health ``memory``), never
with timings."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import aiohttp
import pytest

from engine.model.views import Zone
from server.app import create_app
from server.config import ServerConfig

MB = 1024 * 1024


async def start(aiohttp_client, hub, **options):  # type: ignore[no-untyped-def]
    base = {"heartbeat_s": 0.5, "queue_size": 64, "map_interval_s": 0.0}
    return await aiohttp_client(create_app(hub, ServerConfig(**(base | options))))


async def memory(client) -> dict:  # type: ignore[no-untyped-def]
    r = await client.get("/api/v1/health")
    assert r.status == 200
    return (await r.json())["memory"]


async def test_distinct_heatmaps_stay_within_the_cache_budget(aiohttp_client, hub):
    """Sixteen distinct heatmaps used to stay cached by count (100 MB each at full size); now every cache
    holds at most its share of the budget, and the oldest answers are evicted."""
    client = await start(aiohttp_client, hub, memory_budget=16 * MB)
    for i in range(16):
        r = await client.get("/api/v1/heatmap", params={"symbol": "BTC", "timeframe": "1m", "columns": 300,
                                                         "bins": 380 + i})
        assert r.status == 200, await r.text()
    mem = await memory(client)
    assert mem["budget_bytes"] == 16 * MB
    for name, cache in mem["caches"].items():
        assert cache["bytes"] <= cache["limit"], (name, cache)
    assert mem["caches"]["answers"]["evictions"] > 0
    engine = [c for name, c in mem["caches"].items() if name.endswith(("views", "closed columns"))]
    assert engine and all(c["limit"] > 0 for c in engine)
    assert mem["cache_bytes"] <= 16 * MB * 0.5
    assert sum(c["evictions"] + c["refused"] for c in engine) > 0


async def test_batch_sized_grids_do_not_evict_the_live_views_grids(aiohttp_client, hub):
    """A batch-sized heatmap (1,200 x 400: ~38 MB of grid) is computed without being kept in the engine's
    caches: kept, each one evicted the grids the open pages' views reuse every bar (their next bar then
    took the slow batch path). Its serialised answer is still cached and shared."""
    client = await start(aiohttp_client, hub)

    def engine_bytes(mem: dict) -> int:
        return sum(c["bytes"] for name, c in mem["caches"].items() if name.endswith(("views", "closed_columns")))

    page = {"symbol": "BTC", "timeframe": "1m", "columns": 300, "bins": 200}
    assert (await client.get("/api/v1/heatmap", params=page)).status == 200
    kept = engine_bytes(await memory(client))
    assert kept > 1 * MB  # the page-sized grid is kept (300 x 200 x 5 tiers x 2 sides x 8 bytes)
    for bins in (400, 401):
        r = await client.get("/api/v1/heatmap", params={**page, "columns": 1200, "bins": bins})
        assert r.status == 200
    mem = await memory(client)
    assert engine_bytes(mem) < kept + 2 * MB, mem["caches"]
    assert mem["caches"]["answers"]["entries"] >= 3  # the answers themselves are cached


async def test_what_a_burst_of_batch_work_cached_goes_soon_after_it_stops(aiohttp_client, hub):
    """Once the heavy lane has been quiet for burst_quiet_s, answers unused for burst_idle_s are dropped,
    though cache_idle_s (a minute) has not passed: the memory of an attack does not stay a minute after it."""
    client = await start(aiohttp_client, hub, prune_every_s=0.2, burst_quiet_s=0.3, burst_idle_s=0.5)
    for bins in (400, 401, 402):
        r = await client.get("/api/v1/heatmap", params={"symbol": "BTC", "timeframe": "1m", "columns": 1200,
                                                         "bins": bins})
        assert r.status == 200
    held = (await memory(client))["caches"]["answers"]["bytes"]
    assert held > 1 * MB
    async with asyncio.timeout(15):
        while (await memory(client))["caches"]["answers"]["bytes"] > held // 4:  # noqa: ASYNC110 - polling the server's own accounting
            await asyncio.sleep(0.1)


async def test_a_cached_tier_slice_does_not_pin_the_whole_grid(hub):
    """A one-tier heatmap is a slice of the all-tier grid; cached as a view it kept the whole grid alive."""
    svc = hub.get("BTC")
    svc.set_memory_budget(512 * MB)
    hm = svc.heatmap("1m", tier=1, bins=200, columns=500)
    assert hm.long_usd.base is None and hm.short_usd.base is None
    views = svc.cache_stats()["views"]
    # 500 x 200 cells x 1 tier x 2 sides x 8 bytes = 1.6 MB (the grid of all 5 tiers would be 8 MB)
    assert views["bytes"] < 3 * MB, views


async def test_heavy_requests_are_capped_per_client_and_never_delay_a_light_one(aiohttp_client, hub):
    client = await start(aiohttp_client, hub, heavy_workers=1, heavy_per_client=2, heavy_waiting=4)
    app = client.server.app
    from server.state import MARKETS

    lanes = app[MARKETS]

    async def heavy(i: int) -> aiohttp.ClientResponse:
        return await client.get("/api/v1/heatmap", params={"symbol": "BTC", "timeframe": "1m", "columns": 2000,
                                                            "bins": 590 + i})

    tasks = [asyncio.ensure_future(heavy(i)) for i in range(6)]
    async with asyncio.timeout(10):
        while lanes.heavy.admitted == 0:  # noqa: ASYNC110 - wait until the heavy lane is busy
            await asyncio.sleep(0.005)
    light = await client.get("/api/v1/heatmap", params={"symbol": "ETH"})
    assert light.status == 200
    # the light answer came while the heavy lane was still working: it did not queue behind it
    assert lanes.heavy.admitted > 0
    results = await asyncio.gather(*tasks)
    statuses = sorted(r.status for r in results)
    assert statuses.count(200) >= 2 and 429 in statuses, statuses
    for r in results:
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert "too many" in (await r.json())["error"]
    # the API's description says so, as it does for every endpoint whose work is admitted by a lane
    doc = await (await client.get("/api/v1/openapi.json")).json()
    for path, item in doc["paths"].items():
        responses = item["get"]["responses"]
        assert "421" in responses, path  # the Host check on loopback answers every path
        if path in ("/api/v1/heatmap", "/api/v1/map", "/api/v1/zones", "/api/v1/candles", "/api/v1/risk"):
            assert responses["429"]["headers"]["Retry-After"]["required"] is True, path
            assert "Retry-After" in responses["503"]["headers"], path


async def test_oversized_work_is_refused_before_it_starts(aiohttp_client, hub):
    """With a small budget, a grid whose working memory would not fit gets a one-line 400 at once."""
    client = await start(aiohttp_client, hub, memory_budget=64 * MB)
    r = await client.get("/api/v1/heatmap", params={"symbol": "BTC", "timeframe": "1m", "columns": 2000, "bins": 600})
    assert r.status == 400
    assert "working memory" in (await r.json())["error"]


@pytest.mark.parametrize("flood", ["ping", "resync"])
async def test_a_client_that_never_reads_is_closed_and_its_queue_released(aiohttp_client, hub, flood):
    """Replies to ping and resync bypassed the bounded queue (+1.15 GB in 6 s, never released)."""
    client = await start(aiohttp_client, hub, ws_queue_bytes=2 * MB, ws_msg_burst=100_000, ws_msg_rate=100_000.0,
                         ws_churn_burst=100_000, ws_churn_rate=100_000.0)
    # A raw socket that sends frames and never reads a byte of what comes back.
    ws = await client.ws_connect("/api/v1/ws", max_msg_size=0)
    if flood == "ping":
        message = json.dumps({"op": "ping", "pad": "x" * 60_000})
    else:
        await ws.send_json({"op": "subscribe", "id": "a", "symbol": "BTC", "bins": 1000, "columns": 120})
        message = json.dumps({"op": "resync", "sub": "a"})
    peak = 0
    for i in range(3000):
        try:
            await ws.send_str(message)
        except (ConnectionResetError, aiohttp.ClientConnectionError):
            break
        if i % 25 == 0:
            peak = max(peak, (await memory(client))["send_queue_bytes"])
            if not await _connections(client):
                break  # the server gave up on it
            if flood == "resync":
                await asyncio.sleep(0.02)  # let snapshots build
    assert peak <= 2 * MB + 200_000
    async with asyncio.timeout(10):  # closed by the server (it never read), and everything released
        while await _connections(client):  # noqa: ASYNC110 - polling the server's own count
            await asyncio.sleep(0.05)
    assert (await memory(client))["send_queue_bytes"] == 0


async def _connections(client) -> int:  # type: ignore[no-untyped-def]
    r = await client.get("/api/v1/health")
    return int((await r.json())["live"]["connections"])


@pytest.mark.parametrize("frame", ["[" * 2000 + "]" * 2000, '{"op": "ping", "a": ' + "[" * 40 + "]" * 40 + "}"])
async def test_deeply_nested_json_closes_1007_with_one_log_line(client, caplog, frame):
    caplog.set_level(logging.INFO)
    ws = await client.ws_connect("/api/v1/ws")
    await ws.receive(timeout=5)  # hello
    await ws.send_str(frame)
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1007, msg
    assert "nested" in msg.extra
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("nested" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)
    r = await client.get("/api/v1/health")  # and the server keeps serving
    assert r.status == 200


async def test_total_connections_are_limited_and_released_after_close(aiohttp_client, hub):
    client = await start(aiohttp_client, hub, max_clients=2)
    a = await client.ws_connect("/api/v1/ws")
    b = await client.ws_connect("/api/v1/ws")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/api/v1/ws")
    assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) >= 1
    await a.close()
    async with asyncio.timeout(5):
        while await _connections(client) > 1:  # noqa: ASYNC110 - polling the server's own count
            await asyncio.sleep(0.02)
    c = await client.ws_connect("/api/v1/ws")
    assert json.loads((await c.receive(timeout=5)).data)["type"] == "hello"
    await b.close()
    await c.close()


async def test_connections_per_address_are_limited_before_the_upgrade(aiohttp_client, hub):
    """One address (a page opening sockets in a loop) cannot take every slot: its third socket gets 429
    with Retry-After before the upgrade, while another address still connects; a closed socket frees a slot."""
    client = await start(aiohttp_client, hub, max_clients_per_ip=2, max_clients=10)
    a = await client.ws_connect("/api/v1/ws")
    b = await client.ws_connect("/api/v1/ws")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/api/v1/ws")
    assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) >= 1
    # the same server from another loopback address (127.0.0.2 reaches 127.0.0.1 on Linux)
    url = str(client.make_url("/api/v1/ws"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other:
        async with other.ws_connect(url) as c:
            assert json.loads((await c.receive(timeout=5)).data)["type"] == "hello"
    await a.close()
    async with asyncio.timeout(5):
        while await _connections(client) > 1:  # noqa: ASYNC110 - polling the server's own count
            await asyncio.sleep(0.02)
    d = await client.ws_connect("/api/v1/ws")
    assert json.loads((await d.receive(timeout=5)).data)["type"] == "hello"
    await b.close()
    await d.close()


async def test_subscription_churn_is_rate_limited(aiohttp_client, hub):
    client = await start(aiohttp_client, hub, ws_churn_burst=4, ws_churn_rate=0.5)
    ws = await client.ws_connect("/api/v1/ws")
    errors = []
    for i in range(8):
        await ws.send_json({"op": "subscribe", "id": f"s{i}", "symbol": "BTC", "bins": 20 + i, "columns": 10})
        await ws.send_json({"op": "unsubscribe", "sub": f"s{i}"})
    async with asyncio.timeout(10):
        while len(errors) < 4:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            m = json.loads(msg.data)
            if m["type"] == "error":
                errors.append(m)
    assert any("too many subscription changes" in e["error"] for e in errors)
    await ws.close()


async def test_a_message_flood_is_closed_1008(aiohttp_client, hub):
    client = await start(aiohttp_client, hub, ws_msg_burst=20, ws_msg_rate=1.0)
    ws = await client.ws_connect("/api/v1/ws")
    for _ in range(40):
        await ws.send_json({"op": "ping"})
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                break
    assert msg.data == 1008 and "messages a second" in msg.extra


async def test_half_sent_headers_time_out(aiohttp_client, hub):
    """Slowloris: a request whose headers never end used to hold its connection for good."""
    client = await start(aiohttp_client, hub, request_timeout_s=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    async with asyncio.timeout(6):
        for _ in range(50):  # trickle a header line now and then; the server must still give up
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.2)
            except TimeoutError:
                continue
            if data == b"":
                break
    assert reader.at_eof()
    writer.close()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "rebind.attacker.test"])
async def test_dns_rebinding_hosts_are_refused_on_loopback(client, host):
    r = await client.get("/api/v1/health", headers={"Host": host})
    assert r.status == 421
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/api/v1/ws", headers={"Host": host, "Origin": f"http://{host}"})
    assert err.value.status == 421


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000"])
async def test_loopback_names_are_served(client, host):
    r = await client.get("/api/v1/health", headers={"Host": host})
    assert r.status == 200


async def test_a_listed_host_is_served(aiohttp_client, hub):
    client = await start(aiohttp_client, hub, allow_hosts=("chart.lan",))
    assert (await client.get("/api/v1/health", headers={"Host": "chart.lan:8000"})).status == 200


@pytest.mark.parametrize("name", ["a" * 256, "b" * 300 + ".js", "x/" + "c" * 1000])
async def test_odd_static_names_are_a_clean_404(client, name):
    r = await client.get(f"/static/{name}")
    assert r.status == 404
    assert "liqheat" not in await r.text() and "/" not in (await r.json())["error"]


async def test_one_x_leverage_is_a_real_position(client, hub):
    """A 1x long cannot be liquidated (price would have to reach 0): a real answer, not a 500 from
    dividing by its liquidation price next to a high-grade cluster."""
    svc = hub.get("BTC")
    price = svc.last_price
    high = Zone("long", price * 0.80, price * 0.82, price * 0.81, 5e8, "high", 1.0, 99.0, -18.0, (1e8,) * 5)
    svc.zones = lambda bins=200, span=0.25: [high]  # type: ignore[method-assign]
    for side in ("long", "short"):
        r = await client.get("/api/v1/risk", params={"symbol": "BTC", "side": side, "entry": round(price),
                                                     "leverage": 1})
        assert r.status == 200, await r.text()
        body = await r.json()
        if side == "long":
            assert body["liquidation_price"] == 0 and body["nearest_high"] is None
            assert all(p == 0 for p in body["touch"].values())
        else:
            assert body["liquidation_price"] > price * 1.9


def test_sigterm_stops_the_server_with_exit_0(tmp_path):
    """``liqheat serve`` used to exit 1 on SIGTERM; now it closes its clients (1001) and exits 0."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(port), "--history-days", "1",
                           "--symbols", "BTC"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        _stop_with_sigterm(proc, port)


def _stop_with_sigterm(proc, port: int) -> None:  # type: ignore[no-untyped-def]
    import signal
    import time
    import urllib.request

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not start")

        async def watch() -> int:
            async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/api/v1/ws") as ws:
                await ws.receive(timeout=5)  # hello
                proc.send_signal(signal.SIGTERM)
                while True:
                    msg = await ws.receive(timeout=10)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        return int(msg.data or 0)

        code = asyncio.run(watch())
        assert proc.wait(20) == 0, proc.stderr.read()
        assert code == 1001
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Unread:
    """A WebSocket whose client never reads: every send waits forever."""

    def __init__(self) -> None:
        self.closed_with: int | None = None

    async def send_str(self, text: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed_with = code


async def test_when_the_total_send_budget_is_full_the_greediest_client_gives_way():
    from server.sessions import Connection

    class Hub:
        queued_bytes = 0
        max_bytes = 1 * MB
        connections: set = set()

    hub = Hub()
    greedy_ws, normal_ws = _Unread(), _Unread()
    greedy = Connection(greedy_ws, 10_000, max_bytes=4 * MB, hub=hub)  # type: ignore[arg-type]
    normal = Connection(normal_ws, 10_000, max_bytes=4 * MB, hub=hub)  # type: ignore[arg-type]
    hub.connections = {greedy, normal}
    for _ in range(9):
        greedy.send("x" * 100_000)
    normal.send('{"type":"pong"}')
    normal.send('{"type":"subscribed"}')
    assert hub.queued_bytes > 0.85 * MB and not greedy.closed
    # the total is full: the client holding 0.9 MB of it is closed, not the page asking for room
    normal.send('{"type":"snapshot","pad":"' + "y" * 150_000 + '"}')
    await asyncio.sleep(0)
    assert greedy.closed and greedy.queued_bytes == 0 and greedy_ws.closed_with == 1008
    assert not normal.closed and normal.pending() == 3
    assert hub.queued_bytes == normal.queued_bytes


async def test_a_batch_job_does_not_start_while_live_work_computes():
    """Live first: the heavy lane holds a job back while live deltas compute (the markets' live count),
    and never longer than MAX_DEFER_S (batch work still progresses when live work never pauses)."""
    from server.limits import Lane

    lane = Lane("heavy", 1, 8, 2, duty=0.5)
    order: list[str] = []
    live_busy = True
    lane.defer = lambda: live_busy

    async def live_work() -> None:
        nonlocal live_busy
        await asyncio.sleep(0.1)
        order.append("live done")
        live_busy = False

    try:
        await asyncio.gather(lane.run("a", order.append, "batch job"), live_work())
        assert order == ["live done", "batch job"]
        lane.defer = lambda: True  # live work that never ends does not starve the batch lane for good
        async with asyncio.timeout(5):
            await lane.run("a", order.append, "second job")
        assert order[-1] == "second job" and lane.stats()["deferred_s"] > 0
    finally:
        lane.close()
