"""Where the dashboard's numbers come from: the engine in this process (``LocalSource``) or a running
``liqheat serve`` (``tui.remote.RemoteSource``). Both hand the app the same small frozen records, so the
widgets never know which one is behind them.

Two speeds of data, because they cost differently on the wire and on the CPU:
- ``Backdrop``: the closed heatmap columns, candles and realised liquidations of the visible window.
  It only changes when a candle of the chosen timeframe closes (or the user changes the view), so the
  wide history widget is redrawn a few times an hour, not several times a second.
- ``Pulse``: the live book on the same price bins, the last price. Fetched several times a second and
  drawn into one narrow column plus the profile beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.analytics import DEFAULT_LIMIT_SHARE, AlertSettings, PositionSpec, RankedZone
from engine.service import bucket_start, timeframe_seconds

from .viewport import Window, choose_window, rebin, span_around

EXCHANGES = ("demo", "binanceusdm", "bybit", "okx")


@dataclass(frozen=True)
class View:
    """What the user is looking at; the map's size decides the number of columns and price bins."""

    market: str
    timeframe: str = "5m"
    rows: int = 20  # map rows; bins = 2 x rows
    columns: int = 60  # map columns including the live one
    zoom: float = 1.0
    pan: float = 0.0
    tier: int | None = None  # a remote source fetches one tier; the local one holds them all

    @property
    def bins(self) -> int:
        return 2 * self.rows


@dataclass(frozen=True)
class Backdrop:
    view: View
    window: Window
    edges: np.ndarray  # (B + 1,)
    times: np.ndarray  # (N,) candle open times of the closed columns
    usd: np.ndarray  # (N, B, T) long + short, per tier (tiers are switched locally, without a fetch)
    closes: np.ndarray  # (N,) candle closes: the price path drawn over the map
    realised_long: np.ndarray  # (N,) estimated liquidations in each candle
    realised_short: np.ndarray
    bucket: int  # open time of the forming candle (the live column)
    tiers: tuple[str, ...]
    per_tier: bool = True  # usd holds every tier (switching tiers needs no fetch)
    data_tier: int | None = None  # when not per_tier: the tier usd[..., 0] holds (None = all summed)
    key: str = ""  # which subscription it came from (remote)
    longs: np.ndarray | None = None  # the long part of usd, same shape (shorts = usd - longs)

    def covers(self, tier: int | None) -> bool:
        return self.per_tier or tier == self.data_tier

    def grid(self, tier: int | None, side: str | None = None) -> np.ndarray:
        """(N, B) USD for one tier (None: all) and one side (None: both)."""
        usd = self.usd
        if side is not None and self.longs is not None:
            usd = self.longs if side == "long" else usd - self.longs
        if not self.per_tier:
            return usd[:, :, 0]
        return usd.sum(axis=2) if tier is None else usd[:, :, tier]


@dataclass(frozen=True)
class Pulse:
    price: float
    bucket: int  # open time of the forming candle
    long_tiers: np.ndarray  # (B, T) live book on the backdrop's bins
    short_tiers: np.ndarray
    forming_realised: tuple[float, float] = (0.0, 0.0)
    live_column: np.ndarray | None = None  # (B,) when the source sends the column itself (remote)
    live_long: np.ndarray | None = None  # (B,) its long part

    def column(self, tier: int | None, side: str | None = None) -> np.ndarray:
        if self.live_column is not None:
            if side is None or self.live_long is None:
                return self.live_column
            return self.live_long if side == "long" else self.live_column - self.live_long
        both = self.long_tiers if side == "long" else self.short_tiers if side == "short" else self.long_tiers + self.short_tiers
        return both.sum(axis=1) if tier is None else both[:, tier]


@dataclass(frozen=True)
class Facts:
    """The header line: market facts and how much to trust them."""

    market: str
    price: float
    change_24h: float | None = None  # fraction
    oi_usd: float | None = None
    funding_rate: float | None = None
    funding_next: int | None = None  # UNIX s
    health: str = "loading"
    health_reason: str = ""
    age_s: float = 0.0
    ladder: str = ""
    ladder_text: str = ""  # "5x 15%, 10x 30%, ..."
    seed_mode: str = ""
    daily_volume_usd: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)  # phase recent|complete, days, wanted_days

    @property
    def backfilling(self) -> str:
        """"2.0/30d" while only the recent window is in (the rest loading behind it), else ""."""
        h = self.history
        if h.get("phase") != "recent":
            return ""
        return f"{float(h.get('days') or 0):.1f}/{float(h.get('wanted_days') or 0):g}d"


@dataclass(frozen=True)
class LiquidationEvent:
    time_ms: int
    side: str
    price: float
    usd: float


@dataclass(frozen=True)
class Alert:
    time: float
    kind: str
    message: str
    level: str = "info"  # info | warning
    data: dict[str, Any] = field(default_factory=dict, compare=False)  # the rule's fields (alerts line words)


class Source(Protocol):
    """What the app needs from a data source. ``changes()`` yields the kinds of service events
    ("book", "bar", "realised", "zones", "health", "liquidation", "alert"); the app coalesces them."""

    label: str
    exchanges: tuple[str, ...]
    tiers: tuple[str, ...]
    market: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def markets(self) -> list[str]: ...
    async def select(self, market: str) -> None: ...
    def drawn(self) -> None: ...  # the first map is on the screen (a local source loads other markets now)
    async def backdrop(self, view: View) -> Backdrop: ...
    async def pulse(self, backdrop: Backdrop) -> Pulse: ...
    async def facts(self) -> Facts: ...
    async def zones(self) -> list[RankedZone]: ...  # ranked by USD^(1/4) x P(touch 4h), stable order, with touch
    def liquidations(self, limit: int = 20) -> list[LiquidationEvent]: ...
    def alerts(self) -> list[Alert]: ...
    def changes(self) -> AsyncIterator[str]: ...
    # The engine's analytics (engine/analytics.py), the same JSON bodies as the REST API
    # (docs/ANALYTICS_API.md). Errors: ValueError subclasses with a one-line message.
    async def position(self, side: str, entry: float, leverage: float, size_usd: float) -> dict[str, Any]: ...
    async def portfolio(self, positions: list[PositionSpec], limit_share: float = DEFAULT_LIMIT_SHARE,
                        new: PositionSpec | None = None, portfolio_usd: float | None = None) -> dict[str, Any]: ...
    async def sessions(self) -> dict[str, Any]: ...
    async def risk_map(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def candle_open_times(close_times: np.ndarray, timeframe: int) -> np.ndarray:
    return np.asarray(close_times, dtype=np.int64) - timeframe


class LocalSource:
    """The engine in this process: a ``Hub`` over a feed (demo market by default).

    Everything slow — importing the feed (ccxt), loading history, the batch estimate — happens in
    ``start()``, which the app runs in a worker after its first frame. View calls are numpy work; the ones
    that can take more than a frame run in a thread (the service guards its state with a lock)."""

    def __init__(
        self,
        feed: Any = "demo",  # a feed name for open_feed(), or a Feed object (tests, embedding)
        symbol: str | None = None,
        *,
        ladder: str | None = None,
        speed: float | None = None,
        seed: int | None = None,
        now: float | None = None,
        history_days: float | None = None,
        hub: Any = None,
        alerts: AlertSettings | None = None,
    ) -> None:
        self.feed = feed
        self.label = feed if isinstance(feed, str) else str(getattr(feed, "exchange", "feed"))
        self.exchanges = EXCHANGES
        self.symbol = symbol
        self.ladder = ladder
        self.speed = speed
        self.seed = seed
        self.now = now
        self.history_days = history_days
        self.hub = hub
        self.svc: Any = None
        self.market = ""
        self.tiers: tuple[str, ...] = ()
        self._own_hub = hub is None
        self._alerts: list[Alert] = []
        self._changes: asyncio.Queue[str] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._change_24h: tuple[int, float | None] = (-1, None)
        self.alert_settings = alerts

    async def start(self) -> None:
        # Imported here, not at module level: the first frame must not wait for numpy-heavy imports.
        from engine.service import open_hub

        if self.hub is None:
            # open_feed imports ccxt for the exchanges (a second or more): in a thread, so the loading
            # screen keeps drawing meanwhile
            self.hub = await asyncio.to_thread(
                open_hub, self.feed, [self.symbol] if self.symbol else None, ladder=self.ladder,
                history_days=self.history_days if self.history_days is not None else 30.0,
                speed=self.speed, seed=self.seed, now=self.now, alerts=self.alert_settings,
            )
            try:
                # this market first (its recent days, the rest backfilling); the others load behind it
                # (after this face's first map: backdrop() lets them go)
                await self.hub.start(first=self.symbol, wait_all=False, defer_others=True)
            except BaseException:
                await self.hub.stop()
                raise
        markets = self.markets()
        await self.select(self.symbol or markets[0])

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self.hub is not None and self._own_hub:
            await self.hub.stop()

    def markets(self) -> list[str]:
        return [m.key for m in self.hub.markets()]

    async def select(self, market: str) -> None:
        svc = self.hub.get(market)
        await svc.loaded.wait()  # a market behind the first may still be loading its recent window
        if self._sub is not None:
            self._sub.close()
        if self._pump is not None:
            self._pump.cancel()
        self.svc = svc
        self.market = svc.market.key
        self.tiers = tuple(svc.params.ladder.labels)
        self._change_24h = (-1, None)
        self._sub = svc.subscribe(maxsize=1024)
        self._pump = asyncio.create_task(self._forward(self._sub), name="tui events")
        self._changes.put_nowait("market")

    async def _forward(self, sub: Any) -> None:
        async for ev in sub:
            if ev.kind == "health":
                self._note_health(ev.data)
            elif ev.kind == "alert":  # the hub runs the one rule set (market time), as for the server
                self._push_alert(alert_from(ev.data))
            self._changes.put_nowait(ev.kind)

    def _note_health(self, info: dict[str, Any]) -> None:
        state = info.get("state", "")
        level = "info" if state in ("live", "demo", "replay") else "warning"
        msg = f"feed {state}" + (f": {info.get('reason')}" if info.get("reason") else "")
        self._push_alert(Alert(time.time(), "health", msg, level))

    def _push_alert(self, alert: Alert) -> None:
        self._alerts.append(alert)
        del self._alerts[:-50]

    async def changes(self) -> AsyncIterator[str]:  # type: ignore[override]
        while True:
            yield await self._changes.get()

    # ---- views ------------------------------------------------------------------------------------
    async def backdrop(self, view: View) -> Backdrop:
        return await asyncio.to_thread(self._backdrop, view)

    def drawn(self) -> None:
        """The app's map is on the screen: the other markets may load now without competing with the
        first picture for the interpreter."""
        if self.hub is not None and self._own_hub:
            self.hub.load_others()

    def _backdrop(self, view: View) -> Backdrop:
        svc = self.svc
        tf = timeframe_seconds(view.timeframe)
        candles = svc.candles(view.timeframe, limit=view.columns)
        price = float(candles.close[-1])
        window = choose_window(candles.low, candles.high, price, view.zoom, view.pan)
        hm = svc.heatmap(
            view.timeframe, None, bins=view.bins, price_low=window.low, price_high=window.high, columns=view.columns
        )
        opens = candle_open_times(hm.times, tf)
        bucket = int(candles.time[-1])
        closed = opens < bucket
        # candles and columns share open times; closes per column for the price path
        idx = np.searchsorted(candles.time, opens[closed])
        idx = np.clip(idx, 0, len(candles) - 1)
        closes = np.where(candles.time[idx] == opens[closed], candles.close[idx], np.nan)
        realised = svc.realised(view.timeframe, since=int(opens[0]) if len(opens) else None)
        rl = np.zeros(int(closed.sum()))
        rs = np.zeros(int(closed.sum()))
        if len(realised.time):
            j = np.searchsorted(realised.time, opens[closed])
            ok = (j < len(realised.time)) & (realised.time[np.minimum(j, len(realised.time) - 1)] == opens[closed])
            rl[ok] = realised.long_usd[j[ok]]
            rs[ok] = realised.short_usd[j[ok]]
        longs = hm.long_usd[closed]
        usd = longs + hm.short_usd[closed]
        return Backdrop(
            view=view,
            window=window,
            edges=hm.edges,
            times=opens[closed],
            usd=usd,
            closes=closes,
            realised_long=rl,
            realised_short=rs,
            bucket=bucket,
            tiers=tuple(hm.tiers),
            longs=longs,
        )

    async def pulse(self, backdrop: Backdrop) -> Pulse:
        return await asyncio.to_thread(self._pulse, backdrop)

    def _pulse(self, backdrop: Backdrop) -> Pulse:
        svc = self.svc
        price = float(svc.last_price)
        book = svc.live_book()
        longs, shorts = book.binned(backdrop.edges)
        # the forming candle opened at the start of the current bucket (the engine's buckets: weeks on Monday)
        t = int(book.time) - 1 if book.time else int(time.time())
        bucket = int(bucket_start(t, backdrop.view.timeframe))
        realised = svc.realised(backdrop.view.timeframe, since=bucket)
        fr = (float(realised.long_usd[-1]), float(realised.short_usd[-1])) if len(realised.time) else (0.0, 0.0)
        return Pulse(price, bucket, longs, shorts, fr)

    async def facts(self) -> Facts:
        svc = self.svc
        price = float(svc.last_price)
        funding = svc.funding()
        health = svc.health_info()
        model = svc.model_info()
        return Facts(
            market=self.market,
            price=price,
            change_24h=self._change(price),
            oi_usd=svc.oi_usd(),
            funding_rate=funding.get("rate"),
            funding_next=funding.get("next_time"),
            health=health.get("state", ""),
            health_reason=health.get("reason", ""),
            age_s=float(health.get("age_s", 0.0)),
            ladder=svc.params.ladder.name,
            ladder_text=svc.params.ladder.describe(),
            seed_mode=svc.seed_mode,
            daily_volume_usd=svc.daily_volume_usd(),
            model=model,
            history=dict(health.get("history") or {}),
        )

    def _change(self, price: float) -> float | None:
        """24h change against the close 24 hours ago (looked up once per closed hour: resampling the
        history every tick would cost more than the whole frame)."""
        bars = self.svc.bars
        last = int(bars.time[-1]) // 3600
        if self._change_24h[0] != last:
            target = int(bars.close_time[-1]) - 86_400
            i = int(np.searchsorted(bars.close_time, target, side="right")) - 1
            ref = float(bars.close[i]) if i >= 0 else None
            self._change_24h = (last, ref)
        ref = self._change_24h[1]
        return None if not ref else price / ref - 1.0

    async def zones(self) -> list[RankedZone]:
        return await asyncio.to_thread(self.svc.analytics.zones)

    def liquidations(self, limit: int = 20) -> list[LiquidationEvent]:
        return [LiquidationEvent(e.time_ms, e.side, e.price, e.usd) for e in self.svc.liquidations(limit=limit)]

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    async def position(self, side: str, entry: float, leverage: float, size_usd: float) -> dict[str, Any]:
        """One position with the market's own exchange, coin and contract (RiskError: one line)."""
        return await asyncio.to_thread(self.svc.analytics.position, side, entry, leverage, size_usd)

    async def portfolio(self, positions: list[PositionSpec], limit_share: float = DEFAULT_LIMIT_SHARE,
                        new: PositionSpec | None = None, portfolio_usd: float | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.svc.analytics.portfolio, positions, limit_share, new, portfolio_usd,
                                       self.hub.get)

    async def sessions(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.svc.analytics.sessions)

    async def risk_map(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(long, short) per tier on these bins, each bin's USD x P(price reaches it within 4h): the
        engine's risk-weighted map moved onto the heatmap's bins (AnalyticsError until volatility is known)."""
        span = span_around(float(self.svc.last_price), edges)
        lm = await asyncio.to_thread(self.svc.analytics.risk_weighted_map, 400, span)
        return rebin(lm.edges, lm.long_usd, edges), rebin(lm.edges, lm.short_usd, edges)


def alert_from(data: dict[str, Any]) -> Alert:
    """A service / WebSocket ``alert`` event as the alerts line shows it."""
    rule = str(data.get("rule") or data.get("kind") or "alert")
    level = "warning" if rule in ("proximity", "cascade") else "info"
    return Alert(float(data.get("time", time.time())), rule, str(data.get("message", "")), level, dict(data))
