"""Live fan-out: one consumer per market turns engine events into view deltas, computed once per view and
handed to every subscriber's bounded send queue. The fan-out never awaits a client: a full queue drops
that subscription's deltas and schedules a resync (a fresh snapshot) once the client catches up.

See server/PROTOCOL.md for what goes over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from engine.service import ByteLRU, MarketService, ServiceEvent, bucket_start

from .budget import BYTES_PER_CELL_TIER
from .config import ServerConfig
from .limits import HEAVY_CELLS, Busy
from .markets import Markets, dumps

# Subscriber and Connection (the bounded send queue) live in server/sessions.py, shared with the cluster
# replica; the redundant aliases keep them importable from here.
from .sessions import SNAPSHOT_BUFFER as SNAPSHOT_BUFFER
from .sessions import Connection as Connection
from .sessions import Sessions, Subscriber
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

_VIEW_IDS = itertools.count(1)


@dataclass(eq=False)
class View:
    """Subscribers sharing one (market, timeframe, tier, bins, columns, range): deltas are computed once."""

    spec: ViewSpec  # with a fixed price range once the first snapshot chose one
    auto_range: bool
    subscribers: set[Subscriber] = field(default_factory=set)
    last_bar: int = 0  # newest candle time already sent
    last_column: int = 0
    last_map: float = 0.0
    # the snapshot being built, or the last one built (its body moves to the hub's byte-bounded cache
    # once delivered, so a view never pins megabytes of JSON by itself)
    snapshot_task: asyncio.Future[tuple[ViewSpec, str | None, int, int]] | None = None
    snapshot_gen: int = -1
    uid: int = field(default_factory=lambda: next(_VIEW_IDS))


class MarketChannel:
    """Consumes one market's engine events and fans view deltas out to its subscribers."""

    def __init__(self, svc: MarketService, markets: Markets, config: ServerConfig,
                 snapshots: ByteLRU[str] | None = None) -> None:
        self.svc = svc
        self.markets = markets
        self.config = config
        self.snapshots: ByteLRU[str] = snapshots if snapshots is not None else ByteLRU("snapshots", 64 * 2**20)
        self.views: dict[tuple[Any, ...], View] = {}
        self.events_seen = 0
        self.service_dropped = 0
        self.last_event_time = 0.0
        # recent (view computation, fan-out) durations in ms, for /api/v1/health and the benchmarks
        self.compute_ms: deque[float] = deque(maxlen=512)  # page-sized views
        self.compute_heavy_ms: deque[float] = deque(maxlen=512)  # batch-sized views (after the others)
        self.fanout_ms: deque[float] = deque(maxlen=512)
        self.received_at = 0.0  # wall time the oldest event of the current batch arrived

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

        def done(t: asyncio.Future[tuple[ViewSpec, str | None, int, int]]) -> None:
            if t.cancelled():
                return
            exc = t.exception()  # retrieved even for a subscriber gone meanwhile (else asyncio logs it)
            if sub.closed:
                return
            if exc is not None:
                err: dict[str, Any] = {"type": "error", "sub": sub.id, "error": _one_line(exc)}
                if isinstance(exc, Busy):  # no snapshot now: deltas stop until the client asks to resync
                    err["retry_after"] = exc.retry_after
                    sub.state = "resync"
                else:
                    sub.state = "live"
                sub.conn.send(dumps(err))
                return
            sub.conn.deliver_snapshot(sub, reason, t.result()[1])

        try:
            fut = self._snapshot(sub.view, sub.conn.client)
        except Busy as exc:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            fut = failed
        fut.add_done_callback(done)

    def _snapshot(self, view: View, client: str = "") -> asyncio.Future[tuple[ViewSpec, str | None, int, int]]:
        """One computation per view and market generation, shared by every subscriber asking for it.
        A default-sized view is light work; a batch-sized one queues in the heavy lane, charged to the
        client that asked first (server.limits)."""
        gen = self.markets.gen(self.svc.market.key)
        task = view.snapshot_task
        if task is not None:
            if not task.done():
                return task
            if view.snapshot_gen == gen and not task.cancelled() and task.exception() is None:
                fixed, body, last_bar, last_col = task.result()
                body = body or self.snapshots.get((view.uid, gen))
                if body is not None:
                    ready: asyncio.Future[tuple[ViewSpec, str | None, int, int]] = asyncio.get_running_loop().create_future()
                    ready.set_result((fixed, body, last_bar, last_col))
                    return ready
        spec = view.spec
        cells = spec.bins * spec.columns
        lane = self.markets.heavy if cells > HEAVY_CELLS else self.markets.light
        cost = cells * len(self.svc.params.ladder.leverage) * BYTES_PER_CELL_TIER

        def build() -> tuple[ViewSpec, str, int, int]:
            body = snapshot_body(self.svc, spec, keep=cells <= HEAVY_CELLS)  # batch-sized: not kept in the engine
            heat = body["heatmap"]
            fixed = replace(spec, price_low=heat["edges"][0], price_high=heat["edges"][-1])
            last_bar = body["candles"]["t"][-1] if body["candles"]["t"] else 0
            last_col = heat["times"][-1] if heat["times"] else 0
            return fixed, dumps(body), last_bar, last_col

        lane.admit(client, cost)  # Busy now rather than after queueing
        task: asyncio.Future[tuple[ViewSpec, str | None, int, int]] = asyncio.ensure_future(
            lane.run(client, build, cost_bytes=cost))
        view.snapshot_task, view.snapshot_gen = task, gen

        def fix_range(t: asyncio.Future[tuple[ViewSpec, str | None, int, int]]) -> None:
            # A snapshot overtaken by a range change must not bring its old edges back.
            failed = t.cancelled() or t.exception() is not None
            if view.snapshot_task is t and not failed:
                # deltas use the snapshot's edges from now on, and start from its newest candle
                view.spec, body, last_bar, last_col = t.result()
                view.last_bar = max(view.last_bar, last_bar)
                view.last_column = max(view.last_column, last_col)
                if body is not None:
                    self.snapshots.put((view.uid, gen), body)
                # once every subscriber waiting now has it (their callbacks run before this one), the
                # view keeps only the figures; later subscribers find the body in the bounded cache
                asyncio.get_running_loop().call_soon(release, t, (view.spec, None, last_bar, last_col))

        def release(t: asyncio.Future[Any], light: tuple[ViewSpec, None, int, int]) -> None:
            if view.snapshot_task is t:
                done: asyncio.Future[tuple[ViewSpec, str | None, int, int]] = asyncio.get_running_loop().create_future()
                done.set_result(light)
                view.snapshot_task = done

        task.add_done_callback(fix_range)
        return task

    # ---- the event loop of one market -------------------------------------------------------------
    async def run(self) -> None:
        sub = self.svc.subscribe(maxsize=4096)
        pending: deque[ServiceEvent] = deque()
        wake = asyncio.Event()

        async def pump() -> None:
            async for event in sub:
                if not pending:
                    self.received_at = time.time()
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
        if kinds & {"bar", "book", "realised", "history"}:
            self.markets.bump(self.svc.market.key)
        if lost or "history" in kinds:
            # We fell behind the engine itself, or the rest of its history came in (backfill): every view
            # starts again from a snapshot.
            reason = "overflow" if lost else "history"
            for view in list(self.views.values()):
                for s in list(view.subscribers):
                    s.conn.send(dumps({"type": "resync", "sub": s.id, "reason": reason, "dropped": lost}))
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
        views = [v for v in self.views.values() if v.subscribers and _built(v)]
        if not views or not (changed or realised_times):
            return
        if common:
            # Let the writers send the news first (one loop pass: each drains its queue without waiting),
            # then start the numpy work. Run alongside a fan-out to many sockets, the pool thread waits a
            # GIL switch interval (5 ms) at every handoff: ~2 ms of work took 40-70 ms with 1,000 clients
            # (compute_ms in /api/v1/health); after the fan-out it has the interpreter to itself.
            await asyncio.sleep(0)
        # Page-sized views first, computed and sent before any batch-sized one (a 1000 x 1000 view a
        # client keeps open costs several times a page's view per bar): the pages' bars never wait
        # for it. Each group is one computation in the live pool (shared work computed once in it).
        now = time.monotonic()
        light = [v for v in views if v.spec.bins * v.spec.columns <= HEAVY_CELLS]
        heavy = [v for v in views if v.spec.bins * v.spec.columns > HEAVY_CELLS]
        if light:
            await self._deltas(light, self.compute_ms, now, changed, realised_times)
        if heavy:
            if light:
                await asyncio.sleep(0)  # the pages' writers send first (as for the news above)
            await self._deltas(heavy, self.compute_heavy_ms, now, changed, realised_times)

    async def _deltas(self, views: list[View], timings: deque[float], now: float, changed: bool,
                      realised_times: list[int]) -> None:
        """Compute the deltas of ``views`` in the live pool and offer them to their subscribers."""
        want_map = {id(v): changed and now - v.last_map >= self.config.map_interval_s for v in views}
        specs = [(v.spec, v.last_bar, v.last_column, want_map[id(v)], v.auto_range) for v in views]
        t0 = time.perf_counter()
        try:
            results = await self.markets.run(_view_deltas, self.svc, specs, changed, realised_times,
                                             int(self.received_at * 1000))
        except Exception as exc:  # a view that cannot be computed must not end the market's stream
            log.warning("%s: view deltas failed: %s", self.svc.market.key, exc)
            return
        t1 = time.perf_counter()
        timings.append((t1 - t0) * 1000)
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
            "compute_heavy_ms_p99": p(self.compute_heavy_ms, 0.99),
            "fanout_ms_p50": p(self.fanout_ms, 0.5), "fanout_ms_p99": p(self.fanout_ms, 0.99),
        }


def _built(view: View) -> bool:
    """The view has a snapshot (deltas make sense): not still building, not refused (busy) or failed."""
    t = view.snapshot_task
    return t is not None and t.done() and not t.cancelled() and t.exception() is None


def changed_book(kinds: set[str]) -> bool:
    return bool(kinds & {"bar", "book", "zones"})


def _view_deltas(
    svc: MarketService,
    specs: list[tuple[ViewSpec, int, int, bool, bool]],
    changed: bool,
    realised_times: list[int],
    received_ms: int = 0,
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
                    # server_ms: when the server got the update that moved this bar (clients measure lag)
                    msgs.append(("bar", dumps(bar | {"server_ms": received_ms})))
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
                    maps[mkey] = dumps(map_payload(svc.liquidation_map(bins=mkey[0], span=mkey[1], log=mkey[2], spread=True)))
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


class LiveHub(Sessions):
    """All market channels and open connections of the app (their send queues bounded by the budget's
    share for them)."""

    def __init__(self, markets: Markets, config: ServerConfig) -> None:
        super().__init__(config, markets.budget.send_queues)
        self.markets = markets
        self.channels: dict[str, MarketChannel] = {}
        self.snapshots: ByteLRU[str] = ByteLRU("snapshots", markets.budget.snapshots)

    def cache_stats(self) -> dict[str, dict[str, int]]:
        return {"snapshots": self.snapshots.stats()}

    def channel(self, svc: MarketService) -> MarketChannel:
        ch = self.channels.get(svc.market.key)
        if ch is None:
            ch = self.channels[svc.market.key] = MarketChannel(svc, self.markets, self.config, self.snapshots)
        return ch

    async def start(self) -> None:
        for svc in self.markets.services():
            ch = self.channel(svc)
            self._tasks.append(asyncio.create_task(self._keep(ch), name=f"fan-out {svc.market.key}"))
        self._tasks.append(asyncio.create_task(self.heartbeats(), name="ws heartbeat"))

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
