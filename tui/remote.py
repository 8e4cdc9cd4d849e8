"""``liqheat tui --connect URL``: the same dashboard on a running ``liqheat serve``.

One WebSocket (server/PROTOCOL.md) carries one subscription — the map's market, timeframe, tier, bins,
columns and price range — as a snapshot followed by deltas that are applied here in ``seq`` order. A gap
in ``seq`` asks for a resync; a dropped connection is retried with backoff while the last picture stays
on screen and the header says RECONNECTING. A few slow-moving facts (open interest, funding, 24h change)
come from the REST API, at most every few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np

from engine.analytics import DEFAULT_LIMIT_SHARE, PositionSpec, RankedZone

from .source import Alert, Backdrop, Facts, LiquidationEvent, Pulse, View, alert_from
from .viewport import Window, choose_window, rebin, span_around

SNAPSHOT_TIMEOUT_S = 20.0
FACTS_EVERY_S = 5.0
ZONES_EVERY_S = 2.0  # ranked zones with touch probabilities: the server's, not recomputed here


class RemoteError(ValueError):
    """The server said no, or could not be reached (one line for the user)."""


class ServerUnreachable(RemoteError):
    """Nothing answered (not up yet, restarting, wrong port): worth retrying, unlike a refusal."""

    retryable = True


def base_url(url: str) -> str:
    """Accept http(s)://host:port, ws(s)://host:port or host:port; return the http(s) root."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise RemoteError(f"cannot connect to {url!r}: use http://host:port")
    return urlunsplit((scheme, parts.netloc, "", "", "")).rstrip("/")


def decode_grid(payload: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``sqrt-u8``: usd = max_usd * (level / 255)^2 (plain JSON lists are accepted too)."""
    data = payload[key]
    if payload.get("encoding", "sqrt-u8") == "json" or isinstance(data, list):
        return np.asarray(data, dtype=np.float64).reshape(shape)
    level = np.frombuffer(base64.b64decode(data), dtype=np.uint8).astype(np.float64).reshape(shape)
    return float(payload["max_usd"]) * (level / 255.0) ** 2


@dataclass
class Subscription:
    """What the server has told us about one subscription, kept current by deltas."""

    id: str
    request: dict[str, Any]
    seq: int = -1  # -1: waiting for a snapshot
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    columns: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    candles: dict[int, tuple[float, float, float, float, float]] = field(default_factory=dict)
    realised: dict[int, tuple[float, float]] = field(default_factory=dict)
    map: dict[str, Any] = field(default_factory=dict)
    tiers: tuple[str, ...] = ()
    tier: str = "all"
    price: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""

    @property
    def window(self) -> Window:
        return Window(float(self.edges[0]), float(self.edges[-1]))

    def bucket(self) -> int:
        return max(self.candles) if self.candles else (max(self.columns) if self.columns else 0)

    def trim(self, keep: int) -> None:
        for d in (self.columns, self.candles, self.realised):
            if len(d) > keep + 8:
                for t in sorted(d)[: len(d) - keep]:
                    del d[t]


class RemoteSource:
    def __init__(self, url: str, symbol: str | None = None, *, exchange: str | None = None,
                 ladder: str | None = None) -> None:
        self.url = base_url(url)
        self.label = self.url
        self.want_symbol = symbol
        self.want_exchange = exchange
        self.ladder = ladder  # the server decides the model; kept to say so
        self.exchanges: tuple[str, ...] = ()
        self.tiers: tuple[str, ...] = ()
        self.market = ""
        self._markets: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._n = 0
        self._changes: asyncio.Queue[str] = asyncio.Queue()
        self._zones: list[RankedZone] = []
        self._zones_at = 0.0  # monotonic time of the last /api/v1/zones answer
        self._liqs: list[LiquidationEvent] = []
        self._alerts: list[Alert] = []
        self._health: dict[str, Any] = {"state": "loading", "reason": "connecting"}
        self._model: dict[str, Any] = {}
        self._facts_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self._day: tuple[int, float | None] = (-1, None)
        self._connected = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            body = await self._get("/api/v1/symbols")
        except BaseException:
            await self._session.close()
            raise
        self._markets = body.get("symbols", [])
        if not self._markets:
            await self._session.close()
            raise RemoteError(f"{self.url} serves no markets")
        self.exchanges = tuple(body.get("exchanges") or sorted({m["exchange"] for m in self._markets}))
        self._runner = asyncio.create_task(self._run(), name="tui websocket")
        try:
            await asyncio.wait_for(self._connected.wait(), SNAPSHOT_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise ServerUnreachable(f"no WebSocket answer from {self.url}") from None
        pick = self.want_symbol
        if pick is None and self.want_exchange:
            pick = next((m["key"] for m in self._markets if m["exchange"] == self.want_exchange), None)
        await self.select(pick or self._markets[0]["key"])

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, **params: Any) -> dict[str, Any]:
        assert self._session is not None
        try:
            async with self._session.get(self.url + path, params={k: str(v) for k, v in params.items() if v is not None}) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    raise RemoteError(f"{path}: {body.get('error', r.reason) if isinstance(body, dict) else r.reason}")
                return body  # type: ignore[no-any-return]
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ServerUnreachable(f"{self.url}: {exc or type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise RemoteError(f"{self.url}: {exc}") from None

    async def _run(self) -> None:
        """Keep one WebSocket open; after a drop, reconnect with backoff and resubscribe."""
        assert self._session is not None
        delay = 0.5
        while True:
            try:
                async with self._session.ws_connect(self.url + "/api/v1/ws", heartbeat=30, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    self._ws = ws
                    delay = 0.5
                    if self._sub is not None:
                        # a new connection knows nothing of the old subscription: subscribe afresh
                        # without unsubscribing it (the server would answer "no subscription 'tuiN'")
                        self._sub.seq = -1
                        await self._subscribe(self._sub.request)
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._on_message(json.loads(msg.data))
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
                reason = "server closed the connection"
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._ws = None
            self._connected.clear()
            self._set_health({"state": "reconnecting", "reason": reason[:120]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)

    # ---- protocol -----------------------------------------------------------------------------------
    def _on_message(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "hello":
            self._connected.set()
            if self._health.get("state") == "reconnecting":
                self._set_health({"state": "loading", "reason": "resubscribing"})
            return
        sub = self._sub
        if kind == "error":
            if sub is not None and m.get("id", m.get("sub")) == sub.id:
                sub.error = str(m.get("error", "error"))
                sub.ready.set()
            self._push_alert(Alert(time.time(), "server", f"server: {m.get('error')}", "warning"))
            return
        if sub is None or m.get("sub") != sub.id:
            return  # another (old) subscription, heartbeat, pong
        if kind == "snapshot":
            self._apply_snapshot(sub, m)
            return
        if kind == "resync":
            sub.seq = -1  # a snapshot follows
            return
        if "seq" not in m or sub.seq < 0:
            return
        if m["seq"] != sub.seq + 1:
            sub.seq = -1
            self._send({"op": "resync", "sub": sub.id})
            return
        sub.seq = m["seq"]
        self._apply_delta(sub, kind, m)

    def _apply_snapshot(self, sub: Subscription, m: dict[str, Any]) -> None:
        hm = m["heatmap"]
        edges = np.asarray(hm["edges"], dtype=np.float64)
        times = [int(t) for t in hm["times"]]
        shape = (len(times), len(edges) - 1)
        longs, shorts = decode_grid(hm, "long", shape), decode_grid(hm, "short", shape)
        sub.edges = edges
        sub.columns = {t: (longs[i], shorts[i]) for i, t in enumerate(times)}
        c = m.get("candles", {})
        sub.candles = {int(t): (o, h, lo, cl, v or 0.0) for t, o, h, lo, cl, v in
                       zip(c.get("t", []), c.get("o", []), c.get("h", []), c.get("l", []), c.get("c", []),
                           c.get("v", [0.0] * len(c.get("t", []))), strict=False)}
        r = m.get("realised", {})
        sub.realised = {int(t): (lo, sh) for t, lo, sh in zip(r.get("t", []), r.get("long_usd", []), r.get("short_usd", []), strict=False)}
        sub.map = m.get("map", {})
        sub.tiers = tuple(hm.get("tiers", ()))
        sub.tier = str(hm.get("tier", m.get("tier", "all")))
        sub.price = float(m.get("price", 0.0))
        sub.seq = int(m["seq"])
        self._zones = [RankedZone.from_dict(z, i + 1) for i, z in enumerate(m.get("zones", []))]
        self._model = m.get("model", {})
        if "health" in m:
            self._new_health(dict(m["health"]))
        self.tiers = tuple(self._model.get("tiers") and [f"{t['leverage']:g}x" for t in self._model["tiers"]] or sub.tiers)
        sub.ready.set()
        self._changes.put_nowait("book")

    def _apply_delta(self, sub: Subscription, kind: str | None, m: dict[str, Any]) -> None:
        if kind == "column":
            nb = len(sub.edges) - 1
            sub.columns[int(m["time"])] = (decode_grid(m, "long", (nb,)), decode_grid(m, "short", (nb,)))
            self._changes.put_nowait("book")
        elif kind == "bar":
            sub.candles[int(m["time"])] = (m["open"], m["high"], m["low"], m["close"], m.get("volume") or 0.0)
            sub.price = float(m["close"])
            self._changes.put_nowait("bar")
        elif kind == "map":
            sub.map = m
            self._changes.put_nowait("book")
        elif kind == "realised":
            sub.realised[int(m["time"])] = (float(m["long_usd"]), float(m["short_usd"]))
            self._changes.put_nowait("realised")
        elif kind == "zones":
            self._zones = [RankedZone.from_dict(z, i + 1) for i, z in enumerate(m.get("zones", []))]
            self._changes.put_nowait("zones")
        elif kind == "liquidation":
            self._liqs.append(LiquidationEvent(int(m["time_ms"]), str(m["side"]), float(m["price"]), float(m["usd"])))
            del self._liqs[:-200]
            self._changes.put_nowait("liquidation")
        elif kind == "health":
            self._set_health(m)
        elif kind == "alert":
            self._push_alert(alert_from(m))
            self._changes.put_nowait("alert")
        sub.trim(keep=int(sub.request.get("columns", 300)) + 4)

    def _set_health(self, info: dict[str, Any]) -> None:
        info = {k: v for k, v in info.items() if k not in ("type", "sub", "seq")}
        if info.get("state") != self._health.get("state"):
            level = "info" if info.get("state") in ("live", "demo", "replay", "loading") else "warning"
            reason = f": {info.get('reason')}" if info.get("reason") else ""
            self._push_alert(Alert(time.time(), "health", f"feed {info.get('state')}{reason}", level))
        self._new_health(info)
        self._changes.put_nowait("health")

    def _new_health(self, info: dict[str, Any]) -> None:
        was = (self._health.get("history") or {}).get("phase")
        self._health = info
        if was == "recent" and (info.get("history") or {}).get("phase") == "complete":
            self._changes.put_nowait("history")  # the server's backfill landed: the map redraws

    def _push_alert(self, alert: Alert) -> None:
        self._alerts.append(alert)
        del self._alerts[:-50]

    def _send(self, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            asyncio.ensure_future(ws.send_json(msg))

    async def _subscribe(self, request: dict[str, Any]) -> Subscription:
        old = self._sub
        self._n += 1
        sub = Subscription(f"tui{self._n}", dict(request))
        self._sub = sub
        ws = self._ws
        if ws is None or ws.closed:
            return sub  # the reconnect loop subscribes when it is back
        if old is not None and old.seq >= 0:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"op": "unsubscribe", "sub": old.id})
        await ws.send_json({"op": "subscribe", "id": sub.id, **request})
        return sub

    # ---- Source -------------------------------------------------------------------------------------
    def markets(self) -> list[str]:
        return [m["key"] for m in self._markets]

    def drawn(self) -> None:
        """Nothing to do: the server loads its markets itself."""

    async def select(self, market: str) -> None:
        found = next((m for m in self._markets if market in (m["key"], m["symbol"], m["coin"])), None)
        if found is None:
            raise RemoteError(f"unknown symbol {market!r} on {self.url}")
        self.market = found["key"]
        self.tiers = tuple(found.get("tiers", ()))
        self._sub = None
        self._zones, self._liqs = [], []
        self._zones_at = 0.0
        self._facts_cache = (0.0, {})
        self._day = (-1, None)
        self._changes.put_nowait("market")

    async def changes(self) -> AsyncIterator[str]:
        while True:
            yield await self._changes.get()

    async def backdrop(self, view: View) -> Backdrop:
        tier = "all" if view.tier is None else self.tiers[view.tier]
        base = {"symbol": self.market, "timeframe": view.timeframe, "tier": tier, "bins": view.bins,
                "columns": view.columns}
        sub = self._sub
        reuse = sub is not None and sub.seq >= 0 and {k: sub.request.get(k) for k in base} == base and sub.candles
        if reuse:
            assert sub is not None
            c = sub.candles
            ts = sorted(c)
            window = choose_window(np.array([c[t][2] for t in ts]), np.array([c[t][1] for t in ts]), sub.price,
                                   view.zoom, view.pan)
            reuse = abs(window.low - sub.window.low) < 1e-9 * window.low and abs(window.high - sub.window.high) < 1e-9 * window.high
        if not reuse:
            candles = await self._get("/api/v1/candles", symbol=self.market, timeframe=view.timeframe, limit=view.columns)
            if not candles.get("t"):
                raise RemoteError(f"{self.market}: no candles yet")
            window = choose_window(np.asarray(candles["l"]), np.asarray(candles["h"]), float(candles["c"][-1]),
                                   view.zoom, view.pan)
            sub = await self._subscribe({**base, "price_low": window.low, "price_high": window.high})
            try:
                await asyncio.wait_for(sub.ready.wait(), SNAPSHOT_TIMEOUT_S)
            except TimeoutError:
                raise RemoteError(f"{self.url}: no snapshot within {SNAPSHOT_TIMEOUT_S:.0f}s") from None
            if sub.error:
                raise RemoteError(sub.error)
        assert sub is not None
        return self._backdrop_from(sub, view)

    def _backdrop_from(self, sub: Subscription, view: View) -> Backdrop:
        bucket = sub.bucket()
        times = np.array(sorted(t for t in sub.columns if t < bucket), dtype=np.int64)
        nb = len(sub.edges) - 1
        usd = np.array([sub.columns[t][0] + sub.columns[t][1] for t in times]).reshape(len(times), nb, 1)
        longs = np.array([sub.columns[t][0] for t in times]).reshape(len(times), nb, 1)
        closes = np.array([sub.candles[t][3] if t in sub.candles else np.nan for t in times], dtype=np.float64)
        rl = np.array([sub.realised.get(int(t), (0.0, 0.0))[0] for t in times], dtype=np.float64)
        rs = np.array([sub.realised.get(int(t), (0.0, 0.0))[1] for t in times], dtype=np.float64)
        return Backdrop(
            view=view,
            window=sub.window,
            edges=sub.edges.copy(),
            times=times,
            usd=usd,
            closes=closes,
            realised_long=rl,
            realised_short=rs,
            bucket=bucket,
            tiers=self.tiers,
            per_tier=False,
            data_tier=view.tier,
            key=sub.id,
            longs=longs,
        )

    async def pulse(self, backdrop: Backdrop) -> Pulse:
        sub = self._sub
        if sub is None or sub.id != backdrop.key or sub.seq < 0 and not sub.columns:
            # the subscription changed under this backdrop: report a new bucket so the app reloads
            return Pulse(backdrop.window.low, backdrop.bucket + 1, np.zeros((len(backdrop.edges) - 1, 1)),
                         np.zeros((len(backdrop.edges) - 1, 1)))
        bucket = sub.bucket()
        nb = len(sub.edges) - 1
        col = sub.columns.get(bucket)
        live = (col[0] + col[1]) if col is not None else np.zeros(nb)
        live_long = col[0] if col is not None else np.zeros(nb)
        longs, shorts = self._profile(sub, nb)
        return Pulse(sub.price, bucket, longs, shorts, sub.realised.get(bucket, (0.0, 0.0)), live_column=live,
                     live_long=live_long)

    def _profile(self, sub: Subscription, nb: int) -> tuple[np.ndarray, np.ndarray]:
        """The server's liquidation map (per tier, on its own bins) moved onto the heatmap's bins."""
        t = max(len(self.tiers), 1)
        m = sub.map
        if not m or "edges" not in m:
            return np.zeros((nb, t)), np.zeros((nb, t))
        edges = np.asarray(m["edges"], dtype=np.float64)
        lt = np.asarray(m.get("long_tiers") or [m.get("long", [])], dtype=np.float64).T  # (B_map, T)
        st = np.asarray(m.get("short_tiers") or [m.get("short", [])], dtype=np.float64).T
        return rebin(edges, lt, sub.edges), rebin(edges, st, sub.edges)

    async def facts(self) -> Facts:
        now = time.monotonic()
        when, info = self._facts_cache
        if now - when >= FACTS_EVERY_S:
            try:
                info = await self._get("/api/v1/market", symbol=self.market)
            except RemoteError:
                info = info or {}
            self._facts_cache = (now, info)
        sub = self._sub
        price = sub.price if sub is not None and sub.price else float(info.get("price") or 0.0)
        funding = info.get("funding") or {}
        health = self._health
        ladder = self._model.get("ladder", "")
        tiers = self._model.get("tiers", [])
        return Facts(
            market=self.market,
            price=price,
            change_24h=await self._change(price),
            oi_usd=info.get("oi_usd"),
            funding_rate=funding.get("rate"),
            funding_next=funding.get("next_time"),
            health=str(health.get("state", "")),
            health_reason=str(health.get("reason", "")),
            age_s=float(health.get("age_s", 0.0) or 0.0),
            ladder=f"{ladder} (server)" if ladder else "server",
            ladder_text=", ".join(f"{t['leverage']:g}x {t['weight'] * 100:.0f}%" for t in tiers),
            seed_mode=str(self._model.get("seed_mode", info.get("seed_mode", ""))),
            daily_volume_usd=info.get("daily_volume_usd"),
            model=self._model,
            history=dict(health.get("history") or {}),
        )

    async def _change(self, price: float) -> float | None:
        hour = int(time.time()) // 3600
        if self._day[0] != hour:
            try:
                c = await self._get("/api/v1/candles", symbol=self.market, timeframe="1h", limit=25)
                ref = float(c["o"][0]) if c.get("o") and len(c["o"]) >= 25 else None
            except RemoteError:
                ref = None
            self._day = (hour, ref)
        ref = self._day[1]
        return price / ref - 1.0 if ref and price else None

    async def zones(self) -> list[RankedZone]:
        """The server's ranked zones with touch probabilities (``/api/v1/zones``, every few seconds; the
        WebSocket's `zones` rows in between)."""
        now = time.monotonic()
        if self.market and now - self._zones_at >= ZONES_EVERY_S:
            self._zones_at = now
            try:
                body = await self._get("/api/v1/zones", symbol=self.market)
                self._zones = [RankedZone.from_dict(z, i + 1) for i, z in enumerate(body.get("zones", []))]
            except RemoteError:
                pass  # keep the last ones; the header shows the connection state
        return list(self._zones)

    def liquidations(self, limit: int = 20) -> list[LiquidationEvent]:
        return self._liqs[-limit:]

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    # ---- the server's analytics (docs/ANALYTICS_API.md) ---------------------------------------------
    async def position(self, side: str, entry: float, leverage: float, size_usd: float) -> dict[str, Any]:
        return await self._get("/api/v1/risk", symbol=self.market, side=side, entry=repr(float(entry)),
                               leverage=repr(float(leverage)), size=repr(float(size_usd)))

    async def portfolio(self, positions: list[PositionSpec], limit_share: float = DEFAULT_LIMIT_SHARE,
                        new: PositionSpec | None = None, portfolio_usd: float | None = None) -> dict[str, Any]:
        def spec(p: PositionSpec) -> dict[str, Any]:
            d: dict[str, Any] = {"side": p.side, "entry": p.entry, "leverage": p.leverage, "size": p.size_usd}
            if p.symbol:
                d["symbol"] = p.symbol
            return d

        return await self._get("/api/v1/risk", symbol=self.market, positions=json.dumps([spec(p) for p in positions]),
                               limit=repr(float(limit_share)), portfolio=portfolio_usd,
                               new=None if new is None else json.dumps(spec(new)))

    async def sessions(self) -> dict[str, Any]:
        return await self._get("/api/v1/sessions", symbol=self.market)

    async def risk_map(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(long, short) per tier on these bins, each bin's USD x P(price reaches it within 4h): the server's
        risk-weighted map (GET /api/v1/map?weight=touch) moved onto the heatmap's bins."""
        sub = self._sub
        price = sub.price if sub is not None and sub.price else float(np.mean(edges))
        m = await self._get("/api/v1/map", symbol=self.market, bins=400, span=repr(span_around(price, edges)),
                            weight="touch")
        src = np.asarray(m["edges"], dtype=np.float64)
        lt = np.asarray(m["long_tiers"], dtype=np.float64).T
        st = np.asarray(m["short_tiers"], dtype=np.float64).T
        return rebin(src, lt, edges), rebin(src, st, edges)
