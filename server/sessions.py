"""Client sessions on ``/api/v1/ws`` (server/PROTOCOL.md), the same wherever the views come from.

The one-process server (server/live.py: views computed here) and a cluster replica (server/replica.py:
views read from the bus) differ only in how a ``subscribe`` is answered. Everything else a client meets is
this module's, so both hold under the same abuse the same way: the Origin check, the client limit (503),
the hello, message and churn rates (1008), malformed frames (1007), error counting, and every connection's
send queue bounded in bytes and counted against the process's send budget (server/budget.py), where the
connection holding the most gives way when the total is full (server/live.py ``Connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from engine.service import BarsError, FeedError, LadderError, ViewError

from . import __version__
from .config import API_TIMEFRAMES, ServerConfig
from .limits import Busy, TokenBucket
from .markets import dumps
from .params import BadRequest
from .state import CONFIG

log = logging.getLogger("liqheat.server.ws")

PROTOCOL = 1
MAX_ERRORS = 20
# Protocol messages are flat objects; a ping may echo a little structure. Deeper is not a client.
MAX_DEPTH = 8
CHURN_OPS = ("subscribe", "unsubscribe", "resync")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")
_SUBSCRIBE_FIELDS = {"op", "id", "symbol", "timeframe", "tier", "bins", "columns", "price_low", "price_high", "log"}
# What a subscribe may raise that is the client's to fix: an `error` message, the connection stays.
CLIENT_ERRORS = (BadRequest, ViewError, BarsError, LadderError, FeedError, ValueError, Busy)

# Deltas buffered for a subscription while its snapshot is being built; more than this and it resyncs.
SNAPSHOT_BUFFER = 512
# Messages per frame at most, for connections that asked for batched frames.
BATCH_MAX = 64
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)
# Seconds a client we close has to read its close frame before it loses the TCP connection instead.
CLOSE_GRACE_S = 2.0
# Close tasks of aborted connections (kept referenced until done).
_background: set[asyncio.Task[None]] = set()


class Channel(Protocol):
    """Where a subscription's snapshots come from: a market's fan-out (server/live.py ``MarketChannel``) or
    a replica's bus reader (server/replica.py ``ReplicaHub``)."""

    def request_snapshot(self, sub: Subscriber, reason: str) -> None: ...

    def remove(self, sub: Subscriber) -> None: ...


@dataclass(eq=False)
class Subscriber:
    id: str
    conn: Connection
    channel: Channel
    view: Any  # the channel's own view object (live.View, replica.BusView)
    seq: int = 0
    # live: deltas flow | building: snapshot being computed, deltas buffered | resync: waiting for room
    state: str = "building"
    buffer: list[str] = field(default_factory=list)
    buffer_bytes: int = 0
    dropped: int = 0
    closed: bool = False
    # the id as JSON, serialised once: every delta carries it (a json.dumps per message per subscriber
    # was a tenth of the fan-out's time with 1,000 clients)
    id_json: str = field(init=False, repr=False, default="")

    def __post_init__(self) -> None:
        self.id_json = dumps(self.id)

    def envelope(self, kind: str, body: str) -> str:
        """``body`` is a serialised JSON object; prefix the routing fields without re-serialising it."""
        self.seq += 1
        head = f'{{"type":"{kind}","sub":{self.id_json},"seq":{self.seq}'
        return head + ("}" if body == "{}" else "," + body[1:])


class Connection:
    """One WebSocket: a send queue bounded in messages (deltas) and in bytes (everything), and the
    writer task that drains it. Deltas that do not fit are dropped and resynced later; a reply (pong,
    error, ...) that does not fit means the client is not reading: the connection is closed (1008)."""

    def __init__(self, ws: web.WebSocketResponse, queue_size: int, batch: bool = False, sock: Any = None,
                 max_bytes: int = 16 * 1024 * 1024, hub: Sessions | None = None, transport: Any = None,
                 client: str = "") -> None:
        self.ws = ws
        self.sock = sock  # the connection's socket, to cork bursts (None: write frames as they come)
        self.transport = transport  # to abort a client that will not even read a close frame
        self.client = client  # peer address: whose work this connection's snapshots count as
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self.hub = hub
        self.queued_bytes = 0
        # batch: everything waiting goes out as one frame holding a JSON array (fewer frames, wake-ups
        # and syscalls on both ends when messages come in bursts); the client asked for it (?batch=1).
        self.batch = batch
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self.subs: dict[str, Subscriber] = {}
        self.need_resync: list[Subscriber] = []
        self.sent = 0
        self.closed = False
        self.closing: asyncio.Future[None] | None = None  # the 1008 close of abort(), while it is sent

    def _cork(self, on: bool) -> bool:
        """TCP_CORK on/off (Linux); False where the socket or the option is not available."""
        if self.sock is None or _TCP_CORK is None:
            return False
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
        except OSError:
            return False
        return True

    def _fits(self, n: int) -> bool:
        """Room for ``n`` more bytes here and in the process-wide total (one message always fits an
        empty queue, so a big snapshot still reaches a client that reads). When the total is what is
        full, the connection holding the most gives way (closed), not the one that asks."""
        if not self._queue:
            return True
        if self.queued_bytes + n > self.max_bytes:
            return False
        hub = self.hub
        if hub is None or hub.queued_bytes + n <= hub.max_bytes:
            return True
        greedy = max(hub.connections, key=lambda c: c.queued_bytes, default=self)
        if greedy is self or greedy.queued_bytes <= self.queued_bytes:
            return False
        greedy.abort("send queue full: this client holds the most of the server's send budget")
        return hub.queued_bytes + n <= hub.max_bytes

    def _push(self, text: str) -> bool:
        if self.closed:
            return True
        n = len(text)
        if not self._fits(n):
            return False
        self._queue.append(text)
        self.queued_bytes += n
        if self.hub is not None:
            self.hub.queued_bytes += n
        self._ready.set()
        return True

    def _pop(self) -> str:
        text = self._queue.popleft()
        self.queued_bytes -= len(text)
        if self.hub is not None:
            self.hub.queued_bytes -= len(text)
        return text

    def send(self, text: str) -> None:
        """A reply or notice; if it does not fit, the client stopped reading: close the connection."""
        if not self._push(text):
            self.abort("send queue full: the client is not reading")

    def pending(self) -> int:
        return len(self._queue)

    def release(self) -> None:
        """Drop everything queued (the socket is closing): its bytes go back to the budget now."""
        self.closed = True
        while self._queue:
            self._pop()
        self.need_resync.clear()
        for sub in self.subs.values():
            sub.buffer.clear()
        self._ready.set()

    def abort(self, reason: str) -> None:
        """Close with 1008 (policy) and free the queue; a client that does not read the close frame
        within CLOSE_GRACE_S loses the TCP connection."""
        if self.closed:
            return
        log.info("closing a WebSocket client: %s", reason)
        self.release()

        async def close() -> None:
            try:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode()[:120])
            except (TimeoutError, ConnectionError, RuntimeError):
                if self.transport is not None:
                    self.transport.abort()

        task = self.closing = asyncio.ensure_future(close())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def offer(self, sub: Subscriber, kind: str, body: str) -> None:
        """A delta for ``sub``: queued, buffered (snapshot in progress) or dropped (slow client)."""
        if sub.closed or self.closed:
            return
        if sub.state == "building":
            if len(sub.buffer) >= SNAPSHOT_BUFFER or sub.buffer_bytes + len(body) > self.max_bytes // 4:
                sub.buffer.clear()
                sub.buffer_bytes = 0
                self._overflow(sub)
            else:
                sub.buffer.append(kind + "\n" + body)
                sub.buffer_bytes += len(body)
            return
        if sub.state == "resync":
            sub.seq += 1  # the sequence keeps counting, so a gap is visible to anyone who looks
            sub.dropped += 1
            return
        if len(self._queue) >= self.queue_size or not self._fits(len(body) + 64):
            sub.seq += 1
            sub.dropped += 1
            self._overflow(sub)
            return
        self._push(sub.envelope(kind, body))

    def _overflow(self, sub: Subscriber) -> None:
        if sub.state != "resync":
            sub.state = "resync"
            self.need_resync.append(sub)

    def deliver_snapshot(self, sub: Subscriber, reason: str, body: str) -> None:
        """Snapshot then the deltas that arrived while it was built (upserts: applying one the snapshot
        already contains is harmless)."""
        if sub.closed or self.closed:
            return
        head = f'{{"type":"snapshot","sub":{sub.id_json},"seq":{sub.seq},"reason":"{reason}"'
        buffered, sub.buffer, sub.buffer_bytes = sub.buffer, [], 0
        if not self._push(head + "," + body[1:]):  # no room: the client gets it once it has read some
            sub.state = "live"
            self._overflow(sub)
            return
        sub.state = "live"
        for item in buffered:
            kind, _, payload = item.partition("\n")
            self.offer(sub, kind, payload)

    async def writer(self) -> None:
        try:
            while not self.closed:
                if not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                if self.batch:
                    n = min(len(self._queue), BATCH_MAX)
                    items = [self._pop() for _ in range(n)]
                    await self.ws.send_str("[" + ",".join(items) + "]")
                    self.sent += n
                else:
                    # One frame per message, but a burst goes out in as few TCP segments as fit: corked,
                    # the kernel sends once instead of once per frame (on loopback with 1,000 clients, the
                    # per-frame segments were half the fan-out's CPU, in the kernel, and each woke the client).
                    n = min(len(self._queue), BATCH_MAX)
                    corked = n > 1 and self._cork(True)
                    try:
                        for _ in range(n):
                            if not self._queue:
                                break
                            await self.ws.send_str(self._pop())
                            self.sent += 1
                    finally:
                        if corked:
                            self._cork(False)
                if self.need_resync and len(self._queue) <= self.queue_size // 2:
                    subs, self.need_resync = self.need_resync, []
                    for sub in subs:
                        if sub.closed:
                            continue
                        self.send(dumps({"type": "resync", "sub": sub.id, "reason": "overflow", "dropped": sub.dropped}))
                        sub.channel.request_snapshot(sub, "overflow")
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            # RuntimeError: aiohttp refuses to write to a closing socket; the reader side ends the connection.
            self.closed = True
            raise


# Answers a subscribe message on a connection (registers the Subscriber, sends `subscribed`, starts its
# snapshot); may be a coroutine function (a replica asks the market's owner first).
Subscribe = Callable[[Connection, dict[str, Any]], "Awaitable[None] | None"]


class Sessions:
    """Every open WebSocket of the process, and the bytes waiting in their send queues together (bounded by
    ``max_bytes``, the budget's share for send queues). ``Connection`` reads ``queued_bytes``, ``max_bytes``
    and ``connections`` from here."""

    def __init__(self, config: ServerConfig, max_bytes: int) -> None:
        self.config = config
        self.connections: set[Connection] = set()
        self.queued_bytes = 0
        self.max_bytes = max_bytes
        self._tasks: list[asyncio.Task[None]] = []  # background work of the owner (heartbeats, readers)

    async def heartbeats(self) -> None:
        """A `heartbeat` every ``heartbeat_s`` to idle connections (a busy one already shows it is alive)."""
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            beat = dumps({"type": "heartbeat", "time": round(time.time(), 3)})
            for conn in list(self.connections):
                if conn.pending() == 0:
                    conn.send(beat)

    async def stop(self) -> None:
        """End the background tasks (shutdown)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def close_all(self) -> None:
        """Server shutdown: every client gets 1001 (going away) and reconnects elsewhere; one that does not
        read its close frame within 2 s loses the TCP connection (a shutdown never waits on a client)."""

        async def bye(conn: Connection) -> None:
            conn.closed = True
            try:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            except (TimeoutError, ConnectionError, RuntimeError):
                if conn.transport is not None:
                    conn.transport.abort()

        await asyncio.gather(*(bye(conn) for conn in list(self.connections)))


def origin_ok(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser page (terminal client, script): nothing cross-site to protect
    return request.app[CONFIG].origin_allowed(origin, request.host)


async def serve_session(request: web.Request, sessions: Sessions, markets: Callable[[], list[str]],
                        subscribe: Subscribe) -> web.StreamResponse:
    """One client's WebSocket from upgrade to close. ``markets`` names the markets for the hello."""
    if not origin_ok(request):
        return web.Response(
            status=403,
            text=dumps({"error": f"origin {request.headers.get('Origin', '')[:100]!r} is not allowed; "
                                 "start the server with --allow-origin"}),
            content_type="application/json",
        )
    cfg = request.app[CONFIG]
    ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s * 3, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text=dumps({"error": "this endpoint expects a WebSocket upgrade"}),
                            content_type="application/json")
    if len(sessions.connections) >= cfg.max_clients:
        return web.Response(status=503, text=dumps({"error": f"the server has {cfg.max_clients} clients, its limit; "
                                                             "retry later"}),
                            content_type="application/json", headers={"Retry-After": "5"})
    client = request.remote or "?"
    if sum(1 for c in sessions.connections if c.client == client) >= cfg.max_clients_per_ip:
        # before the upgrade: one address (one page opening sockets in a loop) cannot take every slot
        return web.Response(status=429, text=dumps({"error": f"this address has {cfg.max_clients_per_ip} WebSocket "
                                                             "connections open, its limit; retry later"}),
                            content_type="application/json", headers={"Retry-After": "5"})
    batch = request.query.get("batch", "0") in ("1", "true", "yes")
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    conn = Connection(ws, cfg.queue_size, batch=batch, sock=sock, max_bytes=cfg.ws_queue_bytes, hub=sessions,
                      transport=request.transport, client=client)
    sessions.connections.add(conn)
    messages = TokenBucket(cfg.ws_msg_rate, cfg.ws_msg_burst)
    churn = TokenBucket(cfg.ws_churn_rate, cfg.ws_churn_burst)
    writer = asyncio.create_task(conn.writer(), name="ws writer")
    conn.send(dumps({
        "type": "hello", "protocol": PROTOCOL, "server": f"liqheat {__version__}", "heartbeat_s": cfg.heartbeat_s,
        "markets": markets(), "timeframes": list(API_TIMEFRAMES),
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
                await refuse(ws, WSCloseCode.POLICY_VIOLATION, f"more than {cfg.ws_msg_rate:g} messages a second")
                break
            m: Any = None
            try:
                m = parse(msg.data)
            except Malformed as exc:
                await refuse(ws, WSCloseCode.INVALID_TEXT, str(exc))
                break
            try:
                if not isinstance(m, dict):
                    raise BadRequest("a message must be a JSON object")
                if m.get("op") in CHURN_OPS and not churn.take():
                    raise BadRequest(f"too many subscription changes: at most {cfg.ws_churn_rate:g} a second "
                                     f"(bursts of {cfg.ws_churn_burst}); slow down")
                await _dispatch(conn, m, subscribe)
            except CLIENT_ERRORS as exc:
                errors += 1
                err = {"type": "error", "error": one_line(exc)}
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
        sessions.connections.discard(conn)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        if conn.closing is not None:
            # returning now would drop the socket under the close frame on its way: the client would see
            # the connection lost (1006) instead of why (1008); abort() bounds this wait
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(conn.closing)
    return ws


async def _dispatch(conn: Connection, m: dict[str, Any], subscribe: Subscribe) -> None:
    op = m.get("op")
    if op == "subscribe":
        pending = subscribe(conn, m)
        if pending is not None:
            await pending
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


def subscription_id(conn: Connection, m: dict[str, Any], max_subscriptions: int) -> str:
    """Check a subscribe message's fields and pick its id (given, or the next free ``sN``), so every
    server refuses the same messages the same way."""
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


class Malformed(ValueError):
    """A frame that is not a JSON document of the protocol's shape (not JSON, nested too deep)."""


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
        raise Malformed(f"message is not usable JSON: {one_line(exc)[:80]}") from None
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


async def refuse(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with ``code`` and log one line (never a traceback per hostile frame)."""
    log.info("closing a WebSocket client (%d): %s", code, reason[:200])
    with contextlib.suppress(Exception):
        await ws.close(code=code, message=reason.encode()[:120])


def one_line(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"message is not JSON: {exc.msg}"
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
