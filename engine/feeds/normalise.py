"""Exchange shapes -> liqheat shapes. Pure functions over dicts, lists and numpy arrays (no ccxt, no IO).

What differs between venues is written down once, here, as data:
- liquidation side: Binance and OKX report the liquidation *order* side (an order to SELL closes a long,
  so SELL = a long was liquidated); Bybit's ``allLiquidation`` reports the *position* side (Buy = a long was
  liquidated). liqheat always carries the side of the position that was force-closed.
- liquidation size: Binance and Bybit linear send base coin; OKX sends contracts (× ``ctVal`` base each).
  ccxt leaves ``contractSize``/``baseValue``/``quoteValue`` empty on websocket liquidations, so base and USD
  are computed here from the market's contract size.
- liquidation price: Binance prints the order's average fill; Bybit and OKX print the *bankruptcy* price
  (one maintenance margin beyond where the position was liquidated). Events carry both: ``price`` = the
  estimated liquidation price (``engine.model.margin.liquidation_from_bankruptcy``), ``reported_price`` =
  what the venue sent, ``price_kind`` = "fill" | "bankruptcy".
- open interest: Binance gives base amount and USD value; Bybit base only (× price); OKX contracts, base and
  USD. OI snapshots (5-minute buckets) are held onto the 1-minute bars that close after them. liqheat's OI is
  always *one side* (the contracts held long = those held short): Binance and OKX report that; Bybit's
  ``openInterest``/``openInterestValue`` are "the sum of both sides", so its ``singleOpenInterest*`` ticker
  fields are read where present and its history is halved (``OI_SOURCES`` says which, per venue).
- symbols: a trader types ``btc``, ``BTCUSDT``, ``BTC-USDT-SWAP`` or ``BTC/USDT:USDT``; all mean the same.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.feeds.base import Liquidation, UnknownSymbol
from engine.model import Bars
from engine.model.margin import REPORTS_BANKRUPTCY_PRICE, canonical_exchange, liquidation_from_bankruptcy

# ---- symbols ---------------------------------------------------------------------------------------------
_QUOTES = ("USDT", "USDC", "USD")
_TOKEN = re.compile(r"^[A-Z0-9]+$")


def parse_symbol(text: str, default_quote: str = "USDT") -> str:
    """What a trader typed -> ccxt's unified perpetual symbol ``BASE/QUOTE:SETTLE`` (linear: settle = quote).

    ``btc`` -> ``BTC/USDT:USDT``; ``ETHUSDT`` -> ``ETH/USDT:USDT``; ``SOL-USDT-SWAP`` -> ``SOL/USDT:USDT``;
    ``BTCPERP`` (Bybit's USDC perpetual id) -> ``BTC/USDC:USDC``; unified symbols pass through."""
    raw = text.strip().upper()
    if not raw:
        raise UnknownSymbol("empty symbol: name a coin such as BTC or a pair such as BTC/USDT:USDT")
    if ":" in raw:
        pair, settle = raw.split(":", 1)
        base, _, quote = pair.partition("/")
        if _TOKEN.match(base) and _TOKEN.match(quote) and _TOKEN.match(settle.split("-")[0]):
            return f"{base}/{quote}:{settle}"
    elif "/" in raw:
        base, quote = raw.split("/", 1)
        if _TOKEN.match(base) and _TOKEN.match(quote):
            return f"{base}/{quote}:{quote}"
    elif "-" in raw:
        parts = [p for p in raw.split("-") if p]
        if parts and parts[-1] == "SWAP":
            parts = parts[:-1]
        if len(parts) == 2 and all(_TOKEN.match(p) for p in parts):
            return f"{parts[0]}/{parts[1]}:{parts[1]}"
    elif _TOKEN.match(raw):
        if raw.endswith("PERP") and len(raw) > 4:
            return f"{raw[:-4]}/USDC:USDC"
        for quote in _QUOTES:
            if raw.endswith(quote) and len(raw) > len(quote):
                return f"{raw[: -len(quote)]}/{quote}:{quote}"
        return f"{raw}/{default_quote}:{default_quote}"
    raise UnknownSymbol(f"cannot read {text!r} as a perpetual: try BTC, BTCUSDT or BTC/USDT:USDT")


# ---- liquidations ----------------------------------------------------------------------------------------
# What each venue's liquidation ``side`` field means.
SIDE_MEANS: dict[str, str] = {"binanceusdm": "order", "okx": "order", "bybit": "position"}


def liquidated_side(exchange: str, side: str, position_side: str | None = None) -> str:
    """The position that was force-closed, ``long`` or ``short``.

    An explicit position side (OKX ``posSide`` in long/short mode) wins; otherwise the venue's convention
    decides what ``side`` means. Raises ValueError on anything else (a frame we must not guess about)."""
    pos = (position_side or "").lower()
    if pos in ("long", "short"):
        return pos
    s = side.lower()
    if s not in ("buy", "sell"):
        raise ValueError(f"unknown liquidation side {side!r}")
    if SIDE_MEANS[exchange] == "position":
        return "long" if s == "buy" else "short"
    return "long" if s == "sell" else "short"  # order side: selling closes a long


@dataclass(frozen=True)
class RawLiquidation:
    """One liquidation as the venue sent it, before units and side are settled."""

    time_ms: int
    market_id: str
    side: str
    price: float
    size: float  # venue units: base coin (Binance, Bybit linear) or contracts (OKX)
    position_side: str | None = None


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _binance_rows(message: Mapping[str, Any]) -> list[RawLiquidation]:
    data = message.get("data")
    if isinstance(data, Mapping) and "o" not in message:
        message = data  # a combined-stream frame: {"stream": "!forceOrder@arr", "data": {...}}
    o = message.get("o") or {}
    # z = accumulated filled quantity (the amount actually liquidated); q is the order's size.
    size = _num(o.get("z"))
    if not size > 0:
        size = _num(o.get("q"))
    price = _num(o.get("ap"))
    if not price > 0:
        price = _num(o.get("p"))
    return [RawLiquidation(int(o.get("T") or message.get("E") or 0), str(o.get("s", "")), str(o.get("S", "")),
                           price, size)]


def _bybit_rows(message: Mapping[str, Any]) -> list[RawLiquidation]:
    data = message.get("data")
    rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    out = []
    for r in rows:
        out.append(RawLiquidation(
            int(r.get("T") or r.get("updatedTime") or message.get("ts") or 0),
            str(r.get("s") or r.get("symbol") or ""),
            str(r.get("S") or r.get("side") or ""),
            _num(r.get("p", r.get("price"))),
            _num(r.get("v", r.get("size"))),
        ))
    return out


def _okx_rows(message: Mapping[str, Any]) -> list[RawLiquidation]:
    out = []
    for item in message.get("data") or []:
        inst = str(item.get("instId", ""))
        for d in item.get("details") or []:  # every detail, not only details[0]
            out.append(RawLiquidation(int(d.get("ts") or 0), inst, str(d.get("side", "")),
                                      _num(d.get("bkPx")), _num(d.get("sz")), d.get("posSide")))
    return out


LIQUIDATION_ROWS = {"binanceusdm": _binance_rows, "bybit": _bybit_rows, "okx": _okx_rows}


def liquidation_rows(exchange: str, message: Mapping[str, Any]) -> list[RawLiquidation]:
    """Every liquidation in one websocket frame (Bybit frames carry several rows, OKX several details)."""
    return LIQUIDATION_ROWS[exchange](message)


def price_kind(exchange: str) -> str:
    """What a venue's liquidation feed prints: "fill" (the order's average fill: Binance) or "bankruptcy"
    (where the position's margin is gone: Bybit, OKX)."""
    return "bankruptcy" if REPORTS_BANKRUPTCY_PRICE.get(canonical_exchange(exchange), False) else "fill"


def _day(time_ms: int) -> str:
    return _iso_day(int(time_ms // 86_400_000))


@functools.lru_cache(maxsize=1024)
def _iso_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


@functools.lru_cache(maxsize=4096)
def bankruptcy_factor(exchange: str, coin: str, side: str, day: str) -> float:
    """Estimated liquidation price / bankruptcy price for one venue, coin, side and day (ISO date): the
    estimate is proportional to the printed price, so it is looked up once per day, not per event."""
    return float(liquidation_from_bankruptcy(1.0, side, exchange, coin, day))


def settle_price(exchange: str, symbol: str, side: str, reported: float, time_ms: int) -> tuple[float, str]:
    """(estimated liquidation price, price kind) of an event the venue printed at ``reported``: unchanged
    for fills; one maintenance margin (the venue's tier table in force that day) nearer the entry for
    bankruptcy prices."""
    kind = price_kind(exchange)
    if kind == "fill":
        return reported, kind
    return reported * bankruptcy_factor(exchange, symbol.split("/")[0], side, _day(time_ms)), kind


def with_estimated_price(liq: Liquidation) -> Liquidation:
    """An event whose ``price`` is still what the venue printed (read from a file of raw events, say) ->
    the same event with the venue's price kind settled: ``price`` estimated, ``reported_price`` kept."""
    if liq.reported_price is not None:
        return liq  # already settled
    price, kind = settle_price(liq.exchange, liq.symbol, liq.side, liq.price, liq.time_ms)
    return dataclasses.replace(liq, price=price, reported_price=liq.price, price_kind=kind)


def to_liquidation(exchange: str, raw: RawLiquidation, symbol: str, contract_size: float) -> Liquidation | None:
    """Settle units, side and price kind; None for a row that cannot be trusted (no price, no size, unknown
    side). ``usd`` is base × the reported price: the notional the venue published."""
    if not (raw.price > 0 and raw.size > 0 and contract_size > 0):
        return None
    try:
        side = liquidated_side(exchange, raw.side, raw.position_side)
    except ValueError:
        return None
    base = raw.size * contract_size
    price, kind = settle_price(exchange, symbol, side, raw.price, raw.time_ms)
    return Liquidation(time_ms=raw.time_ms, exchange=exchange, symbol=symbol, side=side, price=price,
                       base=base, usd=base * raw.price, reported_price=raw.price, price_kind=kind)


# ---- candles ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candles:
    """Candle columns in milliseconds, as fetched (not yet Bars): merged, de-duplicated and sorted."""

    time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    taker_buy: np.ndarray | None = None  # base coin; None when the venue does not publish it

    def __len__(self) -> int:
        return len(self.time_ms)


def binance_kline_rows(rows: Sequence[Sequence[Any]]) -> Candles:
    """Binance ``/fapi/v1/klines`` rows: [open time, o, h, l, c, volume, close time, quote volume, trades,
    taker buy base volume, taker buy quote volume, ignore]. Taker buy base is what ccxt's parser drops."""
    if not rows:
        return empty_candles(with_taker=True)
    arr = np.array([[r[0], r[1], r[2], r[3], r[4], r[5], r[9]] for r in rows], dtype=np.float64)
    return Candles(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5],
                   arr[:, 6])


def ohlcv_rows(rows: Sequence[Sequence[Any]]) -> Candles:
    """ccxt's unified [ms, o, h, l, c, volume] rows (volume in base coin for linear swaps)."""
    if not rows:
        return empty_candles(with_taker=False)
    arr = np.array([[np.nan if v is None else v for v in r[:6]] for r in rows], dtype=np.float64)
    return Candles(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5])


def empty_candles(with_taker: bool) -> Candles:
    z = np.zeros(0)
    return Candles(np.zeros(0, np.int64), z, z, z, z, z, z if with_taker else None)


def merge_candles(pages: Iterable[Candles], with_taker: bool) -> Candles:
    """Join pages fetched in any order, drop repeats (a later page wins) and sort by time."""
    pages = [p for p in pages if len(p)]
    if not pages:
        return empty_candles(with_taker)
    t = np.concatenate([p.time_ms for p in pages])
    cols = {name: np.concatenate([getattr(p, name) for p in pages])
            for name in ("open", "high", "low", "close", "volume")}
    if with_taker:
        cols["taker_buy"] = np.concatenate([
            p.taker_buy if p.taker_buy is not None else np.full(len(p), np.nan) for p in pages])
    # keep the last occurrence of each time: reverse, unique (first), map back
    rev_idx = len(t) - 1 - np.unique(t[::-1], return_index=True)[1]
    order = rev_idx[np.argsort(t[rev_idx], kind="stable")]
    return Candles(t[order], **{k: v[order] for k, v in cols.items()})


def window_rows(c: Candles, start_ms: int, end_ms: int) -> Candles:
    """Rows with start <= time < end."""
    keep = (c.time_ms >= start_ms) & (c.time_ms < end_ms)
    return Candles(c.time_ms[keep], c.open[keep], c.high[keep], c.low[keep], c.close[keep], c.volume[keep],
                   None if c.taker_buy is None else c.taker_buy[keep])


def missing_minutes(time_ms: np.ndarray, start_ms: int, end_ms: int, step_ms: int) -> list[tuple[int, int]]:
    """Holes in a sorted bar-time series over [start, end): list of (first missing, end exclusive) in ms."""
    if end_ms <= start_ms:
        return []
    if len(time_ms) == 0:
        return [(start_ms, end_ms)]
    edges = np.concatenate([[start_ms - step_ms], time_ms, [end_ms]])
    jumps = np.flatnonzero(np.diff(edges) > step_ms)
    return [(int(edges[i] + step_ms), int(edges[i + 1])) for i in jumps]


# ---- open interest and funding ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OISnapshot:
    time_ms: int
    usd: float  # NaN when the venue gives no USD value
    base: float  # NaN when unknown


def _oi_binance(oi: Mapping[str, Any], contract_size: float) -> tuple[float, float]:
    return _num(oi.get("openInterestValue")), _num(oi.get("openInterestAmount"))


def _oi_bybit(oi: Mapping[str, Any], contract_size: float) -> tuple[float, float]:
    # linear: openInterest is in base coin and counts both sides; there is no USD value in the history
    return _num(oi.get("openInterestValue")) / 2, _num(oi.get("openInterestAmount")) / 2


def _oi_okx(oi: Mapping[str, Any], contract_size: float) -> tuple[float, float]:
    base = _num(oi.get("baseVolume"))  # oiCcy
    if not np.isfinite(base):
        base = _num(oi.get("openInterestAmount")) * contract_size  # oi is in contracts
    return _num(oi.get("openInterestValue")), base


BYBIT_SINGLE_OI = "tickers singleOpenInterestValue (USD)"
BYBIT_HALVED_OI = "tickers openInterestValue ÷ 2 (USD, both sides)"

OI_UNITS = {"binanceusdm": _oi_binance, "bybit": _oi_bybit, "okx": _oi_okx}


def oi_snapshot(exchange: str, oi: Mapping[str, Any], contract_size: float) -> OISnapshot | None:
    """One ccxt open-interest structure -> (time, USD, base); None if it has neither."""
    usd, base = OI_UNITS[exchange](oi, contract_size)
    t = oi.get("timestamp")
    if t is None or not (np.isfinite(usd) or np.isfinite(base)):
        return None
    return OISnapshot(int(t), usd, base)


@dataclass(frozen=True)
class OISource:
    """Which venue field liqheat's open interest comes from (shown in data health): always one side."""

    history: str  # the 5-minute history behind past bars
    live: str  # the polled value behind live bars

    def to_dict(self) -> dict[str, str]:
        return {"history": self.history, "live": self.live, "counts": "one side"}


OI_SOURCES: dict[str, OISource] = {
    "binanceusdm": OISource(history="openInterestHist sumOpenInterestValue (USD)",
                            live="openInterest (base) × last close"),
    "bybit": OISource(history="open-interest openInterest ÷ 2 (base, both sides) × close",
                      live=BYBIT_SINGLE_OI),
    "okx": OISource(history="open-interest-history oiUsd (USD)", live="open-interest oiUsd (USD)"),
}


def bybit_ticker_oi(info: Mapping[str, Any]) -> tuple[float, str]:
    """One-side OI in USD from a Bybit v5 linear ticker, and which field it came from: the single-side
    value where the ticker has it, else half of ``openInterestValue`` (which counts both sides)."""
    single = _num(info.get("singleOpenInterestValue"))
    if single > 0:
        return single, BYBIT_SINGLE_OI
    return _num(info.get("openInterestValue")) / 2, BYBIT_HALVED_OI


def snapshots_to_bars(snaps: Sequence[OISnapshot], bar_time_ms: np.ndarray, close: np.ndarray,
                      timeframe_ms: int, max_age_ms: int, opens: np.ndarray | None = None) -> np.ndarray:
    """OI in USD at each bar's close: the latest snapshot taken by then, held for at most ``max_age_ms``.

    Snapshots without a USD value (Bybit) are priced at the close of the bar that ended at or before the
    snapshot. Bars before the first snapshot, or after a hole longer than ``max_age_ms``, stay NaN."""
    n = len(bar_time_ms)
    out = np.full(n, np.nan)
    if not snaps or n == 0:
        return out
    snaps = sorted(snaps, key=lambda s: s.time_ms)
    st = np.array([s.time_ms for s in snaps], dtype=np.int64)
    usd = np.array([s.usd for s in snaps], dtype=np.float64)
    base = np.array([s.base for s in snaps], dtype=np.float64)
    close_ms = bar_time_ms + timeframe_ms
    need = ~np.isfinite(usd) & np.isfinite(base)
    if need.any():
        j = np.searchsorted(close_ms, st[need], side="right") - 1
        price = close[np.clip(j, 0, n - 1)]
        # a snapshot taken just before the first bar: that bar's open is the price at the snapshot
        first = (j < 0) & (bar_time_ms[0] - st[need] < timeframe_ms)
        price = np.where(first, opens[0] if opens is not None else np.nan, np.where(j >= 0, price, np.nan))
        usd[need] = base[need] * price
    return hold_last(st, usd, close_ms, max_age_ms)


def hold_last(src_ms: np.ndarray, values: np.ndarray, at_ms: np.ndarray, max_age_ms: int | None) -> np.ndarray:
    """Value of the latest finite sample taken at or before each time in ``at_ms`` (NaN if none, or older
    than ``max_age_ms``). No look-ahead: a sample at 12:05 reaches the bar closing at 12:05, not 12:04."""
    ok = np.isfinite(values)
    src_ms, values = src_ms[ok], values[ok]
    out = np.full(len(at_ms), np.nan)
    if len(src_ms) == 0:
        return out
    i = np.searchsorted(src_ms, at_ms, side="right") - 1
    has = i >= 0
    out[has] = values[i[has]]
    if max_age_ms is not None:
        age = at_ms - np.where(has, src_ms[np.clip(i, 0, None)], 0)
        out[has & (age > max_age_ms)] = np.nan
    return out


def funding_to_bars(funding: Sequence[tuple[int, float]], bar_time_ms: np.ndarray,
                    timeframe_ms: int) -> np.ndarray:
    """The last settled funding rate at each bar's close (the rate in force; NaN before the first)."""
    if not funding:
        return np.full(len(bar_time_ms), np.nan)
    funding = sorted(funding)
    t = np.array([f[0] for f in funding], dtype=np.int64)
    r = np.array([f[1] for f in funding], dtype=np.float64)
    return hold_last(t, r, bar_time_ms + timeframe_ms, None)


def candles_to_bars(c: Candles, timeframe_s: int, *, taker: bool, oi_usd: np.ndarray | None,
                    funding_rate: np.ndarray | None) -> Bars:
    """Candles (ms) -> Bars (s). Taker sell = volume − taker buy (never negative)."""
    buy = sell = None
    if taker:
        buy = np.full(len(c), np.nan) if c.taker_buy is None else c.taker_buy
        sell = np.where(np.isfinite(buy), np.maximum(c.volume - buy, 0.0), np.nan)
    return Bars(timeframe=timeframe_s, time=c.time_ms // 1000, open=c.open, high=c.high, low=c.low,
                close=c.close, volume=c.volume, taker_buy_volume=buy, taker_sell_volume=sell, oi_usd=oi_usd,
                funding_rate=funding_rate)


# ---- the live candle: closed when a newer one starts --------------------------------------------------
@dataclass(frozen=True)
class Closed:
    candle: tuple[float, ...]  # (ms, o, h, l, c, v)


@dataclass(frozen=True)
class Forming:
    candle: tuple[float, ...]


@dataclass(frozen=True)
class Missing:
    start_ms: int  # first bar not seen
    end_ms: int  # exclusive: the bar that arrived


CandleEvent = Closed | Forming | Missing


class CandleCloser:
    """``watch_ohlcv`` hands back the in-progress candle with no "closed" flag: a candle is closed when one
    with a newer timestamp arrives. Also reports skipped bars (``Missing``) so the caller can backfill them
    over REST, and ignores anything at or before the last closed bar (replays after a reconnect)."""

    def __init__(self, timeframe_ms: int, last_closed_ms: int | None = None) -> None:
        self.timeframe_ms = timeframe_ms
        self.last_closed_ms = last_closed_ms
        self.forming: tuple[float, ...] | None = None

    def update(self, candle: Sequence[float]) -> list[CandleEvent]:
        c = tuple(float(v) for v in candle[:6])
        t = int(c[0])
        if self.last_closed_ms is not None and t <= self.last_closed_ms:
            return []
        events: list[CandleEvent] = []
        if self.forming is not None:
            ft = int(self.forming[0])
            if t < ft:
                return []
            if t > ft:
                events.append(Closed(self.forming))
                self.last_closed_ms = ft
                self.forming = None
        if self.forming is None:
            expected = None if self.last_closed_ms is None else self.last_closed_ms + self.timeframe_ms
            if expected is not None and t > expected:
                events.append(Missing(expected, t))
        self.forming = c
        events.append(Forming(c))
        return events

    def mark_closed(self, t_ms: int) -> None:
        """A bar up to ``t_ms`` was delivered another way (REST backfill)."""
        if self.last_closed_ms is None or t_ms > self.last_closed_ms:
            self.last_closed_ms = t_ms
        if self.forming is not None and int(self.forming[0]) <= t_ms:
            self.forming = None

    def reset(self) -> None:
        """After a reconnect the partial candle may have missed updates: forget it, refetch it over REST."""
        self.forming = None
