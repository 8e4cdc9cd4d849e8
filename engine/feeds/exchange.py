"""Real exchanges (Binance USDⓈ-M, Bybit linear, OKX swaps) through ccxt — the one module that imports it.

``ccxt`` is imported lazily, in a worker thread (it loads ~110 exchanges: ~0.6 s), the first time a feed
needs the network. Each feed owns one ccxt instance, shared by every symbol and stream it serves, so
ccxt's per-instance rate limiter sees all of our requests; open one feed per exchange.

History (REST): 1-minute candles (Binance's raw klines, for the taker-buy volume ccxt's parser drops),
open interest (5-minute snapshots held onto the 1-minute bars; Binance keeps 30 days, OKX 1,440 points)
and funding, paged in fixed windows no larger than each venue's per-call limit (so it does not matter
whether a venue returns the oldest or the newest rows of a range), requested concurrently under the rate
limiter, merged and de-duplicated.

Live (ccxt.pro websockets): candles (a candle is closed when a newer one starts), liquidations (every
row of every frame, side and units settled in ``normalise``), open interest and funding polled on an
interval. Dropped sockets are reconnected with backoff; the candles missed meanwhile are backfilled over
REST; liquidations cannot be backfilled, so the hole is recorded in ``feed.gaps``. Health changes are
emitted as ``HealthChange`` events.

Errors: every ccxt exception becomes one of ours (``engine.feeds.retry``) with a one-line message;
temporary ones are retried with exponential backoff and full jitter, permanent ones fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import numpy as np

from engine.feeds.base import (
    BarUpdate,
    FeedError,
    FeedEvent,
    Health,
    HealthChange,
    Market,
    UnknownSymbol,
)
from engine.feeds.normalise import (
    OI_SOURCES,
    CandleCloser,
    Candles,
    Closed,
    Forming,
    Missing,
    OISnapshot,
    binance_kline_rows,
    bybit_ticker_oi,
    candles_to_bars,
    empty_candles,
    funding_to_bars,
    liquidation_rows,
    merge_candles,
    missing_minutes,
    ohlcv_rows,
    oi_snapshot,
    parse_symbol,
    snapshots_to_bars,
    to_liquidation,
    window_rows,
)
from engine.feeds.retry import Backoff, RetryPolicy, as_feed_error, is_temporary, one_line, retry
from engine.model import Bars

if TYPE_CHECKING:
    from engine.rest_budget import RestBudget

T = TypeVar("T")
DEFAULT_BACKOFF = Backoff()

MINUTE_MS = 60_000
OI_STEP_MS = 5 * MINUTE_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
MAJORS = ("BTC", "ETH", "SOL", "XRP", "BNB", "DOGE")


# ---- what differs between venues, as data ------------------------------------------------------------
@dataclass(frozen=True)
class Venue:
    id: str  # ccxt id
    name: str
    market_types: tuple[str, ...]  # ccxt options.fetchMarkets.types: load swaps only, not spot/options
    candle_limit: int  # rows per OHLCV call
    raw_binance_klines: bool  # fetch /fapi/v1/klines directly: it carries taker buy volume
    oi_limit: int  # OI-history rows per call (5-minute period)
    oi_keeps_ms: int | None  # how far back the venue serves OI history
    oi_cursor: bool  # pages within a window continue with a cursor (Bybit)
    funding_limit: int
    funding_keeps_ms: int | None
    funding_until: str  # how to bound a funding window: "until" (ccxt) or "after" (OKX raw, exclusive)
    live_oi: str  # "open_interest" (base, × price), "ticker" (USD value), "open_interest_usd"
    liquidations: str  # "for_symbols" (watch_liquidations_for_symbols) | "symbol" (watch_liquidations)

    @property
    def has_taker(self) -> bool:
        return self.raw_binance_klines


VENUES: dict[str, Venue] = {
    "binanceusdm": Venue(
        id="binanceusdm", name="Binance USDⓈ-M", market_types=("linear",), candle_limit=1000,
        raw_binance_klines=True, oi_limit=500, oi_keeps_ms=30 * DAY_MS - HOUR_MS, oi_cursor=False,
        funding_limit=1000, funding_keeps_ms=None, funding_until="until", live_oi="open_interest",
        liquidations="for_symbols"),
    "bybit": Venue(
        id="bybit", name="Bybit", market_types=("linear",), candle_limit=1000, raw_binance_klines=False,
        oi_limit=200, oi_keeps_ms=None, oi_cursor=True, funding_limit=200, funding_keeps_ms=None,
        funding_until="until", live_oi="ticker", liquidations="symbol"),
    "okx": Venue(
        id="okx", name="OKX", market_types=("swap",), candle_limit=300, raw_binance_klines=False,
        oi_limit=100, oi_keeps_ms=1440 * OI_STEP_MS - 2 * OI_STEP_MS, oi_cursor=False, funding_limit=400,
        funding_keeps_ms=90 * DAY_MS, funding_until="after", live_oi="open_interest_usd",
        liquidations="for_symbols"),
}


@dataclass(frozen=True)
class Funding:
    rate: float  # fraction per interval, last settled
    time: int  # UNIX s of that settlement
    interval_hours: float | None  # None until two settlements have been seen

    @property
    def next_time(self) -> int | None:
        return None if self.interval_hours is None else self.time + int(self.interval_hours * 3600)


class Gap(NamedTuple):
    """A stretch of time with no data that could not be recovered (UNIX seconds, end exclusive)."""

    symbol: str
    start: int
    end: int
    kind: str = "liquidations"  # "liquidations" (never backfillable) | "bars"


@dataclass(frozen=True)
class Progress:
    """History download progress, for a progress bar: ``done`` of ``total`` requests in ``stage``."""

    symbol: str
    stage: str  # "candles" | "open interest" | "funding"
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


# ---- the ccxt client ----------------------------------------------------------------------------------
_CLIENT_CLASSES: dict[str, Any] = {}


def _import_ccxt_pro() -> Any:
    return importlib.import_module("ccxt.pro")


def _client_class(pro: Any, exchange_id: str) -> Any:
    """ccxt.pro's class for the venue, with three hooks:

    - a 2xx body that is not valid JSON (truncated, an HTML page) raises ``BadResponse`` (temporary)
      instead of reaching a parser that would read it as "no rows" and silently lose a page;
    - every raw liquidation and kline frame is shown to our listeners before ccxt parses it (ccxt keeps
      only the first row of a Bybit frame and ``details[0]`` of an OKX frame, and drops Binance's taker
      volume from klines);
    - socket (re)connections are announced, so a liquidation gap can be closed when the socket is back.
    """
    cls = _CLIENT_CLASSES.get(exchange_id)
    if cls is not None:
        return cls
    base = getattr(pro, exchange_id)
    bad_response = pro.BadResponse
    rate_limited = pro.DDoSProtection  # Binance 429/418; RateLimitExceeded (Bybit, OKX) is one

    class LiqheatClient(base):  # type: ignore[misc, valid-type]
        timeout_on_exit = 50  # ms; ccxt's 250 ms pause on close() adds up over many feeds

        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.liqheat_listeners: list[Callable[[str, Any, Any], None]] = []
            self._liqheat_parsed: tuple[str, Any] | None = None
            self.liqheat_budget: Any = None  # engine.rest_budget.RestBudget: shared with other workers

        async def fetch2(self, path: Any, api: Any = None, method: str = "GET", params: Any = None,
                         config: Any = None) -> Any:
            """Every REST request first takes its weight from the shared budget (when there is one); a
            429/418 answer pauses every worker behind the same egress."""
            api = ["public"] if api is None else api
            params = {} if params is None else params
            config = {} if config is None else config
            budget = self.liqheat_budget
            if budget is None:
                return await super().fetch2(path, api, method, params, config)
            await budget.acquire(self.calculate_rate_limiter_cost(api, method, path, params, config))
            try:
                out = await super().fetch2(path, api, method, params, config)
            except rate_limited:
                headers = self.last_response_headers or {}
                retry_after = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
                await budget.rate_limited(retry_after)
                raise
            budget.succeeded()
            return out

        def on_rest_response(self, code: Any, reason: Any, url: Any, method: Any, response_headers: Any,
                             response_body: Any, request_headers: Any, request_body: Any) -> Any:
            body = super().on_rest_response(code, reason, url, method, response_headers, response_body,
                                            request_headers, request_body)
            self._liqheat_parsed = None
            if isinstance(code, int) and 200 <= code < 300:
                try:
                    parsed = self.on_json_response(body)
                except ValueError:
                    parsed = None
                if parsed is None or not isinstance(parsed, (dict, list)):
                    snippet = one_line(str(body), 60)
                    raise bad_response(f"{self.id} {method} {url.split('?')[0]}: not JSON: {snippet!r}")
                self._liqheat_parsed = (body, parsed)
            return body

        def parse_json(self, http_response: Any) -> Any:
            cached = self._liqheat_parsed
            if cached is not None and cached[0] is http_response:
                self._liqheat_parsed = None
                return cached[1]
            return super().parse_json(http_response)

        def _liqheat_tell(self, kind: str, client: Any, message: Any) -> None:
            for listener in list(self.liqheat_listeners):
                listener(kind, client, message)

        def handle_liquidation(self, client: Any, message: Any) -> Any:
            self._liqheat_tell("liquidation", client, message)
            return super().handle_liquidation(client, message)

        def handle_ohlcv(self, client: Any, message: Any) -> Any:
            self._liqheat_tell("ohlcv", client, message)
            return super().handle_ohlcv(client, message)

        def on_connected(self, client: Any, message: Any = None) -> Any:
            self._liqheat_tell("connected", client, message)
            return super().on_connected(client, message)

    LiqheatClient.__name__ = f"Liqheat_{exchange_id}"
    _CLIENT_CLASSES[exchange_id] = LiqheatClient
    return LiqheatClient


def loopback_urls(urls: Any, base: str) -> Any:
    """Every URL in a ccxt ``urls['api']`` tree rewritten to ``http(s)|ws://<base>/<host>/<path>``: for
    loopback test servers and recording proxies. ``{hostname}`` placeholders survive (ccxt fills them)."""
    if isinstance(urls, dict):
        return {k: loopback_urls(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        scheme, rest = urls.split("://", 1)
        host, _, path = rest.partition("/")
        host = host.split(":")[0]
        new_scheme = "ws" if scheme.startswith("ws") else "http"
        return f"{new_scheme}://{base}/{host}" + (f"/{path}" if path else "")
    return urls


def _deep_merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, Mapping):
        out = dict(a)
        for k, v in b.items():
            out[k] = _deep_merge(a.get(k), v)
        return out
    return b


def _floor_minute(ms: float) -> int:
    return int(ms // MINUTE_MS * MINUTE_MS)


def _ceil_minute(ms: float) -> int:
    return int(-(-ms // MINUTE_MS) * MINUTE_MS)


def _windows(start: int, stop: int, span: int) -> list[tuple[int, int]]:
    """[start, stop) cut into half-open windows of at most ``span`` ms."""
    out = []
    s = start
    while s < stop:
        out.append((s, min(s + span, stop)))
        s += span
    return out


# ---- the feed ----------------------------------------------------------------------------------------
class ExchangeFeed:
    """A ``Feed`` over one real exchange. See the module docstring for what it does and why."""

    timeframe = 60

    def __init__(
        self,
        exchange_id: str,
        *,
        api_overrides: Mapping[str, Any] | None = None,
        route_through: str | None = None,
        markets: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
        rate_limit: bool = True,
        max_retries: int = 5,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 10.0,
        history_days: float = 30.0,
        concurrency: int = 4,
        oi_poll_s: float = 60.0,
        funding_poll_s: float = 600.0,
        stale_after_s: float = 90.0,
        watchdog_s: float = 1.0,
        max_backfill_s: float = 86_400.0,
        progress: ProgressCallback | None = None,
        seed: int | None = None,
        rest_budget: RestBudget | None = None,
    ) -> None:
        if exchange_id not in VENUES:
            raise FeedError(f"unknown exchange {exchange_id!r}; use one of {', '.join(VENUES)}")
        self.exchange = exchange_id
        self.venue = VENUES[exchange_id]
        self.clock = clock
        self.policy = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self.gaps: list[Gap] = []
        self.retries = 0  # temporary errors recovered from (a health hint)
        self.last_error = ""
        self._api_overrides = dict(api_overrides or {})
        self._route_through = route_through
        self._markets_given = markets
        self._rate_limit = rate_limit
        self.rest_budget = rest_budget
        self._timeout_s = timeout_s
        self._history_ms = int(history_days * DAY_MS)
        self._concurrency = max(1, concurrency)
        self._oi_poll_s = oi_poll_s
        self._funding_poll_s = funding_poll_s
        self._stale_after_s = stale_after_s
        self._watchdog_s = watchdog_s
        self._max_backfill_ms = int(max_backfill_s * 1000)
        self._progress = progress
        self._rng = random.Random(seed)  # noqa: S311 — jitter only
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._markets_cache: dict[str, Market] | None = None
        self._last_closed_ms: dict[str, int] = {}
        self._last_funding: dict[str, tuple[int, float]] = {}
        self._last_price: dict[str, float] = {}
        self._funding_interval_ms: dict[str, int] = {}
        self._oi_live_field: dict[str, str] = {}  # symbol -> the field the last live OI poll read
        self._health = Health.RECONNECTING
        self._health_reason = "not connected yet"
        self._streams: set[_Stream] = set()

    # -- Feed protocol -----------------------------------------------------------------------------
    async def markets(self) -> list[Market]:
        """Active linear perpetual swaps (USDT/USDC settled): the majors first (they are what a caller
        picking "the first few" wants), USDT before USDC, then by symbol."""
        def rank(m: Market) -> tuple[int, int, str]:
            major = MAJORS.index(m.coin) if m.coin in MAJORS else len(MAJORS)
            return major, 0 if m.symbol.endswith(":USDT") else 1, m.symbol

        return sorted((await self._markets()).values(), key=rank)

    async def history(self, symbol: str, since: int | None = None, until: int | None = None, *,
                      progress: ProgressCallback | None = None) -> Bars:
        """Closed 1-minute bars with open time in [since, until) (UNIX s). ``since`` None = ``history_days``
        back; ``until`` None = now. OI in USD where the venue still has it, funding in force, and taker
        buy/sell volume on Binance."""
        market = await self.resolve(symbol)
        now_ms = self.clock() * 1000
        stop = _floor_minute(now_ms) if until is None else min(_ceil_minute(until * 1000), _floor_minute(now_ms))
        start = _ceil_minute(since * 1000) if since is not None else stop - self._history_ms
        if stop <= start:
            return self._bars(empty_candles(self.venue.has_taker), [], [])
        client = await self._ccxt()
        tracker = _Tracker(market.symbol, progress or self._progress)
        # A few bars before ``start`` too: Bybit's OI snapshot just before the first bar is priced at the
        # close of the bar that ended at it. They are cut off again below.
        lead = OI_STEP_MS
        candle_windows = _windows(start - lead, stop, (self.venue.candle_limit - 1) * MINUTE_MS)
        oi_start = start - lead
        if self.venue.oi_keeps_ms is not None:
            oi_start = max(oi_start, int(now_ms) - self.venue.oi_keeps_ms)
        # OI and funding up to and including the last bar's close: a snapshot stamped then belongs to it
        oi_windows = _windows(oi_start, stop + 1, (self.venue.oi_limit - 1) * OI_STEP_MS) if oi_start < stop else []
        f_start = start - 8 * HOUR_MS - MINUTE_MS  # the rate already in force when the first bar opens
        if self.venue.funding_keeps_ms is not None:
            f_start = max(f_start, int(now_ms) - self.venue.funding_keeps_ms)
        f_windows = _windows(f_start, stop + 1, (self.venue.funding_limit - 1) * HOUR_MS) if f_start < stop else []
        tracker.plan("candles", len(candle_windows))
        tracker.plan("open interest", len(oi_windows))
        tracker.plan("funding", len(f_windows))
        gate = asyncio.Semaphore(self._concurrency)
        candles, oi, funding = await asyncio.gather(
            self._candles(client, market, candle_windows, gate, tracker),
            self._open_interest(client, market, oi_windows, gate, tracker),
            self._funding(client, market, f_windows, gate, tracker),
        )
        candles = window_rows(candles, start - lead, stop)
        bars = self._bars(candles, oi, funding)
        bars = bars.slice(int(np.searchsorted(bars.time, start // 1000)))
        candles = window_rows(candles, start, stop)
        self._record_bar_gaps(market.symbol, candles)
        if len(candles) and stop >= _floor_minute(now_ms) - MINUTE_MS:
            # the stream picks up right after the last bar handed out here
            self._last_closed_ms[market.symbol] = int(candles.time_ms[-1])
            self._last_price[market.symbol] = float(candles.close[-1])
            if funding:
                self._last_funding[market.symbol] = max(funding)
        if len(funding) >= 2:
            gaps = np.diff([t for t, _ in funding[-4:]])
            self._funding_interval_ms[market.symbol] = int(np.median(gaps))
        return bars

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        """Live events for one symbol until cancelled: ``BarUpdate`` (forming and closed 1m bars),
        ``Liquidation`` (position side, base coin, USD) and ``HealthChange``."""
        market = await self.resolve(symbol)
        client = await self._ccxt()
        run = _Stream(self, client, market)
        self._streams.add(run)
        run.start()
        try:
            while True:
                item = await run.queue.get()
                if item is _CLOSED:
                    return  # feed.close() ended the stream
                if isinstance(item, BaseException):
                    raise item
                yield cast(FeedEvent, item)
        finally:
            self._streams.discard(run)
            await run.stop()

    async def close(self) -> None:
        for run in list(self._streams):
            await run.stop()
            run.queue.put_nowait(_CLOSED)
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.close()

    # -- state other parts read ---------------------------------------------------------------------
    @property
    def health(self) -> Health:
        return self._health

    @property
    def health_reason(self) -> str:
        return self._health_reason

    async def resolve(self, symbol: str) -> Market:
        """What the user typed -> our Market; ``UnknownSymbol`` with one line if the venue has no such swap."""
        markets = await self._markets()
        unified = parse_symbol(symbol)
        found = markets.get(unified)
        if found is None:
            coin = unified.split("/")[0]
            near = [s for s in markets if s.split("/")[0] == coin]
            hint = f"; it lists {', '.join(sorted(near)[:3])}" if near else ""
            raise UnknownSymbol(f"{self.venue.name} has no perpetual {unified} (asked for {symbol!r}){hint}")
        return found

    def funding_info(self, symbol: str) -> Funding | None:
        """The last settled funding seen for ``symbol`` (by history or a stream) and the venue's interval
        for it, read from the settlement times — 8h on most symbols, 4h or 1h on some; never assumed."""
        unified = parse_symbol(symbol)
        last = self._last_funding.get(unified)
        if last is None:
            return None
        interval = self._funding_interval_ms.get(unified)
        return Funding(rate=last[1], time=last[0] // 1000,
                       interval_hours=None if interval is None else interval / HOUR_MS)

    def oi_source(self, symbol: str) -> dict[str, str]:
        """Which venue fields the open interest comes from (history and live), for data health: liqheat's
        OI is one side everywhere; on Bybit that means its single-side ticker field, or half its total."""
        src = OI_SOURCES[self.exchange].to_dict()
        live = self._oi_live_field.get(parse_symbol(symbol))
        if live is not None:
            src["live"] = live
        return src

    # -- ccxt plumbing ------------------------------------------------------------------------------
    async def _ccxt(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    pro = await asyncio.to_thread(_import_ccxt_pro)
                    cls = _client_class(pro, self.exchange)
                    client = cls({
                        "enableRateLimit": self._rate_limit,
                        "timeout": int(self._timeout_s * 1000),
                        "options": {"fetchMarkets": {"types": list(self.venue.market_types)},
                                    "defaultType": "swap"},
                    })
                    if self._route_through:
                        client.urls["api"] = loopback_urls(client.urls["api"], self._route_through)
                    if self._api_overrides:
                        client.urls["api"] = _deep_merge(client.urls["api"], self._api_overrides)
                    if self.rest_budget is not None:
                        client.liqheat_budget = self.rest_budget
                        self.rest_budget.use_default_rate(1000.0 / float(client.rateLimit))
                    if self._markets_given is not None:
                        given = self._markets_given
                        client.set_markets(list(given.values()) if isinstance(given, Mapping) else list(given))
                    self._client = client
        return self._client

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        retried = False

        def noted(err: FeedError, attempt: int, wait: float) -> None:
            nonlocal retried
            retried = True
            self.retries += 1
            self.last_error = str(err)
            for run in self._streams:
                run.set_part("rest", Health.DELAYED, f"retrying: {err}")

        out = await retry(fn, policy=self.policy, context=f"{self.exchange} {what}", rng=self._rng,
                          on_retry=noted)
        if retried:
            for run in self._streams:
                run.set_part("rest", Health.LIVE)
        return out

    async def _markets(self) -> dict[str, Market]:
        if self._markets_cache is None:
            client = await self._ccxt()
            loaded = await self._call("markets", client.load_markets)
            found: dict[str, Market] = {}
            for m in loaded.values():
                if not (m.get("swap") and m.get("linear")) or m.get("active") is False:
                    continue
                if m.get("settle") not in ("USDT", "USDC"):
                    continue
                precision = m.get("precision") or {}
                found[m["symbol"]] = Market(
                    exchange=self.exchange, symbol=m["symbol"], coin=m["base"],
                    contract_size=float(m.get("contractSize") or 1.0),
                    tick=float(precision.get("price") or 0.1), linear=True)
            self._markets_cache = found
        return self._markets_cache

    def _market_id(self, market: Market) -> str:
        return str(self._client.market(market.symbol)["id"])

    # -- history pieces -----------------------------------------------------------------------------
    async def _candles(self, client: Any, market: Market, windows: list[tuple[int, int]],
                       gate: asyncio.Semaphore, tracker: _Tracker) -> Candles:
        async def one(s: int, e: int) -> Candles:
            async with gate:
                page = await self._candle_page(client, market, s, e)
            tracker.done("candles")
            # A venue that caps pages below what we asked for leaves the window's edges empty: ask again
            # for the uncovered edge until nothing new arrives (a real hole in the middle stays a hole).
            while len(page):
                holes = missing_minutes(page.time_ms, s, e, MINUTE_MS)
                edge = [h for h in holes if h[0] == s or h[1] == e]
                if not edge:
                    break
                grew = False
                for hs, he in edge:
                    tracker.plan("candles", 1)
                    async with gate:
                        more = await self._candle_page(client, market, hs, he)
                    tracker.done("candles")
                    before = len(page)
                    page = merge_candles([page, window_rows(more, s, e)], self.venue.has_taker)
                    grew = grew or len(page) > before
                if not grew:
                    break
            return page

        pages = await asyncio.gather(*(one(s, e) for s, e in windows))
        return merge_candles(pages, self.venue.has_taker)

    async def _candle_page(self, client: Any, market: Market, s: int, e: int) -> Candles:
        """Bars with open time in [s, e). The request's upper bound is inclusive on Binance/Bybit and
        exclusive on OKX; the window is one bar shorter than the limit, so both fit in one page."""
        n = (e - s) // MINUTE_MS
        if self.venue.raw_binance_klines:
            rows = await self._call("klines", lambda: client.fapiPublicGetKlines({
                "symbol": self._market_id(market), "interval": "1m", "startTime": s, "endTime": e,
                "limit": n + 1}))
            if not isinstance(rows, list):
                raise as_feed_error(ValueError(f"klines answer is not a list: {one_line(str(rows), 60)}"))
            page = binance_kline_rows(rows)
        else:
            rows = await self._call("candles", lambda: client.fetch_ohlcv(
                market.symbol, "1m", s, n + 1, {"until": e}))
            page = ohlcv_rows(rows)
        return window_rows(page, s, e)

    async def _open_interest(self, client: Any, market: Market, windows: list[tuple[int, int]],
                             gate: asyncio.Semaphore, tracker: _Tracker) -> list[OISnapshot]:
        async def one(s: int, e: int) -> list[OISnapshot]:
            out: list[OISnapshot] = []
            params: dict[str, Any] = {"until": e - 1}
            for _ in range(100):  # a cursor chain is bounded by the window; this only stops a runaway
                page_params = dict(params)

                def fetch(p: dict[str, Any] = page_params) -> Awaitable[Any]:
                    return client.fetch_open_interest_history(market.symbol, "5m", s, self.venue.oi_limit, p)

                async with gate:
                    rows = await self._call("open interest", fetch)
                for row in rows:
                    snap = oi_snapshot(self.exchange, row, market.contract_size)
                    if snap is not None and s <= snap.time_ms < e:
                        out.append(snap)
                cursor = next((r.get("info", {}).get("nextPageCursor") for r in rows
                               if isinstance(r.get("info"), dict) and r["info"].get("nextPageCursor")), None)
                if not (self.venue.oi_cursor and cursor):
                    break
                params = {"until": e - 1, "cursor": cursor}
            tracker.done("open interest")
            return out

        pages = await asyncio.gather(*(one(s, e) for s, e in windows))
        seen: dict[int, OISnapshot] = {}
        for page in pages:
            for snap in page:
                seen[snap.time_ms] = snap
        return [seen[t] for t in sorted(seen)]

    async def _funding(self, client: Any, market: Market, windows: list[tuple[int, int]],
                       gate: asyncio.Semaphore, tracker: _Tracker) -> list[tuple[int, float]]:
        """Paged by hand: ccxt's ``paginate`` assumes 8-hour funding and leaves holes on 4h/1h symbols.
        Windows of (limit − 1) hours hold at most limit − 1 settlements at any interval of 1h or more."""
        async def one(s: int, e: int) -> list[tuple[int, float]]:
            if self.venue.funding_until == "after":
                params = {"after": e}  # OKX: strictly older than
            else:
                params = {"until": e - 1}
            async with gate:
                rows = await self._call("funding", lambda: client.fetch_funding_rate_history(
                    market.symbol, s, self.venue.funding_limit, params))
            tracker.done("funding")
            out = []
            for r in rows:
                t, rate = r.get("timestamp"), r.get("fundingRate")
                if t is not None and rate is not None and s <= t < e:
                    out.append((int(t), float(rate)))
            return out

        pages = await asyncio.gather(*(one(s, e) for s, e in windows))
        return sorted({t: r for page in pages for t, r in page}.items())

    def _bars(self, candles: Candles, oi: list[OISnapshot], funding: list[tuple[int, float]]) -> Bars:
        oi_usd = snapshots_to_bars(oi, candles.time_ms, candles.close, MINUTE_MS, max_age_ms=3 * OI_STEP_MS,
                                   opens=candles.open)
        rate = funding_to_bars(funding, candles.time_ms, MINUTE_MS)
        return candles_to_bars(candles, self.timeframe, taker=self.venue.has_taker, oi_usd=oi_usd,
                               funding_rate=rate)

    def _record_bar_gaps(self, symbol: str, candles: Candles) -> None:
        if len(candles) < 2:
            return
        inner = missing_minutes(candles.time_ms, int(candles.time_ms[0]), int(candles.time_ms[-1]), MINUTE_MS)
        for hs, he in inner:
            gap = Gap(symbol, hs // 1000, he // 1000, "bars")
            if gap not in self.gaps:
                self.gaps.append(gap)


class _Tracker:
    """Counts requests per stage and reports them to a progress callback."""

    def __init__(self, symbol: str, callback: ProgressCallback | None) -> None:
        self.symbol = symbol
        self.callback = callback
        self.total: dict[str, int] = {}
        self.count: dict[str, int] = {}

    def plan(self, stage: str, n: int) -> None:
        self.total[stage] = self.total.get(stage, 0) + n
        self.count.setdefault(stage, 0)

    def done(self, stage: str) -> None:
        self.count[stage] = self.count.get(stage, 0) + 1
        if self.callback is not None:
            self.callback(Progress(self.symbol, stage, self.count[stage], self.total.get(stage, 0)))


# ---- one live stream ---------------------------------------------------------------------------------
_CLOSED = object()  # queue sentinel: the feed was closed under a running stream


def _is_liquidation_hash(h: object) -> bool:
    text = str(h).lower()
    return "forceorder" in text or "liquidation" in text


_SEVERITY = {Health.LIVE: 0, Health.DELAYED: 1, Health.STALE: 2, Health.RECONNECTING: 3}


class _Stream:
    """The tasks behind one ``feed.stream(symbol)``: candles, liquidations, polls, a staleness watchdog.
    They put events on one queue; a permanent error is put there too and ends the stream."""

    def __init__(self, feed: ExchangeFeed, client: Any, market: Market) -> None:
        self.feed = feed
        self.client = client
        self.market = market
        self.symbol = market.symbol
        self.market_id = str(client.market(market.symbol)["id"])
        self.queue: asyncio.Queue[FeedEvent | BaseException | object] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.last_closed_ms = feed._last_closed_ms.get(self.symbol)
        self.closer = CandleCloser(MINUTE_MS, self.last_closed_ms)
        self.parts: dict[str, tuple[Health, str]] = {}
        self.state: Health | None = None
        self.last_message = feed.clock()
        self.last_close = feed._last_price.get(self.symbol, math.nan)
        self.live_oi: tuple[float, float] | None = None  # (clock s, USD)
        last = feed._last_funding.get(self.symbol)
        self.funding: tuple[int, float] | None = last
        self.ws_taker: dict[int, float] = {}
        self.liq_gap_since: float | None = None
        self.liq_waiting_reconnect = False
        self.stopped = False

    # -- lifecycle
    def start(self) -> None:
        self.client.liqheat_listeners.append(self.on_frame)
        for coro in (self.candles(), self.liquidations(), self.polls(), self.watchdog()):
            self.tasks.append(asyncio.create_task(self.guard(coro)))

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(ValueError):
            self.client.liqheat_listeners.remove(self.on_frame)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.liq_gap_since is not None:
            self.close_liq_gap()

    async def guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.queue.put_nowait(as_feed_error(exc, f"{self.feed.exchange} {self.symbol}"))

    # -- health
    def set_part(self, part: str, state: Health, reason: str = "") -> None:
        self.parts[part] = (state, reason)
        worst = max(self.parts.values(), key=lambda sr: _SEVERITY[sr[0]])
        if worst[0] != self.state:
            self.state = worst[0]
            self.feed._health, self.feed._health_reason = worst
            self.queue.put_nowait(HealthChange(worst[0], worst[1]))

    def heard(self) -> None:
        self.last_message = self.feed.clock()
        if self.parts.get("clock", (Health.LIVE, ""))[0] is Health.STALE:
            self.set_part("clock", Health.LIVE)

    # -- raw frames (called synchronously from ccxt's message handler)
    def on_frame(self, kind: str, client: Any, message: Any) -> None:
        try:
            self.read_frame(kind, client, message)
        except Exception as exc:  # a frame we cannot read must not break ccxt's own handling of it
            self.feed.last_error = f"{self.feed.exchange} {kind} frame: {one_line(repr(exc))}"

    def read_frame(self, kind: str, client: Any, message: Any) -> None:
        if kind == "liquidation" and isinstance(message, dict):
            ours = [r for r in liquidation_rows(self.feed.exchange, message) if r.market_id == self.market_id]
            for raw in ours:  # every row of the frame, not only the first ccxt hands back
                liq = to_liquidation(self.feed.exchange, raw, self.symbol, self.market.contract_size)
                if liq is not None:
                    self.queue.put_nowait(liq)
            if ours:
                self.heard()
        elif kind == "ohlcv" and self.feed.venue.has_taker and isinstance(message, dict):
            k = message.get("k") or {}
            if k.get("s") == self.market_id and k.get("i") == "1m":
                with contextlib.suppress(TypeError, ValueError):
                    self.ws_taker[int(k["t"])] = float(k["V"])
        elif kind == "connected" and self.liq_waiting_reconnect:
            subs = getattr(client, "subscriptions", {}) or {}
            if any(_is_liquidation_hash(h) for h in subs):
                self.close_liq_gap()

    def liq_socket_open(self) -> bool:
        """Is a socket carrying our liquidation subscription open? (It may already be, when the candle
        stream shares the socket and reconnected it first; then no new "connected" event will come.)"""
        for ws in list((getattr(self.client, "clients", None) or {}).values()):
            subs = getattr(ws, "subscriptions", {}) or {}
            if not any(_is_liquidation_hash(h) for h in subs):
                continue
            fut = getattr(ws, "connected", None)
            closed = getattr(ws, "closed", lambda: True)()
            if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None and not closed:
                return True
        return False

    def close_liq_gap(self) -> None:
        if self.liq_gap_since is None:
            return
        start, end = int(self.liq_gap_since), math.ceil(self.feed.clock())
        self.feed.gaps.append(Gap(self.symbol, start, max(end, start + 1), "liquidations"))
        self.liq_gap_since = None
        self.liq_waiting_reconnect = False
        if not self.stopped:
            self.set_part("liquidations", Health.LIVE)  # subscribed again; events may just be rare

    # -- loops
    async def reconnect_wait(self, part: str, err: FeedError, attempt: int) -> None:
        self.set_part(part, Health.RECONNECTING, str(err))
        await asyncio.sleep(self.feed.policy.backoff.delay(attempt, self.feed._rng))

    async def candles(self) -> None:
        attempt = 0
        lost = False
        while True:
            try:
                rows = await self.client.watch_ohlcv(self.symbol, "1m")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = as_feed_error(exc, f"{self.feed.exchange} candles")
                if not is_temporary(err):
                    raise err from exc
                if not lost:
                    lost = True
                    self.closer.reset()  # the partial candle missed updates; it comes back over REST
                await self.reconnect_wait("candles", err, attempt)
                attempt += 1
                continue
            attempt = 0
            lost = False
            self.heard()
            self.set_part("candles", Health.LIVE)
            for row in rows:
                for ev in self.closer.update(row):
                    if isinstance(ev, Missing):
                        await self.backfill(ev.start_ms, ev.end_ms)
                    elif isinstance(ev, Closed):
                        self.emit_bar(ev.candle, closed=True)
                    elif isinstance(ev, Forming):
                        self.emit_bar(ev.candle, closed=False)
                        lag = self.feed.clock() - ev.candle[0] / 1000 - 60
                        if lag > 180:
                            self.set_part("lag", Health.DELAYED, f"newest candle is {lag:.0f}s old")
                        elif "lag" in self.parts:
                            self.set_part("lag", Health.LIVE)

    async def backfill(self, start_ms: int, end_ms: int) -> None:
        """Closed bars in [start, end) that the socket did not deliver, over REST, in order."""
        first = max(start_ms, end_ms - self.feed._max_backfill_ms)
        if first > start_ms:
            self.feed.gaps.append(Gap(self.symbol, start_ms // 1000, first // 1000, "bars"))
        try:
            pages = [await self.feed._candle_page(self.client, self.market, s, e)
                     for s, e in _windows(first, end_ms, (self.feed.venue.candle_limit - 1) * MINUTE_MS)]
        except FeedError as err:
            if not is_temporary(err):
                raise
            pages = []
        got = merge_candles(pages, self.feed.venue.has_taker)
        for hs, he in missing_minutes(got.time_ms, first, end_ms, MINUTE_MS):
            self.feed.gaps.append(Gap(self.symbol, hs // 1000, he // 1000, "bars"))
        for i in range(len(got)):
            t = int(got.time_ms[i])
            if got.taker_buy is not None:
                self.ws_taker[t] = float(got.taker_buy[i])
            self.emit_bar((t, got.open[i], got.high[i], got.low[i], got.close[i], got.volume[i]), closed=True)
        self.closer.mark_closed(end_ms - MINUTE_MS)

    def emit_bar(self, candle: tuple[float, ...], closed: bool) -> None:
        t_ms = int(candle[0])
        if closed:
            if self.last_closed_ms is not None and t_ms <= self.last_closed_ms:
                return  # already handed out (history or an earlier backfill)
            self.last_closed_ms = t_ms
            self.feed._last_closed_ms[self.symbol] = t_ms
            self.feed._last_price[self.symbol] = float(candle[4])
        self.last_close = float(candle[4])
        volume = float(candle[5])
        buy = sell = None
        if self.feed.venue.has_taker:
            b = self.ws_taker.get(t_ms, math.nan)
            buy = np.array([b])
            sell = np.array([max(volume - b, 0.0) if math.isfinite(b) else math.nan])
            if closed:
                for old in [k for k in self.ws_taker if k <= t_ms]:
                    del self.ws_taker[old]
        oi = math.nan
        if self.live_oi is not None and self.feed.clock() - self.live_oi[0] <= 3 * max(self.feed._oi_poll_s, 60):
            oi = self.live_oi[1]
        rate = self.funding[1] if self.funding is not None else math.nan
        bar = Bars(timeframe=60, time=np.array([t_ms // 1000]), open=np.array([candle[1]]),
                   high=np.array([candle[2]]), low=np.array([candle[3]]), close=np.array([candle[4]]),
                   volume=np.array([volume]), taker_buy_volume=buy, taker_sell_volume=sell,
                   oi_usd=np.array([oi]), funding_rate=np.array([rate]))
        self.queue.put_nowait(BarUpdate(bar=bar, closed=closed))

    async def liquidations(self) -> None:
        attempt = 0
        venue = self.feed.venue
        while True:
            try:
                if venue.liquidations == "symbol":
                    watch = asyncio.ensure_future(self.client.watch_liquidations(self.symbol))
                else:
                    watch = asyncio.ensure_future(self.client.watch_liquidations_for_symbols([self.symbol]))
                if self.liq_gap_since is not None:
                    await asyncio.sleep(0)  # let ccxt pick the socket and record our subscription on it
                    if self.liq_socket_open():
                        self.close_liq_gap()
                await watch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = as_feed_error(exc, f"{self.feed.exchange} liquidations")
                if not is_temporary(err):
                    raise err from exc
                if self.liq_gap_since is None:
                    # liquidation feeds cannot be backfilled: the hole is recorded when the socket is back
                    self.liq_gap_since = self.feed.clock()
                self.liq_waiting_reconnect = True
                await self.reconnect_wait("liquidations", err, attempt)
                attempt += 1
                continue
            attempt = 0
            if self.liq_gap_since is not None:
                self.close_liq_gap()
            self.set_part("liquidations", Health.LIVE)

    async def polls(self) -> None:
        """Open interest every ``oi_poll_s`` and funding every ``funding_poll_s`` (paced by the event
        loop's clock, not the data clock). A failed poll makes the stream DELAYED, never kills it; a venue
        that refuses the call (permanent error) stops that poll."""
        loop = asyncio.get_running_loop()
        due = {"oi": 0.0, "funding": 0.0}
        every = {"oi": self.feed._oi_poll_s, "funding": self.feed._funding_poll_s}
        poll = {"oi": self.poll_oi, "funding": self.poll_funding}
        while due:
            for part in [p for p, t in due.items() if loop.time() >= t]:
                due[part] = loop.time() + every[part]
                try:
                    await poll[part]()
                    self.set_part(part, Health.LIVE)
                except FeedError as err:
                    self.feed.last_error = str(err)
                    if is_temporary(err):
                        self.set_part(part, Health.DELAYED, str(err))
                    else:
                        del due[part]
                        self.set_part(part, Health.LIVE)  # nothing more to wait for
            if due:
                await asyncio.sleep(max(0.0, min(due.values()) - loop.time()))

    async def poll_oi(self) -> None:
        client, venue = self.client, self.feed.venue
        if venue.live_oi == "ticker":
            # Bybit: fetch_open_interest returns the last 5-minute bucket; the ticker carries live OI
            ticker = await self.feed._call("ticker", lambda: client.fetch_ticker(self.symbol))
            usd, field = bybit_ticker_oi(ticker.get("info") or {})
            self.feed._oi_live_field[self.symbol] = field
        else:
            oi = await self.feed._call("open interest", lambda: client.fetch_open_interest(self.symbol))
            snap = oi_snapshot(self.feed.exchange, oi, self.market.contract_size)
            usd = math.nan
            if snap is not None:
                usd = snap.usd if math.isfinite(snap.usd) else snap.base * self.last_close
        if math.isfinite(usd):
            self.live_oi = (self.feed.clock(), usd)

    async def poll_funding(self) -> None:
        now_ms = int(self.feed.clock() * 1000)
        since = self.funding[0] + 1 if self.funding else now_ms - 9 * HOUR_MS
        since = max(since, now_ms - (self.feed.venue.funding_limit - 1) * HOUR_MS)
        windows = [(since, now_ms + 1)]
        gate = asyncio.Semaphore(1)
        got = await self.feed._funding(self.client, self.market, windows, gate, _Tracker(self.symbol, None))
        if got:
            self.funding = got[-1]
            self.feed._last_funding[self.symbol] = got[-1]

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.feed._watchdog_s)
            quiet = self.feed.clock() - self.last_message
            if quiet > self.feed._stale_after_s:
                self.set_part("clock", Health.STALE, f"no update for {quiet:.0f}s")


__all__ = ["VENUES", "ExchangeFeed", "Funding", "Gap", "Progress", "Venue", "loopback_urls"]
