"""The app factory: ``create_app(hub_or_spec, config)`` builds the whole server (used by the CLI and tests).

Background work lives in ``cleanup_ctx`` (markets streaming, the live fan-out), open WebSockets are closed
in ``on_shutdown``, numpy work runs in a thread pool, state is typed with ``web.AppKey``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.analytics import AlertSettings, AnalyticsError
from engine.service import (
    BarsError,
    CascadeError,
    FeedError,
    Hub,
    LadderError,
    ModelParams,
    RiskError,
    TouchError,
    UnknownSymbol,
    ViewError,
    load_ladder,
    open_hub,
)

from . import api, assets, budget, udf, ws
from .budget import MemoryBudget
from .config import ServerConfig
from .limits import Busy
from .live import LiveHub
from .markets import Markets, dumps
from .openapi import document
from .params import BadRequest
from .state import CONFIG, LIVE, MARKETS, STARTED_AT

log = logging.getLogger("liqheat.server")

STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class FeedSpec:
    """What to serve when the app owns its markets (``liqheat serve``): one hub per feed."""

    feeds: tuple[str, ...] = ("demo",)
    symbols: tuple[str, ...] | None = None
    speed: float | None = None  # demo / file replay speed (x real time)
    ladder: str | None = None  # preset name, JSON, or a JSON file (a calibrated ladder)
    history_days: float = 30.0
    seed: int | None = None
    alerts: AlertSettings | None = None  # thresholds from the config file (None: the defaults)
    webhook: str | None = None  # alerts are POSTed here too
    store: Any = None  # an open Store (engine/stores.py): history read from it first, live bars recorded into it

    def params(self) -> ModelParams:
        return ModelParams(ladder=load_ladder(self.ladder)) if self.ladder else ModelParams()

    def build_hubs(self) -> list[Hub]:
        return [open_hub(spec, self.symbols, ladder=self.ladder, history_days=self.history_days, speed=self.speed,
                         seed=self.seed, alerts=self.alerts, webhook=self.webhook, store=self.store)
                for spec in self.feeds]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=dumps({"error": message}), content_type="application/json",
                        headers=headers)


# Longest path a static file may have (a file name longer than 255 bytes makes the OS raise instead of
# answering "not found").
_MAX_STATIC_PATH = 512


@web.middleware
async def host_allowed(request: web.Request, handler: Any) -> web.StreamResponse:
    """On loopback, only requests addressed to this machine by name: a DNS-rebinding page reaches the
    server under its own host name (and would pass a same-host Origin check)."""
    if not request.app[CONFIG].host_allowed(request.headers.get("Host", "")):
        return _error(421, f"host {request.headers.get('Host', '')[:80]!r} is not served here; "
                           "start the server with --allow-host")
    return await handler(request)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bad input → 400, unknown symbol → 404, a market still loading → 503; never a bare 500 page."""
    if request.path.startswith("/static/") and (
        len(request.path) > _MAX_STATIC_PATH or any(len(part.encode()) > 255 for part in request.path.split("/"))
    ):
        return _error(404, "not found")
    try:
        return await handler(request)
    except Busy as exc:
        return _error(exc.status, str(exc), {"Retry-After": str(exc.retry_after)})
    except (BadRequest, ViewError, BarsError, LadderError, RiskError, TouchError, CascadeError, AnalyticsError) as exc:
        return _error(400, _one_line(exc))
    except UnknownSymbol as exc:
        return _error(404, _one_line(exc))
    except FeedError as exc:
        return _error(503, _one_line(exc))
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith(("/api/", "/udf/")):
            resp = _error(exc.status, exc.reason)
            for name in ("Allow", "Retry-After"):  # 405 must say what is allowed
                if name in exc.headers:
                    resp.headers[name] = exc.headers[name]
            return resp
        raise
    except OSError as exc:
        if request.path.startswith("/static/"):  # a name the file system will not look up: not found
            return _error(404, "not found")
        log.error("unhandled error on %s: %s", request.path[:200], _one_line(exc))
        return _error(500, f"internal error ({type(exc).__name__})")
    except Exception as exc:
        log.exception("unhandled error on %s", request.path[:200])
        return _error(500, f"internal error ({type(exc).__name__})")  # no paths or values of the machine


# Read-only market data: any page may read it (no cookies, no credentials). The WebSocket has its own
# Origin allow-list (it holds server resources per client).
_CORS_PREFIXES = ("/api/", "/udf/", "/static/")


@web.middleware
async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method == "OPTIONS" and request.path.startswith(_CORS_PREFIXES):
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "86400",
        })
    resp = await handler(request)
    if request.path.startswith(_CORS_PREFIXES) and request.path != "/api/v1/ws" and not resp.prepared:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def example(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "example.html", headers={"Cache-Control": "no-cache"})


async def openapi_json(request: web.Request) -> web.Response:
    services = request.app[MARKETS].services()
    doc = document(services[0].market.key if services else "demo:BTC/USDT:USDT")
    return web.Response(text=dumps(doc), content_type="application/json")


async def vendor_missing(request: web.Request) -> web.Response:
    return web.Response(
        status=404,
        text=f"// Lightweight Charts is not installed: run `python -m server.assets` ({assets.PACKAGE} {assets.VERSION})\n",
        content_type="text/javascript",
    )


async def _trim_memory(app: web.Application) -> None:
    """Now and then: drop cache entries nobody can ask for any more (an older book, unused for
    ``cache_idle_s``) and give freed heap pages back to the system (in a thread: it can take
    milliseconds), so the process shrinks after an attack or a burst of big answers.

    Batch-sized work (the heavy lane) leaves big serialised answers and snapshots behind: within
    ``cache_idle_s`` of it those go once unused for ``burst_idle_s``, and when the lane has been quiet
    for ``burst_quiet_s`` the heap is trimmed at once. (The engine's grids of batch-sized requests are
    not kept at all, and the live views' grids keep the normal idle time: they are used once a bar.)
    Before, an attack's memory stayed a full minute after it."""
    loop = asyncio.get_running_loop()
    markets, live, config = app[MARKETS], app[LIVE], app[CONFIG]
    every_s = config.prune_every_s
    rounds = 0
    heavy_done = markets.heavy.done
    heavy_seen = -math.inf  # last time the heavy lane was seen working
    burst = False  # heavy work ran since the heap was last trimmed for it
    while True:
        await asyncio.sleep(every_s)
        rounds += 1
        try:
            now = time.monotonic()
            if markets.heavy.admitted or markets.heavy.done != heavy_done:
                heavy_done, heavy_seen, burst = markets.heavy.done, now, True
            answers_idle = config.cache_idle_s
            if now - heavy_seen < config.cache_idle_s:
                answers_idle = min(answers_idle, config.burst_idle_s)
            went_quiet = burst and now - heavy_seen >= config.burst_quiet_s
            before = markets.cache_bytes() + live.snapshots.bytes
            markets.prune(config.cache_idle_s, answers_idle)
            live.snapshots.prune(lambda key: False, answers_idle)
            freed = before - markets.cache_bytes() - live.snapshots.bytes
            # malloc_trim holds the allocator's locks while it walks the heap: not every round, but at once
            # when a burst ended or a prune freed a lot (the point is to hand that back)
            if went_quiet or freed >= 16 * 2**20 or rounds % max(1, round(30 / every_s)) == 0:
                burst = burst and not went_quiet
                gc.collect(1)  # cycles of the burst's requests (young objects) hold buffers too
                await loop.run_in_executor(None, budget.trim)
        except Exception as exc:  # housekeeping must never end
            log.warning("memory trim failed: %s", _one_line(exc))


def create_app(source: Hub | Sequence[Hub] | FeedSpec, config: ServerConfig | None = None) -> web.Application:
    """A ``Hub`` (or several) is owned by the caller — started before, stopped after. A ``FeedSpec``
    makes the app build, start and stop its own hubs."""
    config = config or ServerConfig()
    # keepalive_timeout also bounds how long a client may take to send a request's headers (aiohttp closes
    # a connection still waiting for them at that deadline: slowloris); lingering_time bounds reading a
    # body nobody asked for (every endpoint is a GET).
    app = web.Application(middlewares=[host_allowed, cors, errors_as_json], client_max_size=64 * 1024,
                          handler_args={"keepalive_timeout": config.request_timeout_s,
                                        "lingering_time": min(config.request_timeout_s, 5.0)})
    owned = isinstance(source, FeedSpec)
    hubs: list[Hub] = [] if owned else ([source] if isinstance(source, Hub) else list(source))
    markets = Markets(hubs, workers=config.workers, cache_entries=config.cache_entries, max_stale_s=config.max_stale_s,
                      budget=MemoryBudget(config.memory_budget), heavy_workers=config.heavy_workers,
                      heavy_waiting=config.heavy_waiting, heavy_per_client=config.heavy_per_client,
                      light_waiting=config.light_waiting, light_per_client=config.light_per_client,
                      heavy_duty=config.heavy_duty)
    app[CONFIG] = config
    app[MARKETS] = markets
    app[LIVE] = LiveHub(markets, config)
    app[STARTED_AT] = time.time()

    if owned:
        assert isinstance(source, FeedSpec)
        spec = source

        async def run_hubs(app: web.Application) -> AsyncIterator[None]:
            started: list[Hub] = []
            try:
                for hub in spec.build_hubs():
                    # serving starts once the first market's recent days are in; the others load behind it,
                    # once a client asks for one of them (Markets.resolve) or a few seconds on, so they do
                    # not slow the first page's requests
                    await hub.start(wait_all=False, defer_others=True)
                    started.append(hub)
                    markets.hubs.append(hub)
                yield
            finally:
                for hub in started:
                    await hub.stop()

        app.cleanup_ctx.append(run_hubs)

    async def run_live(app: web.Application) -> AsyncIterator[None]:
        markets.apply_budget()
        markets.loop_watch.start()
        await app[LIVE].start()
        # Everything alive now (imported modules, loaded markets) lives as long as the server: keep it out
        # of the cyclic collector's full passes, which otherwise stalled the loop 15-65 ms at a time with
        # 1,000 WebSocket clients (measured with gc.callbacks).
        gc.freeze()
        trimmer = asyncio.create_task(_trim_memory(app), name="memory trim")
        yield
        trimmer.cancel()
        gc.unfreeze()
        await app[LIVE].stop()
        markets.close()

    app.cleanup_ctx.append(run_live)

    async def close_sockets(app: web.Application) -> None:
        await app[LIVE].close_all()

    app.on_shutdown.append(close_sockets)

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/v1/ws", ws.handle)
    app.router.add_routes(api.routes)
    app.router.add_routes(udf.routes)
    add_page(app)
    return app


def add_page(app: web.Application) -> None:
    """The chart page, its embed example and static files (the same from a replica)."""
    app.router.add_get("/", index)
    app.router.add_get("/example", example)
    if not assets.script_path().is_file():
        app.router.add_get(f"/static/vendor/{assets.SCRIPT_NAME}", vendor_missing)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
