"""Live fan-out: one consumer per market turns engine events into view deltas, computed once per view and
handed to every subscriber's bounded send queue. The fan-out never awaits a client: a full queue drops
that subscription's deltas and schedules a resync (a fresh snapshot) once the client catches up.

See server/PROTOCOL.md for what goes over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from engine.service import MarketService, ServiceEvent, bucket_start

from .config import ServerConfig
from .markets import Markets, dumps
from .views import (
    ViewSpec,
    last_candles,
    last_columns,
    live_column,
    map_payload,
    map_span,
    realised_since,
    snapshot_body,
)

log = logging.getLogger("liqheat.server.live")

# Deltas buffered for a subscription while its snapshot is being built; more than this and it resyncs.
SNAPSHOT_BUFFER = 512
# Messages per frame at most, for connections that asked for batched frames.
BATCH_MAX = 64
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


@dataclass(eq=False)
class Subscriber:
    id: str
    conn: Connection
    channel: MarketChannel
    view: View
    seq: int = 0
    # live: deltas flow | building: snapshot being computed, deltas buffered | resync: waiting for room
    state: str = "building"
    buffer: list[str] = field(default_factory=list)
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
    """One WebSocket: a send queue with a bound on *deltas* (control messages always go through), and
    the writer task that drains it."""

    def __init__(self, ws: web.WebSocketResponse, queue_size: int, batch: bool = False, sock: Any = None) -> None:
        self.ws = ws
        self.sock = sock  # the connection's socket, to cork bursts (None: write frames as they come)
        self.queue_size = queue_size
        # batch: everything waiting goes out as one frame holding a JSON array (fewer frames, wake-ups
        # and syscalls on both ends when messages come in bursts); the client asked for it (?batch=1).
        self.batch = batch
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self.subs: dict[str, Subscriber] = {}
        self.need_resync: list[Subscriber] = []
        self.sent = 0
        self.closed = False

    def _cork(self, on: bool) -> bool:
        """TCP_CORK on/off (Linux); False where the socket or the option is not available."""
        if self.sock is None or _TCP_CORK is None:
            return False
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
        except OSError:
            return False
        return True

    def send(self, text: str) -> None:
        if self.closed:
            return
        self._queue.append(text)
        self._ready.set()

    def pending(self) -> int:
        return len(self._queue)

    def offer(self, sub: Subscriber, kind: str, body: str) -> None:
        """A delta for ``sub``: queued, buffered (snapshot in progress) or dropped (slow client)."""
        if sub.closed or self.closed:
            return
        if sub.state == "building":
            if len(sub.buffer) >= SNAPSHOT_BUFFER:
                sub.buffer.clear()
                self._overflow(sub)
            else:
                sub.buffer.append(kind + "\n" + body)
            return
        if sub.state == "resync":
            sub.seq += 1  # the sequence keeps counting, so a gap is visible to anyone who looks
            sub.dropped += 1
            return
        if len(self._queue) >= self.queue_size:
            sub.seq += 1
            sub.dropped += 1
            self._overflow(sub)
            return
        self.send(sub.envelope(kind, body))

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
        self.send(head + "," + body[1:])
        buffered, sub.buffer = sub.buffer, []
        sub.state = "live"
        for item in buffered:
            kind, _, payload = item.partition("\n")
            self.send(sub.envelope(kind, payload))

    async def writer(self) -> None:
        try:
            while not self.closed:
                if not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                if self.batch:
                    n = min(len(self._queue), BATCH_MAX)
                    items = [self._queue.popleft() for _ in range(n)]
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
                            await self.ws.send_str(self._queue.popleft())
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


@dataclass(eq=False)
class View:
    """Subscribers sharing one (market, timeframe, tier, bins, columns, range): deltas are computed once."""

    spec: ViewSpec  # with a fixed price range once the first snapshot chose one
    auto_range: bool
    subscribers: set[Subscriber] = field(default_factory=set)
    last_bar: int = 0  # newest candle time already sent
    last_column: int = 0
    last_map: float = 0.0
    snapshot_task: asyncio.Future[tuple[ViewSpec, str, int, int]] | None = None
    snapshot_gen: int = -1


class MarketChannel:
    """Consumes one market's engine events and fans view deltas out to its subscribers."""

    def __init__(self, svc: MarketService, markets: Markets, config: ServerConfig) -> None:
        self.svc = svc
        self.markets = markets
        self.config = config
        self.views: dict[tuple[Any, ...], View] = {}
        self.events_seen = 0
        self.service_dropped = 0
        self.last_event_time = 0.0
        # recent (view computation, fan-out) durations in ms, for /api/v1/health and the benchmarks
        self.compute_ms: deque[float] = deque(maxlen=512)
        self.fanout_ms: deque[float] = deque(maxlen=512)

    # ---- views and subscribers ----------------------------------------------------------------------
    def view_for(self, spec: ViewSpec) -> View:
        auto = spec.price_low is None and spec.price_high is None
        key = (spec.timeframe, spec.tier, spec.bins, spec.columns, spec.log, None if auto else (spec.price_low, spec.price_high))
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = View(spec, auto)
        return view

    def add(self, sub: Subscriber) -> None:
        sub.view.subscribers.add(sub)

    def remove(self, sub: Subscriber) -> None:
        sub.closed = True
        view = sub.view
        view.subscribers.discard(sub)
        if not view.subscribers:
            for key, v in list(self.views.items()):
                if v is view:
                    del self.views[key]

    def request_snapshot(self, sub: Subscriber, reason: str) -> None:
        """Build (or share) the view's snapshot and deliver it to ``sub``; deltas buffer meanwhile."""
        sub.state = "building"
        sub.buffer.clear()

        def done(t: asyncio.Future[tuple[ViewSpec, str, int, int]]) -> None:
            if sub.closed or t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                sub.conn.send(dumps({"type": "error", "sub": sub.id, "error": _one_line(exc)}))
                sub.state = "live"
                return
            sub.conn.deliver_snapshot(sub, reason, t.result()[1])

        self._snapshot(sub.view).add_done_callback(done)

    def _snapshot(self, view: View) -> asyncio.Future[tuple[ViewSpec, str, int, int]]:
        """One computation per view and market generation, shared by every subscriber asking for it."""
        gen = self.markets.gen(self.svc.market.key)
        task = view.snapshot_task
        if task is not None:
            if not task.done():
                return task
            if view.snapshot_gen == gen and not task.cancelled() and task.exception() is None:
                return task
        spec = view.spec

        def build() -> tuple[ViewSpec, str, int, int]:
            body = snapshot_body(self.svc, spec)
            heat = body["heatmap"]
            fixed = replace(spec, price_low=heat["edges"][0], price_high=heat["edges"][-1])
            last_bar = body["candles"]["t"][-1] if body["candles"]["t"] else 0
            last_col = heat["times"][-1] if heat["times"] else 0
            return fixed, dumps(body), last_bar, last_col

        task = asyncio.ensure_future(self.markets.run(build))
        view.snapshot_task, view.snapshot_gen = task, gen

        def fix_range(t: asyncio.Future[tuple[ViewSpec, str, int, int]]) -> None:
            # A snapshot overtaken by a range change must not bring its old edges back.
            if view.snapshot_task is t and not t.cancelled() and t.exception() is None:
                # deltas use the snapshot's edges from now on, and start from its newest candle
                view.spec, _, last_bar, last_col = t.result()
                view.last_bar = max(view.last_bar, last_bar)
                view.last_column = max(view.last_column, last_col)

        task.add_done_callback(fix_range)
        return task

    # ---- the event loop of one market -------------------------------------------------------------
    async def run(self) -> None:
        sub = self.svc.subscribe(maxsize=4096)
        pending: deque[ServiceEvent] = deque()
        wake = asyncio.Event()

        async def pump() -> None:
            async for event in sub:
                pending.append(event)
                wake.set()

        pump_task = asyncio.create_task(pump(), name=f"events {self.svc.market.key}")
        try:
            while True:
                await wake.wait()
                wake.clear()
                # Coalesce whatever piled up while we were computing: one recompute per burst.
                batch = list(pending)
                pending.clear()
                lost = sub.dropped - self.service_dropped
                self.service_dropped = sub.dropped
                if batch or lost:
                    await self.handle(batch, lost)
        finally:
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump_task
            sub.close()

    async def handle(self, batch: list[ServiceEvent], lost: int = 0) -> None:
        self.events_seen += len(batch)
        self.last_event_time = time.time()
        kinds = {e.kind for e in batch}
        if kinds & {"bar", "book", "realised"}:
            self.markets.bump(self.svc.market.key)
        if lost:
            # We fell behind the engine itself: every view starts again from a snapshot.
            for view in list(self.views.values()):
                for s in list(view.subscribers):
                    s.conn.send(dumps({"type": "resync", "sub": s.id, "reason": "overflow", "dropped": lost}))
                    self.request_snapshot(s, "overflow")
            return
        # Market-wide messages: serialised once, sent to every subscription of this market.
        common: list[tuple[str, str]] = []
        for e in batch:
            if e.kind in ("liquidation", "health", "alert"):
                common.append((e.kind, dumps(e.data)))
        zones = [e for e in batch if e.kind == "zones"]
        if zones:
            common.append(("zones", dumps(zones[-1].data)))
        # News first: events that need no computation go out before the numpy work for the views.
        if common:
            for view in list(self.views.values()):
                for s in list(view.subscribers):
                    for kind, body in common:
                        s.conn.offer(s, kind, body)
        realised_times = [int(e.data["time"]) for e in batch if e.kind == "realised"]
        changed = bool(kinds & {"bar", "book"})
        views = [v for v in self.views.values() if v.subscribers and v.snapshot_task is not None and v.snapshot_task.done()]
        if not views or not (changed or realised_times):
            return
        if common:
            # Let the writers send the news first (one loop pass: each drains its queue without waiting),
            # then start the numpy work. Run alongside a fan-out to many sockets, the pool thread waits a
            # GIL switch interval (5 ms) at every handoff: ~2 ms of work took 40-70 ms with 1,000 clients
            # (compute_ms in /api/v1/health); after the fan-out it has the interpreter to itself.
            await asyncio.sleep(0)
        now = time.monotonic()
        want_map = {id(v): changed and now - v.last_map >= self.config.map_interval_s for v in views}
        specs = [(v.spec, v.last_bar, v.last_column, want_map[id(v)], v.auto_range) for v in views]
        t0 = time.perf_counter()
        try:
            results = await self.markets.run(_view_deltas, self.svc, specs, changed, realised_times)
        except Exception as exc:  # a view that cannot be computed must not end the market's stream
            log.warning("%s: view deltas failed: %s", self.svc.market.key, exc)
            return
        t1 = time.perf_counter()
        self.compute_ms.append((t1 - t0) * 1000)
        for view, res in zip(views, results, strict=True):
            if res is None:
                continue
            msgs, last_bar, last_column, out_of_range = res
            if out_of_range:
                # Price left the heatmap's rows: new edges, so every subscriber starts from a snapshot.
                view.spec = replace(view.spec, price_low=None, price_high=None)
                view.snapshot_task = None
                for s in list(view.subscribers):
                    self.request_snapshot(s, "range")
                continue
            view.last_bar, view.last_column = max(view.last_bar, last_bar), max(view.last_column, last_column)
            if want_map[id(view)]:
                view.last_map = now
            for s in list(view.subscribers):
                for kind, body in msgs:
                    s.conn.offer(s, kind, body)
        self.fanout_ms.append((time.perf_counter() - t1) * 1000)

    def stats(self) -> dict[str, Any]:
        def p(values: deque[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return {
            "views": len(self.views),
            "subscriptions": sum(len(v.subscribers) for v in self.views.values()),
            "events": self.events_seen,
            "compute_ms_p50": p(self.compute_ms, 0.5), "compute_ms_p99": p(self.compute_ms, 0.99),
            "fanout_ms_p50": p(self.fanout_ms, 0.5), "fanout_ms_p99": p(self.fanout_ms, 0.99),
        }


def _view_deltas(
    svc: MarketService,
    specs: list[tuple[ViewSpec, int, int, bool, bool]],
    changed: bool,
    realised_times: list[int],
) -> list[tuple[list[tuple[str, str]], int, int, bool] | None]:
    """In the pool: the deltas of each view for one batch of events (shared work computed once)."""
    price = svc.last_price
    out: list[tuple[list[tuple[str, str]], int, int, bool] | None] = []
    bars_by_tf: dict[str, list[dict[str, Any]]] = {}
    maps: dict[tuple[int, float, bool], str] = {}
    realised_by_tf: dict[str, list[dict[str, Any]]] = {}
    for spec, last_bar, last_column, want_map, auto in specs:
        msgs: list[tuple[str, str]] = []
        lo, hi = spec.price_low, spec.price_high
        if auto and lo is not None and hi is not None and changed:
            margin = (hi / lo) ** 0.08  # leave the range when price is within 8% (in log terms) of an edge
            if not (lo * margin <= price <= hi / margin):
                out.append(([], last_bar, last_column, True))
                continue
        new_bar, new_col = last_bar, last_column
        if changed:
            if spec.timeframe not in bars_by_tf:
                bars_by_tf[spec.timeframe] = last_candles(svc, spec.timeframe, 0)
            for bar in bars_by_tf[spec.timeframe]:
                if bar["time"] >= last_bar or not bar["closed"]:
                    msgs.append(("bar", dumps(bar)))
                    new_bar = max(new_bar, bar["time"])
            newest = bars_by_tf[spec.timeframe][-1]["time"] if bars_by_tf[spec.timeframe] else 0
            if newest > last_column or lo is None:
                # A candle closed since the last column: its final column comes from the service's exact
                # (cached batch) path; this happens once per candle.
                cols = [c for c in last_columns(svc, spec, 0) if c["time"] >= last_column]
            else:
                cols = [live_column(svc, spec, newest)]  # the forming candle: the live book, cheap
            for col in cols:
                msgs.append(("column", dumps(col)))
                new_col = max(new_col, col["time"])
            if want_map and lo is not None and hi is not None:
                mkey = (spec.bins, map_span(price, lo, hi), spec.log)
                if mkey not in maps:
                    maps[mkey] = dumps(map_payload(svc.liquidation_map(bins=mkey[0], span=mkey[1], log=mkey[2])))
                msgs.append(("map", maps[mkey]))
        if realised_times:
            if spec.timeframe not in realised_by_tf:
                since = min(bucket_start(t, spec.timeframe) for t in realised_times)
                realised_by_tf[spec.timeframe] = realised_since(svc, spec.timeframe, since)
            for row in realised_by_tf[spec.timeframe]:
                msgs.append(("realised", dumps(row)))
        out.append((msgs, new_bar, new_col, False))
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class LiveHub:
    """All market channels and open connections of the app."""

    def __init__(self, markets: Markets, config: ServerConfig) -> None:
        self.markets = markets
        self.config = config
        self.channels: dict[str, MarketChannel] = {}
        self.connections: set[Connection] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def channel(self, svc: MarketService) -> MarketChannel:
        ch = self.channels.get(svc.market.key)
        if ch is None:
            ch = self.channels[svc.market.key] = MarketChannel(svc, self.markets, self.config)
        return ch

    async def start(self) -> None:
        for svc in self.markets.services():
            ch = self.channel(svc)
            self._tasks.append(asyncio.create_task(self._keep(ch), name=f"fan-out {svc.market.key}"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="ws heartbeat"))

    async def _keep(self, ch: MarketChannel) -> None:
        while True:
            try:
                await ch.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep streaming; subscribers resync from fresh snapshots
                log.warning("%s: fan-out failed, restarting: %s", ch.svc.market.key, exc)
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            beat = dumps({"type": "heartbeat", "time": round(time.time(), 3)})
            for conn in list(self.connections):
                if conn.pending() == 0:  # a busy connection already shows it is alive
                    conn.send(beat)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
