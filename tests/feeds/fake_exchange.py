"""A loopback exchange that speaks Binance USDⓈ-M, Bybit v5 and OKX v5 JSON, REST and websocket.

The real ccxt client is pointed here (every URL in ``exchange.urls['api']`` becomes
``http://127.0.0.1:PORT/<original host>/<original path>``), so ccxt's own request building, parsing,
pagination and error mapping run unchanged. Responses follow each exchange's documented format; where the
docs leave ordering open the fake picks the less convenient reading (newest rows first, newest page of a
range), so the feed's paging is tested against it.

Market lists: each entry is the venue's own recorded JSON (../shared/data/exchange_frames_real.json.gz:
Binance exchangeInfo 2021, Bybit linear instruments 2026, OKX swap instruments 2022), with only the names,
dates and funding interval the tape needs written over it (hand-written entries if the file is missing).

Market data is a seeded synthetic tape (1-minute candles, 5-minute OI, funding every 8h — every 4h for
Bybit ETH) anchored on ``now``; tests read the same tape to know what the feed should return.

Faults are queued per route with :meth:`FakeExchange.inject` and consumed one per request:
HTTP status codes with the venue's own error body, timeouts, truncated and malformed JSON, HTML pages.
Websockets: :meth:`push` sends a frame to connections subscribed to a topic, :meth:`drop` cuts them.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gzip
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

MINUTE = 60_000
OI_STEP = 5 * MINUTE
HOUR = 60 * MINUTE
DAY = 24 * HOUR

BINANCE, BYBIT, OKX = "binanceusdm", "bybit", "okx"
VENUES = (BINANCE, BYBIT, OKX)
HOSTS = {
    "fapi.binance.com": BINANCE, "fstream.binance.com": BINANCE,
    "api.bybit.com": BYBIT, "stream.bybit.com": BYBIT,
    "www.okx.com": OKX, "ws.okx.com": OKX,
}
# venue market ids per coin, and OKX contract values (base coin per contract)
IDS = {
    BINANCE: {"BTC": "BTCUSDT", "ETH": "ETHUSDT"},
    BYBIT: {"BTC": "BTCUSDT", "ETH": "ETHUSDT"},
    OKX: {"BTC": "BTC-USDT-SWAP", "ETH": "ETH-USDT-SWAP"},
}
OKX_CT_VAL = {"BTC": 0.01, "ETH": 0.1}
START_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0}
START_OI_BASE = {"BTC": 80_000.0, "ETH": 1_500_000.0}
BINANCE_OI_DAYS = 30  # Binance keeps 30 days of OI statistics
OKX_OI_POINTS = 1440  # OKX keeps the last 1,440 points per period
OKX_RECENT_CANDLES = 1440  # /market/candles serves recent bars; older ones only via /history-candles
OKX_FUNDING_DAYS = 92


def floor_minute(ms: float) -> int:
    return int(ms // MINUTE * MINUTE)


# ---- the tape ----------------------------------------------------------------------------------------
@dataclass
class Tape:
    """One coin's synthetic market on one venue (deterministic for a seed)."""

    t: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    taker_buy: np.ndarray
    oi_t: np.ndarray
    oi_base: np.ndarray
    funding_t: np.ndarray
    funding_rate: np.ndarray

    def rows(self, start: int, end: int) -> np.ndarray:
        """Indices of bars with start <= t <= end (inclusive)."""
        return np.flatnonzero((self.t >= start) & (self.t <= end))

    def close_at(self, t_ms: int) -> float:
        """Close of the last bar that closed by ``t_ms`` (the price an OI snapshot is valued at)."""
        i = int(np.searchsorted(self.t + MINUTE, t_ms, side="right")) - 1
        return float(self.close[max(i, 0)])


def make_tape(start_ms: int, end_ms: int, coin: str, seed: int, funding_hours: int = 8) -> Tape:
    rng = np.random.default_rng(seed)
    t = np.arange(start_ms, end_ms, MINUTE, dtype=np.int64)
    n = len(t)
    steps = rng.normal(0, 0.0007, n)
    close = START_PRICE[coin] * np.exp(np.cumsum(steps))
    open_ = np.r_[START_PRICE[coin], close[:-1]]
    wick = np.abs(rng.normal(0, 0.0004, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = np.round(rng.gamma(2.0, 20.0 if coin == "BTC" else 300.0, n), 3) + 0.001
    share = np.clip(0.5 + 40 * (close - open_) / open_ + rng.normal(0, 0.05, n), 0.05, 0.95)
    taker_buy = np.round(volume * share, 3)
    oi_t = np.arange(start_ms - start_ms % OI_STEP, end_ms, OI_STEP, dtype=np.int64)
    oi_base = START_OI_BASE[coin] * np.exp(np.cumsum(rng.normal(0, 0.002, len(oi_t))))
    f_step = funding_hours * HOUR
    funding_t = np.arange(start_ms - start_ms % f_step + f_step, end_ms, f_step, dtype=np.int64)
    funding_rate = np.round(rng.normal(0.0001, 0.00008, len(funding_t)), 8)
    return Tape(t, open_, high, low, close, volume, taker_buy, oi_t, oi_base, funding_t, funding_rate)


def _s(x: float) -> str:
    return f"{x:.10g}"


# ---- markets as each venue publishes them ---------------------------------------------------------
REAL_FRAMES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "exchange_frames_real.json.gz"
_RECORDED_LISTS = {BINANCE: ("binance_exchangeInfo_2021-07-22", "symbols", "symbol"),
                   BYBIT: ("bybit_instruments_linear_2026-08-09", "result.list", "symbol"),
                   OKX: ("okx_instruments_swap_2022-05-13", "data", "instId")}


@functools.cache
def recorded_market_lists() -> dict[str, Any]:
    """The venues' real market-list answers from the shared data (empty if the file is missing)."""
    if not REAL_FRAMES.exists():
        return {}
    with gzip.open(REAL_FRAMES, "rt") as fh:
        rest = json.load(fh)["rest"]
    return {venue: json.loads(rest[key]) for venue, (key, _, _) in _RECORDED_LISTS.items()}


def recorded_entry(venue: str, market_id: str) -> dict[str, Any]:
    """A copy of one market's entry as the venue published it ({} if not recorded)."""
    answer = recorded_market_lists().get(venue)
    if answer is None:
        return {}
    _, path, key = _RECORDED_LISTS[venue]
    rows = answer
    for part in path.split("."):
        rows = rows[part]
    return copy.deepcopy(next((r for r in rows if r[key] == market_id), {}))


def binance_exchange_info(extra: tuple[str, ...] = ("OLDUSDT",)) -> dict[str, Any]:
    def sym(sid: str, base: str, contract_type: str = "PERPETUAL", delivery: int = 4133404800000) -> dict:
        return {
            "symbol": sid, "pair": base + "USDT", "contractType": contract_type, "deliveryDate": delivery,
            "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT",
            "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.0500",
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764", "tickSize": "0.10"},
                {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "maxQty": "120", "minQty": "0.001"},
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
            ],
            "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        }

    def real(sid: str, template: str, base: str, contract_type: str = "PERPETUAL",
             delivery: int = 4133404800000) -> dict:
        names = {"symbol": sid, "pair": base + "USDT", "baseAsset": base, "contractType": contract_type,
                 "deliveryDate": delivery, "status": "TRADING"}
        return {**(recorded_entry(BINANCE, template) or sym(sid, base, contract_type, delivery)), **names}

    symbols = [real("BTCUSDT", "BTCUSDT", "BTC"), real("ETHUSDT", "ETHUSDT", "ETH"),
               real("BTCUSDT_261225", "BTCUSDT_210924", "BTC", "CURRENT_QUARTER", 1798185600000)]
    symbols += [real(s, "BTCUSDT", s.removesuffix("USDT")) for s in extra]
    return {"timezone": "UTC", "serverTime": 0, "futuresType": "U_MARGINED",
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                            "limit": 2400}],
            "exchangeFilters": [], "assets": [], "symbols": symbols}


def bybit_instruments(extra: tuple[str, ...] = ("OLDUSDT",)) -> dict[str, Any]:
    def inst(sid: str, base: str, funding_minutes: int) -> dict:
        return {
            "symbol": sid, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": base,
            "quoteCoin": "USDT", "settleCoin": "USDT", "launchTime": "1585526400000", "deliveryTime": "0",
            "deliveryFeeRate": "", "priceScale": "2",
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
            "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                              "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "500.000",
                              "minNotionalValue": "5"},
            "unifiedMarginTrade": True, "fundingInterval": funding_minutes, "copyTrading": "both",
            "upperFundingRate": "0.005", "lowerFundingRate": "-0.005",
        }

    def real(sid: str, template: str, base: str, funding_minutes: int) -> dict:
        names = {"symbol": sid, "baseCoin": base, "status": "Trading", "fundingInterval": funding_minutes}
        return {**(recorded_entry(BYBIT, template) or inst(sid, base, funding_minutes)), **names}

    items = [real("BTCUSDT", "BTCUSDT", "BTC", 480), real("ETHUSDT", "ETHUSDT", "ETH", 240)]
    items += [real(s, "BTCUSDT", s.removesuffix("USDT"), 480) for s in extra]
    return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": items},
            "retExtInfo": {}, "time": 0}


def okx_instruments(extra: tuple[str, ...] = ("OLD-USDT-SWAP",)) -> dict[str, Any]:
    def inst(iid: str, base: str, ct_val: float) -> dict:
        return {
            "instType": "SWAP", "instId": iid, "uly": f"{base}-USDT", "instFamily": f"{base}-USDT",
            "baseCcy": "", "quoteCcy": "", "settleCcy": "USDT", "ctVal": _s(ct_val), "ctMult": "1",
            "ctValCcy": base, "ctType": "linear", "optType": "", "stk": "", "listTime": "1606468572000",
            "expTime": "", "lever": "100", "tickSz": "0.1", "lotSz": "0.01", "minSz": "0.01",
            "maxLmtSz": "100000000", "maxMktSz": "10000", "state": "live", "alias": "",
        }

    def real(iid: str, template: str, base: str, ct_val: float) -> dict:
        names = {"instId": iid, "uly": f"{base}-USDT", "instFamily": f"{base}-USDT", "ctValCcy": base,
                 "ctVal": _s(ct_val), "state": "live"}
        return {**(recorded_entry(OKX, template) or inst(iid, base, ct_val)), **names}

    items = [real("BTC-USDT-SWAP", "BTC-USDT-SWAP", "BTC", 0.01), real("ETH-USDT-SWAP", "ETH-USDT-SWAP", "ETH", 0.1)]
    items += [real(s, "BTC-USDT-SWAP", s.split("-")[0], 1.0) for s in extra]
    return {"code": "0", "msg": "", "data": items}


# ---- faults ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    kind: str  # "status" | "timeout" | "truncate" | "malformed" | "html" | "empty-ok"
    status: int = 500
    body: str | None = None
    delay: float = 2.0

    @staticmethod
    def http(status: int, body: str | None = None) -> Fault:
        return Fault("status", status, body)

    @staticmethod
    def timeout(delay: float = 2.0) -> Fault:
        return Fault("timeout", delay=delay)


TRUNCATE = Fault("truncate")
MALFORMED = Fault("malformed")
HTML = Fault("html")

# each venue's own rate-limit answer
RATE_LIMIT_BODY = {
    BINANCE: (429, json.dumps({"code": -1003, "msg": "Too many requests; current limit is 2400."})),
    BYBIT: (200, json.dumps({"retCode": 10006, "retMsg": "Too many visits!", "result": {}})),
    OKX: (429, json.dumps({"code": "50011", "msg": "Too Many Requests", "data": []})),
}
UNKNOWN_SYMBOL_BODY = {
    BINANCE: (400, json.dumps({"code": -1121, "msg": "Invalid symbol."})),
    BYBIT: (200, json.dumps({"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}})),
    OKX: (200, json.dumps({"code": "51001", "msg": "Instrument ID does not exist", "data": []})),
}


@dataclass
class Request:
    exchange: str
    route: str
    params: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)  # when it was answered (rate tests)


@dataclass
class _Conn:
    exchange: str
    ws: web.WebSocketResponse
    topics: set[str] = field(default_factory=set)


# ---- the server ------------------------------------------------------------------------------------
class FakeExchange:
    def __init__(self, now_ms: int, days: float = 3.0, future_hours: float = 2.0, seed: int = 7,
                 page_cap: dict[str, int] | None = None) -> None:
        self.now_ms = now_ms
        start = floor_minute(now_ms - days * DAY)
        end = floor_minute(now_ms + future_hours * HOUR)
        self.tapes: dict[tuple[str, str], Tape] = {}
        for k, venue in enumerate((BINANCE, BYBIT, OKX)):
            for j, coin in enumerate(("BTC", "ETH")):
                hours = 4 if (venue, coin) == (BYBIT, "ETH") else 8
                self.tapes[venue, coin] = make_tape(start, end, coin, seed + 10 * k + j, hours)
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.requests: list[Request] = []
        self.page_cap = dict(page_cap or {})  # "bybit:oi" -> rows per page (forces cursor paging)
        self.delisted: set[str] = {"OLDUSDT", "OLD-USDT-SWAP"}
        self.latency_s = 0.0  # added to every REST answer (benchmarks: what concurrency buys)
        self.bybit_single_oi = True  # False: tickers without singleOpenInterest* (the older format)
        self.bybit_ticker: Any = None  # market id -> a recorded ticker row (or None: the tape's)
        self.market_lists: dict[str, Any] = {}  # venue -> a recorded market list served instead of ours
        self.conns: list[_Conn] = []
        self.subscriptions: dict[tuple[str, str], int] = defaultdict(int)
        self._sub_changed = asyncio.Condition()
        self._served = asyncio.Condition()
        self._closing = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle
    async def start(self) -> FakeExchange:
        app = web.Application()
        app.router.add_route("GET", "/{host}/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._closing.set()
        for c in list(self.conns):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- test controls
    def inject(self, route: str, *faults: Fault) -> None:
        """Queue faults for ``"<exchange>:<route>"``; routes: markets, klines, oi, funding, open_interest,
        ticker."""
        self.faults[route].extend(faults)

    def tape(self, exchange: str, coin: str) -> Tape:
        return self.tapes[exchange, coin]

    def calls(self, exchange: str, route: str) -> list[Request]:
        return [r for r in self.requests if r.exchange == exchange and r.route == route]

    async def wait_subscribed(self, exchange: str, topic: str, count: int = 1) -> None:
        """Until ``topic`` has been subscribed ``count`` times in total (a resubscription counts again)."""
        async with asyncio.timeout(5.0), self._sub_changed:
            await self._sub_changed.wait_for(lambda: self.subscriptions[exchange, topic] >= count)

    async def wait_until_called(self, exchange: str, route: str, count: int = 1) -> None:
        """Until ``route`` has been answered ``count`` times (a poll has happened)."""
        async with asyncio.timeout(5.0), self._served:
            await self._served.wait_for(lambda: len(self.calls(exchange, route)) >= count)

    async def _log(self, req: Request) -> None:
        async with self._served:
            self.requests.append(req)
            self._served.notify_all()

    async def push(self, exchange: str, topic: str, frame: dict[str, Any] | str) -> int:
        """Send ``frame`` to every open connection subscribed to ``topic``; returns how many got it. A str
        is sent byte for byte (a recorded frame)."""
        text = frame if isinstance(frame, str) else json.dumps(frame)
        sent = 0
        for c in list(self.conns):
            if c.exchange == exchange and topic in c.topics and not c.ws.closed:
                await c.ws.send_str(text)
                sent += 1
        return sent

    async def drop(self, exchange: str) -> None:
        """Cut every websocket of one venue, as a network blip would."""
        for c in [c for c in self.conns if c.exchange == exchange]:
            c.topics.clear()
            await c.ws.close(code=1006)

    # -- dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"]
        exchange = HOSTS.get(host)
        if exchange is None:
            return web.Response(status=404, text="unknown host")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, exchange)
        path = "/" + request.match_info["tail"]
        route, handler = self._route(exchange, path)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        params = dict(request.query)
        if handler is None:
            self.requests.append(Request(exchange, path, params, 404))
            return web.Response(status=404, text="Not Found")
        queued = self.faults.get(f"{exchange}:{route}")
        if queued:
            fault = queued.popleft()
            resp = await self._fault(exchange, fault)
            await self._log(Request(exchange, route, params, resp.status))
            return resp
        try:
            status, body = handler(params)
        except _VenueError as e:
            status, body = e.status, e.body
        await self._log(Request(exchange, route, params, status))
        return web.Response(status=status, text=body if isinstance(body, str) else json.dumps(body),
                            content_type="application/json")

    async def _fault(self, exchange: str, fault: Fault) -> web.Response:
        if fault.kind == "timeout":
            try:
                await asyncio.wait_for(self._closing.wait(), fault.delay)
            except TimeoutError:
                pass
            return web.Response(status=504, text="late")
        if fault.kind == "truncate":
            return web.Response(text='{"code":"0","data":[["17', content_type="application/json")
        if fault.kind == "malformed":
            return web.Response(text="[{'not': json}]", content_type="application/json")
        if fault.kind == "html":
            return web.Response(text="<html><body>Bad gateway</body></html>", content_type="text/html")
        if fault.status == 429 and fault.body is None:
            status, body = RATE_LIMIT_BODY[exchange]
            return web.Response(status=status, text=body, content_type="application/json")
        return web.Response(status=fault.status, text=fault.body or "Service Unavailable",
                            content_type="application/json" if fault.body else "text/plain")

    def _route(self, exchange: str, path: str) -> tuple[str, Any]:
        table = {
            BINANCE: {
                "/fapi/v1/exchangeInfo": ("markets", lambda p: (200, self.market_lists.get(BINANCE)
                                                                or binance_exchange_info())),
                "/fapi/v1/klines": ("klines", self._binance_klines),
                "/futures/data/openInterestHist": ("oi", self._binance_oi),
                "/fapi/v1/fundingRate": ("funding", self._binance_funding),
                "/fapi/v1/openInterest": ("open_interest", self._binance_open_interest),
            },
            BYBIT: {
                "/v5/market/instruments-info": ("markets", self._bybit_instruments),
                "/v5/market/kline": ("klines", self._bybit_kline),
                "/v5/market/open-interest": ("oi", self._bybit_oi),
                "/v5/market/funding/history": ("funding", self._bybit_funding),
                "/v5/market/tickers": ("ticker", self._bybit_ticker),
            },
            OKX: {
                "/api/v5/public/instruments": ("markets", self._okx_instruments),
                "/api/v5/market/candles": ("klines", lambda p: self._okx_candles(p, recent=True)),
                "/api/v5/market/history-candles": ("klines", lambda p: self._okx_candles(p, recent=False)),
                "/api/v5/rubik/stat/contracts/open-interest-history": ("oi", self._okx_oi),
                "/api/v5/public/funding-rate-history": ("funding", self._okx_funding),
                "/api/v5/public/open-interest": ("open_interest", self._okx_open_interest),
            },
        }[exchange]
        return table.get(path, (path, None))

    def _coin(self, exchange: str, market_id: str) -> str:
        if market_id in self.delisted or market_id not in IDS[exchange].values():
            status, body = UNKNOWN_SYMBOL_BODY[exchange]
            raise _VenueError(status, body)
        return next(c for c, i in IDS[exchange].items() if i == market_id)

    def _cap(self, key: str, limit: int) -> int:
        return min(limit, self.page_cap.get(key, limit))

    # -- Binance USDⓈ-M: ascending rows, first `limit` in [startTime, endTime]
    def _binance_klines(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BINANCE, self._coin(BINANCE, p["symbol"]))
        limit = self._cap("binanceusdm:klines", min(int(p.get("limit", 500)), 1500))
        end = min(int(p.get("endTime", self.now_ms)), self.now_ms)
        start = int(p.get("startTime", end - limit * MINUTE))
        idx = tape.rows(start, end)[:limit]
        rows = [[int(tape.t[i]), _s(tape.open[i]), _s(tape.high[i]), _s(tape.low[i]), _s(tape.close[i]),
                 _s(tape.volume[i]), int(tape.t[i]) + MINUTE - 1, _s(tape.volume[i] * tape.close[i]), 100,
                 _s(tape.taker_buy[i]), _s(tape.taker_buy[i] * tape.close[i]), "0"] for i in idx]
        return 200, rows

    def _binance_oi(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BINANCE, self._coin(BINANCE, p["symbol"]))
        if p.get("period") != "5m":
            return 400, {"code": -1130, "msg": "Data sent for parameter 'period' is not valid."}
        oldest = self.now_ms - BINANCE_OI_DAYS * DAY
        start = int(p.get("startTime", 0))
        if "startTime" in p and start < oldest:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'startTime' is not valid."}
        limit = self._cap("binanceusdm:oi", min(int(p.get("limit", 30)), 500))
        end = min(int(p.get("endTime", self.now_ms)), self.now_ms)
        sel = np.flatnonzero((tape.oi_t >= max(start, oldest)) & (tape.oi_t <= end))[:limit]
        return 200, [{"symbol": p["symbol"], "sumOpenInterest": _s(tape.oi_base[i]),
                      "sumOpenInterestValue": _s(tape.oi_base[i] * tape.close_at(int(tape.oi_t[i]))),
                      "CMCCirculatingSupply": "0", "timestamp": int(tape.oi_t[i])} for i in sel]

    def _binance_funding(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BINANCE, self._coin(BINANCE, p["symbol"]))
        limit = min(int(p.get("limit", 100)), 1000)
        start = int(p.get("startTime", 0))
        end = min(int(p.get("endTime", self.now_ms)), self.now_ms)
        sel = np.flatnonzero((tape.funding_t >= start) & (tape.funding_t <= end))[:limit]
        return 200, [{"symbol": p["symbol"], "fundingTime": int(tape.funding_t[i]),
                      "fundingRate": _s(tape.funding_rate[i]), "markPrice": "0"} for i in sel]

    def _binance_open_interest(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BINANCE, self._coin(BINANCE, p["symbol"]))
        i = int(np.searchsorted(tape.oi_t, self.now_ms, side="right")) - 1
        return 200, {"symbol": p["symbol"], "openInterest": _s(tape.oi_base[i]), "time": self.now_ms}

    # -- Bybit v5: newest first; the newest `limit` rows of [start, end]
    @staticmethod
    def _bybit(result: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 0}

    def _bybit_instruments(self, p: dict[str, str]) -> tuple[int, Any]:
        if p.get("category") != "linear":
            return 200, {"retCode": 10001, "retMsg": "fake serves linear only", "result": {}}
        if p.get("status") == "PreLaunch":
            return self._bybit({"category": "linear", "list": [], "nextPageCursor": ""})
        return 200, self.market_lists.get(BYBIT) or bybit_instruments()

    def _bybit_kline(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BYBIT, self._coin(BYBIT, p["symbol"]))
        limit = self._cap("bybit:klines", min(int(p.get("limit", 200)), 1000))
        end = min(int(p.get("end", self.now_ms)), self.now_ms)
        start = int(p.get("start", end - limit * MINUTE))
        idx = tape.rows(start, end)[::-1][:limit]
        rows = [[str(int(tape.t[i])), _s(tape.open[i]), _s(tape.high[i]), _s(tape.low[i]), _s(tape.close[i]),
                 _s(tape.volume[i]), _s(tape.volume[i] * tape.close[i])] for i in idx]
        return self._bybit({"symbol": p["symbol"], "category": "linear", "list": rows})

    def _bybit_oi(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BYBIT, self._coin(BYBIT, p["symbol"]))
        if p.get("intervalTime") != "5min":
            return 200, {"retCode": 10001, "retMsg": "params error: intervalTime invalid", "result": {}}
        limit = self._cap("bybit:oi", min(int(p.get("limit", 50)), 200))
        end = min(int(p.get("endTime", self.now_ms)), self.now_ms)
        start = int(p.get("startTime", 0))
        sel = np.flatnonzero((tape.oi_t >= start) & (tape.oi_t <= end))[::-1]
        offset = int(p.get("cursor") or 0)
        page = sel[offset: offset + limit]
        more = offset + limit < len(sel)
        # Bybit counts both sides (its v5 docs: "the sum of both sides"); the tape holds one side
        rows = [{"openInterest": _s(2 * tape.oi_base[i]), "timestamp": str(int(tape.oi_t[i]))} for i in page]
        return self._bybit({"symbol": p["symbol"], "category": "linear", "list": rows,
                            "nextPageCursor": str(offset + limit) if more else ""})

    def _bybit_funding(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(BYBIT, self._coin(BYBIT, p["symbol"]))
        limit = min(int(p.get("limit", 200)), 200)
        end = min(int(p.get("endTime", self.now_ms)), self.now_ms)
        start = int(p.get("startTime", 0))
        sel = np.flatnonzero((tape.funding_t >= start) & (tape.funding_t <= end))[::-1][:limit]
        rows = [{"symbol": p["symbol"], "fundingRate": _s(tape.funding_rate[i]),
                 "fundingRateTimestamp": str(int(tape.funding_t[i]))} for i in sel]
        return self._bybit({"category": "linear", "list": rows})

    def _bybit_ticker(self, p: dict[str, str]) -> tuple[int, Any]:
        recorded = self.bybit_ticker(p["symbol"]) if self.bybit_ticker is not None else None
        if recorded is not None:  # a recorded ticker instead of the tape's
            return self._bybit({"category": "linear", "list": [recorded]})
        coin = self._coin(BYBIT, p["symbol"])
        tape = self.tape(BYBIT, coin)
        i = int(np.searchsorted(tape.oi_t, self.now_ms, side="right")) - 1
        price = tape.close_at(self.now_ms)
        live_oi = tape.oi_base[i] * 1.001  # live OI (one side) moves between the 5-minute buckets
        row = {
            "symbol": p["symbol"], "lastPrice": _s(price), "markPrice": _s(price), "indexPrice": _s(price),
            "openInterest": _s(2 * live_oi), "openInterestValue": _s(2 * live_oi * price), "fundingRate": "0.0001",
            "nextFundingTime": str(self.now_ms + HOUR), "volume24h": "1", "turnover24h": "1",
            "bid1Price": _s(price), "ask1Price": _s(price), "highPrice24h": _s(price), "lowPrice24h": _s(price),
            "prevPrice24h": _s(price), "price24hPcnt": "0"}
        if self.bybit_single_oi:  # the one-side fields newer tickers carry (exactly half the totals)
            row |= {"singleOpenInterest": _s(live_oi), "singleOpenInterestValue": _s(live_oi * price)}
        return self._bybit({"category": "linear", "list": [row]})

    # -- OKX v5: newest first; `after` = older than (exclusive), `before` = newer than (exclusive)
    @staticmethod
    def _okx(data: list[Any]) -> tuple[int, Any]:
        return 200, {"code": "0", "msg": "", "data": data}

    def _okx_instruments(self, p: dict[str, str]) -> tuple[int, Any]:
        if p.get("instType") != "SWAP":
            return 200, {"code": "51000", "msg": "fake serves SWAP only", "data": []}
        return 200, self.market_lists.get(OKX) or okx_instruments()

    def _okx_window(self, p: dict[str, str], a: str = "after", b: str = "before") -> tuple[int, int]:
        hi = int(p[a]) - 1 if a in p else self.now_ms
        lo = int(p[b]) + 1 if b in p else 0
        return lo, min(hi, self.now_ms)

    def _okx_candles(self, p: dict[str, str], recent: bool) -> tuple[int, Any]:
        coin = self._coin(OKX, p["instId"])
        tape = self.tape(OKX, coin)
        if p.get("bar") != "1m":
            return 200, {"code": "51000", "msg": "Parameter bar error", "data": []}
        limit = self._cap("okx:klines", min(int(p.get("limit", 100)), 300))
        lo, hi = self._okx_window(p)
        if recent:
            lo = max(lo, self.now_ms - OKX_RECENT_CANDLES * MINUTE)
        idx = tape.rows(lo, hi)[::-1][:limit]
        ct = OKX_CT_VAL[coin]
        rows = [[str(int(tape.t[i])), _s(tape.open[i]), _s(tape.high[i]), _s(tape.low[i]), _s(tape.close[i]),
                 _s(round(tape.volume[i] / ct, 2)), _s(tape.volume[i]), _s(tape.volume[i] * tape.close[i]),
                 "0" if tape.t[i] + MINUTE > self.now_ms else "1"] for i in idx]
        return self._okx(rows)

    def _okx_oi(self, p: dict[str, str]) -> tuple[int, Any]:
        coin = self._coin(OKX, p["instId"])
        tape = self.tape(OKX, coin)
        if p.get("period") != "5m":
            return 200, {"code": "51000", "msg": "Parameter period error", "data": []}
        limit = min(int(p.get("limit", 100)), 100)
        lo, hi = self._okx_window(p, "end", "begin")
        lo = max(lo, self.now_ms - OKX_OI_POINTS * OI_STEP)
        sel = np.flatnonzero((tape.oi_t >= lo) & (tape.oi_t <= hi))[::-1][:limit]
        ct = OKX_CT_VAL[coin]
        rows = []
        for i in sel:
            base = tape.oi_base[i]
            rows.append([str(int(tape.oi_t[i])), _s(round(base / ct, 2)), _s(base),
                         _s(base * tape.close_at(int(tape.oi_t[i])))])
        return self._okx(rows)

    def _okx_funding(self, p: dict[str, str]) -> tuple[int, Any]:
        tape = self.tape(OKX, self._coin(OKX, p["instId"]))
        limit = min(int(p.get("limit", 100)), 400)
        lo, hi = self._okx_window(p)
        lo = max(lo, self.now_ms - OKX_FUNDING_DAYS * DAY)
        sel = np.flatnonzero((tape.funding_t >= lo) & (tape.funding_t <= hi))[::-1][:limit]
        return self._okx([{"instType": "SWAP", "instId": p["instId"], "formulaType": "withRate",
                           "fundingRate": _s(tape.funding_rate[i]), "realizedRate": _s(tape.funding_rate[i]),
                           "fundingTime": str(int(tape.funding_t[i])), "method": "current_period"}
                          for i in sel])

    def _okx_open_interest(self, p: dict[str, str]) -> tuple[int, Any]:
        coin = self._coin(OKX, p["instId"])
        tape = self.tape(OKX, coin)
        i = int(np.searchsorted(tape.oi_t, self.now_ms, side="right")) - 1
        base = tape.oi_base[i]
        return self._okx([{"instType": "SWAP", "instId": p["instId"], "oi": _s(base / OKX_CT_VAL[coin]),
                           "oiCcy": _s(base), "oiUsd": _s(base * tape.close_at(self.now_ms)),
                           "ts": str(self.now_ms)}])

    # -- websockets
    async def _websocket(self, request: web.Request, exchange: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(exchange, ws)
        self.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "ping":  # OKX keepalive
                    await ws.send_str("pong")
                    continue
                await self._ws_message(conn, json.loads(msg.data))
        finally:
            conn.topics.clear()
            self.conns.remove(conn)
        return ws

    async def _ws_message(self, conn: _Conn, msg: dict[str, Any]) -> None:
        ws = conn.ws
        new: list[str] = []
        if conn.exchange == BINANCE and msg.get("method") == "SUBSCRIBE":
            new = list(msg.get("params", []))
            await ws.send_str(json.dumps({"result": None, "id": msg.get("id")}))
        elif conn.exchange == BYBIT:
            if msg.get("op") == "ping":
                await ws.send_str(json.dumps({"success": True, "ret_msg": "pong", "conn_id": "fake",
                                              "op": "ping", "req_id": msg.get("req_id")}))
                return
            if msg.get("op") == "subscribe":
                new = list(msg.get("args", []))
                await ws.send_str(json.dumps({"success": True, "ret_msg": "", "conn_id": "fake",
                                              "req_id": msg.get("req_id"), "op": "subscribe"}))
        elif conn.exchange == OKX and msg.get("op") == "subscribe":
            for arg in msg.get("args", []):
                new.append(f"{arg.get('channel')}:{arg.get('instId') or arg.get('instType')}")
                await ws.send_str(json.dumps({"event": "subscribe", "arg": arg, "connId": "fake"}))
        if new:
            async with self._sub_changed:
                for topic in new:
                    conn.topics.add(topic)
                    self.subscriptions[conn.exchange, topic] += 1
                self._sub_changed.notify_all()


class FakeClock:
    """The feed's and the fake exchange's "now", moved by the test (seconds)."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake

    def __call__(self) -> float:
        return self.fake.now_ms / 1000

    def advance(self, seconds: float) -> None:
        self.fake.now_ms += int(seconds * 1000)


def now_s(fake: FakeExchange) -> int:
    return fake.now_ms // 1000


def last_closed_bar_ms(fake: FakeExchange) -> int:
    return floor_minute(fake.now_ms) - MINUTE


class _VenueError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status, self.body = status, body


# ---- websocket frames in each venue's format --------------------------------------------------------
def binance_kline_frame(market_id: str, tape: Tape, i: int, closed: bool = False) -> dict[str, Any]:
    t = int(tape.t[i])
    return {"e": "kline", "E": t + 1000, "s": market_id, "k": {
        "t": t, "T": t + MINUTE - 1, "s": market_id, "i": "1m", "f": 1, "L": 2, "o": _s(tape.open[i]),
        "c": _s(tape.close[i]), "h": _s(tape.high[i]), "l": _s(tape.low[i]), "v": _s(tape.volume[i]),
        "n": 100, "x": closed, "q": _s(tape.volume[i] * tape.close[i]), "V": _s(tape.taker_buy[i]),
        "Q": _s(tape.taker_buy[i] * tape.close[i]), "B": "0"}}


def bybit_kline_frame(market_id: str, tape: Tape, i: int, closed: bool = False) -> dict[str, Any]:
    t = int(tape.t[i])
    return {"topic": f"kline.1.{market_id}", "type": "snapshot", "ts": t + 1000, "data": [{
        "start": t, "end": t + MINUTE - 1, "interval": "1", "open": _s(tape.open[i]),
        "close": _s(tape.close[i]), "high": _s(tape.high[i]), "low": _s(tape.low[i]),
        "volume": _s(tape.volume[i]), "turnover": _s(tape.volume[i] * tape.close[i]), "confirm": closed,
        "timestamp": t + 1000}]}


def okx_candle_frame(inst_id: str, tape: Tape, i: int, ct_val: float, closed: bool = False) -> dict[str, Any]:
    t = int(tape.t[i])
    return {"arg": {"channel": "candle1m", "instId": inst_id}, "data": [[
        str(t), _s(tape.open[i]), _s(tape.high[i]), _s(tape.low[i]), _s(tape.close[i]),
        _s(round(tape.volume[i] / ct_val, 2)), _s(tape.volume[i]), _s(tape.volume[i] * tape.close[i]),
        "1" if closed else "0"]]}


def binance_force_order(market_id: str, side: str, qty: float, price: float, t_ms: int) -> dict[str, Any]:
    return {"e": "forceOrder", "E": t_ms + 2, "o": {
        "s": market_id, "S": side, "o": "LIMIT", "f": "IOC", "q": _s(qty), "p": _s(price * 0.999),
        "ap": _s(price), "X": "FILLED", "l": _s(qty / 2), "z": _s(qty), "T": t_ms}}


def bybit_all_liquidation(market_id: str, rows: list[tuple[str, float, float, int]]) -> dict[str, Any]:
    """rows: (position side Buy/Sell, size in base, price, time ms)."""
    return {"topic": f"allLiquidation.{market_id}", "type": "snapshot", "ts": rows[-1][3] + 5,
            "data": [{"T": t, "s": market_id, "S": side, "v": _s(v), "p": _s(p)} for side, v, p, t in rows]}


def okx_liquidation_orders(items: dict[str, list[tuple[str, str, float, float, int]]]) -> dict[str, Any]:
    """items: instId -> details (order side buy/sell, posSide, contracts, bankruptcy price, time ms)."""
    return {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
        {"instId": inst, "instFamily": inst.rsplit("-", 1)[0], "instType": "SWAP",
         "uly": inst.rsplit("-", 1)[0],
         "details": [{"bkLoss": "0", "bkPx": _s(px), "ccy": "", "posSide": pos, "side": side, "sz": _s(sz),
                      "ts": str(t)} for side, pos, sz, px, t in details]}
        for inst, details in items.items()]}
