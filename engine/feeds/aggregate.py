"""One coin across exchanges: Bars from several venues combined into one market, with a per-venue breakdown.

- Time axis: the union of the venues' bars (a venue missing a bar simply contributes nothing to it).
- Volumes (and open interest) add up across venues.
- Prices: volume-weighted across the venues that have the bar (equal weights when none traded), or taken
  from a reference venue where it has the bar. The same weights are used for open, high, low and close,
  so every combined candle still contains its open and close.
- Taker buy/sell: only Binance publishes them; the known venues' buy share is applied to the combined
  volume (the imbalance signal is kept, its size follows the whole market).
- Open interest: each venue keeps its history for a different length (Binance 30 days, OKX 5 days). A
  venue whose OI starts later would look like a burst of new positions when it joins the sum, so by
  default (``oi_gaps="hold"``) each venue's OI is held flat outside the stretch it reported: the changes
  are real, the level before its history is its first known value. ``oi_gaps="strict"`` leaves the sum
  NaN wherever any OI venue is unknown (the model then falls back to its volume proxy there).
- Funding: OI-weighted mean of the venues' rates in force (volume-weighted where OI is unknown).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.feeds.base import (
    BarUpdate,
    Feed,
    FeedError,
    FeedEvent,
    Health,
    HealthChange,
    Liquidation,
    Market,
    UnknownSymbol,
)
from engine.feeds.normalise import parse_symbol
from engine.model import Bars, BarsError


@dataclass(frozen=True)
class VenueShare:
    """One venue's part of the combined market, on the combined time axis."""

    present: np.ndarray  # bool: the venue has this bar
    volume: np.ndarray  # base coin (0 where absent)
    volume_share: np.ndarray  # of the combined volume (NaN where nothing traded)
    close: np.ndarray  # NaN where absent
    oi_usd: np.ndarray  # as added to the sum (held flat outside the reported stretch); NaN if never known
    oi_reported: np.ndarray  # bool: the venue itself reported OI for this bar


@dataclass(frozen=True)
class Combined:
    bars: Bars
    breakdown: dict[str, VenueShare]
    price_source: str  # "volume-weighted" or the reference venue
    oi_venues: tuple[str, ...]  # venues whose OI is in the sum
    skipped: dict[str, str] = field(default_factory=dict)  # venue -> why it is not in (history_across)


def _on_axis(axis: np.ndarray, b: Bars, arr: np.ndarray | None, fill: float = np.nan) -> np.ndarray:
    out = np.full(len(axis), fill)
    if arr is not None:
        out[np.searchsorted(axis, b.time)] = arr
    return out


def _held(values: np.ndarray) -> np.ndarray:
    """Forward-fill finite values, then back-fill before the first one (flat extension both ways)."""
    ok = np.isfinite(values)
    if not ok.any():
        return values
    idx = np.where(ok, np.arange(len(values)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.flatnonzero(ok)[0])
    idx[idx < 0] = first
    return values[idx]


def combine(per_venue: Mapping[str, Bars], *, price: str = "volume-weighted", oi_gaps: str = "hold") -> Combined:
    """Combine one coin's bars from several venues (same timeframe). ``price`` is "volume-weighted" or a
    venue name from ``per_venue``; ``oi_gaps`` is "hold" or "strict" (see the module docstring)."""
    venues = {v: b for v, b in per_venue.items() if len(b)}
    if not venues:
        raise BarsError("no venue has any bars to combine")
    if price != "volume-weighted" and price not in venues:
        raise BarsError(f"reference venue {price!r} has no bars; use one of {', '.join(venues)}")
    if oi_gaps not in ("hold", "strict"):
        raise BarsError(f"oi_gaps must be 'hold' or 'strict', not {oi_gaps!r}")
    tfs = {b.timeframe for b in venues.values()}
    if len(tfs) != 1:
        raise BarsError("cannot combine bars of different timeframes")
    tf = tfs.pop()
    axis = np.unique(np.concatenate([b.time for b in venues.values()]))
    n = len(axis)

    present = {v: _on_axis(axis, b, np.ones(len(b)), 0.0) > 0 for v, b in venues.items()}
    vol = {v: np.nan_to_num(_on_axis(axis, b, b.volume, 0.0)) for v, b in venues.items()}
    total_vol = sum(vol.values(), np.zeros(n))

    # one set of weights for all four prices keeps every candle consistent
    weight = {v: np.where(present[v], vol[v], 0.0) for v in venues}
    wsum = sum(weight.values(), np.zeros(n))
    count = sum((p.astype(float) for p in present.values()), np.zeros(n))
    for v in venues:
        weight[v] = np.where(wsum > 0, weight[v], present[v].astype(float))
    wsum = np.where(wsum > 0, wsum, count)
    cols: dict[str, np.ndarray] = {}
    for name in ("open", "high", "low", "close"):
        acc = np.zeros(n)
        for v, b in venues.items():
            acc += weight[v] * np.nan_to_num(_on_axis(axis, b, getattr(b, name)))
        cols[name] = acc / wsum
    if price != "volume-weighted":
        ref = venues[price]
        has = present[price]
        for name in ("open", "high", "low", "close"):
            cols[name] = np.where(has, _on_axis(axis, ref, getattr(ref, name)), cols[name])

    taker_buy = taker_sell = None
    takers = [v for v, b in venues.items() if b.has_taker]
    if takers:
        buy = sum((np.nan_to_num(_on_axis(axis, venues[v], venues[v].taker_buy_volume)) for v in takers),
                  np.zeros(n))
        known = sum((np.where(np.isfinite(_on_axis(axis, venues[v], venues[v].taker_buy_volume)), vol[v], 0.0)
                     for v in takers), np.zeros(n))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(known > 0, buy / known, np.nan)
        taker_buy = total_vol * share
        taker_sell = total_vol - taker_buy

    oi_venues = tuple(v for v, b in venues.items() if b.has_oi)
    oi_used: dict[str, np.ndarray] = {}
    oi_reported: dict[str, np.ndarray] = {}
    oi_total = None
    if oi_venues:
        oi_total = np.zeros(n)
        for v in oi_venues:
            raw = _on_axis(axis, venues[v], venues[v].oi_usd)
            oi_reported[v] = np.isfinite(raw)
            oi_used[v] = _held(raw) if oi_gaps == "hold" else raw
            oi_total = oi_total + oi_used[v]

    rates = [(v, _on_axis(axis, b, b.funding_rate)) for v, b in venues.items() if b.funding_rate is not None]
    funding = None
    if rates:
        num = np.zeros(n)
        den = np.zeros(n)
        for v, r in rates:
            w = oi_used.get(v, np.full(n, np.nan))
            w = np.where(np.isfinite(w), w, vol[v])
            ok = np.isfinite(r) & (w > 0)
            num += np.where(ok, r * w, 0.0)
            den += np.where(ok, w, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            funding = np.where(den > 0, num / den, np.nan)

    bars = Bars(timeframe=tf, time=axis, volume=total_vol, taker_buy_volume=taker_buy,
                taker_sell_volume=taker_sell, oi_usd=oi_total, funding_rate=funding, **cols)
    with np.errstate(invalid="ignore", divide="ignore"):
        breakdown = {
            v: VenueShare(
                present=present[v], volume=vol[v],
                volume_share=np.where(total_vol > 0, vol[v] / total_vol, np.nan),
                close=_on_axis(axis, b, b.close),
                oi_usd=oi_used.get(v, np.full(n, np.nan)),
                oi_reported=oi_reported.get(v, np.zeros(n, bool)))
            for v, b in venues.items()
        }
    source = "volume-weighted" if price == "volume-weighted" else price
    return Combined(bars=bars, breakdown=breakdown, price_source=source, oi_venues=oi_venues)


async def history_across(feeds: Sequence[Feed], coin: str, since: int | None = None, until: int | None = None,
                         *, price: str = "volume-weighted", oi_gaps: str = "hold") -> Combined:
    """Fetch one coin's history from every feed at once and combine it. A venue that does not list the
    coin (or fails) is left out and named in ``Combined.skipped`` with its one-line reason."""
    async def one(feed: Feed) -> Bars | FeedError:
        try:
            return await feed.history(coin, since, until)
        except FeedError as err:
            return err

    results = await asyncio.gather(*(one(f) for f in feeds))
    got: dict[str, Bars] = {}
    skipped: dict[str, str] = {}
    for feed, res in zip(feeds, results, strict=True):
        if isinstance(res, FeedError):
            skipped[feed.exchange] = str(res)
        else:
            got[feed.exchange] = res
    if not any(len(b) for b in got.values()):
        reasons = "; ".join(f"{v}: {r}" for v, r in skipped.items()) or "no bars in range"
        raise FeedError(f"no venue has {coin} history ({reasons})")
    use_price = price if price == "volume-weighted" or price in got else "volume-weighted"
    combined = combine(got, price=use_price, oi_gaps=oi_gaps)
    return Combined(combined.bars, combined.breakdown, combined.price_source, combined.oi_venues, skipped)


# ---- one coin across venues, as a Feed -----------------------------------------------------------------
_SEVERITY = {Health.LIVE: 0, Health.DEMO: 0, Health.REPLAY: 0, Health.DELAYED: 1, Health.STALE: 2,
             Health.RECONNECTING: 3}
_DAY_S = 86_400


@dataclass
class _VenueNow:
    """What the breakdown shows for one venue: its newest closed bar and the last OI it reported."""

    time: int = 0
    price: float = math.nan
    oi_usd: float = math.nan
    volumes: deque[tuple[int, float]] = field(default_factory=deque)  # (bar time, base volume), last 24h

    def add(self, t: int, close: float, volume: float, oi_usd: float) -> None:
        if self.volumes and t <= self.time:
            return  # already counted (history asked for again)
        self.time, self.price = t, close
        if math.isfinite(oi_usd):
            self.oi_usd = oi_usd
        self.volumes.append((t, volume if math.isfinite(volume) else 0.0))
        while self.volumes and self.volumes[0][0] <= t - _DAY_S:
            self.volumes.popleft()

    @property
    def volume_24h(self) -> float:
        return sum(v for _, v in self.volumes)


class AggregateFeed:
    """One market per coin, summed across several venues' feeds (``open_feed("binanceusdm+bybit+okx")``).

    History is ``history_across`` (see the module docstring for how bars combine). Live, each venue's
    stream runs on its own; a closed minute is combined and handed out once every venue that is healthy
    has closed it, or ``grace_s`` after the first venue closed it (a slow venue must not hold the chart
    back; its late bar is then counted in ``late_bars`` and left out of that minute). Liquidations pass
    through with their venue in ``exchange``. A venue whose stream fails is retried on its own while the
    others keep serving.
    """

    timeframe = 60

    def __init__(self, feeds: Sequence[Feed], reference: str | None = None, *, name: str = "all",
                 grace_s: float = 10.0, retry_s: float = 1.0, oi_gaps: str = "hold") -> None:
        venues = [f.exchange for f in feeds]
        if not feeds:
            raise FeedError("an aggregate needs at least one exchange")
        if len(set(venues)) != len(venues):
            raise FeedError(f"each exchange once, please: {'+'.join(venues)}")
        if reference is not None and reference not in venues:
            raise FeedError(f"reference venue {reference!r} is not one of {', '.join(venues)}")
        if {f.timeframe for f in feeds} != {self.timeframe}:
            raise FeedError("every venue must deliver 1-minute bars")
        # "all" rather than "binanceusdm+bybit+okx": market keys end up in URLs, where "+" means a space
        self.exchange = name
        self.venues = tuple(venues)
        self.feeds = list(feeds)
        self.price = reference or "volume-weighted"
        self.oi_gaps = oi_gaps
        self.grace_s = grace_s
        self.retry_s = retry_s
        self.late_bars = 0  # closed venue bars that arrived after their minute was handed out
        self.skipped: dict[str, dict[str, str]] = {}  # symbol -> venue -> why its history is not in
        self._listed: dict[str, list[str]] = {}  # symbol -> venues listing it
        self._markets: list[Market] | None = None
        self._market_errors: dict[str, str] = {}
        self._now: dict[str, dict[str, _VenueNow]] = {}
        self._last_closed: dict[str, int] = {}

    # -- Feed protocol ------------------------------------------------------------------------------
    async def markets(self) -> list[Market]:
        """Every coin listed on at least one venue, in the first venue's order (majors first). A venue
        whose market list cannot be loaded is left out (named in ``health_reason``)."""
        if self._markets is None:
            async def one(feed: Feed) -> list[Market] | FeedError:
                try:
                    return await feed.markets()
                except FeedError as err:
                    return err

            results = await asyncio.gather(*(one(f) for f in self.feeds))
            merged: dict[str, Market] = {}
            for venue, res in zip(self.venues, results, strict=True):
                if isinstance(res, FeedError):
                    self._market_errors[venue] = str(res)
                    continue
                for m in res:
                    self._listed.setdefault(m.symbol, []).append(venue)
                    have = merged.get(m.symbol)
                    # bars are in base coin whatever the venue's contract, so the combined contract is 1 coin
                    tick = m.tick if have is None else min(have.tick, m.tick)
                    merged[m.symbol] = Market(self.exchange, m.symbol, m.coin, 1.0, tick, m.linear)
            if not merged:
                why = "; ".join(f"{v}: {e}" for v, e in self._market_errors.items())
                raise FeedError(f"no venue's markets could be loaded ({why})")
            self._markets = list(merged.values())
        return list(self._markets)

    async def resolve(self, symbol: str) -> Market:
        """What the user typed -> the combined market; ``UnknownSymbol`` in one line if no venue lists it."""
        unified = parse_symbol(symbol)
        for m in await self.markets():
            if m.symbol == unified:
                return m
        raise UnknownSymbol(f"none of {', '.join(self.venues)} lists a perpetual {unified} (asked for {symbol!r})")

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        market = await self.resolve(symbol)
        feeds = [f for f in self.feeds if f.exchange in self._listed.get(market.symbol, ())]
        combined = await history_across(feeds, market.symbol, since, until, price=self.price,
                                        oi_gaps=self.oi_gaps)
        self.skipped[market.symbol] = dict(combined.skipped)
        now = self._now.setdefault(market.symbol, {})
        bars = combined.bars
        for venue, share in combined.breakdown.items():
            vn = now.setdefault(venue, _VenueNow())
            for i in np.flatnonzero(share.present)[-(_DAY_S // self.timeframe):]:
                vn.add(int(bars.time[i]), float(share.close[i]), float(share.volume[i]), float(share.oi_usd[i]))
        if len(bars):
            self._last_closed[market.symbol] = max(self._last_closed.get(market.symbol, 0), int(bars.time[-1]))
        return bars

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        market = await self.resolve(symbol)
        run = _Merge(self, market.symbol, [f for f in self.feeds if f.exchange in self._listed[market.symbol]])
        try:
            async for ev in run.events():
                yield ev
        finally:
            await run.stop()

    async def close(self) -> None:
        await asyncio.gather(*(f.close() for f in self.feeds), return_exceptions=True)

    # -- what the faces can show ----------------------------------------------------------------------
    def oi_source(self, symbol: str) -> dict[str, dict[str, str]]:
        """Each venue's open-interest fields (what the sum is made of), for data health."""
        out: dict[str, dict[str, str]] = {}
        for feed in self.feeds:
            of = getattr(feed, "oi_source", None)
            if callable(of):
                out[feed.exchange] = of(symbol)
        return out

    def breakdown(self, symbol: str) -> dict[str, Any]:
        """Each venue's part of the coin right now: newest closed price, last reported OI and its share
        of the total, base volume over the last 24 h and its share. Shares are of what is known (a venue
        without OI has ``oi_usd`` None and no share)."""
        unified = parse_symbol(symbol)
        now = self._now.get(unified, {})
        oi_total = sum(v.oi_usd for v in now.values() if math.isfinite(v.oi_usd))
        vol_total = sum(v.volume_24h for v in now.values())

        def share(x: float, total: float) -> float | None:
            return x / total if math.isfinite(x) and total > 0 else None

        venues = {
            name: {
                "time": v.time,
                "price": v.price if math.isfinite(v.price) else None,
                "oi_usd": v.oi_usd if math.isfinite(v.oi_usd) else None,
                "oi_share": share(v.oi_usd, oi_total),
                "volume_24h": v.volume_24h,
                "volume_share": share(v.volume_24h, vol_total),
            }
            for name, v in now.items()
        }
        return {"symbol": unified, "price_source": self.price, "oi_usd": oi_total if oi_total > 0 else None,
                "volume_24h": vol_total, "venues": venues, "skipped": dict(self.skipped.get(unified, {}))}


class _Merge:
    """One ``AggregateFeed.stream``: a task per venue feeding one queue, and the per-minute combiner."""

    def __init__(self, agg: AggregateFeed, symbol: str, feeds: list[Feed]) -> None:
        self.agg = agg
        self.symbol = symbol
        self.feeds = feeds
        self.queue: asyncio.Queue[tuple[str, FeedEvent | None]] = asyncio.Queue()  # None: venue ended
        self.health: dict[str, tuple[Health, str]] = {f.exchange: (Health.LIVE, "") for f in feeds}
        self.shown: tuple[Health, str] | None = None
        self.last_closed = agg._last_closed.get(symbol, 0)
        self.history_end = self.last_closed  # closed bars up to here are history the venues replay
        self.venue_closed: dict[str, int] = {}
        self.closed: dict[int, dict[str, Bars]] = {}  # minute -> venue -> closed bar, not yet handed out
        self.forming: dict[str, Bars] = {}
        self.deadline: dict[int, float] = {}  # minute -> loop time it is handed out regardless
        self.last_oi: dict[str, float] = {v: n.oi_usd for v, n in agg._now.get(symbol, {}).items()}
        self.tasks: list[asyncio.Task[None]] = []

    async def pump(self, feed: Feed) -> None:
        """One venue's stream into the shared queue; a failure is shown as that venue's health and the
        stream is opened again after a pause (doubling, at most 30 s), without disturbing the others."""
        delay = self.agg.retry_s
        while True:
            try:
                async for ev in feed.stream(self.symbol):
                    delay = self.agg.retry_s
                    self.queue.put_nowait((feed.exchange, ev))
                self.queue.put_nowait((feed.exchange, None))  # the feed was closed
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                self.queue.put_nowait((feed.exchange, HealthChange(Health.RECONNECTING, reason)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def events(self) -> AsyncIterator[FeedEvent]:
        loop = asyncio.get_running_loop()
        self.tasks = [asyncio.create_task(self.pump(f), name=f"{f.exchange} {self.symbol}") for f in self.feeds]
        running = len(self.tasks)
        while running:
            timeout = max(0.0, min(self.deadline.values()) - loop.time()) if self.deadline else None
            try:
                venue, ev = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                venue, ev = "", None
            out: list[FeedEvent] = []
            if ev is None and venue:
                running -= 1
                self.health.pop(venue, None)
            elif isinstance(ev, Liquidation):
                out.append(ev)
            elif isinstance(ev, HealthChange):
                self.health[venue] = (ev.state, ev.reason)
                out += self.health_change()
            elif isinstance(ev, BarUpdate):
                out += self.on_bar(venue, ev, loop.time())
            out += self.ready(loop.time())
            for e in out:
                yield e

    def on_bar(self, venue: str, ev: BarUpdate, now: float) -> list[FeedEvent]:
        t = int(ev.bar.time[0])
        if ev.bar.oi_usd is not None and math.isfinite(float(ev.bar.oi_usd[0])):
            self.last_oi[venue] = float(ev.bar.oi_usd[0])
        if t <= self.last_closed:
            if ev.closed:
                self.late_bar(venue, t)
            return []
        if not ev.closed:
            self.forming[venue] = ev.bar
            return self.forming_update(t)
        self.closed.setdefault(t, {})[venue] = ev.bar
        self.venue_closed[venue] = max(self.venue_closed.get(venue, 0), t)
        self.deadline.setdefault(t, now + self.agg.grace_s)
        if (f := self.forming.get(venue)) is not None and int(f.time[0]) <= t:
            del self.forming[venue]
        return []

    def late_bar(self, venue: str, t: int) -> None:
        self.venue_closed[venue] = max(self.venue_closed.get(venue, 0), t)
        if t > self.history_end:  # not a replay of the history already combined
            self.agg.late_bars += 1

    def waited_for(self) -> list[str]:
        """Venues a closed minute waits for: the ones whose stream is healthy."""
        return [v for v, (state, _) in self.health.items() if _SEVERITY[state] <= 1]

    def ready(self, now: float) -> list[FeedEvent]:
        out: list[FeedEvent] = []
        while self.closed:
            t = min(self.closed)
            everyone = all(self.venue_closed.get(v, 0) >= t for v in self.waited_for())
            if not (everyone or now >= self.deadline[t]):
                break
            parts = self.closed.pop(t)
            del self.deadline[t]
            self.last_closed = t
            self.agg._last_closed[self.symbol] = t
            out.append(BarUpdate(self.combine(parts), closed=True))
            now_by_venue = self.agg._now.setdefault(self.symbol, {})
            for v, b in parts.items():
                now_by_venue.setdefault(v, _VenueNow()).add(
                    t, float(b.close[0]), float(b.volume[0]) if b.volume is not None else 0.0,
                    self.last_oi.get(v, math.nan))
        return out

    def forming_update(self, t: int) -> list[FeedEvent]:
        parts = {v: b for v, b in self.forming.items() if int(b.time[0]) == t}
        parts.update({v: b for v, b in self.closed.get(t, {}).items()})
        return [BarUpdate(self.combine(parts), closed=False)] if parts else []

    def combine(self, parts: Mapping[str, Bars]) -> Bars:
        """One minute across venues; each venue's OI is its last reported value (a live bar often has
        none yet), so the sum does not dip when one venue's poll is late."""
        held = {}
        for v, b in parts.items():
            oi = self.last_oi.get(v, math.nan)
            held[v] = dataclasses.replace(b, oi_usd=np.array([oi])) if math.isfinite(oi) else b
        price = self.agg.price if self.agg.price in held else "volume-weighted"
        return combine(held, price=price, oi_gaps=self.agg.oi_gaps).bars

    def health_change(self) -> list[FeedEvent]:
        """The worst venue's state, named — but while any venue is live the data still flows, so the
        aggregate is at most DELAYED (the service would otherwise flip a RECONNECTING back to LIVE on
        the next bar and the outage would vanish from view)."""
        worst_venue, (state, reason) = max(self.health.items(), key=lambda kv: _SEVERITY[kv[1][0]])
        if _SEVERITY[state] == 0:
            shown = (Health.LIVE, "")
        else:
            flowing = any(_SEVERITY[s] == 0 for s, _ in self.health.values())
            text = f"{worst_venue} {state.value}" + (f": {reason}" if reason else "")
            shown = (Health.DELAYED if flowing else state, text)
        if shown == self.shown:
            return []
        self.shown = shown
        return [HealthChange(*shown)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
