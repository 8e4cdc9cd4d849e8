"""The OpenAPI 3 description of the REST API (served at ``/api/v1/openapi.json``; fuzzed by the tests)."""

from __future__ import annotations

from typing import Any

from . import __version__
from .api import MAX_BINS, MAX_CANDLES, MAX_COLUMNS, MAX_TIME
from .config import API_TIMEFRAMES

NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
INT = {"type": "integer"}
STR = {"type": "string"}
NUMS = {"type": "array", "items": NUM}
INTS = {"type": "array", "items": INT}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "required": required or list(props)}
    if not extra:
        out["additionalProperties"] = False
    return out


def _param(name: str, schema: dict[str, Any], description: str, required: bool = False, **kw: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema, **kw}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def document(example_symbol: str = "demo:BTC/USDT:USDT") -> dict[str, Any]:
    symbol = _param("symbol", {"type": "string", "minLength": 1, "maxLength": 100},
                    "Market key (`demo:BTC/USDT:USDT`), unified symbol, coin (`BTC`) or UDF ticker (`DEMO:BTCUSDT`).",
                    required=True, example=example_symbol)
    timeframe = _param("timeframe", {"type": "string", "enum": list(API_TIMEFRAMES), "default": "5m"}, "Candle length.")
    t_from = _param("from", {"type": "integer", "minimum": 0, "maximum": MAX_TIME}, "Start, UNIX seconds (candle open, inclusive).")
    t_to = _param("to", {"type": "integer", "minimum": 0, "maximum": MAX_TIME}, "End, UNIX seconds (exclusive).")
    limit = _param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_CANDLES, "default": 1000}, "Newest N rows.")
    tier = _param("tier", {"type": "string", "default": "all", "pattern": "^(all|[0-9]{1,2}|[0-9]{1,3}(\\.[0-9]+)?x)$"},
                  "`all`, a tier label (`25x`) or a tier index.")
    bins = _param("bins", {"type": "integer", "minimum": 10, "maximum": MAX_BINS, "default": 200}, "Price bins.")
    map_bins = _param("bins", {"type": "integer", "minimum": 10, "maximum": MAX_BINS, "default": 200}, "Price bins.")
    span = _param("span", {"type": "number", "minimum": 0.001, "maximum": 0.9, "default": 0.25},
                  "Half-width of the price range, as a fraction of the price.")
    log = _param("log", {"type": "boolean", "default": False}, "Log-spaced price bins.")
    price_low = _param("price_low", {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12},
                       "Lowest price of the grid (with price_high; default: around the candles).")
    price_high = _param("price_high", {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12},
                        "Highest price of the grid.")
    err = {"description": "Bad parameter (one line)", "content": {"application/json": {"schema": _ref("Error")}}}
    missing = {"description": "Unknown symbol", "content": {"application/json": {"schema": _ref("Error")}}}
    loading = {"description": "The market is still loading", "content": {"application/json": {"schema": _ref("Error")}}}

    def ok(schema: str, description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}

    retry_after = {"Retry-After": {"description": "Seconds to wait before asking again.", "required": True,
                                   "schema": {"type": "integer", "minimum": 1}}}
    # Host is checked on loopback only (DNS rebinding); work is admitted per lane (server.limits).
    wrong_host = {"description": "The Host header does not name this server (it listens on loopback; see "
                                 "`--allow-host`)", "content": {"application/json": {"schema": _ref("Error")}}}
    too_many = {"description": "This client (address) already has its share of requests of this kind waiting; "
                               "retry after `Retry-After` seconds",
                "headers": retry_after, "content": {"application/json": {"schema": _ref("Error")}}}
    busy_or_loading = {"description": "The market is still loading, or the server is busy with requests of this "
                                      "kind (then with `Retry-After`: retry after that many seconds)",
                       "headers": {"Retry-After": {**retry_after["Retry-After"], "required": False}},
                       "content": {"application/json": {"schema": _ref("Error")}}}

    def op(summary: str, params: list[dict[str, Any]], schema: str, description: str = "", symbol_errors: bool = True,
           busy: bool | None = None) -> dict[str, Any]:
        """``busy``: the answer is computed in a work lane, so it may be refused with 429/503 + Retry-After
        (default: the market endpoints)."""
        responses: dict[str, Any] = {"200": ok(schema, summary), "400": err, "421": wrong_host}
        if symbol_errors:
            responses["404"] = missing
            responses["503"] = loading
        if symbol_errors if busy is None else busy:
            responses["429"] = too_many
            responses["503"] = busy_or_loading
        return {"get": {"summary": summary, "description": description, "parameters": params, "responses": responses}}

    health_obj = _obj({"state": {"type": "string", "enum": ["live", "delayed", "reconnecting", "stale", "demo", "replay"]},
                       "reason": STR, "last_update": NUM, "age_s": NUM,
                       # exchange feeds: which venue fields the open interest comes from (always one side)
                       "oi_source": {"type": "object"}},
                      required=["state", "reason", "last_update", "age_s"])
    zone = _obj({"side": {"type": "string", "enum": ["long", "short"]}, "price_low": NUM, "price_high": NUM,
                 "peak_price": NUM, "usd": NUM, "grade": {"type": "string", "enum": ["low", "elevated", "high"]},
                 "share_of_daily_volume": NUM_OR_NULL, "percentile": NUM, "distance_pct": NUM, "tier_usd": NUMS})
    schemas: dict[str, Any] = {
        "Error": _obj({"error": STR}),
        "Health": health_obj,
        "ServerHealth": _obj({"status": {"type": "string", "enum": ["ok", "degraded"]}, "version": STR, "uptime_s": NUM,
                              "markets": {"type": "array", "items": {"type": "object", "required": ["key", "state"],
                                                                     "properties": {"key": STR, "state": STR}}}}),
        "Market": _obj({"key": STR, "exchange": STR, "symbol": STR, "coin": STR, "ticker": STR, "name": STR,
                        "linear": {"type": "boolean"}, "tick": NUM, "price": NUM_OR_NULL,
                        "tiers": {"type": "array", "items": STR}, "health": _ref("Health")}),
        "Symbols": _obj({"symbols": {"type": "array", "items": _ref("Market")}, "exchanges": {"type": "array", "items": STR},
                         "timeframes": {"type": "array", "items": STR}}),
        "MarketStats": {"allOf": [_ref("Market"), _obj({"oi_usd": NUM_OR_NULL, "daily_volume_usd": NUM_OR_NULL,
                                                        "funding": {"type": "object"}, "seed_mode": STR,
                                                        "estimate": {"const": True}})]},
        "Candles": _obj({"symbol": STR, "timeframe": STR, "t": INTS, "o": NUMS, "h": NUMS, "l": NUMS, "c": NUMS, "v": NUMS}),
        "Heatmap": _obj({
            "symbol": STR, "timeframe": STR, "tier": STR, "tiers": {"type": "array", "items": STR},
            "times": {**INTS, "description": "candle open times, one per column"},
            "edges": {**NUMS, "description": "bins + 1 price edges, ascending"},
            "columns": INT, "bins": INT, "log": {"type": "boolean"},
            "encoding": {"type": "string", "enum": ["sqrt-u8", "json"],
                         "description": "sqrt-u8: base64 of columns x bins bytes, usd = max_usd * (level/255)^2"},
            "max_usd": {"type": "number", "minimum": 0},
            "long": {"oneOf": [STR, {"type": "array", "items": NUMS}]},
            "short": {"oneOf": [STR, {"type": "array", "items": NUMS}]},
            "estimate": {"const": True},
        }),
        "HeatmapCell": _obj({"symbol": STR, "timeframe": STR, "time": INT, "price_low": NUM, "price_high": NUM,
                             "tiers": {"type": "array", "items": STR}, "long_usd": NUMS, "short_usd": NUMS,
                             "long_total": NUM, "short_total": NUM, "estimate": {"const": True}}),
        "LiquidationMap": _obj({"symbol": STR, "price": NUM, "span": NUM, "edges": NUMS, "tiers": {"type": "array", "items": STR},
                                "long": NUMS, "short": NUMS, "long_tiers": {"type": "array", "items": NUMS},
                                "short_tiers": {"type": "array", "items": NUMS}, "long_below": NUMS, "short_above": NUMS,
                                "estimate": {"const": True}}),
        "Zone": zone,
        "RankedZone": {"allOf": [_ref("Zone"), _obj({
            "id": INT, "rank": INT, "score": NUM, "confluence": INT, "confluence_frames": {"type": "array", "items": STR},
            "first_seen": INT, "persistence_s": INT,
            "touch_4h": {**NUM, "description": "P(price reaches the zone within 4h); also touch_1h, touch_24h"},
            "risk_usd_4h": {**NUM, "description": "usd x touch_4h; also risk_usd_1h, risk_usd_24h"}},
            required=["id", "rank", "score", "confluence", "persistence_s"])]},
        "Zones": _obj({"symbol": STR, "price": NUM, "daily_volume_usd": NUM_OR_NULL,
                       "weight": {"type": "string", "enum": ["touch", "usd"]}, "horizon_hours": NUM,
                       "zones": {"type": "array", "items": _ref("RankedZone")},
                       "volatility": {"type": ["object", "null"]}, "estimate": {"const": True}}),
        "Sessions": _obj({"symbol": STR, "span": INTS, "current_session": STR,
                          "sessions": {"type": "array", "items": _obj({
                              "session": STR, "hours_utc": STR, "long_usd": NUM, "short_usd": NUM, "usd": NUM,
                              "share": NUM, "events": INT, "hours_observed": NUM, "usd_per_hour": NUM})},
                          "funding": _obj({"rate": NUM_OR_NULL, "next_time": INT, "seconds_left": INT, "hhmmss": STR,
                                           "interval_hours": NUM}),
                          "funding_cycle": _obj({"interval_hours": NUM, "hour": NUMS, "mean_usd": NUMS, "slots": INTS}),
                          "reported": {"type": ["object", "null"]}, "estimate": {"const": True}}),
        "Portfolio": _obj({"limit_share": NUM, "portfolio_usd": NUM, "exposed_usd": NUM, "exposed_share": NUM,
                           "over_limit": {"type": "boolean"},
                           "positions": {"type": "array", "items": {"type": "object", "required": ["symbol", "position"]}},
                           "suggestion": {"type": ["object", "null"]}, "estimate": {"const": True}}),
        "RiskAnswer": {"anyOf": [_ref("Risk"), _ref("Portfolio")]},
        "Realised": _obj({"symbol": STR, "timeframe": STR, "t": INTS, "long_usd": NUMS, "short_usd": NUMS,
                          "estimate": {"const": True}}),
        "Liquidations": _obj({"symbol": STR, "source": STR, "events": {"type": "array", "items": _obj(
            {"time_ms": INT, "side": {"type": "string", "enum": ["long", "short"]}, "price": NUM, "reported_price": NUM,
             "price_kind": {"type": "string", "enum": ["fill", "bankruptcy"]}, "base": NUM, "usd": NUM})}}),
        "Cascade": _obj({"symbol": STR, "price": NUM, "down": {"type": "object"}, "up": {"type": "object"},
                         "depth": {"type": "object"}, "estimate": {"const": True}}),
        "Risk": _obj({"symbol": STR, "position": {"type": "object"}, "price": NUM, "liquidation_price": NUM, "mmr": NUM,
                      "distance_pct": NUM, "grade": {"type": "string", "enum": ["none", "low", "elevated", "high"]},
                      "zone": {"oneOf": [_ref("Zone"), {"type": "null"}]}, "touch": {"type": "object"},
                      "estimate": {"const": True}}, required=["symbol", "position", "price", "liquidation_price", "grade"]),
        "Alerts": _obj({"symbol": STR, "rules": {"type": "array", "items": {"type": "object", "required": ["type"]}},
                        "clock": {"const": "market"}, "webhook": {"type": ["object", "null"]},
                        "alerts": {"type": "array", "items": {"type": "object", "required": ["rule", "message", "time"]}}}),
        "Model": {"type": "object", "required": ["ladder", "tiers", "estimate", "seed_mode"],
                  "properties": {"ladder": STR, "tiers": {"type": "array"}, "estimate": {"const": True}, "seed_mode": STR}},
    }
    paths: dict[str, Any] = {
        "/api/v1/health": op("Server and data health", [], "ServerHealth", symbol_errors=False),
        "/api/v1/symbols": op("Markets this server shows", [], "Symbols", symbol_errors=False),
        "/api/v1/market": op("Price, open interest, funding, volume and health of one market", [symbol], "MarketStats"),
        "/api/v1/candles": op("Candles", [symbol, timeframe, t_from, t_to, limit], "Candles"),
        "/api/v1/heatmap": op(
            "Estimated liquidation heatmap (time x price, USD)",
            [symbol, timeframe, tier, bins,
             _param("columns", {"type": "integer", "minimum": 1, "maximum": MAX_COLUMNS, "default": 300}, "Newest N candles."),
             t_from, t_to, price_low, price_high, log,
             _param("encoding", {"type": "string", "enum": ["sqrt-u8", "json"], "default": "sqrt-u8"}, "Cell encoding.")],
            "Heatmap",
            "One column per candle: the estimated outstanding notional that would be liquidated in each price bin, "
            "as the book stood when the candle closed (the last column is the live book). columns x bins <= 1,200,000.",
        ),
        "/api/v1/heatmap/cell": op(
            "USD by leverage tier in one price band of one candle",
            [symbol, timeframe, _param("time", {"type": "integer", "minimum": 0, "maximum": MAX_TIME}, "Candle open time.", required=True),
             {**price_low, "required": True}, {**price_high, "required": True}],
            "HeatmapCell",
        ),
        "/api/v1/map": op(
            "Liquidation map: the book now by price and tier",
            [symbol, map_bins, span, log,
             _param("weight", {"type": "string", "enum": ["usd", "touch"], "default": "usd"},
                    "`touch`: the risk-weighted map, each bin's USD x P(price reaches it within `horizon`)."),
             _param("horizon", {"type": "number", "minimum": 0.25, "maximum": 168, "default": 4},
                    "Hours, for weight=touch.")],
            "LiquidationMap"),
        "/api/v1/zones": op(
            "Graded zones, ranked by USD^(1/4) x P(touch within 4h) in a stable order",
            [symbol, map_bins, span,
             _param("weight", {"type": "string", "enum": ["touch", "usd"], "default": "touch"},
                    "Rank by USD x touch probability (what predicts best out of sample) or by raw USD.")],
            "Zones",
            "Each zone with its raw estimated USD, touch probabilities (1h/4h/24h), confluence across 1h/4h/1d "
            "lookbacks and how long it has existed (market time). A zone overtakes the one above it only when its "
            "score is 25% higher, so the order does not flicker."),
        "/api/v1/sessions": op(
            "Liquidations by trading session and by hour of the funding cycle",
            [symbol, _param("days", {"type": "number", "minimum": 1, "maximum": 365}, "Only the last N days.")],
            "Sessions"),
        "/api/v1/realised": op("Estimated realised liquidations per candle", [symbol, timeframe, t_from, t_to, limit], "Realised"),
        "/api/v1/liquidations": op(
            "Liquidation events reported by the feed",
            [symbol, _param("since_ms", {"type": "integer", "minimum": 0, "maximum": MAX_TIME * 1000}, "UNIX ms."),
             _param("limit", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 500}, "Newest N events.")],
            "Liquidations", busy=False,
        ),
        "/api/v1/model": op("The model's parameters (every assumption behind the estimate)", [symbol], "Model", busy=False),
        "/api/v1/cascade": op("Cascade simulation both ways from the nearest strong zone", [symbol], "Cascade"),
        "/api/v1/risk": op(
            "One position, or a portfolio, against the estimate",
            [symbol,
             _param("side", {"type": "string", "enum": ["long", "short"], "default": "long"}, "Position side."),
             _param("entry", {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12},
                    "Entry price (one position; required without `positions`)."),
             _param("leverage", {"type": "number", "minimum": 1, "maximum": 200},
                    "Leverage (one position; required without `positions`)."),
             _param("size", {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12, "default": 10000},
                    "Notional at entry, USD."),
             _param("positions", STR, "Portfolio form: a JSON list of up to 20 "
                    "{symbol, side, entry, leverage, size} (instead of side/entry/leverage/size)."),
             _param("limit", {"type": "number", "minimum": 0.001, "maximum": 1, "default": 0.1},
                    "Portfolio form: the share allowed in positions liquidated inside elevated/high zones."),
             _param("portfolio", {"type": "number", "exclusiveMinimum": 0, "maximum": 1e15},
                    "Portfolio form: portfolio USD (default: the positions' total size)."),
             _param("new", STR, "Portfolio form: a JSON object {symbol, side, entry, leverage, size} to size.")],
            "RiskAnswer",
            "Liquidation price by the exchange's maintenance-margin brackets (the market's own exchange, coin and "
            "contract), the estimated zone it sits in, the chance price reaches it within 1h/4h/24h, and whether a "
            "cascade from the nearest strong zone would carry price there. 400 when the exchange would refuse the "
            "position or it is already past liquidation. The portfolio form adds the share of exposure liquidated "
            "inside elevated/high zones against the limit, and a suggested size for a new position.",
        ),
        "/api/v1/alerts": op(
            "Recent alerts (price near a strong zone, zone upgraded, large cascade risk)",
            [symbol, _param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Newest N.")],
            "Alerts", busy=False,
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "liqheat API",
            "version": __version__,
            "description": "Estimated liquidation levels for crypto perpetual futures. Every USD figure is a model "
                           "estimate (see /api/v1/model). Live updates: WebSocket /api/v1/ws (server/PROTOCOL.md).",
            "license": {"name": "MIT"},
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
