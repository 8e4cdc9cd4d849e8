"""The app factory: ``create_app(hub_or_spec, config)`` builds the whole server (used by the CLI and tests).

Background work lives in ``cleanup_ctx`` (markets streaming, the live fan-out), open WebSockets are closed
in ``on_shutdown``, numpy work runs in a thread pool, state is typed with ``web.AppKey``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

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

from . import api, assets, udf, ws
from .config import ServerConfig
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

    def params(self) -> ModelParams:
        return ModelParams(ladder=load_ladder(self.ladder)) if self.ladder else ModelParams()

    def build_hubs(self) -> list[Hub]:
        return [open_hub(spec, self.symbols, ladder=self.ladder, history_days=self.history_days, speed=self.speed,
                         seed=self.seed, alerts=self.alerts, webhook=self.webhook) for spec in self.feeds]


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=dumps({"error": message}), content_type="application/json")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bad input → 400, unknown symbol → 404, a market still loading → 503; never a bare 500 page."""
    try:
        return await handler(request)
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
    except Exception as exc:
        log.exception("unhandled error on %s", request.path_qs)
        return _error(500, f"internal error: {_one_line(exc)}")


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


def create_app(source: Hub | Sequence[Hub] | FeedSpec, config: ServerConfig | None = None) -> web.Application:
    """A ``Hub`` (or several) is owned by the caller — started before, stopped after. A ``FeedSpec``
    makes the app build, start and stop its own hubs."""
    config = config or ServerConfig()
    app = web.Application(middlewares=[cors, errors_as_json], client_max_size=64 * 1024)
    owned = isinstance(source, FeedSpec)
    hubs: list[Hub] = [] if owned else ([source] if isinstance(source, Hub) else list(source))
    markets = Markets(hubs, workers=config.workers, cache_entries=config.cache_entries, max_stale_s=config.max_stale_s)
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
                    await hub.start()
                    started.append(hub)
                    markets.hubs.append(hub)
                yield
            finally:
                for hub in started:
                    await hub.stop()

        app.cleanup_ctx.append(run_hubs)

    async def run_live(app: web.Application) -> AsyncIterator[None]:
        await app[LIVE].start()
        # Everything alive now (imported modules, loaded markets) lives as long as the server: keep it out
        # of the cyclic collector's full passes, which otherwise stalled the loop 15-65 ms at a time with
        # 1,000 WebSocket clients (measured with gc.callbacks).
        gc.freeze()
        yield
        gc.unfreeze()
        await app[LIVE].stop()
        markets.close()

    app.cleanup_ctx.append(run_live)

    async def close_sockets(app: web.Application) -> None:
        for conn in list(app[LIVE].connections):
            conn.closed = True
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.on_shutdown.append(close_sockets)

    app.router.add_get("/", index)
    app.router.add_get("/example", example)
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/v1/ws", ws.handle)
    app.router.add_routes(api.routes)
    app.router.add_routes(udf.routes)
    if not assets.script_path().is_file():
        app.router.add_get(f"/static/vendor/{assets.SCRIPT_NAME}", vendor_missing)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app
