"""``liqheat serve --bus redis://...``: a stateless replica. No feeds, no engines: the WebSocket views come
from the markets' Redis Streams (written once by their owning worker, server/worker.py), REST and UDF
requests are forwarded to the owning worker, the page and static files are served here. Any number of
replicas can stand behind a load balancer; a client whose replica dies reconnects to another and resyncs.

Per view the replica keeps the sequence number of the last log entry it forwarded. An entry that is not
``last + 1`` (the log was trimmed under a slow replica, Redis restarted, the owner restarted with a new
epoch) means something was missed: the view's clients get ``resync`` and wait for a fresh snapshot, which
the replica asks the owner for - the protocol's own recovery, nothing new for clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from engine.service import bus

from . import __version__, assets
from .app import STATIC, cors, errors_as_json, example, index, vendor_missing
from .config import API_TIMEFRAMES, ServerConfig
from .live import Connection, Subscriber
from .markets import dumps
from .params import BadRequest
from .state import CONFIG, STARTED_AT
from .ws import MAX_ERRORS, PROTOCOL, _one_line, origin_ok, subscription_id

log = logging.getLogger("liqheat.replica")

# A snapshot asked for and not seen in the log after this long is asked for again (owner restarting).
SNAPSHOT_RETRY_S = 2.0
REQUEST_TIMEOUT_S = 3.0
# How long a subscription waits for a market's owner during a failover before it is refused.
OWNER_WAIT_S = 20.0


@dataclass(eq=False)
class BusView:
    """One view of one market as this replica follows it in the log."""

    key: str
    market: str
    fields: dict[str, Any]
    subs: set[Subscriber] = field(default_factory=set)
    last_seq: int | None = None  # None: waiting for a snapshot
    waiting: dict[Subscriber, str] = field(default_factory=dict)  # sub -> the reason its snapshot will carry
    asked: float = 0.0  # when a snapshot was last asked for (monotonic)


@dataclass(eq=False)
class BusMarket:
    key: str
    last_id: str = "0-0"
    epoch: int | None = None
    views: dict[str, BusView] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class ReplicaHub:
    """The replica's view of the cluster: owners, market logs, the views its clients watch."""

    def __init__(self, redis: Any, config: ServerConfig) -> None:
        self.redis = redis
        self.config = config
        self.id = f"replica-{uuid.uuid4().hex[:10]}"
        self.workers: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, str] = {}
        self.markets: dict[str, BusMarket] = {}
        self.connections: set[Connection] = set()
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.bus_ok = False
        self.resyncs = 0
        self.forwarded = 0

    # ---- cluster metadata -------------------------------------------------------------------------
    async def refresh(self) -> None:
        owners = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(bus.OWNERS)).items()}
        workers: dict[str, dict[str, Any]] = {}
        now = time.time()
        for wid in set(owners.values()):
            raw = await self.redis.get(bus.worker_key(wid))
            if raw:
                meta = json.loads(raw)
                # missed three heartbeats: gone (its key only expires after WORKER_TTL_S)
                if now - float(meta.get("heartbeat", 0)) <= 3 * bus.HEARTBEAT_S:
                    workers[wid] = meta
        self.owners, self.workers = owners, workers

    def market_list(self) -> list[dict[str, Any]]:
        out = []
        for key, wid in sorted(self.owners.items()):
            meta = self.workers.get(wid)
            info = next((m for m in (meta or {}).get("markets", []) if m["key"] == key), None)
            if info is not None:
                out.append(info)
        return out

    def resolve(self, name: str) -> str:
        name = name.strip()
        known = self.market_list()
        for m in known:
            if name == m["key"]:
                return str(m["key"])
        upper = name.upper()
        for m in known:
            ticker = m["symbol"].split(":")[0].replace("/", "").upper()
            if name == m["symbol"] or upper in (m.get("coin", "").upper(), ticker, f"{m['exchange'].upper()}:{ticker}"):
                return str(m["key"])
        names = ", ".join(m["key"] for m in known) or "none (no worker is running)"
        raise BadRequest(f"unknown symbol {name[:60]!r}; the cluster has {names}")

    def owner(self, market: str) -> dict[str, Any] | None:
        wid = self.owners.get(market)
        return self.workers.get(wid) if wid else None

    # ---- requests to owners -----------------------------------------------------------------------
    async def ask(self, market: str, fields: dict[str, Any], reason: str) -> dict[str, Any]:
        """The owner's answer to a view demand (it also writes a snapshot of the view to the log). During a
        failover (owner gone, successor starting) it keeps asking whoever owns the market, up to
        OWNER_WAIT_S: the client waits a few seconds instead of getting an error."""
        deadline = time.monotonic() + OWNER_WAIT_S
        while True:
            wid = self.owners.get(market)
            if wid is None or wid not in self.workers:
                await self.refresh()
                wid = self.owners.get(market)
            if wid is not None and wid in self.workers:
                rid = uuid.uuid4().hex
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._replies[rid] = fut
                try:
                    listening = await self.redis.publish(bus.request_channel(wid), dumps(
                        {"rid": rid, "replica": self.id, "market": market, "fields": fields, "reason": reason}))
                    if listening:
                        return await asyncio.wait_for(fut, REQUEST_TIMEOUT_S)
                except TimeoutError:
                    pass
                finally:
                    self._replies.pop(rid, None)
            if time.monotonic() > deadline:
                raise BadRequest(f"no worker answers for {market} right now; try again shortly")
            await asyncio.sleep(0.5)
            await self.refresh()

    async def _replies_loop(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(bus.reply_channel(self.id))
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    continue
                answer = json.loads(msg["data"])
                fut = self._replies.get(answer.get("rid"))
                if fut is not None and not fut.done():
                    fut.set_result(answer)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # ---- following the logs -----------------------------------------------------------------------
    async def follow(self, market: str) -> BusMarket:
        """The market's log, read from its current end (registered before the first await: clients
        subscribing at the same moment share one reader position)."""
        bm = self.markets.get(market)
        if bm is None:
            bm = self.markets[market] = BusMarket(market)
            try:
                last = await self.redis.xrevrange(bus.log_key(market), count=1)
                if last:
                    bm.last_id = last[0][0].decode()
                    bm.epoch = bus.split_id(bm.last_id)[0]
            finally:
                bm.ready.set()
            self._wake.set()
        await bm.ready.wait()
        return bm

    async def _reader(self) -> None:
        """One blocking XREAD over every followed market's log; entries are routed to the views."""
        while True:
            streams = {bus.log_key(k): m.last_id for k, m in self.markets.items() if m.views}
            if not streams:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            got = await self.redis.xread(streams, block=500, count=500)
            self.bus_ok = True
            for stream, entries in got or []:
                market = stream.decode().split(":", 2)[2]
                bm = self.markets.get(market)
                if bm is None:
                    continue
                for entry_id, fields in entries:
                    self._apply(bm, entry_id.decode(), fields)

    def _apply(self, bm: BusMarket, entry_id: str, raw: dict[bytes, bytes]) -> None:
        bm.last_id = entry_id
        epoch = bus.split_id(entry_id)[0]
        if bm.epoch is not None and epoch != bm.epoch:
            # a new owner (restart or failover): its sequence numbers start again - every view resyncs
            for view in bm.views.values():
                self._resync(view, "owner restarted")
        bm.epoch = epoch
        view = bm.views.get(raw[b"v"].decode())
        if view is None:
            return
        kind, seq, body = raw[b"t"].decode(), int(raw[b"s"]), raw[b"b"].decode()
        if kind == "snapshot":
            reason = raw.get(b"r", b"").decode()
            view.last_seq = seq
            for sub, want in list(view.waiting.items()):
                sub.conn.deliver_snapshot(sub, want, body)
            view.waiting.clear()
            if reason == "range":  # new price edges: everyone starts again from this one
                for sub in view.subs:
                    if sub.state == "live":
                        sub.conn.deliver_snapshot(sub, "range", body)
            return
        if view.last_seq is None:
            return  # waiting for a snapshot: it holds everything up to its own seq
        if seq != view.last_seq + 1:
            if seq > view.last_seq:
                self._resync(view, "gap")
            return  # an older entry (a duplicate after a retry) is simply skipped
        view.last_seq = seq
        self.forwarded += 1
        for sub in view.subs:
            if sub.state != "building":
                sub.conn.offer(sub, kind, body)

    def _resync(self, view: BusView, why: str) -> None:
        self.resyncs += 1
        view.last_seq = None
        for sub in view.subs:
            if sub not in view.waiting:
                sub.conn.send(dumps({"type": "resync", "sub": sub.id, "reason": "overflow", "detail": why, "dropped": 0}))
                sub.state = "building"
                sub.buffer.clear()
                view.waiting[sub] = "overflow"
        self._ask_snapshot(view, "resync")

    def _ask_snapshot(self, view: BusView, reason: str) -> None:
        view.asked = time.monotonic()

        async def go() -> None:
            with contextlib.suppress(Exception):
                await self.ask(view.market, view.fields, reason)

        asyncio.ensure_future(go())

    async def _upkeep(self) -> None:
        """Owners, demand renewal, and snapshots that did not come."""
        last_demand = 0.0
        while True:
            try:
                await self.refresh()
                now = time.monotonic()
                for bm in self.markets.values():
                    for view in bm.views.values():
                        if view.waiting and now - view.asked > SNAPSHOT_RETRY_S:
                            self._ask_snapshot(view, "resync")
                if now - last_demand > bus.DEMAND_RENEW_S:
                    last_demand = now
                    await self._renew_demand()
            except Exception as exc:  # noqa: BLE001 - Redis away: clients keep what they have; retry
                self.bus_ok = False
                log.warning("bus: %s", _one_line(exc))
            await asyncio.sleep(0.5)

    async def _renew_demand(self) -> None:
        until = time.time() + bus.DEMAND_TTL_S
        pipe = self.redis.pipeline(transaction=False)
        for bm in self.markets.values():
            for view in bm.views.values():
                pipe.hset(bus.demand_key(bm.key), view.key, dumps({"fields": view.fields, "until": until}))
        await pipe.execute()

    # ---- subscriptions (the channel interface live.Connection calls) ------------------------------
    def request_snapshot(self, sub: Subscriber, reason: str) -> None:
        view: BusView = sub.view  # type: ignore[assignment]
        sub.state = "building"
        sub.buffer.clear()
        view.waiting[sub] = reason
        if time.monotonic() - view.asked > 0.2:  # many subscribers asking at once share one snapshot
            self._ask_snapshot(view, reason)

    def remove(self, sub: Subscriber) -> None:
        sub.closed = True
        view: BusView = sub.view  # type: ignore[assignment]
        view.subs.discard(sub)
        view.waiting.pop(sub, None)
        if not view.subs:
            bm = self.markets.get(view.market)
            if bm is not None:
                bm.views.pop(view.key, None)

    async def subscribe(self, conn: Connection, m: dict[str, Any]) -> None:
        sid = subscription_id(conn, m, self.config.max_subscriptions)
        fields = {k: v for k, v in m.items() if k not in ("op", "id") and v is not None}
        for k, v in fields.items():
            if not isinstance(v, (int, float, str)):
                raise BadRequest(f"{k} must be a string or a number")
        if not isinstance(fields.get("symbol"), str):
            raise BadRequest("symbol is required")
        if not self.owners:
            await self.refresh()
        market = self.resolve(fields["symbol"])
        fields["symbol"] = market
        bm = await self.follow(market)
        answer = await self.ask(market, fields, "subscribe")
        if "error" in answer:
            raise BadRequest(str(answer["error"]))
        info = answer["ok"]
        view = bm.views.get(info["view"])
        if view is None:
            view = bm.views[info["view"]] = BusView(info["view"], market, fields)
            view.asked = time.monotonic()
        sub = Subscriber(sid, conn, self, view)  # type: ignore[arg-type]  # the replica is the channel
        sub.state = "building"
        conn.subs[sid] = sub
        view.subs.add(sub)
        view.waiting[sub] = "subscribe"
        conn.send(dumps({"type": "subscribed", "sub": sid, "symbol": info["symbol"], "timeframe": info["timeframe"],
                         "tier": info["tier"], "bins": info["bins"], "columns": info["columns"]}))
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._renew_demand()

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()
        for job, name in ((self._reader, "bus reader"), (self._replies_loop, "bus replies"), (self._upkeep, "bus upkeep")):
            self._tasks.append(asyncio.create_task(self._keep(job), name=name))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="ws heartbeat"))

    async def _keep(self, job: Any) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis restarting: read again from where we were
                self.bus_ok = False
                log.warning("bus: %s", _one_line(exc))
                await asyncio.sleep(0.5)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            beat = dumps({"type": "heartbeat", "time": round(time.time(), 3)})
            for conn in list(self.connections):
                if conn.pending() == 0:
                    conn.send(beat)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()


REPLICA: web.AppKey[ReplicaHub] = web.AppKey("replica")


async def ws_handle(request: web.Request) -> web.StreamResponse:
    if not origin_ok(request):
        return web.Response(status=403, text=dumps({"error": "origin not allowed; start the server with --allow-origin"}),
                            content_type="application/json")
    cfg = request.app[CONFIG]
    hub = request.app[REPLICA]
    ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s * 3, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text=dumps({"error": "this endpoint expects a WebSocket upgrade"}),
                            content_type="application/json")
    batch = request.query.get("batch", "0") in ("1", "true", "yes")
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    conn = Connection(ws, cfg.queue_size, batch=batch, sock=sock)
    hub.connections.add(conn)
    writer = asyncio.create_task(conn.writer(), name="ws writer")
    conn.send(dumps({
        "type": "hello", "protocol": PROTOCOL, "server": f"liqheat {__version__}", "heartbeat_s": cfg.heartbeat_s,
        "markets": [m["key"] for m in hub.market_list()], "timeframes": list(API_TIMEFRAMES),
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
                op = m.get("op")
                if op == "subscribe":
                    await hub.subscribe(conn, m)
                elif op in ("unsubscribe", "resync"):
                    sid = m.get("sub")
                    if not isinstance(sid, str) or sid not in conn.subs:
                        raise BadRequest(f"no subscription {str(sid)[:40]!r} on this connection")
                    sub = conn.subs[sid]
                    if op == "unsubscribe":
                        hub.remove(sub)
                        del conn.subs[sid]
                        conn.send(dumps({"type": "unsubscribed", "sub": sid}))
                    else:
                        hub.request_snapshot(sub, "resync")
                elif op == "ping":
                    conn.send(dumps({k: v for k, v in m.items() if k != "op"} | {"type": "pong"}))
                else:
                    raise BadRequest(f"unknown op {str(op)[:20]!r}; use subscribe, unsubscribe, resync or ping")
            except (BadRequest, ValueError) as exc:
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
            hub.remove(sub)
        conn.subs.clear()
        hub.connections.discard(conn)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
    return ws


async def health(request: web.Request) -> web.Response:
    """This replica, the bus, and every worker with its markets' data health and heartbeat age."""
    hub = request.app[REPLICA]
    try:
        await hub.refresh()
        bus_ok = True
    except Exception:  # noqa: BLE001
        bus_ok = False
    now = time.time()
    workers = [{**{k: v for k, v in w.items() if k != "markets"}, "heartbeat_age_s": round(now - w["heartbeat"], 2),
                "markets": [m["key"] for m in w.get("markets", [])]} for w in hub.workers.values()]
    markets = []
    for m in hub.market_list():
        markets.append({**m, "owner": hub.owners.get(m["key"])})
    orphans = sorted(k for k, wid in hub.owners.items() if wid not in hub.workers)
    ok = bus_ok and bool(markets) and not orphans and all(m.get("state") in ("live", "demo", "replay", "delayed") for m in markets)
    body = {
        "status": "ok" if ok else "degraded", "role": "replica", "version": __version__, "replica": hub.id,
        "uptime_s": round(now - request.app[STARTED_AT], 3), "bus": {"ok": bus_ok},
        "workers": workers, "markets": markets, "unowned": orphans,
        "live": {"connections": len(hub.connections), "views": sum(len(b.views) for b in hub.markets.values()),
                 "forwarded": hub.forwarded, "resyncs": hub.resyncs},
    }
    return web.Response(text=dumps(body), content_type="application/json")


async def symbols(request: web.Request) -> web.Response:
    hub = request.app[REPLICA]
    await hub.refresh()
    known = hub.market_list()
    if not known:
        raise web.HTTPServiceUnavailable(reason="no worker is running yet")
    return await forward(request)


async def forward(request: web.Request) -> web.StreamResponse:
    """REST/UDF: answered by the owner of the market the request names (any worker when it names none)."""
    hub = request.app[REPLICA]
    target = None
    name = request.query.get("symbol")
    if name:
        target = hub.owner(hub.resolve(name))
    if target is None:
        if not hub.workers:
            await hub.refresh()
        alive = sorted(hub.workers.values(), key=lambda w: w["id"])
        target = alive[0] if alive else None
    if target is None:
        raise web.HTTPServiceUnavailable(reason="no worker is running")
    session: aiohttp.ClientSession = request.app[SESSION]
    try:
        async with session.get(target["http"] + request.path_qs) as resp:
            body = await resp.read()
            return web.Response(status=resp.status, body=body, content_type=resp.content_type,
                                headers={k: v for k, v in resp.headers.items() if k in ("Cache-Control", "ETag")})
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise web.HTTPServiceUnavailable(reason=f"the owning worker did not answer ({_one_line(exc)})") from None


SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("forward_session")


def create_replica_app(bus_url: str, config: ServerConfig | None = None) -> web.Application:
    import redis.asyncio as aioredis

    config = config or ServerConfig()
    app = web.Application(middlewares=[cors, errors_as_json], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[STARTED_AT] = time.time()
    redis = aioredis.from_url(bus_url, socket_timeout=5, socket_connect_timeout=5)
    app[REPLICA] = ReplicaHub(redis, config)

    async def run(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await app[REPLICA].start()
        yield
        await app[REPLICA].stop()
        await app[SESSION].close()
        await redis.aclose()

    app.cleanup_ctx.append(run)

    async def close_sockets(app: web.Application) -> None:
        for conn in list(app[REPLICA].connections):
            conn.closed = True
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.on_shutdown.append(close_sockets)
    app.router.add_get("/", index)
    app.router.add_get("/example", example)
    app.router.add_get("/api/v1/ws", ws_handle)
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/api/v1/symbols", symbols)
    app.router.add_get("/api/v1/{tail:.*}", forward)
    app.router.add_get("/udf/{tail:.*}", forward)
    if not assets.script_path().is_file():
        app.router.add_get(f"/static/vendor/{assets.SCRIPT_NAME}", vendor_missing)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app
