"""The WebSocket protocol (server/PROTOCOL.md) end to end: snapshot, deltas in sequence, live events,
resync on request and on overflow, Origin checks, and a slow client that never holds up the others."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import numpy as np
import pytest

from engine.feeds.base import Health, HealthChange
from server.encoding import decode_sqrt_u8
from server.sessions import Connection

SUB = {"op": "subscribe", "id": "main", "symbol": "BTC", "timeframe": "5m", "bins": 60, "columns": 40}


async def recv(ws, within: float = 5.0) -> dict:
    while True:
        msg = await ws.receive(timeout=within)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        m = json.loads(msg.data)
        if m["type"] != "heartbeat":
            return m


async def recv_until(ws, pred, within: float = 5.0) -> list[dict]:
    seen = []
    async with asyncio.timeout(within):
        while True:
            m = await recv(ws, within)
            seen.append(m)
            if pred(m):
                return seen


async def subscribed(client, sub=SUB, **headers):
    ws = await client.ws_connect("/api/v1/ws", headers=headers or None)
    hello = await recv(ws)
    assert hello["type"] == "hello" and hello["protocol"] == 1
    await ws.send_json(sub)
    ack = await recv(ws)
    assert ack["type"] == "subscribed", ack
    snap = await recv(ws)
    assert snap["type"] == "snapshot", snap
    return ws, snap


async def test_snapshot_has_the_whole_view(client, hub):
    ws, snap = await subscribed(client)
    assert snap["sub"] == "main" and snap["seq"] == 0 and snap["reason"] == "subscribe"
    assert snap["symbol"] == "test:BTC/USDT:USDT" and snap["timeframe"] == "5m" and snap["tier"] == "all"
    c, h = snap["candles"], snap["heatmap"]
    assert len(c["t"]) == 40 and h["times"] == c["t"]
    assert len(h["edges"]) == 61 and h["encoding"] == "sqrt-u8"
    grid = decode_sqrt_u8(base64.b64decode(h["long"]), h["max_usd"], (40, 60))
    assert grid.max() > 0
    assert snap["map"]["price"] == pytest.approx(hub.get("BTC").last_price)
    assert snap["model"]["estimate"] is True and snap["health"]["state"] == "live"
    assert isinstance(snap["zones"], list) and "t" in snap["realised"]
    await ws.close()


async def test_deltas_follow_in_sequence_and_match_rest(client, feed):
    ws, snap = await subscribed(client)
    last_candle = snap["candles"]["t"][-1]
    feed.push_forming()
    bar = feed.push_close()
    feed.push_liquidation(usd=77_000.0)
    seen: set[str] = set()

    def all_kinds(m: dict) -> bool:
        seen.add(m["type"])
        return {"bar", "column", "map", "realised", "liquidation"} <= seen

    msgs = await recv_until(ws, all_kinds)
    deltas = [m for m in msgs if "seq" in m]
    assert [m["seq"] for m in deltas] == list(range(1, len(deltas) + 1))
    kinds = {m["type"] for m in deltas}
    assert {"bar", "column", "map", "realised", "liquidation"} <= kinds
    bars = [m for m in deltas if m["type"] == "bar"]
    assert all(b["time"] >= last_candle for b in bars)
    newest = bars[-1]
    rest = await (await client.get("/api/v1/candles?symbol=BTC&timeframe=5m&limit=1")).json()
    assert newest["time"] == rest["t"][-1] and newest["close"] == pytest.approx(rest["c"][-1])
    assert newest["close"] == pytest.approx(float(bar.close[0]))
    col = [m for m in deltas if m["type"] == "column"][-1]
    assert col["time"] == newest["time"]  # the live column belongs to the forming candle
    liq = next(m for m in deltas if m["type"] == "liquidation")
    assert liq["usd"] == pytest.approx(77_000.0) and liq["side"] == "long"
    await ws.close()


async def test_health_changes_reach_subscribers(client, feed):
    ws, _ = await subscribed(client)
    feed.queues["BTC/USDT:USDT"].put_nowait(HealthChange(Health.RECONNECTING, "socket dropped"))
    msgs = await recv_until(ws, lambda m: m["type"] == "health")
    assert msgs[-1]["state"] == "reconnecting" and msgs[-1]["reason"] == "socket dropped"
    await ws.close()


async def test_client_resync_gets_a_fresh_snapshot_continuing_the_sequence(client, feed):
    ws, _ = await subscribed(client)
    feed.push_close()
    msgs = await recv_until(ws, lambda m: m["type"] == "column")
    last = max(m["seq"] for m in msgs if "seq" in m)
    await ws.send_json({"op": "resync", "sub": "main"})
    msgs = await recv_until(ws, lambda m: m["type"] == "snapshot")
    snap = msgs[-1]
    assert snap["reason"] == "resync" and snap["seq"] >= last
    feed.push_close()
    after = await recv_until(ws, lambda m: m["type"] == "column")
    seqs = [m["seq"] for m in after if "seq" in m]
    assert seqs == list(range(snap["seq"] + 1, snap["seq"] + 1 + len(seqs)))
    await ws.close()


async def test_two_subscriptions_and_unsubscribe(client, feed):
    ws, _ = await subscribed(client)
    await ws.send_json({"op": "subscribe", "id": "eth", "symbol": "ETH", "timeframe": "1h", "tier": "25x", "bins": 30})
    msgs = await recv_until(ws, lambda m: m["type"] == "snapshot" and m["sub"] == "eth")
    snap = msgs[-1]
    assert snap["tier"] == "25x" and snap["heatmap"]["tiers"] == ["25x"]
    await ws.send_json({"op": "unsubscribe", "sub": "main"})
    await recv_until(ws, lambda m: m["type"] == "unsubscribed")
    feed.push_close("ETH/USDT:USDT")
    feed.push_close("BTC/USDT:USDT")
    msgs = await recv_until(ws, lambda m: m["type"] == "column" and m["sub"] == "eth")
    assert all(m.get("sub") != "main" for m in msgs)
    await ws.close()


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"op": "dance"}, "unknown op"),
        ({"op": "subscribe", "symbol": "XYZ"}, "unknown symbol"),
        ({"op": "subscribe", "symbol": "BTC", "timeframe": "3m"}, "timeframe must be one of"),
        ({"op": "subscribe", "symbol": "BTC", "tier": "7x"}, "unknown tier"),
        ({"op": "subscribe", "symbol": "BTC", "bins": 100000}, "bins must be between"),
        ({"op": "subscribe", "symbol": "BTC", "colour": "red"}, "unknown field 'colour'"),
        ({"op": "subscribe", "symbol": "BTC", "id": "has space"}, "id must be"),
        ({"op": "resync", "sub": "nope"}, "no subscription 'nope'"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_bad_messages_get_errors_and_the_socket_stays_open(client, message, fragment):
    ws = await client.ws_connect("/api/v1/ws")
    await recv(ws)
    await ws.send_json(message)
    err = await recv(ws)
    assert err["type"] == "error" and fragment in err["error"], err
    await ws.send_json({"op": "ping", "n": 7})
    pong = await recv(ws)
    assert pong == {"type": "pong", "n": 7}
    await ws.close()


async def test_not_json_closes_with_1007_and_one_line(client):
    ws = await client.ws_connect("/api/v1/ws")
    await recv(ws)
    await ws.send_str("{nope")
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1007, msg
    assert "not JSON" in msg.extra and "\n" not in msg.extra


async def test_heartbeats_arrive(client):
    ws = await client.ws_connect("/api/v1/ws")
    await recv(ws)
    msg = await ws.receive(timeout=5)
    assert json.loads(msg.data)["type"] == "heartbeat"
    await ws.close()


async def test_foreign_origin_is_refused(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/api/v1/ws", headers={"Origin": "https://evil.example"})
    assert err.value.status == 403
    r = await client.get("/api/v1/ws", headers={"Origin": "https://evil.example", "Upgrade": "websocket",
                                               "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 403 and "not allowed" in (await r.json())["error"]


async def test_same_host_origin_and_listed_origins_are_accepted(aiohttp_client, hub):
    from server.app import create_app
    from server.config import ServerConfig

    client = await aiohttp_client(create_app(hub, ServerConfig(allow_origins=("https://charts.example",))))
    own = f"http://{client.host}:{client.port}"
    for origin in (own, "https://charts.example"):
        ws, snap = await subscribed(client, Origin=origin)
        assert snap["type"] == "snapshot"
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/api/v1/ws", headers={"Origin": "https://other.example"})


async def test_a_slow_client_does_not_stall_a_fast_one(aiohttp_client, hub, feed):
    """One client stops reading; the other still gets every delta promptly, in sequence."""
    from server.app import create_app
    from server.config import ServerConfig

    # WebSocket pings every 15 s: a client that does not read cannot answer pings, and on a loaded
    # machine the 1.5 s of the shared fixture dropped it before it started reading again.
    client = await aiohttp_client(create_app(hub, ServerConfig(heartbeat_s=5.0, queue_size=64, map_interval_s=0.0)))
    big = {**SUB, "bins": 1000, "columns": 1000}
    slow, _ = await subscribed(client, big)
    fast, snap = await subscribed(client)
    last = snap["seq"]
    for _ in range(30):
        feed.push_forming()
        feed.push_close()
        msgs = await recv_until(fast, lambda m: m["type"] == "column", within=5.0)
        for m in msgs:
            if "seq" in m:
                assert m["seq"] == last + 1
                last = m["seq"]
    # the slow client, reading at last, sees a consistent stream: in order, or told to resync
    expect = None
    async with asyncio.timeout(10):
        while True:
            m = await recv(slow)
            if m["type"] == "resync":
                expect = None
                continue
            if m["type"] == "snapshot":
                expect = m["seq"] + 1
                continue
            if "seq" in m:
                if expect is not None:
                    assert m["seq"] == expect
                    expect += 1
                if m["type"] == "column" and m["time"] >= snap["candles"]["t"][-1] + 300 * 5:
                    break
    await slow.close()
    await fast.close()


class StalledSocket:
    """A WebSocket stub whose client stopped reading: sends block until released."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.release = asyncio.Event()

    async def send_str(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(json.loads(text))


async def test_overflow_drops_deltas_then_resyncs(hub):
    from server.config import ServerConfig
    from server.live import MarketChannel, Subscriber
    from server.markets import Markets
    from server.views import ViewSpec

    markets = Markets([hub])
    try:
        channel = MarketChannel(hub.get("BTC"), markets, ServerConfig())
        ws = StalledSocket()
        conn = Connection(ws, queue_size=8)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.writer())
        view = channel.view_for(ViewSpec("test:BTC/USDT:USDT", "5m", None, 20, 10))
        sub = Subscriber("s", conn, channel, view)
        channel.add(sub)
        done = asyncio.Event()
        channel.request_snapshot(sub, "subscribe")
        await asyncio.wait_for(_until(lambda: sub.state == "live"), 5)
        for i in range(50):
            conn.offer(sub, "bar", json.dumps({"time": i}))
        assert sub.state == "resync" and sub.dropped > 0
        assert conn.pending() <= 8 + 1  # the bound holds (the snapshot itself is not a delta)
        ws.release.set()
        await asyncio.wait_for(_until(lambda: any(m["type"] == "snapshot" and m["reason"] == "overflow" for m in ws.sent)), 5)
        types = [m["type"] for m in ws.sent]
        first_resync = types.index("resync")
        assert "snapshot" in types[first_resync:]
        resync = ws.sent[first_resync]
        assert resync["sub"] == "s" and resync["dropped"] == sub.dropped
        seqs = [m["seq"] for m in ws.sent if "seq" in m]
        assert seqs == sorted(seqs)  # never goes back
        overflow_snap = next(m for m in ws.sent if m["type"] == "snapshot" and m["reason"] == "overflow")
        assert overflow_snap["seq"] == sub.seq or sub.seq > overflow_snap["seq"]
        conn.offer(sub, "bar", json.dumps({"time": 999}))
        await asyncio.wait_for(_until(lambda: ws.sent[-1].get("time") == 999), 5)
        assert ws.sent[-1]["seq"] == overflow_snap["seq"] + 1
        done.set()
        conn.closed = True
        writer.cancel()
    finally:
        markets.close()


async def _until(pred) -> None:
    while not pred():  # noqa: ASYNC110 - polling plain state on purpose
        await asyncio.sleep(0.005)


def test_protocol_doc_names_every_message_type():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "server" / "PROTOCOL.md").read_text()
    for kind in ("hello", "subscribed", "snapshot", "bar", "column", "map", "zones", "realised", "liquidation",
                 "alert", "health", "resync", "heartbeat", "unsubscribed", "pong", "error"):
        assert f"`{kind}`" in doc or f'"{kind}"' in doc, kind
    assert np.__name__  # numpy import used by the decode helpers above


async def test_live_columns_equal_the_rest_heatmap_on_the_same_rows(client, feed):
    """The cheap live path (live book on the view's bins) and the REST heatmap agree on the forming candle."""
    ws, snap = await subscribed(client)
    edges = snap["heatmap"]["edges"]
    feed.push_forming()
    msgs = await recv_until(ws, lambda m: m["type"] == "column")
    col = msgs[-1]
    got = decode_sqrt_u8(base64.b64decode(col["long"]), col["max_usd"], (1, 60))[0]
    q = f"symbol=BTC&timeframe=5m&bins=60&columns=40&price_low={edges[0]}&price_high={edges[-1]}&encoding=json"
    rest = await (await client.get(f"/api/v1/heatmap?{q}")).json()
    assert rest["times"][-1] == col["time"]
    want = np.array(rest["long"][-1])
    assert np.max(np.abs(got - want)) <= col["max_usd"] * 2.5 / 255
    await ws.close()


async def test_batched_frames_carry_the_same_messages(client, feed):
    ws = await client.ws_connect("/api/v1/ws?batch=1")
    frame = await ws.receive_json(timeout=5)
    assert isinstance(frame, list) and frame[0]["type"] == "hello" and frame[0]["batch"] is True
    await ws.send_json(SUB)
    seen: list[dict] = []
    async with asyncio.timeout(10):
        while not any(m["type"] == "snapshot" for m in seen):
            seen += await ws.receive_json()
    feed.push_forming()
    feed.push_close()
    async with asyncio.timeout(10):
        while not any(m["type"] == "column" for m in seen):
            frame = await ws.receive_json()
            assert isinstance(frame, list)
            seen += [m for m in frame if m["type"] != "heartbeat"]
    seqs = [m["seq"] for m in seen if "seq" in m]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await ws.close()


async def test_alerts_reach_subscribers_and_the_api(client, feed):
    from engine.analytics import AlertSettings
    from server.state import MARKETS

    # a rule any zone within 50% satisfies, checked twice a second (the hub runs the rules, not the server)
    hub = client.app[MARKETS].hubs[0]
    hub.configure_alerts(AlertSettings(within_pct=50.0, min_grade=None, interval_s=0.5))
    ws, _ = await subscribed(client)
    feed.push_close()
    msgs = await recv_until(ws, lambda m: m["type"] == "alert", within=10)
    alert = msgs[-1]
    assert alert["kind"] == "proximity" and "zone" in alert["message"] and alert["zone"]["usd"] > 0
    body = await (await client.get("/api/v1/alerts?symbol=BTC")).json()
    assert any(a["key"] == alert["key"] for a in body["alerts"])
    await ws.close()


async def test_price_leaving_the_rows_brings_a_range_snapshot(client, feed):
    from engine.feeds.base import BarUpdate

    ws, snap = await subscribed(client)
    high = snap["heatmap"]["edges"][-1]
    bar = feed.bar()
    jump = high * 1.05 / float(bar.close[0])  # a candle closing above the top row
    moved = bar.with_columns(open=bar.open * jump, high=bar.high * jump, low=bar.low * jump, close=bar.close * jump)
    feed.queues["BTC/USDT:USDT"].put_nowait(BarUpdate(moved, closed=True))
    msgs = await recv_until(ws, lambda m: m["type"] == "snapshot" and m["reason"] == "range", within=10)
    new = msgs[-1]
    edges = new["heatmap"]["edges"]
    assert edges[0] < new["price"] < edges[-1] and edges[-1] > high
    assert new["seq"] >= snap["seq"]
    await ws.close()


async def test_weekly_deltas_land_on_the_snapshots_monday_candle(client, feed):
    """1w over the WebSocket: the live column, bar and realised deltas carry the week's Monday open time,
    the same as the snapshot's last candle (a Sunday-based copy used to send them to empty slots)."""
    import datetime as dt

    ws, snap = await subscribed(client, {**SUB, "timeframe": "1w", "columns": 4})
    week = snap["candles"]["t"][-1]
    assert dt.datetime.fromtimestamp(week, dt.UTC).weekday() == 0
    assert snap["heatmap"]["times"] == snap["candles"]["t"] and set(snap["realised"]["t"]) <= set(snap["candles"]["t"])
    feed.push_forming()
    feed.push_close()
    msgs = await recv_until(ws, lambda m: m["type"] == "realised", within=10)
    times = {m["type"]: m["time"] for m in msgs if m["type"] in ("bar", "column", "realised")}
    assert times and set(times.values()) == {week}, times
    await ws.close()


async def test_a_batch_sized_view_does_not_hold_up_the_pages_bars(client, feed, monkeypatch):
    """A client holding a batch-sized view (here 400 bins x 400 columns) must not delay what the page
    views get each bar: theirs are computed and sent first. The big view's computation is held at a
    gate; the page's bar arrives while it is still held, the big view's once it is let go."""
    import threading

    import server.live as live
    from server.limits import HEAVY_CELLS

    gate = threading.Event()
    real = live._view_deltas

    def gated(svc, specs, *args):  # type: ignore[no-untyped-def]
        if any(spec.bins * spec.columns > HEAVY_CELLS for spec, *_ in specs):
            gate.wait(10.0)
        return real(svc, specs, *args)

    big_sub = SUB | {"id": "big", "timeframe": "1m", "bins": 400, "columns": 400}
    assert 400 * 400 > HEAVY_CELLS
    page, _ = await subscribed(client)
    big, _ = await subscribed(client, big_sub)
    monkeypatch.setattr(live, "_view_deltas", gated)
    try:
        feed.push_forming()
        bars = await recv_until(page, lambda m: m["type"] == "bar", within=5.0)
        assert not gate.is_set() and bars[-1]["sub"] == "main"
    finally:
        gate.set()
    got = await recv_until(big, lambda m: m["type"] == "bar", within=5.0)
    assert got[-1]["sub"] == "big"
    await page.close()
    await big.close()
