"""``liqheat worker --bus redis://... --feed demo --shard 0/2``: the owner of a shard of the markets.

A worker is ``liqheat serve`` without clients of its own: it holds the feed connections and the engines of
the markets its shard owns (engine/bus.py: rendezvous hash), computes the views replicas ask for through the
same live fan-out as the single server (server/live.py), and writes them to each market's Redis Stream
instead of to sockets. Alerts are computed here, once, whatever the number of replicas. It also serves the
REST API of its markets on an internal HTTP address that replicas forward REST/UDF requests to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections import deque
from typing import Any

from aiohttp import web

from engine.config import ConfigError, load_config
from engine.service import (
    BarsError,
    FeedError,
    Hub,
    LadderError,
    RecordingFeed,
    RestBudget,
    StoreError,
    UnknownSymbol,
    ViewError,
    bus,
    open_feed,
    open_store,
)

from .api import view_spec
from .app import FeedSpec, create_app
from .config import ServerConfig
from .live import LiveHub, MarketChannel
from .markets import dumps
from .params import BadRequest, Query
from .sessions import SNAPSHOT_BUFFER, Subscriber
from .state import CONFIG, LIVE, MARKETS

log = logging.getLogger("liqheat.worker")

HELP = "own a shard of the markets for a cluster: feeds, engines, alerts; publish views to Redis (--bus)"

# Log entries waiting for Redis at most; beyond it the oldest are dropped (readers see a sequence gap and
# resync from a snapshot), so a Redis outage never grows the worker's memory without bound.
PENDING_MAX = 20_000


class Publisher:
    """Appends log entries to the markets' Streams in order, one MULTI per burst, with explicit IDs
    ``<epoch_ms>-<n>``; keeps what Redis could not take (bounded) and retries."""

    def __init__(self, redis: Any, epoch_ms: int) -> None:
        self.redis = redis
        self.epoch_ms = epoch_ms
        self.counter: dict[str, int] = {}
        self.pending: deque[tuple[str, str, dict[str, str]]] = deque()
        self.dropped = 0
        self.published = 0
        self.errors = 0
        self._wake = asyncio.Event()

    def add(self, market: str, fields: dict[str, str]) -> None:
        n = self.counter.get(market, 0) + 1
        self.counter[market] = n
        self.pending.append((market, bus.entry_id(self.epoch_ms, n), fields))
        while len(self.pending) > PENDING_MAX:
            self.pending.popleft()
            self.dropped += 1
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
            batch = [self.pending[i] for i in range(min(len(self.pending), 256))]
            try:
                pipe = self.redis.pipeline(transaction=True)
                for market, entry, fields in batch:
                    pipe.xadd(bus.log_key(market), fields, id=entry, maxlen=bus.LOG_MAXLEN, approximate=True)
                await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - Redis away: keep the entries, try again shortly
                self.errors += 1
                if self.errors == 1 or self.errors % 50 == 0:
                    log.warning("bus: cannot publish (%s); %d entries waiting", _one_line(exc), len(self.pending))
                await asyncio.sleep(0.2)
                continue
            for _ in batch:
                if self.pending:
                    self.pending.popleft()
            self.published += len(batch)


class BusConnection:
    """Stands where a WebSocket connection stands in server/live.py, for the views replicas demand: what
    the fan-out offers a subscriber is appended to the market's log instead of a socket's queue."""

    def __init__(self, publisher: Publisher, market: str) -> None:
        self.publisher = publisher
        self.market = market
        self.closed = False
        self.subs: dict[str, Subscriber] = {}
        self.need_resync: list[Subscriber] = []
        self.client = "bus"  # whose work the snapshots count as, where the fan-out keeps such accounts

    def pending(self) -> int:
        return len(self.publisher.pending)

    def _put(self, sub: Subscriber, kind: str, body: str, reason: str = "") -> None:
        fields = {"v": sub.id, "t": kind, "s": str(sub.seq), "b": body}
        if reason:
            fields["r"] = reason
        self.publisher.add(self.market, fields)

    def offer(self, sub: Subscriber, kind: str, body: str) -> None:
        if sub.closed:
            return
        if sub.state == "building":  # a snapshot is being computed: it goes first, these after it
            if len(sub.buffer) < SNAPSHOT_BUFFER:
                sub.buffer.append(kind + "\n" + body)
            return
        sub.seq += 1
        self._put(sub, kind, body)

    def deliver_snapshot(self, sub: Subscriber, reason: str, body: str) -> None:
        if sub.closed:
            return
        self._put(sub, "snapshot", body, reason)
        buffered, sub.buffer = sub.buffer, []
        sub.state = "live"
        for item in buffered:
            kind, _, payload = item.partition("\n")
            sub.seq += 1
            self._put(sub, kind, payload)

    def send(self, text: str) -> None:
        """Control messages (a snapshot that failed): logged; replicas re-ask after their timeout."""
        log.warning("%s: %s", self.market, text[:300])


class Worker:
    def __init__(self, redis: Any, app: web.Application, worker_id: str, shard: tuple[int, int], http: str) -> None:
        self.redis = redis
        self.app = app
        self.id = worker_id
        self.shard = shard
        self.http = http
        self.epoch_ms = int(time.time() * 1000)
        self.budgets: dict[str, RestBudget] = {}  # exchange -> the REST budget shared on this egress
        self.publisher = Publisher(redis, self.epoch_ms)
        self.conns: dict[str, BusConnection] = {}
        self.started = time.time()
        self.demands = 0  # replicas' requests answered (a replica asks once per new view, not per client)

    @property
    def live(self) -> LiveHub:
        return self.app[LIVE]

    def markets(self) -> list[str]:
        return [svc.market.key for svc in self.app[MARKETS].services()]

    # ---- views ------------------------------------------------------------------------------------
    def _view(self, market: str, fields: dict[str, Any]) -> tuple[Subscriber, dict[str, Any], bool]:
        """The bus subscriber of the view these subscribe fields name (made on first demand)."""
        cfg = self.app[CONFIG]
        svc = self.app[MARKETS].resolve(market)
        q = Query({k: ("true" if v is True else "false" if v is False else str(v)) for k, v in fields.items() if v is not None})
        q.required("symbol")
        spec = view_spec(svc, q, cfg.default_bins, cfg.default_columns)
        q.done()
        channel: MarketChannel = self.live.channel(svc)
        view = channel.view_for(spec)
        key = bus.view_key({"tf": spec.timeframe, "tier": spec.tier, "bins": spec.bins, "columns": spec.columns,
                            "log": spec.log, "lo": spec.price_low, "hi": spec.price_high})
        conn = self.conns.setdefault(svc.market.key, BusConnection(self.publisher, svc.market.key))
        sub = conn.subs.get(key)
        made = sub is None or sub.view is not view
        if sub is None or sub.view is not view:
            sub = Subscriber(key, conn, channel, view)  # type: ignore[arg-type]  # a bus stands for the socket
            conn.subs[key] = sub
            channel.add(sub)
        info = {"view": key, "symbol": svc.market.key, "timeframe": spec.timeframe,
                "tier": "all" if spec.tier is None else svc.params.ladder.labels[spec.tier],
                "bins": spec.bins, "columns": spec.columns}
        return sub, info, made

    def demand(self, market: str, fields: dict[str, Any], reason: str) -> dict[str, Any]:
        sub, info, made = self._view(market, fields)
        # every demand gets a snapshot in the log: the asking replica's client starts from it
        sub.channel.request_snapshot(sub, "subscribe" if made else reason)
        return info

    async def _requests(self) -> None:
        """Answer replicas: a view (subscribe fields -> view key + a snapshot in the log) or a snapshot."""
        async for data in bus.messages(self.redis, bus.request_channel(self.id)):
            try:
                req = json.loads(data)
                answer = {"rid": req.get("rid")}
                self.demands += 1
                try:
                    answer["ok"] = self.demand(str(req["market"]), dict(req["fields"]), str(req.get("reason", "resync")))
                except (BadRequest, ViewError, BarsError, LadderError, FeedError, UnknownSymbol, ValueError, KeyError) as exc:
                    answer["error"] = _one_line(exc)
                if req.get("replica"):
                    await self.redis.publish(bus.reply_channel(str(req["replica"])), dumps(answer))
            except (ValueError, TypeError) as exc:
                log.warning("bad request on the bus: %s", _one_line(exc))

    async def _restore_demand(self) -> None:
        """After a (re)start: the views replicas still demand are computed again without waiting for them."""
        for market in self.markets():
            for _key, raw in (await self.redis.hgetall(bus.demand_key(market))).items():
                try:
                    want = json.loads(raw)
                    if want.get("until", 0) > time.time():
                        self.demand(market, want["fields"], "subscribe")
                except Exception as exc:  # noqa: BLE001 - one stale entry must not stop the others
                    log.warning("%s: cannot restore a demanded view: %s", market, _one_line(exc))

    async def _prune(self) -> None:
        """Views no replica renewed are dropped (their computation stops)."""
        now = time.time()
        for market, conn in self.conns.items():
            wanted = await self.redis.hgetall(bus.demand_key(market))
            for key, sub in list(conn.subs.items()):
                raw = wanted.get(key)
                until = json.loads(raw).get("until", 0) if raw else 0
                if until < now and now - self.started > bus.DEMAND_TTL_S:
                    sub.channel.remove(sub)
                    del conn.subs[key]

    async def _heartbeat(self) -> None:
        last_prune = 0.0
        while True:
            try:
                meta = {
                    "id": self.id, "epoch_ms": self.epoch_ms, "shard": f"{self.shard[0]}/{self.shard[1]}",
                    "http": self.http, "heartbeat": time.time(), "pid": os.getpid(),
                    "markets": [{"key": svc.market.key, "exchange": svc.market.exchange, "symbol": svc.market.symbol,
                                 "coin": svc.market.coin, **svc.health_info()} for svc in self.app[MARKETS].services()],
                    "views": sum(len(c.subs) for c in self.conns.values()), "demands": self.demands,
                    "recording": [h.feed.stats() for h in self.app[MARKETS].hubs if hasattr(h.feed, "stats")],
                    "published": self.publisher.published, "dropped": self.publisher.dropped,
                    "waiting": len(self.publisher.pending),
                    "rest_budget": [b.stats() for b in self.budgets.values()],
                }
                pipe = self.redis.pipeline(transaction=True)
                pipe.set(bus.worker_key(self.id), dumps(meta), ex=bus.WORKER_TTL_S)
                for key in self.markets():
                    pipe.hset(bus.OWNERS, key, self.id)
                await pipe.execute()
                if time.monotonic() - last_prune > bus.DEMAND_RENEW_S:
                    last_prune = time.monotonic()
                    await self._prune()
            except Exception as exc:  # noqa: BLE001 - Redis away: keep computing, say so, try again
                log.warning("bus: heartbeat failed: %s", _one_line(exc))
            await asyncio.sleep(bus.HEARTBEAT_S)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.publisher.run(), name="bus publisher"),
                 asyncio.create_task(self._heartbeat(), name="bus heartbeat")]
        try:
            await self._restore_demand()
        except Exception as exc:  # noqa: BLE001
            log.warning("bus: cannot read the demanded views yet: %s", _one_line(exc))
        tasks.append(asyncio.create_task(bus.keep_going(self._requests, log), name="bus requests"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):  # a clean stop hands its markets back
                await self.redis.delete(bus.worker_key(self.id))
                owners = await self.redis.hgetall(bus.OWNERS)
                mine = [k for k, wid in owners.items() if wid == self.id]
                if mine:
                    await self.redis.hdel(bus.OWNERS, *mine)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


async def owned_hubs(spec: FeedSpec, shard: tuple[int, int], store: Any = None, rest_budget: Any = None) -> list[Hub]:
    """The feed's markets (the --symbols ones, else its main ones), kept when this shard owns them. With a
    store, history is read from it first and what the feed streams is recorded (engine/worker.py).
    ``rest_budget``: exchange id -> the REST budget shared with the other workers on this egress."""
    hubs = []
    for feed_spec in spec.feeds:
        opts: dict[str, Any] = {"history_days": spec.history_days, "rest_budget": rest_budget}
        if spec.speed is not None:
            opts["speed"] = spec.speed
        if spec.seed is not None:
            opts["seed"] = spec.seed
        feed = open_feed(feed_spec, **opts)
        markets = await feed.markets()
        names = []
        for want in spec.symbols or [m.symbol for m in markets[:3]]:
            found = [m.symbol for m in markets if want in (m.symbol, f"{m.exchange}:{m.symbol}") or want.upper() == m.coin.upper()]
            if not found:
                raise FeedError(f"{feed.exchange} has no market {want!r}")
            names.append(found[0])
        mine = [s for s in names if bus.shard_of(f"{feed.exchange}:{s}", shard[1]) == shard[0]]
        if mine:
            if store is not None:
                feed = RecordingFeed(feed, store)
            # alerts are computed here, by the one worker that owns the market: each fires (and is POSTed
            # to the webhook) once per cluster, however many replicas show it
            hubs.append(Hub(feed, symbols=mine, params=spec.params(), history_days=spec.history_days,
                            alerts=spec.alerts, webhook=spec.webhook))
    return hubs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bus", required=True, metavar="redis://HOST:PORT/DB", help="the Redis the replicas read")
    parser.add_argument("--feed", action="append", metavar="FEED", help="demo (default) | binanceusdm | bybit | okx | file:PATH")
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="markets (default: the feed's main ones)")
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="own the markets shard I of N picks (default 0/1: all)")
    parser.add_argument("--speed", type=float, default=None, help="demo/replay speed, x real time")
    parser.add_argument("--seed", type=int, default=None, help="demo market random seed")
    parser.add_argument("--history-days", type=float, default=None, help="history to load per market (default 30)")
    parser.add_argument("--ladder", default=None, metavar="NAME|JSON", help="leverage ladder (as for serve)")
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                        help="internal REST address replicas forward to (default 127.0.0.1 on a free port)")
    parser.add_argument("--advertise", default=None, metavar="HOST",
                        help="host name replicas reach this worker by (default: the --listen host)")
    parser.add_argument("--id", default=None, help="worker id on the bus (default: hostname-pid)")
    parser.add_argument("--webhook", default=None, metavar="URL",
                        help="POST every alert of this worker's markets as JSON to this URL (once per cluster: "
                             "the owning worker sends it, never the replicas)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="config file for the alert thresholds and webhook (as for serve); flags override it")
    parser.add_argument("--egress-id", default=None, metavar="NAME",
                        help="workers with the same egress id (one public IP) share each exchange's REST budget "
                             "in Redis (default: this host's name)")
    parser.add_argument("--rest-budget", type=float, default=None, metavar="WEIGHT/S",
                        help="REST request weight per second all workers on this egress may spend per exchange "
                             "(ccxt's units: Binance request weight; default: ccxt's own pace for the venue, "
                             "e.g. binanceusdm 20, bybit 50, okx 9)")
    parser.add_argument("--store", default=None, metavar="DB|postgresql://...",
                        help="read history from this store first and record the markets into it (SQLite file or PostgreSQL)")


async def serve_worker(args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from .cli import _spec  # the markets, ladder, alert thresholds and webhook, read as `serve` reads them

    shard = bus.parse_shard(args.shard)
    try:
        file_config = load_config(args.config)
        spec = _spec(args, file_config)
    except (ConfigError, LadderError, ValueError) as exc:
        print(f"liqheat worker: {exc}", file=sys.stderr)
        return 2
    store = None
    store_target = args.store or file_config.default("store")  # as `serve` reads it: the flag wins
    if store_target:
        try:
            store = open_store(store_target)
        except StoreError as exc:  # a bad store is a bad argument, as for serve: one line, exit 2
            print(f"liqheat worker: {exc}", file=sys.stderr)
            return 2
    if args.rest_budget is not None and not (0 < args.rest_budget < 1e6):
        print("liqheat worker: --rest-budget must be a positive weight per second", file=sys.stderr)
        return 2
    redis = aioredis.from_url(args.bus, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
    try:
        await redis.ping()
    except Exception as exc:  # noqa: BLE001
        print(f"liqheat worker: cannot reach the bus {args.bus}: {_one_line(exc)}", file=sys.stderr)
        return 1
    egress = args.egress_id or socket.gethostname()
    budgets: dict[str, RestBudget] = {}

    def rest_budget(exchange: str) -> RestBudget:
        return budgets.setdefault(exchange, RestBudget(redis, exchange, egress, args.rest_budget))

    hubs = await owned_hubs(spec, shard, store, rest_budget)
    if not hubs:
        print(f"liqheat worker: shard {args.shard} owns none of the markets", file=sys.stderr)
        await redis.aclose()
        return 2
    for hub in hubs:
        await hub.start()
    host, _, port = args.listen.rpartition(":")
    app = create_app(hubs, ServerConfig(host=host or "127.0.0.1", port=int(port or 0), trust_client_header=True))
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port or 0))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if getattr(site, "_server", None) else int(port)  # type: ignore[union-attr]
    http = f"http://{args.advertise or host or '127.0.0.1'}:{bound}"
    worker = Worker(redis, app, args.id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}", shard, http)
    worker.budgets = budgets
    print(f"liqheat worker {worker.id}: shard {args.shard} owns {', '.join(worker.markets())}; REST at {http}; "
          f"publishing to {args.bus}", flush=True)
    try:
        await worker.run()
    finally:
        await runner.cleanup()
        for hub in hubs:
            await hub.stop()
        await redis.aclose()
        if store is not None:
            store.close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve_worker(args))
    except bus.BusError as exc:
        print(f"liqheat worker: {exc}", file=sys.stderr)
        return 2
    except FeedError as exc:
        print(f"liqheat worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


command = sys.modules[__name__]
