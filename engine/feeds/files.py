"""The replay feed: recorded bars (a bars file, or every market of a recording such as a store DB) played
back as if they were a live market. Reading and writing the files is engine/formats.py's job; a store
is handed in as a :class:`Recording` (engine.store.open_replay builds one), so this feed depends on no
store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time as wallclock
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.feeds.base import BarUpdate, FeedError, FeedEvent, Health, HealthChange, Liquidation, Market
from engine.feeds.normalise import with_estimated_price
from engine.formats import (
    STORE_SUFFIXES,
    SeveralMarkets,
    _bars_from_table,
    _filter_market,
    _iso,
    _markets_in,
    read_liquidations_file,
    read_table,
)
from engine.model import Bars


class Recording(Protocol):
    """Recorded markets the feed replays: (symbol, key, timeframe) of each market holding bars, and each
    one's bars and liquidations by key. Errors are FeedErrors (one line)."""

    def recorded(self) -> list[tuple[str, str, int]]: ...

    def bars(self, key: str) -> Bars: ...

    def liquidations(self, key: str) -> list[Liquidation]: ...

    def close(self) -> None: ...


# ---- the replay feed ----------------------------------------------------------------------------------
def file_feed_path(spec: str) -> Path:
    """``file:PATH`` (or a bare path) -> PATH."""
    return Path(spec[5:] if spec.startswith("file:") else spec).expanduser()


class FileFeed:
    """Replays recorded bars (a bars file, or every market in a store DB) as a live feed.

    ``history()`` holds the bars before the cut (``start``, UNIX seconds; default halfway through the
    recording); ``stream()`` then plays the rest bar by bar, one bar per ``timeframe / speed`` seconds
    (``speed=math.inf``: as fast as the consumer reads), with recorded liquidations in their bars. When
    the recording runs out, the feed reports STALE and waits. Health is REPLAY throughout."""

    exchange = "file"
    health = Health.REPLAY

    def __init__(
        self,
        path: str | os.PathLike[str],
        speed: float = 60.0,
        start: int | None = None,
        *,
        venue: str | None = None,
        coin: str | None = None,
        liquidations: str | os.PathLike[str] | None = None,
        recording: Recording | None = None,
    ) -> None:
        if not speed > 0:
            raise FeedError(f"replay speed must be positive, got {speed}")
        self.path = file_feed_path(str(path)) if isinstance(path, str) else Path(path)
        self.speed = float(speed)
        self.start = start
        self._venue, self._coin = venue, coin
        self._liq_path = liquidations
        self._bars: dict[str, Bars] = {}
        self._liqs: dict[str, list[Liquidation]] = {}
        self._source: dict[str, str] = {}  # our symbol -> store market key
        self._now: dict[str, int] = {}  # replay clock per symbol (UNIX seconds)
        self._markets: list[Market] | None = None
        self._recording = recording
        self.timeframe = 60
        if not self.path.exists():
            raise FeedError(f"{self.path}: no such file to replay")
        if recording is None and self.path.suffix.lower() in STORE_SUFFIXES:
            raise FeedError(f"{self.path}: a store is replayed through engine.store.open_replay")

    @classmethod
    def from_spec(cls, spec: str, speed: float = 60.0, start: int | None = None) -> FileFeed:
        return cls(file_feed_path(spec), speed=speed, start=start)

    # -- loading
    def _load(self) -> list[Market]:
        if self._markets is not None:
            return self._markets
        if self._recording is not None:
            stored = self._recording.recorded()
            if not stored:
                raise FeedError(f"{self.path}: the store holds no bars to replay")
            symbols = [sym for sym, _, _ in stored]
            for sym, key, _ in stored:
                self._source[sym if symbols.count(sym) == 1 else key] = key
            self._markets = [_market(sym) for sym in self._source]
            self.timeframe = min(tf or 60 for _, _, tf in stored)
        else:
            table = read_table(self.path)
            try:
                picks = [_filter_market(table, self._venue, self._coin)]
            except SeveralMarkets:
                # a file of several venues/coins (like the shared candle file): one market each
                picks = [_filter_market(table, v, c) for v, c in _markets_in(table, self._venue, self._coin)]
            several_venues = len({v for _, v, _ in picks}) > 1
            stem = self.path.name.split(".")[0]
            self._markets = []
            for sub, venue, coin in picks:
                bars = _bars_from_table(sub, None)
                sym = f"{coin.upper()}/USDT:USDT" if coin else stem
                if venue and (several_venues or not coin) and len(picks) > 1:
                    sym = f"{venue.lower()}:{sym}"
                self._bars[sym] = bars
                if self._liq_path is not None:
                    # the liquidations of this market only, if that file mixes coins/venues too
                    hint = f"{venue or 'file'}:{coin.upper() + '/USDT:USDT' if coin else stem}"
                    # settle the venue's price kind first (it needs the venue), then name the replayed market
                    self._liqs[sym] = [
                        dataclasses.replace(with_estimated_price(e), exchange=self.exchange, symbol=sym)
                        for e in read_liquidations_file(self._liq_path, market=hint)
                    ]
                self._markets.append(_market(sym, bars))
            self.timeframe = min(b.timeframe for b in self._bars.values())
        return self._markets

    def _series(self, symbol: str) -> Bars:
        self._load()
        if symbol not in self._bars:
            key = self._source.get(symbol)
            if key is None:
                known = ", ".join(m.symbol for m in self._markets or [])
                from engine.feeds.base import UnknownSymbol

                raise UnknownSymbol(f"{symbol!r} is not in {self.path} (it holds {known})")
            assert self._recording is not None
            self._bars[symbol] = self._recording.bars(key)
            self._liqs[symbol] = [  # stored events keep their reported price and its kind
                dataclasses.replace(e, exchange=self.exchange, symbol=symbol)
                for e in self._recording.liquidations(key)
            ]
        bars = self._bars[symbol]
        if symbol not in self._now:
            self._now[symbol] = self._cut(bars)
        return bars

    def _cut(self, bars: Bars) -> int:
        if len(bars) == 0:
            return 0
        if self.start is None:
            return int(bars.time[len(bars) // 2])
        k = int(np.searchsorted(bars.time, self.start, side="left"))
        return int(bars.time[k]) if k < len(bars) else int(bars.close_time[-1])

    # -- the Feed protocol
    async def markets(self) -> list[Market]:
        return list(self._load())

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        bars = self._series(symbol)
        now = self._now[symbol]
        hi = now if until is None else min(int(until), now)
        # closed by the replay clock, open time in [since, until)
        stop = int(np.searchsorted(bars.close_time, now, side="right"))
        stop = min(stop, int(np.searchsorted(bars.time, hi, side="left")))
        start = 0 if since is None else int(np.searchsorted(bars.time, int(since), side="left"))
        return bars.slice(start, max(start, stop))

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        bars = self._series(symbol)
        liqs = self._liqs.get(symbol, [])
        liq_ms = np.array([e.time_ms for e in liqs], dtype=np.int64)
        k = int(np.searchsorted(bars.time, self._now[symbol], side="left"))
        yield HealthChange(
            Health.REPLAY, f"replaying {self.path.name} from {_iso(self._now[symbol])} UTC at {self.speed:g}x"
        )
        step = bars.timeframe / self.speed
        opens = bars.time[k:]
        closes = opens + bars.timeframe
        # which recorded liquidations fall inside each replayed bar, found once for all bars
        first = np.searchsorted(liq_ms, opens * 1000, side="left").tolist()
        last = np.searchsorted(liq_ms, closes * 1000, side="left").tolist()
        close_list = closes.tolist()
        t0 = wallclock.monotonic()
        for n, i in enumerate(range(k, len(bars))):
            if math.isfinite(step):
                delay = t0 + (n + 1) * step - wallclock.monotonic()
                await asyncio.sleep(max(0.0, delay))
            elif n % 64 == 0:
                await asyncio.sleep(0)  # flat out, but let the rest of the loop run now and then
            for j in range(first[n], last[n]):
                yield liqs[j]
            self._now[symbol] = max(self._now[symbol], close_list[n])
            yield BarUpdate(bars.slice(i, i + 1), closed=True)
        yield HealthChange(Health.STALE, f"end of recording at {_iso(int(bars.time[-1]) + bars.timeframe)} UTC")
        await asyncio.Event().wait()  # a feed streams until cancelled

    async def close(self) -> None:
        if self._recording is not None:
            self._recording.close()


def _market(symbol: str, bars: Bars | None = None) -> Market:
    bare = symbol.split(":", 1)[1] if symbol.count(":") >= 2 else symbol
    coin = bare.split("/")[0].upper()
    return Market(exchange="file", symbol=symbol, coin=coin, tick=_tick(bars) if bars is not None else 0.1)


def _tick(bars: Bars) -> float:
    """The coarsest power-of-ten step every sampled price sits on (a stand-in for the venue's tick)."""
    sample = bars.close[:: max(1, len(bars) // 1000)]
    for decimals in range(-2, 9):
        scaled = sample * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return 10.0**-decimals
    return 1e-8
