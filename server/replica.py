"""``liqheat serve --bus redis://...``: a stateless replica. No feeds, no engines: the WebSocket views come
from the markets' Redis Streams (written once by their owning worker, server/worker.py), REST and UDF
requests are forwarded to the owning worker, the page and static files are served here. Any number of
replicas can stand behind a load balancer; a client whose replica dies reconnects to another and resyncs.

Per view the replica keeps the sequence number of the last log entry it forwarded. An entry that is not
``last + 1`` (the log was trimmed under a slow replica, Redis restarted, the owner restarted with a new
epoch) means something was missed: the view's clients get ``resync`` and wait for a fresh snapshot, which
the replica asks the owner for - the protocol's own recovery, nothing new for clients.

The last snapshot of each followed view stays in a byte-bounded cache with the deltas forwarded since, so
a new subscriber (or a client's resync) starts from them: N clients opening the same chart cost the owner
one request, not N. A gap or a new epoch drops the cached snapshot with everything else.

Client sessions (limits, send queues, the send budget) are server/sessions.py's, as in the one-process server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from engine.service import ByteLRU, bus

from . import __version__
from .app import add_page, cors, errors_as_json, host_allowed
from .budget import MemoryBudget, rss_bytes
from .config import ServerConfig
from .limits import Busy
from .markets import dumps
from .params import BadRequest
from .sessions import Connection, Sessions, Subscriber, one_line, serve_session, subscription_id
from .state import CONFIG, STARTED_AT

log = logging.getLogger("liqheat.replica")

# A snapshot asked for and not seen in the log after this long is asked for again (owner restarting).
SNAPSHOT_RETRY_S = 2.0
REQUEST_TIMEOUT_S = 3.0
# How long a subscription waits for a market's owner during a failover before it is refused.
OWNER_WAIT_S = 20.0
# Snapshots seen in the log, while a request for a new view is out, for views this replica does not follow
# yet: the last few per market, so one that arrives just before the owner's answer is not lost.
UNCLAIMED_MAX = 32
# The header a replica names the client in when it forwards a request (the owner counts work per client).
CLIENT_HEADER = "X-Liqheat-Client"


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
    # The newest snapshot in the log (its body in the hub's byte-bounded cache under this key) and the
    # deltas forwarded since it: a new subscriber starts from them. None: ask the owner.
    cached: tuple[str, str, int, int] | None = None
    tail: list[str] = field(default_factory=list)  # "kind\nbody", as Subscriber.buffer holds them
    tail_bytes: int = 0


@dataclass(eq=False)
class BusMarket:
    key: str
    last_id: str = "0-0"
    epoch: int | None = None
    views: dict[str, BusView] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # view key -> (seq, cache key) of a snapshot seen for a view not followed yet (see UNCLAIMED_MAX)
    unclaimed: dict[str, tuple[int, tuple[str, str, int, int]]] = field(default_factory=dict)


class ReplicaHub(Sessions):
    """The replica's view of the cluster: owners, market logs, the views its clients watch, and its clients'
    sessions (send queues bounded by the budget's share for them, as in the one-process server)."""

    def __init__(self, redis: Any, config: ServerConfig) -> None:
        budget = MemoryBudget(config.memory_budget)
        super().__init__(config, budget.send_queues)
        self.redis = redis
        self.id = f"replica-{uuid.uuid4().hex[:10]}"
        self.workers: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, str] = {}
        self.markets: dict[str, BusMarket] = {}
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self.bus_ok = False
        self.resyncs = 0
        self.forwarded = 0
        # Snapshots by (market, view, epoch, seq), and the deltas after them (all views' tails together at
        # most a quarter of the snapshots' share; past it a view's cache is dropped, not grown).
        self.snapshots: ByteLRU[str] = ByteLRU("snapshots", budget.snapshots)
        self.tail_limit = budget.snapshots // 4
        self.tail_bytes = 0
        self.tail_max = max(8, config.queue_size // 2)  # deltas a new subscriber may be handed at once
        # The owner's answer (view key, labels) per (market, subscribe fields), and asks in flight.
        self.names: ByteLRU[dict[str, Any]] = ByteLRU("view names", max(1 << 20, budget.queries))
        self._naming: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self.snapshot_hits = 0  # subscribers started from a cached snapshot
        self.owner_asks = 0  # requests sent to owners
        # REST/UDF requests being forwarded, per client: bounded like the one-process server's lanes
        self.forwarding: Counter[str] = Counter()
        self.forwarding_total = 0
        self.forward_refused = 0

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

    async def resolve_waiting(self, name: str) -> str:
        """``resolve``, but while the cluster lists no market at all (Redis just restarted empty, or the
        workers are starting) it waits up to OWNER_WAIT_S for the workers' next heartbeat to register them
        instead of refusing: a chart opened in that second gets its view, not "unknown symbol". A name
        the registered markets do not have is refused at once."""
        deadline = time.monotonic() + OWNER_WAIT_S
        if not self.owners:
            await self.refresh()
        while True:
            try:
                return self.resolve(name)
            except BadRequest:
                if self.market_list() or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.25)
            await self.refresh()

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
                    self.owner_asks += 1
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
        async for data in bus.messages(self.redis, bus.reply_channel(self.id)):
            answer = json.loads(data)
            fut = self._replies.get(answer.get("rid"))
            if fut is not None and not fut.done():
                fut.set_result(answer)

    async def view_info(self, market: str, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(the owner's name and labels for the view these fields ask for, whether a request for it went to
        the owner just now - its answer puts a snapshot in the log). Known names are not asked again, and
        clients asking for the same new view at once share one request."""
        key = (market, bus.view_key(fields))
        info = self.names.get(key)
        if info is not None:
            return info, False
        task = self._naming.get(key)
        if task is None:
            async def name() -> dict[str, Any]:
                try:
                    answer = await self.ask(market, fields, "subscribe")
                    if "error" in answer:
                        raise BadRequest(str(answer["error"]))
                    named: dict[str, Any] = answer["ok"]
                    self.names.put(key, named, size=len(key[1]) + len(dumps(named)) + 200)
                    return named
                finally:
                    self._naming.pop(key, None)

            task = self._naming[key] = asyncio.ensure_future(name())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen even if all waiters left
        return await asyncio.shield(task), True

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
            bm.unclaimed.clear()
            for view in bm.views.values():
                self._resync(view, "owner restarted")
        bm.epoch = epoch
        vkey = raw[b"v"].decode()
        kind, seq, body = raw[b"t"].decode(), int(raw[b"s"]), raw[b"b"].decode()
        view = bm.views.get(vkey)
        if view is None:
            if kind == "snapshot" and any(k[0] == bm.key for k in self._naming):
                ckey = (bm.key, vkey, epoch, seq)
                if self.snapshots.put(ckey, body, size=len(body)):
                    bm.unclaimed.pop(vkey, None)
                    bm.unclaimed[vkey] = (seq, ckey)
                    while len(bm.unclaimed) > UNCLAIMED_MAX:
                        self.snapshots.pop(bm.unclaimed.pop(next(iter(bm.unclaimed)))[1])
            elif vkey in bm.unclaimed:  # a delta we do not keep: that snapshot would be incomplete now
                self.snapshots.pop(bm.unclaimed.pop(vkey)[1])
            return
        if kind == "snapshot":
            reason = raw.get(b"r", b"").decode()
            view.last_seq = seq
            self._cache(view, (bm.key, vkey, epoch, seq), body)
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
        self._extend(view, kind, body)
        for sub in view.subs:
            if sub.state != "building":
                sub.conn.offer(sub, kind, body)

    # ---- the cached snapshot of each view ---------------------------------------------------------
    def _cache(self, view: BusView, key: tuple[str, str, int, int], body: str) -> None:
        self._uncache(view)
        if self.snapshots.put(key, body, size=len(body)):
            view.cached = key

    def _uncache(self, view: BusView) -> None:
        if view.cached is not None:
            self.snapshots.pop(view.cached)
            view.cached = None
        self.tail_bytes -= view.tail_bytes
        view.tail, view.tail_bytes = [], 0

    def _extend(self, view: BusView, kind: str, body: str) -> None:
        """A delta after the cached snapshot; past the view's or the replica's bound the cache is dropped
        (the next subscriber asks the owner for a new snapshot)."""
        if view.cached is None:
            return
        n = len(body) + len(kind) + 1
        if len(view.tail) >= self.tail_max or self.tail_bytes + n > self.tail_limit:
            self._uncache(view)
            return
        view.tail.append(kind + "\n" + body)
        view.tail_bytes += n
        self.tail_bytes += n

    def _from_cache(self, sub: Subscriber, view: BusView, reason: str) -> bool:
        """Start ``sub`` from the view's cached snapshot and the deltas since; False if there is none."""
        body = self.snapshots.get(view.cached) if view.cached is not None else None
        if body is None or view.last_seq is None:
            if view.cached is not None:  # evicted meanwhile
                self._uncache(view)
            return False
        self.snapshot_hits += 1
        view.waiting.pop(sub, None)
        sub.state = "building"
        sub.buffer = list(view.tail)  # delivered after the snapshot, in order
        sub.buffer_bytes = 0
        sub.conn.deliver_snapshot(sub, reason, body)
        return True

    def _resync(self, view: BusView, why: str) -> None:
        self.resyncs += 1
        view.last_seq = None
        self._uncache(view)
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
                log.warning("bus: %s", one_line(exc))
            await asyncio.sleep(0.5)

    async def _renew_demand(self) -> None:
        until = time.time() + bus.DEMAND_TTL_S
        pipe = self.redis.pipeline(transaction=False)
        for bm in self.markets.values():
            for view in bm.views.values():
                pipe.hset(bus.demand_key(bm.key), view.key, dumps({"fields": view.fields, "until": until}))
        await pipe.execute()

    # ---- subscriptions (the channel interface sessions.Connection calls) --------------------------
    def request_snapshot(self, sub: Subscriber, reason: str) -> None:
        self._start(sub, sub.view, reason)

    def _start(self, sub: Subscriber, view: BusView, reason: str, asked: bool = False) -> None:
        """A snapshot for ``sub``: from the cache, else the one on its way, else one asked for now."""
        if self._from_cache(sub, view, reason):
            return
        sub.state = "building"
        sub.buffer.clear()
        on_its_way = bool(view.waiting) and time.monotonic() - view.asked < SNAPSHOT_RETRY_S
        view.waiting[sub] = reason
        if asked:  # this subscription's own request to the owner brings one
            view.asked = time.monotonic()
        elif not on_its_way:
            self._ask_snapshot(view, reason)

    def remove(self, sub: Subscriber) -> None:
        sub.closed = True
        view: BusView = sub.view
        view.subs.discard(sub)
        view.waiting.pop(sub, None)
        if not view.subs:
            bm = self.markets.get(view.market)
            if bm is not None and bm.views.get(view.key) is view:
                del bm.views[view.key]
            self._uncache(view)  # no longer followed: what it holds would go stale

    async def subscribe(self, conn: Connection, m: dict[str, Any]) -> None:
        sid = subscription_id(conn, m, self.config.max_subscriptions)
        fields = {k: v for k, v in m.items() if k not in ("op", "id") and v is not None}
        for k, v in fields.items():
            if not isinstance(v, (int, float, str)):
                raise BadRequest(f"{k} must be a string or a number")
        if not isinstance(fields.get("symbol"), str):
            raise BadRequest("symbol is required")
        market = await self.resolve_waiting(fields["symbol"])
        fields["symbol"] = market
        bm = await self.follow(market)
        info, asked = await self.view_info(market, fields)
        if conn.closed or sid in conn.subs:
            return  # the client left (or reused the id) while the owner answered
        view = bm.views.get(info["view"])
        new_view = view is None
        if view is None:
            view = bm.views[info["view"]] = BusView(info["view"], market, fields)
            seen = bm.unclaimed.pop(view.key, None)
            if seen is not None:  # its snapshot came before the owner's answer
                view.last_seq, view.cached = seen
        sub = Subscriber(sid, conn, self, view)
        conn.subs[sid] = sub
        view.subs.add(sub)
        conn.send(dumps({"type": "subscribed", "sub": sid, "symbol": info["symbol"], "timeframe": info["timeframe"],
                         "tier": info["tier"], "bins": info["bins"], "columns": info["columns"]}))
        self._start(sub, view, "subscribe", asked)
        self._wake.set()
        if new_view:
            with contextlib.suppress(Exception):
                await self._renew_demand()

    # ---- REST/UDF forwarding: bounded like the one-process server's lanes -------------------------
    @contextlib.contextmanager
    def forwarding_slot(self, client: str) -> Any:
        cfg = self.config
        if self.forwarding[client] >= cfg.light_per_client:
            self.forward_refused += 1
            raise Busy(f"too many requests from this client at once ({cfg.light_per_client}); retry later", 429, 1)
        if self.forwarding_total >= cfg.light_waiting:
            self.forward_refused += 1
            raise Busy(f"the server is busy with {self.forwarding_total} requests; retry later", 503, 2)
        self.forwarding[client] += 1
        self.forwarding_total += 1
        try:
            yield
        finally:
            self.forwarding_total -= 1
            self.forwarding[client] -= 1
            if self.forwarding[client] <= 0:
                del self.forwarding[client]

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()
        for job, name in ((self._reader, "bus reader"), (self._replies_loop, "bus replies"), (self._upkeep, "bus upkeep")):
            self._tasks.append(asyncio.create_task(bus.keep_going(job, log, self._bus_failed), name=name))
        self._tasks.append(asyncio.create_task(self.heartbeats(), name="ws heartbeat"))

    def _bus_failed(self) -> None:
        self.bus_ok = False


REPLICA: web.AppKey[ReplicaHub] = web.AppKey("replica")


async def ws_handle(request: web.Request) -> web.StreamResponse:
    hub = request.app[REPLICA]
    return await serve_session(request, hub, lambda: [m["key"] for m in hub.market_list()], hub.subscribe)


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
        "live": {"connections": len(hub.connections), "max_clients": hub.config.max_clients,
                 "views": sum(len(b.views) for b in hub.markets.values()), "forwarded": hub.forwarded,
                 "resyncs": hub.resyncs, "snapshot_hits": hub.snapshot_hits, "owner_asks": hub.owner_asks,
                 "rest_in_flight": hub.forwarding_total, "rest_refused": hub.forward_refused},
        # the replica's own accounting against its budget (the shares of server/budget.py it uses)
        "memory": {"budget_bytes": hub.config.memory_budget, "send_queue_bytes": hub.queued_bytes,
                   "send_queue_limit": hub.max_bytes, "tail_bytes": hub.tail_bytes,
                   "caches": {"snapshots": hub.snapshots.stats(), "view names": hub.names.stats()},
                   "rss_bytes": rss_bytes()},
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
    client = request.remote or "?"
    # the owner admits work per client (429 for one client's flood, 503 when it is full): it is told whom
    # for, else every client of this replica would share one share
    headers = {CLIENT_HEADER: client}
    if "If-None-Match" in request.headers:
        headers["If-None-Match"] = request.headers["If-None-Match"]
    with hub.forwarding_slot(client):
        try:
            async with session.get(target["http"] + request.path_qs, headers=headers) as resp:
                body = await resp.read()
                return web.Response(status=resp.status, body=body, content_type=resp.content_type,
                                    headers={k: v for k, v in resp.headers.items() if k in _PASSED_ON})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise web.HTTPServiceUnavailable(reason=f"the owning worker did not answer ({one_line(exc)})") from None


_PASSED_ON = ("Cache-Control", "ETag", "Retry-After")


SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("forward_session")


def create_replica_app(bus_url: str, config: ServerConfig | None = None) -> web.Application:
    import redis.asyncio as aioredis

    config = config or ServerConfig()
    app = web.Application(middlewares=[host_allowed, cors, errors_as_json], client_max_size=64 * 1024,
                          handler_args={"keepalive_timeout": config.request_timeout_s,
                                        "lingering_time": min(config.request_timeout_s, 5.0)})
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
        await app[REPLICA].close_all()

    app.on_shutdown.append(close_sockets)
    app.router.add_get("/api/v1/ws", ws_handle)
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/api/v1/symbols", symbols)
    app.router.add_get("/api/v1/{tail:.*}", forward)
    app.router.add_get("/udf/{tail:.*}", forward)
    add_page(app)
    return app
