"""The WebSocket endpoint ``/api/v1/ws`` (protocol: server/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from engine.service import BarsError, FeedError, LadderError, UnknownSymbol, ViewError

from . import __version__
from .api import view_spec
from .config import API_TIMEFRAMES
from .live import Connection, LiveHub, Subscriber
from .markets import dumps
from .params import BadRequest, Query
from .state import CONFIG, LIVE, MARKETS

PROTOCOL = 1
MAX_ERRORS = 20
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")


def origin_ok(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser page (terminal client, script): nothing cross-site to protect
    return request.app[CONFIG].origin_allowed(origin, request.host)


class _Params(dict[str, str]):
    """Subscribe fields as a query-string-like mapping, so the REST validators apply unchanged."""


async def handle(request: web.Request) -> web.StreamResponse:
    if not origin_ok(request):
        return web.Response(
            status=403,
            text=dumps({"error": f"origin {request.headers.get('Origin', '')[:100]!r} is not allowed; "
                                 "start the server with --allow-origin"}),
            content_type="application/json",
        )
    cfg = request.app[CONFIG]
    live = request.app[LIVE]
    ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s * 3, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text=dumps({"error": "this endpoint expects a WebSocket upgrade"}),
                            content_type="application/json")
    batch = request.query.get("batch", "0") in ("1", "true", "yes")
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    conn = Connection(ws, cfg.queue_size, batch=batch, sock=sock)
    live.connections.add(conn)
    writer = asyncio.create_task(conn.writer(), name="ws writer")
    conn.send(dumps({
        "type": "hello", "protocol": PROTOCOL, "server": f"liqheat {__version__}", "heartbeat_s": cfg.heartbeat_s,
        "markets": [s.market.key for s in request.app[MARKETS].services()], "timeframes": list(API_TIMEFRAMES),
        "max_subscriptions": cfg.max_subscriptions, "queue_size": cfg.queue_size, "batch": batch,
    }))
    errors = 0
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"text JSON frames only")
                break
            m: Any = None
            try:
                m = json.loads(msg.data)
                if not isinstance(m, dict):
                    raise BadRequest("a message must be a JSON object")
                _dispatch(request, live, conn, m)
            except (BadRequest, ViewError, BarsError, LadderError, FeedError, ValueError) as exc:
                errors += 1
                err = {"type": "error", "error": _one_line(exc)}
                if isinstance(m, dict):
                    for k in ("op", "id", "sub"):
                        if isinstance(m.get(k), str):
                            err[k] = m[k][:40]
                conn.send(dumps(err))
                if errors >= MAX_ERRORS:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many errors")
                    break
    finally:
        conn.closed = True
        for sub in list(conn.subs.values()):
            sub.channel.remove(sub)
        conn.subs.clear()
        live.connections.discard(conn)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
    return ws


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"message is not JSON: {exc.msg}"
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _dispatch(request: web.Request, live: LiveHub, conn: Connection, m: dict[str, Any]) -> None:
    op = m.get("op")
    if op == "subscribe":
        _subscribe(request, live, conn, m)
    elif op == "unsubscribe":
        sub = _sub(conn, m)
        sub.channel.remove(sub)
        del conn.subs[sub.id]
        conn.send(dumps({"type": "unsubscribed", "sub": sub.id}))
    elif op == "resync":
        sub = _sub(conn, m)
        sub.channel.request_snapshot(sub, "resync")
    elif op == "ping":
        conn.send(dumps({k: v for k, v in m.items() if k != "op"} | {"type": "pong"}))
    else:
        raise BadRequest(f"unknown op {str(op)[:20]!r}; use subscribe, unsubscribe, resync or ping")


def _sub(conn: Connection, m: dict[str, Any]) -> Subscriber:
    sid = m.get("sub")
    if not isinstance(sid, str) or sid not in conn.subs:
        raise BadRequest(f"no subscription {str(sid)[:40]!r} on this connection")
    return conn.subs[sid]


_SUBSCRIBE_FIELDS = {"op", "id", "symbol", "timeframe", "tier", "bins", "columns", "price_low", "price_high", "log"}


def _subscribe(request: web.Request, live: LiveHub, conn: Connection, m: dict[str, Any]) -> None:
    cfg = request.app[CONFIG]
    unknown = sorted(set(m) - _SUBSCRIBE_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:30]!r} in subscribe")
    sid = m.get("id")
    if sid is None:
        n = len(conn.subs) + 1
        while f"s{n}" in conn.subs:
            n += 1
        sid = f"s{n}"
    if not isinstance(sid, str) or not _ID.match(sid):
        raise BadRequest("id must be 1-32 letters, digits or _.:-")
    if sid in conn.subs:
        raise BadRequest(f"subscription {sid!r} already exists; unsubscribe it first")
    if len(conn.subs) >= cfg.max_subscriptions:
        raise BadRequest(f"at most {cfg.max_subscriptions} subscriptions per connection")
    fields = _Params()
    for k, v in m.items():
        if k in ("op", "id") or v is None:
            continue
        if isinstance(v, bool):
            fields[k] = "true" if v else "false"
        elif isinstance(v, (int, float, str)):
            fields[k] = str(v)
        else:
            raise BadRequest(f"{k} must be a string or a number")
    q = Query(fields)
    symbol = q.required("symbol")
    try:
        svc = request.app[MARKETS].resolve(symbol)
    except UnknownSymbol as exc:
        raise BadRequest(str(exc)) from None
    spec = view_spec(svc, q, cfg.default_bins, cfg.default_columns)
    q.done()
    channel = live.channel(svc)
    view = channel.view_for(spec)
    sub = Subscriber(sid, conn, channel, view)
    conn.subs[sid] = sub
    channel.add(sub)
    conn.send(dumps({"type": "subscribed", "sub": sid, "symbol": svc.market.key, "timeframe": spec.timeframe,
                     "tier": "all" if spec.tier is None else svc.params.ladder.labels[spec.tier], "bins": spec.bins,
                     "columns": spec.columns}))
    channel.request_snapshot(sub, "subscribe")
