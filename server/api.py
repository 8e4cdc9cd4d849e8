"""REST API ``/api/v1``: read-only views of each market (described in ``/api/v1/openapi.json``).

Every parameter is validated (bad → 400 ``{"error": ...}``, unknown symbol → 404); answers are cached per
market until the market changes, and the numpy work runs in the view pool.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from engine.analytics import AnalyticsError, PositionSpec
from engine.service import MarketService, bucket_start, timeframe_seconds

from . import __version__
from .budget import BYTES_PER_CELL_TIER, malloc_stats, rss_bytes
from .config import API_TIMEFRAMES
from .encoding import candles_payload, json_number, map_payload, realised_payload
from .limits import HEAVY_CELLS
from .markets import compact_ticker, dumps, udf_name
from .params import BadRequest, Query, parse_tier
from .state import CONFIG, LIVE, MARKETS, STARTED_AT
from .views import ViewSpec, heatmap_view

routes = web.RouteTableDef()

MAX_CANDLES = 20_000
MAX_BINS = 1000
MAX_COLUMNS = 2000
MAX_CELLS = 1_200_000
MAX_TIME = 4_102_444_800  # 2100-01-01: later times are typos


def json_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json")


@dataclass(frozen=True)
class Encoded:
    """A cached answer, serialised once: the JSON bytes, their gzip (for larger bodies) and an ETag."""

    raw: bytes
    gz: bytes | None
    etag: str

    @classmethod
    def of(cls, body: Any) -> Encoded:
        raw = dumps(body).encode()
        # Heatmaps are 100-200 kB of base64; gzip once here instead of per request.
        gz = gzip.compress(raw, compresslevel=5, mtime=0) if len(raw) > 2048 else None
        return cls(raw, gz, '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '"')


def encoded_response(request: web.Request, enc: Encoded) -> web.Response:
    headers = {"ETag": enc.etag, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == enc.etag:
        return web.Response(status=304, headers=headers)
    if enc.gz is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=enc.gz, content_type="application/json", headers=headers)
    return web.Response(body=enc.raw, content_type="application/json", headers=headers)


async def _cached(request: web.Request, svc: MarketService, key: tuple[Any, ...], build: Callable[[], Any],
                  cells: int = 0) -> web.Response:
    """The answer from the cache or computed once in a lane: batch-sized work (``cells`` above
    limits.HEAVY_CELLS) goes to the heavy lane, capped per client; the rest to the light one."""
    markets = request.app[MARKETS]
    lane, cost = work_lane(svc, cells)
    markets.remember_call(request.path, request.query_string, svc, key, build, lane, cost)
    return await _answer(request, svc, key, build, lane, cost)


async def _answer(request: web.Request, svc: MarketService, key: tuple[Any, ...], build: Callable[[], Any],
                  lane: str, cost: int) -> web.Response:
    markets = request.app[MARKETS]
    enc = await markets.cached(svc, key, lambda: Encoded.of(build()), lane, client_of(request), cost)
    if markets.is_current(svc, key, enc):  # never pin a stale-while-revalidate answer to the query string
        markets.remember(request.path, request.query_string, svc.market.key, markets.gen(svc.market.key), key)
    return encoded_response(request, enc)


def client_of(request: web.Request) -> str:
    """Whom a request's work is counted against: its peer address (on a cluster worker, the client the
    forwarding replica names)."""
    if request.app[CONFIG].trust_client_header:
        named = request.headers.get("X-Liqheat-Client")
        if named:
            return named[:64]
    return request.remote or "?"


def work_lane(svc: MarketService, cells: int) -> tuple[str, int]:
    """(lane, estimated working bytes) of a heatmap-like computation over ``cells`` price x time cells."""
    cost = cells * len(svc.params.ladder.leverage) * BYTES_PER_CELL_TIER
    return ("heavy" if cells > HEAVY_CELLS else "light"), cost


def memoized(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Answer a query string seen before, while its market has not changed, without validating it again
    (a chart polling the same view is the common case); once the market moved, go straight to the cache
    with what that query was validated into; anything else goes through the handler."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.Response:
        markets = request.app[MARKETS]
        enc = markets.recall(request.path, request.query_string)
        if enc is not None:
            return encoded_response(request, enc)
        call = markets.recall_call(request.path, request.query_string)
        if call is not None:  # validated before: only the answer is new (or being recomputed)
            return await _answer(request, *call)
        return await handler(request)

    return wrapper


def _symbol(request: web.Request, q: Query) -> MarketService:
    return request.app[MARKETS].resolve(q.required("symbol"))


def _time_range(q: Query) -> tuple[int | None, int | None]:
    since = q.integer("from", None, 0, MAX_TIME)
    until = q.integer("to", None, 0, MAX_TIME)
    if since is not None and until is not None and until <= since:
        raise BadRequest(f"to ({until}) must be after from ({since})")
    return since, until


def market_info(svc: MarketService) -> dict[str, Any]:
    m = svc.market
    return {
        "key": m.key,
        "exchange": m.exchange,
        "symbol": m.symbol,
        "coin": m.coin,
        "ticker": udf_name(m),
        "name": compact_ticker(m),
        "linear": m.linear,
        "tick": m.tick,
        "price": json_number(svc.last_price) if svc.loaded.is_set() else None,  # a market still loading
        "tiers": list(svc.params.ladder.labels),
        "health": svc.health_info(),
    }


def memory_info(request: web.Request) -> dict[str, Any]:
    """The process's own accounting: bytes per cache, in send queues and in work lanes, against the budget."""
    markets, live = request.app[MARKETS], request.app[LIVE]
    out = markets.memory()
    out["caches"].update(live.cache_stats())
    out["cache_bytes"] = sum(c["bytes"] for c in out["caches"].values())
    out.update({"budget_bytes": request.app[CONFIG].memory_budget, "send_queue_bytes": live.queued_bytes,
                "rss_bytes": rss_bytes(), "malloc": malloc_stats()})
    return out


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    Query(request.query).done()
    services = request.app[MARKETS].services()
    states = [svc.health_info() for svc in services]
    ok = bool(services) and all(s["state"] in ("live", "demo", "replay", "delayed") for s in states)
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "uptime_s": round(time.time() - request.app[STARTED_AT], 3),
        "markets": [{"key": svc.market.key, **h} for svc, h in zip(services, states, strict=True)],
        "live": {
            "connections": len(request.app[LIVE].connections),
            "max_clients": request.app[CONFIG].max_clients,
            "markets": {key: ch.stats() for key, ch in request.app[LIVE].channels.items()},
        },
        "memory": memory_info(request),
    }
    # `serve --store`: bars taken from the store, written, queued, dropped, and the store's last error
    recording = [h.feed.stats() for h in request.app[MARKETS].hubs if hasattr(h.feed, "stats")]
    if recording:
        body["recording"] = recording
    return json_response(dumps(body))


@routes.get("/api/v1/symbols")
async def symbols(request: web.Request) -> web.Response:
    Query(request.query).done()
    services = request.app[MARKETS].services()
    body = {
        "symbols": [market_info(svc) for svc in services],
        "exchanges": sorted({svc.market.exchange for svc in services}),
        "timeframes": list(API_TIMEFRAMES),
    }
    return json_response(dumps(body))


@routes.get("/api/v1/market")
@memoized
async def market(request: web.Request) -> web.Response:
    q = Query(request.query)
    svc = _symbol(request, q)
    q.done()

    def build() -> dict[str, Any]:
        out = market_info(svc)
        out.update(
            {
                "oi_usd": json_number(svc.oi_usd()),
                "daily_volume_usd": json_number(svc.daily_volume_usd()),
                "funding": svc.funding(),
                "seed_mode": svc.seed_mode,
                "estimate": True,
            }
        )
        if (venues := svc.breakdown()) is not None:  # per-exchange shares when the feed sums several
            out["venues"] = venues
        return out

    return await _cached(request, svc, ("market",), build)


@routes.get("/api/v1/candles")
@memoized
async def candles(request: web.Request) -> web.Response:
    q = Query(request.query)
    svc = _symbol(request, q)
    tf = q.timeframe("5m", API_TIMEFRAMES)
    since, until = _time_range(q)
    limit = q.integer("limit", 1000, 1, MAX_CANDLES)
    q.done()

    def build() -> dict[str, Any]:
        bars = svc.candles(tf, since=since, until=until, limit=limit)
        return {"symbol": svc.market.key, "timeframe": tf, **candles_payload(bars)}

    return await _cached(request, svc, ("candles", tf, since, until, limit), build)  # no grid: light


def view_spec(svc: MarketService, q: Query, default_bins: int, default_columns: int) -> ViewSpec:
    """The heatmap-shaping parameters shared by the REST heatmap and the WebSocket subscribe."""
    tf = q.timeframe("5m", API_TIMEFRAMES)
    tier = parse_tier(q.text("tier", "all"), svc.params.ladder.labels)
    bins = q.integer("bins", default_bins, 10, MAX_BINS)
    columns = q.integer("columns", default_columns, 1, MAX_COLUMNS)
    assert bins is not None and columns is not None
    if bins * columns > MAX_CELLS:
        raise BadRequest(f"columns x bins must be at most {MAX_CELLS}, got {columns} x {bins}")
    lo = q.number("price_low", None, 0.0, 1e12, open_low=True)
    hi = q.number("price_high", None, 0.0, 1e12, open_low=True)
    if (lo is None) != (hi is None):
        raise BadRequest("give both price_low and price_high, or neither")
    if lo is not None and hi is not None and hi <= lo:
        raise BadRequest(f"price_high ({hi:g}) must be above price_low ({lo:g})")
    log = q.boolean("log", False)
    return ViewSpec(svc.market.key, tf, tier, bins, columns, lo, hi, log)


@routes.get("/api/v1/heatmap")
@memoized
async def heatmap(request: web.Request) -> web.Response:
    q = Query(request.query)
    svc = _symbol(request, q)
    cfg = request.app[CONFIG]
    spec = view_spec(svc, q, cfg.default_bins, cfg.default_columns)
    since, until = _time_range(q)
    encoding = q.choice("encoding", "sqrt-u8", ("sqrt-u8", "json"))
    q.done()
    return await _cached(request, svc, ("heatmap", spec, since, until, encoding),
                         lambda: heatmap_view(svc, spec, since, until, encoding, keep=spec.bins * spec.columns <= HEAVY_CELLS),
                         cells=spec.bins * spec.columns)


@routes.get("/api/v1/heatmap/cell")
@memoized
async def heatmap_cell(request: web.Request) -> web.Response:
    """USD by leverage tier in one price band of one column (the chart's hover tooltip)."""
    q = Query(request.query)
    svc = _symbol(request, q)
    tf = q.timeframe("5m", API_TIMEFRAMES)
    t = q.integer("time", None, 0, MAX_TIME)
    if t is None:
        raise BadRequest("missing parameter 'time'")
    lo = q.number("price_low", None, 0.0, 1e12, open_low=True)
    hi = q.number("price_high", None, 0.0, 1e12, open_low=True)
    if lo is None or hi is None:
        raise BadRequest("missing parameter 'price_low' or 'price_high'")
    if hi <= lo:
        raise BadRequest(f"price_high ({hi:g}) must be above price_low ({lo:g})")
    q.done()
    step = timeframe_seconds(tf)
    start = bucket_start(t, tf)

    def build() -> dict[str, Any]:
        hm = svc.heatmap(tf, tier=None, bins=1, price_low=lo, price_high=hi, since=start, until=start + 1, spread=True)
        if len(hm.times) == 0:
            raise BadRequest(f"no candle opens at {t} on {tf}")
        longs, shorts = hm.long_usd[-1, 0], hm.short_usd[-1, 0]
        return {
            "symbol": svc.market.key,
            "timeframe": tf,
            "time": int(hm.times[-1]) - step,
            "price_low": lo,
            "price_high": hi,
            "tiers": list(hm.tiers),
            "long_usd": np.round(longs, 2).tolist(),
            "short_usd": np.round(shorts, 2).tolist(),
            "long_total": round(float(longs.sum()), 2),
            "short_total": round(float(shorts.sum()), 2),
            "estimate": True,
        }

    return await _cached(request, svc, ("cell", tf, start, lo, hi), build)


@routes.get("/api/v1/map")
@memoized
async def liquidation_map(request: web.Request) -> web.Response:
    """The liquidation map; ``weight=touch``: every bin's USD x P(price reaches it within ``horizon`` h)."""
    q = Query(request.query)
    svc = _symbol(request, q)
    bins = q.integer("bins", 200, 10, MAX_BINS)
    span = q.number("span", 0.25, 0.001, 0.9)
    log = q.boolean("log", False)
    weight = q.choice("weight", "usd", ("usd", "touch"))
    horizon = q.number("horizon", 4.0, 0.25, 168.0)
    q.done()
    assert bins is not None and span is not None and horizon is not None

    def build() -> dict[str, Any]:
        if weight == "touch":
            lmap = svc.analytics.risk_weighted_map(bins=bins, span=span, log=log, horizon_hours=horizon)
        else:
            lmap = svc.liquidation_map(bins=bins, span=span, log=log, spread=True)
        out = map_payload(lmap)
        out.update({"symbol": svc.market.key, "span": span, "weight": weight, "estimate": True})
        if weight == "touch":
            out["horizon_hours"] = horizon
        return out

    return await _cached(request, svc, ("map", bins, span, log, weight, horizon if weight == "touch" else None), build)


@routes.get("/api/v1/zones")
@memoized
async def zones(request: web.Request) -> web.Response:
    """Zones ranked by USD^(1/4) x P(touch within 4h) (``weight=usd``: raw USD), in a stable order, each with
    touch probabilities, confluence and persistence (docs/ANALYTICS_API.md)."""
    q = Query(request.query)
    svc = _symbol(request, q)
    bins = q.integer("bins", 200, 10, MAX_BINS)
    span = q.number("span", 0.25, 0.001, 0.9)
    weight = q.choice("weight", "touch", ("touch", "usd"))
    q.done()
    assert bins is not None and span is not None
    return await _cached(request, svc, ("zones", bins, span, weight),
                         lambda: svc.analytics.zones_body(bins, span, weight))


@routes.get("/api/v1/cascade")
@memoized
async def cascade(request: web.Request) -> web.Response:
    """If price reaches the nearest strong zone, how far could forced selling (buying) carry it?"""
    q = Query(request.query)
    svc = _symbol(request, q)
    q.done()
    return await _cached(request, svc, ("cascade",), lambda: svc.analytics.cascade())


@routes.get("/api/v1/sessions")
@memoized
async def sessions(request: web.Request) -> web.Response:
    """Estimated liquidations by trading session (Asia / Europe / US) and by hour of the funding cycle."""
    q = Query(request.query)
    svc = _symbol(request, q)
    days = q.number("days", None, 1.0, 365.0)
    q.done()
    return await _cached(request, svc, ("sessions", days), lambda: svc.analytics.sessions(days))


MAX_POSITIONS = 20


def _json_param(q: Query, name: str) -> Any:
    text = q.text(name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest(f"{name} must be JSON, e.g. {name}=[{{\"side\":\"long\",\"entry\":60000,"
                         f"\"leverage\":10,\"size\":5000}}]") from None


@routes.get("/api/v1/risk")
@memoized
async def risk(request: web.Request) -> web.Response:
    """One position (side, entry, leverage, size) against the estimate — or a portfolio
    (``positions`` = a JSON list, ``limit``, ``portfolio``, ``new``): each one's liquidation price and
    zone grade, the share of exposure liquidated inside elevated/high zones against the limit, and a
    suggested size for a new position."""
    q = Query(request.query)
    markets = request.app[MARKETS]
    if q.text("positions") is not None or q.text("new") is not None:
        symbol = q.text("symbol")
        svc = markets.resolve(symbol) if symbol else markets.services()[0]
        raw = _json_param(q, "positions") or []
        new_raw = _json_param(q, "new")
        limit = q.number("limit", _risk_limit(request), 0.001, 1.0)
        portfolio = q.number("portfolio", None, 0.0, 1e15, open_low=True)
        q.done()
        if not isinstance(raw, list):
            raise BadRequest("positions must be a JSON list of objects")
        if len(raw) > MAX_POSITIONS:
            raise BadRequest(f"at most {MAX_POSITIONS} positions")
        try:
            specs = [PositionSpec.from_dict(d, f"position {i + 1}", default_size=10_000.0) for i, d in enumerate(raw)]
            new = None
            if new_raw is not None:
                target = markets.resolve(new_raw["symbol"]) if isinstance(new_raw, dict) and new_raw.get("symbol") else svc
                new = PositionSpec.from_dict(new_raw, "new", default_entry=target.last_price, default_size=10_000.0)
        except AnalyticsError as exc:
            raise BadRequest(str(exc)) from None
        for spec in ([*specs, new] if new is not None else specs):
            target = markets.resolve(spec.symbol) if spec.symbol else svc
            _plausible_entry(spec.entry, target.last_price)
        key = ("portfolio", json.dumps(raw, sort_keys=True), json.dumps(new_raw, sort_keys=True), limit, portfolio)
        return await _cached(request, svc, key, lambda: svc.analytics.portfolio(
            specs, limit_share=limit or _risk_limit(request), new=new, portfolio_usd=portfolio, resolve=markets.resolve))
    svc = _symbol(request, q)
    side = q.choice("side", "long", ("long", "short"))
    entry = q.number("entry", None, 0.0, 1e12, open_low=True)
    leverage = q.number("leverage", None, 1.0, 200.0)
    size = q.number("size", 10_000.0, 0.0, 1e12, open_low=True)
    if entry is None or leverage is None:
        raise BadRequest("missing parameter 'entry' or 'leverage'")
    q.done()
    _plausible_entry(entry, svc.last_price)
    assert size is not None
    return await _cached(request, svc, ("risk", side, entry, leverage, size),
                         lambda: finite_json(svc.analytics.position(side, entry, leverage, size)))


def finite_json(obj: Any) -> Any:
    """Non-finite numbers → null (JSON has no infinity: a 1x inverse short is liquidated "at infinity")."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def _plausible_entry(entry: float, price: float) -> None:
    if not (price / 100 <= entry <= price * 100):
        raise BadRequest(f"entry {entry:g} is implausibly far from the market price {price:g}")


def _risk_limit(request: web.Request) -> float:
    return float(request.app[CONFIG].risk_limit)


@routes.get("/api/v1/alerts")
async def alerts(request: web.Request) -> web.Response:
    """Recent alerts of one market (the same ones pushed over the WebSocket as `alert`), market time."""
    q = Query(request.query)
    svc = _symbol(request, q)
    limit = q.integer("limit", 50, 1, 200)
    q.done()
    assert limit is not None
    book = svc.analytics.alerts
    body = {"symbol": svc.market.key, "rules": book.rules, "clock": "market", "webhook": book.webhook_stats(),
            "alerts": book.recent(limit)}
    return json_response(dumps(body))


@routes.get("/api/v1/realised")
@memoized
async def realised(request: web.Request) -> web.Response:
    """Estimated liquidations per candle (what the model says was force-closed)."""
    q = Query(request.query)
    svc = _symbol(request, q)
    tf = q.timeframe("5m", API_TIMEFRAMES)
    since, until = _time_range(q)
    limit = q.integer("limit", 1000, 1, MAX_CANDLES)
    q.done()
    assert limit is not None

    def build() -> dict[str, Any]:
        r = realised_payload(svc.realised(tf, since=since, until=until))
        for k in ("t", "long_usd", "short_usd"):
            r[k] = r[k][-limit:]
        return {"symbol": svc.market.key, "timeframe": tf, **r}

    return await _cached(request, svc, ("realised", tf, since, until, limit), build)


@routes.get("/api/v1/liquidations")
async def liquidations(request: web.Request) -> web.Response:
    """Liquidation events the feed reported (real on an exchange, simulated on the demo market)."""
    q = Query(request.query)
    svc = _symbol(request, q)
    since_ms = q.integer("since_ms", None, 0, MAX_TIME * 1000)
    limit = q.integer("limit", 500, 1, 5000)
    q.done()
    assert limit is not None
    events = svc.liquidations(since_ms=since_ms, limit=limit)
    body = {
        "symbol": svc.market.key,
        "source": "simulated" if svc.market.exchange == "demo" else svc.market.exchange,
        # price = where the liquidation happened (estimated from a bankruptcy price on Bybit/OKX);
        # reported_price/price_kind = what the venue printed
        "events": [e.to_dict() for e in events],
    }
    return json_response(dumps(body))


@routes.get("/api/v1/model")
async def model(request: web.Request) -> web.Response:
    q = Query(request.query)
    svc = _symbol(request, q)
    q.done()
    return json_response(dumps(svc.model_info()))
