"""The WebSocket endpoint ``/api/v1/ws`` (protocol: server/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from engine.service import BarsError, FeedError, LadderError, UnknownSymbol, ViewError

from . import __version__
from .api import view_spec
from .config import API_TIMEFRAMES
from .limits import Busy, TokenBucket
from .live import Connection, LiveHub, Subscriber
from .markets import dumps
from .params import BadRequest, Query
from .state import CONFIG, LIVE, MARKETS

log = logging.getLogger("liqheat.server.ws")

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
    if len(live.connections) >= cfg.max_clients:
        return web.Response(status=503, text=dumps({"error": f"the server has {cfg.max_clients} clients, its limit; "
                                                             "retry later"}),
                            content_type="application/json", headers={"Retry-After": "5"})
    client = request.remote or "?"
    if sum(1 for c in live.connections if c.client == client) >= cfg.max_clients_per_ip:
        # before the upgrade: one address (one page opening sockets in a loop) cannot take every slot
        return web.Response(status=429, text=dumps({"error": f"this address has {cfg.max_clients_per_ip} WebSocket "
                                                             "connections open, its limit; retry later"}),
                            content_type="application/json", headers={"Retry-After": "5"})
    batch = request.query.get("batch", "0") in ("1", "true", "yes")
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    conn = Connection(ws, cfg.queue_size, batch=batch, sock=sock, max_bytes=cfg.ws_queue_bytes, hub=live,
                      transport=request.transport, client=client)
    live.connections.add(conn)
    messages = TokenBucket(cfg.ws_msg_rate, cfg.ws_msg_burst)
    churn = TokenBucket(cfg.ws_churn_rate, cfg.ws_churn_burst)
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
            if conn.closed:  # aborted (not reading its replies): stop reading it too
                break
            if not messages.take():
                await _refuse(ws, WSCloseCode.POLICY_VIOLATION, f"more than {cfg.ws_msg_rate:g} messages a second")
                break
            m: Any = None
            try:
                m = parse(msg.data)
            except Malformed as exc:
                await _refuse(ws, WSCloseCode.INVALID_TEXT, str(exc))
                break
            try:
                if not isinstance(m, dict):
                    raise BadRequest("a message must be a JSON object")
                if m.get("op") in CHURN_OPS and not churn.take():
                    raise BadRequest(f"too many subscription changes: at most {cfg.ws_churn_rate:g} a second "
                                     f"(bursts of {cfg.ws_churn_burst}); slow down")
                _dispatch(request, live, conn, m)
            except (BadRequest, ViewError, BarsError, LadderError, FeedError, ValueError, Busy) as exc:
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
        for sub in list(conn.subs.values()):
            sub.channel.remove(sub)
        conn.release()
        conn.subs.clear()
        live.connections.discard(conn)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
    return ws


class Malformed(ValueError):
    """A frame that is not a JSON document of the protocol's shape (not JSON, nested too deep)."""


# Protocol messages are flat objects; a ping may echo a little structure. Deeper is not a client.
MAX_DEPTH = 8
CHURN_OPS = ("subscribe", "unsubscribe", "resync")


def parse(text: str) -> Any:
    """The JSON of one frame, or :class:`Malformed` (one line). 2 kB of ``[[[...`` used to end in an
    uncaught RecursionError: the decoder recurses once per level."""
    try:
        m = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Malformed(f"message is not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise Malformed("JSON nested too deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise Malformed(f"message is not usable JSON: {_one_line(exc)[:80]}") from None
    if _too_deep(m, MAX_DEPTH):
        raise Malformed(f"JSON nested more than {MAX_DEPTH} deep")
    return m


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels (iterative: no recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with ``code`` and log one line (never a traceback per hostile frame)."""
    log.info("closing a WebSocket client (%d): %s", code, reason[:200])
    with contextlib.suppress(Exception):
        await ws.close(code=code, message=reason.encode()[:120])


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
        if sub.state != "building":  # a snapshot already on its way answers this one too
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


def subscription_id(conn: Connection, m: dict[str, Any], max_subscriptions: int) -> str:
    """Check a subscribe message's fields and pick its id (given, or the next free ``sN``); shared by the
    one-process server and the cluster replica, so both refuse the same messages the same way."""
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
    if len(conn.subs) >= max_subscriptions:
        raise BadRequest(f"at most {max_subscriptions} subscriptions per connection")
    return sid


def _subscribe(request: web.Request, live: LiveHub, conn: Connection, m: dict[str, Any]) -> None:
    cfg = request.app[CONFIG]
    sid = subscription_id(conn, m, cfg.max_subscriptions)
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
