"""TradingView's UDF datafeed protocol (``/udf/...``): candles for a Charting Library / Advanced Charts page.

Answers follow the protocol's conventions (``{"s": "ok", ...}``, ``{"s": "no_data", "nextTime"}``,
``{"s": "error", "errmsg"}``); errors also carry the HTTP status the REST API would use (400 / 404).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from aiohttp import web

from engine.service import MarketService, UnknownSymbol

from .api import Encoded, encoded_response
from .markets import compact_ticker, dumps, udf_name
from .params import BadRequest, Query
from .state import MARKETS

routes = web.RouteTableDef()

# UDF resolution strings → liqheat timeframes
RESOLUTIONS: dict[str, str] = {
    "1": "1m", "5": "5m", "15": "15m", "60": "1h", "240": "4h",
    "1D": "1d", "D": "1d", "1W": "1w", "W": "1w",
}
SUPPORTED = ["1", "5", "15", "60", "240", "1D", "1W"]
MAX_TIME = 4_102_444_800


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(body), status=status, content_type="application/json")


def _error(msg: str, status: int) -> web.Response:
    return _json({"s": "error", "errmsg": msg}, status)


def _resolve(request: web.Request, name: str) -> MarketService:
    return request.app[MARKETS].resolve(name)


def _pricescale(svc: MarketService) -> int:
    tick = svc.market.tick if svc.market.tick and svc.market.tick > 0 else 0.01
    decimals = max(0, min(10, round(-math.log10(tick))))
    return int(10**decimals)


def symbol_info(svc: MarketService) -> dict[str, Any]:
    m = svc.market
    return {
        "name": compact_ticker(m),
        "ticker": udf_name(m),
        "full_name": udf_name(m),
        "description": f"{m.symbol} perpetual ({m.exchange})",
        "type": "crypto",
        "session": "24x7",
        "exchange": m.exchange.upper(),
        "listed_exchange": m.exchange.upper(),
        "timezone": "Etc/UTC",
        "format": "price",
        "pricescale": _pricescale(svc),
        "minmov": 1,
        "has_intraday": True,
        "has_daily": True,
        "has_weekly_and_monthly": True,
        "supported_resolutions": SUPPORTED,
        "intraday_multipliers": ["1", "5", "15", "60", "240"],
        "volume_precision": 3,
        "data_status": "streaming",
    }


async def _guard(request: web.Request, fn: Any) -> web.Response:
    try:
        return await fn()
    except BadRequest as exc:
        return _error(str(exc), 400)
    except UnknownSymbol as exc:
        return _error(str(exc), 404)


@routes.get("/udf/config")
async def config(request: web.Request) -> web.Response:
    exchanges = sorted({svc.market.exchange for svc in request.app[MARKETS].services()})
    return _json(
        {
            "supported_resolutions": SUPPORTED,
            "supports_search": True,
            "supports_group_request": False,
            "supports_marks": False,
            "supports_timescale_marks": False,
            "supports_time": True,
            "exchanges": [{"value": "", "name": "All", "desc": ""}]
            + [{"value": e.upper(), "name": e.upper(), "desc": e} for e in exchanges],
            "symbols_types": [{"name": "crypto", "value": "crypto"}],
        }
    )


@routes.get("/udf/time")
async def server_time(request: web.Request) -> web.Response:
    return web.Response(text=str(int(time.time())), content_type="text/plain")


@routes.get("/udf/symbols")
async def symbols(request: web.Request) -> web.Response:
    async def run() -> web.Response:
        q = Query(request.query, strict=False)
        return _json(symbol_info(_resolve(request, q.required("symbol"))))

    return await _guard(request, run)


@routes.get("/udf/search")
async def search(request: web.Request) -> web.Response:
    async def run() -> web.Response:
        q = Query(request.query, strict=False)
        text = (q.text("query", "") or "").upper()
        exchange = (q.text("exchange", "") or "").upper()
        limit = q.integer("limit", 30, 1, 1000)
        out = []
        for svc in request.app[MARKETS].services():
            info = symbol_info(svc)
            if exchange and info["exchange"] != exchange:
                continue
            hay = f"{info['ticker']} {svc.market.symbol} {svc.market.coin}".upper()
            if text and text not in hay:
                continue
            out.append({k: info[k] for k in ("full_name", "description", "exchange", "ticker", "type")}
                       | {"symbol": info["name"]})
        return _json(out[:limit])

    return await _guard(request, run)


@routes.get("/udf/history")
async def history(request: web.Request) -> web.Response:
    async def run() -> web.Response:
        q = Query(request.query, strict=False)
        svc = _resolve(request, q.required("symbol"))
        res = q.required("resolution")
        tf = RESOLUTIONS.get(res)
        if tf is None:
            raise BadRequest(f"unsupported resolution {res[:20]!r}; use {', '.join(SUPPORTED)}")
        since = q.integer("from", None, 0, MAX_TIME)
        until = q.integer("to", None, 0, MAX_TIME)
        if since is None or until is None:
            raise BadRequest("from and to are required (UNIX seconds)")
        if until < since:
            raise BadRequest(f"to ({until}) must not be before from ({since})")
        countback = q.integer("countback", None, 1, 20_000)

        def build() -> dict[str, Any]:
            if countback is not None:
                bars = svc.candles(tf, until=until, limit=countback)
            else:
                bars = svc.candles(tf, since=since, until=until, limit=20_000)
            if len(bars) == 0:
                before = svc.candles(tf, until=since, limit=1)
                return {"s": "no_data", "nextTime": int(before.time[-1])} if len(before) else {"s": "no_data"}
            vol = np.nan_to_num(bars.volume) if bars.volume is not None else np.zeros(len(bars))
            return {"s": "ok", "t": bars.time.tolist(), "o": bars.open.tolist(), "h": bars.high.tolist(),
                    "l": bars.low.tolist(), "c": bars.close.tolist(), "v": vol.tolist()}

        enc = await request.app[MARKETS].cached(svc, ("udf", tf, since, until, countback), lambda: Encoded.of(build()))
        return encoded_response(request, enc)

    return await _guard(request, run)
