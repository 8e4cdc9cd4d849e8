"""Property-based fuzzing of the WebSocket protocol (server/PROTOCOL.md) with hypothesis: frames with
wrong types, huge numbers, deep nesting, unknown ops and plain garbage, against the real server on
loopback. Whatever the frame, the server answers with a documented message or closes with 1007/1008
(never 1011, never a dropped connection), and keeps serving. Bounded: 80 frames, well under a minute."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPLIES = {"hello", "heartbeat", "error", "pong", "subscribed", "snapshot", "unsubscribed", "resync"}
CLOSES = {1007, 1008}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=12)
ops = st.one_of(st.sampled_from(["subscribe", "unsubscribe", "resync", "ping"]), st.text(max_size=12), values)
messages = st.fixed_dictionaries(
    {"op": ops},
    optional={
        "symbol": st.sampled_from(["BTC", "test:ETH/USDT:USDT", "XYZ"]) | values,
        "timeframe": st.sampled_from(["1m", "5m", "1h", "2m"]) | values,
        "bins": st.integers(min_value=-(10**20), max_value=10**20) | values,
        "columns": st.integers(min_value=-(10**20), max_value=10**20) | values,
        "tier": values, "price_low": values, "price_high": values, "log": values,
        "id": values, "sub": values, "pad": values,
    },
)
garbage = st.one_of(
    st.text(max_size=200),
    st.sampled_from([2, 9, 50, 999, 1500, 3000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([2, 9, 50, 999, 1500, 3000]).map(lambda n: '{"op":"ping","a":' * n + "1" + "}" * n),
    st.sampled_from([300, 4299, 4301, 6000]).map(lambda n: '{"op":"subscribe","symbol":"BTC","bins":1' + "0" * n + "}"),
    st.sampled_from(['{"op":"ping","x":NaN}', '{"op":"subscribe","symbol":"BTC","bins":Infinity}',
                     '{"op":"subscribe","symbol":"BTC","price_low":-Infinity,"price_high":1e309}', "null", "[]",
                     '"op"', "1e999999", '{"op":"resync","sub":{"$gt":""}}']),
)
frames = st.one_of(messages.map(json.dumps), garbage)


async def exchange(url: str, frame: str) -> tuple[str, object]:
    """Send one frame on a fresh connection; the first answer to it (type or close code)."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url + "/api/v1/ws", max_msg_size=0) as ws:
        hello = await ws.receive(timeout=5)
        assert json.loads(hello.data)["type"] == "hello"
        await ws.send_str(frame)
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type")
                if kind != "heartbeat":
                    return "message", kind
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return "close", msg.data
            else:
                return "other", msg.type


async def healthy(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/api/v1/health") as r:
        return r.status


@given(frame=frames)
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_frame_gets_a_documented_answer_or_a_policy_close(threaded_server, frame):
    what, detail = asyncio.run(exchange(threaded_server.url, frame))
    if what == "message":
        assert detail in REPLIES, (frame[:200], detail)
    else:
        assert what == "close" and detail in CLOSES, (frame[:200], what, detail)
    assert asyncio.run(healthy(threaded_server.url)) == 200
