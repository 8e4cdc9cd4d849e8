"""Bars: the one shape every feed hands the engine (a struct of numpy arrays, validated once).

Times are UNIX seconds of the bar's *open*; a bar covers [time, time + timeframe).
Optional columns are ``None`` when the source does not have them; the model says which
fallback it used instead of guessing silently.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

# Timeframe names a trader types, in seconds.
TIMEFRAMES: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14_400,
    "1d": 86_400,
    "1w": 604_800,
}

# 1970-01-01 was a Thursday; exchanges start their weeks on Monday 00:00 UTC, 4 days later (day 4).
WEEK_OFFSET = 4 * 86_400


class BarsError(ValueError):
    """Bars that cannot be used; the message is one line a user can act on."""


def timeframe_seconds(tf: str | int) -> int:
    """'15m' -> 900. Integers pass through (must be positive)."""
    if isinstance(tf, (int, np.integer)):
        if tf <= 0:
            raise BarsError(f"timeframe must be positive, got {tf}")
        return int(tf)
    try:
        return TIMEFRAMES[tf]
    except KeyError:
        raise BarsError(f"unknown timeframe {tf!r}; use one of {', '.join(TIMEFRAMES)}") from None


def bucket_start(t: Any, timeframe: str | int) -> Any:
    """Open time of the candle of ``timeframe`` that contains UNIX time ``t`` (an int or an array).
    Buckets align to UTC; weeks start on Monday 00:00 UTC like the exchanges' weekly candles. The one
    place this is decided: candles, heatmap columns, realised bars and the faces all use it."""
    tf = timeframe_seconds(timeframe)
    offset = WEEK_OFFSET if tf % TIMEFRAMES["1w"] == 0 else 0
    if isinstance(t, np.ndarray):
        return (t.astype(np.int64) - offset) // tf * tf + offset
    return (int(t) - offset) // tf * tf + offset


def timeframe_name(seconds: int) -> str:
    for name, sec in TIMEFRAMES.items():
        if sec == seconds:
            return name
    return f"{seconds}s"


_PRICE = ("open", "high", "low", "close")
_OPTIONAL = ("volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate")


@dataclass(frozen=True, eq=False)
class Bars:
    """Candles plus what the model can use. Volumes are in base coin; ``oi_usd`` is open interest in USD
    at the bar's close; ``funding_rate`` is the rate in force (fraction per funding interval)."""

    timeframe: int
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray | None = None
    taker_buy_volume: np.ndarray | None = None
    taker_sell_volume: np.ndarray | None = None
    oi_usd: np.ndarray | None = None
    funding_rate: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", np.ascontiguousarray(self.time, dtype=np.int64))
        n = len(self.time)
        for name in _PRICE + _OPTIONAL:
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = np.ascontiguousarray(arr, dtype=np.float64)
            if arr.shape != (n,):
                raise BarsError(f"column {name} has {arr.shape[0] if arr.ndim else 0} values for {n} bars")
            object.__setattr__(self, name, arr)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_columns(cls, timeframe: int | str, validate: bool = True, **cols: np.ndarray | None) -> Bars:
        bars = cls(timeframe=timeframe_seconds(timeframe), **cols)  # type: ignore[arg-type]
        if validate:
            bars.validate()
        return bars

    def validate(self) -> Bars:
        """Raise BarsError (one line) on anything the model cannot trust."""
        n = len(self)
        if n == 0:
            raise BarsError("no bars: the input is empty")
        t = self.time
        if np.any(np.diff(t) <= 0):
            i = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
            what = "duplicate" if t[i] == t[i - 1] else "unsorted"
            raise BarsError(f"{what} timestamps at row {i} (time {int(t[i])})")
        for name in _PRICE:
            arr = getattr(self, name)
            bad = ~np.isfinite(arr)
            if bad.any():
                raise BarsError(f"{name} is missing or NaN at row {int(np.flatnonzero(bad)[0])}")
            if np.any(arr <= 0):
                raise BarsError(f"{name} must be positive; row {int(np.flatnonzero(arr <= 0)[0])} is not")
        body_hi = np.maximum(self.open, self.close)
        body_lo = np.minimum(self.open, self.close)
        # Exchanges round prices; allow a hair of slack before calling a candle impossible.
        tol = 1e-9 * body_hi
        bad = (self.high < body_hi - tol) | (self.low > body_lo + tol)
        if bad.any():
            raise BarsError(f"high/low do not contain open/close at row {int(np.flatnonzero(bad)[0])}")
        for name in _OPTIONAL:
            arr = getattr(self, name)
            if arr is None:
                continue
            finite = arr[np.isfinite(arr)]
            if name != "funding_rate" and np.any(finite < 0):
                raise BarsError(f"{name} must not be negative")
        return self

    # ---- access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.time)

    @property
    def close_time(self) -> np.ndarray:
        """When each bar closed (exclusive end), UNIX seconds."""
        return self.time + self.timeframe

    @property
    def has_oi(self) -> bool:
        return self.oi_usd is not None and bool(np.isfinite(self.oi_usd).any())

    @property
    def has_taker(self) -> bool:
        return self.taker_buy_volume is not None and self.taker_sell_volume is not None

    def slice(self, start: int | None = None, stop: int | None = None) -> Bars:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("time",) + _PRICE + _OPTIONAL:
            if kw[name] is not None:
                kw[name] = kw[name][start:stop]
        return Bars(**kw)

    def upto(self, t: int) -> Bars:
        """Bars that had closed by time ``t`` (no look-ahead)."""
        return self.slice(0, int(np.searchsorted(self.close_time, t, side="right")))

    def concat(self, other: Bars) -> Bars:
        if other.timeframe != self.timeframe:
            raise BarsError("cannot join bars of different timeframes")
        kw: dict[str, object] = {"timeframe": self.timeframe}
        for name in ("time",) + _PRICE + _OPTIONAL:
            a, b = getattr(self, name), getattr(other, name)
            if a is None and b is None:
                kw[name] = None
                continue
            a = np.full(len(self), np.nan) if a is None else a
            b = np.full(len(other), np.nan) if b is None else b
            kw[name] = np.concatenate([a, b])
        return Bars(**kw)  # type: ignore[arg-type]

    def with_columns(self, **cols: np.ndarray | None) -> Bars:
        return replace(self, **cols)  # type: ignore[arg-type]

    # ---- resampling ---------------------------------------------------------------------------------
    def resample(self, timeframe: int | str) -> Bars:
        """Aggregate to a coarser timeframe (a whole multiple). Buckets align to UTC (weeks to Monday).
        OI and funding take the last known value in the bucket; volumes add up."""
        tf = timeframe_seconds(timeframe)
        if tf == self.timeframe:
            return self
        if tf < self.timeframe or tf % self.timeframe:
            raise BarsError(
                f"cannot resample {timeframe_name(self.timeframe)} bars to {timeframe_name(tf)}: "
                "the target must be a whole multiple"
            )
        if len(self) == 0:
            return replace(self, timeframe=tf)
        bucket = bucket_start(self.time, tf)
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], len(self)] - 1
        kw: dict[str, object] = {
            "timeframe": tf,
            "time": bucket[starts],
            "open": self.open[starts],
            "high": np.maximum.reduceat(self.high, starts),
            "low": np.minimum.reduceat(self.low, starts),
            "close": self.close[ends],
        }
        for name in ("volume", "taker_buy_volume", "taker_sell_volume"):
            arr = getattr(self, name)
            kw[name] = None if arr is None else np.add.reduceat(np.nan_to_num(arr), starts)
        for name in ("oi_usd", "funding_rate"):
            arr = getattr(self, name)
            kw[name] = None if arr is None else _last_finite_per_bucket(arr, starts, ends)
        return Bars(**kw)  # type: ignore[arg-type]


def _last_finite_per_bucket(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Last non-NaN value inside each bucket (NaN if the bucket has none)."""
    idx = np.where(np.isfinite(arr), np.arange(len(arr)), -1)
    last = np.maximum.accumulate(idx)[ends]
    out = np.full(len(starts), np.nan)
    ok = last >= starts
    out[ok] = arr[last[ok]]
    return out


def typical_price(bars: Bars) -> np.ndarray:
    return (bars.high + bars.low + bars.close) / 3.0


class BarHistory:
    """A growing history of closed bars, appended one at a time without copying what came before.

    The columns live in buffers with room to spare; :attr:`bars` is a zero-copy view of the filled
    part. Appending writes one row (amortised O(1)); ``Bars.concat`` would copy the whole history on
    every close, which for a year of 1-minute bars is ~46 MB per bar. ``keep`` bounds the history:
    once it holds more than ``keep * 1.1`` bars the oldest are dropped (the view moves forward), and
    when the buffer's end is reached the kept bars move back to its start — one copy per ``keep / 10``
    appends or more. A column the history did not have arrives as NaN for the earlier bars."""

    def __init__(self, bars: Bars, keep: int | None = None, spare: float = 0.25) -> None:
        self.timeframe = bars.timeframe
        self.keep = keep
        n = len(bars)
        cap = max(int(n * (1 + spare)), n + 1024)
        if keep:
            cap = max(cap, int(keep * 1.1) + max(keep // 10, 1024))
        self._cols: dict[str, np.ndarray] = {}
        for name in ("time",) + _PRICE + _OPTIONAL:
            arr = getattr(bars, name)
            if arr is None:
                continue
            buf = np.empty(cap, dtype=arr.dtype)
            buf[:n] = arr
            self._cols[name] = buf
        self._start, self._end = 0, n
        self._view: Bars | None = bars

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def bars(self) -> Bars:
        """The history now, as Bars whose arrays view the buffers (valid until the next append)."""
        if self._view is None:
            sl = slice(self._start, self._end)
            self._view = Bars(self.timeframe, **{k: v[sl] for k, v in self._cols.items()})  # type: ignore[arg-type]
        return self._view

    def append(self, bar: Bars) -> None:
        """Add closed bars (normally one) after the last."""
        if bar.timeframe != self.timeframe:
            raise BarsError("cannot join bars of different timeframes")
        m = len(bar)
        cap = len(self._cols["time"])
        if self._end + m > cap:
            self._make_room(m)
        for name in ("time",) + _PRICE + _OPTIONAL:
            arr = getattr(bar, name)
            buf = self._cols.get(name)
            if buf is None:
                if arr is None:
                    continue
                buf = self._cols[name] = np.full(len(self._cols["time"]), np.nan)  # a column new to the history
            buf[self._end : self._end + m] = np.nan if arr is None else arr
        self._end += m
        if self.keep and len(self) > self.keep * 1.1:
            self._start = self._end - self.keep
        self._view = None

    def _make_room(self, m: int) -> None:
        n = len(self)
        cap = len(self._cols["time"])
        if n + m > cap * 0.75 or not self.keep:  # too full to slide back: a larger buffer
            cap = max(2 * cap, n + m + 1024)
        for name, buf in self._cols.items():
            new = np.empty(cap, dtype=buf.dtype)
            new[:n] = buf[self._start : self._end]
            self._cols[name] = new
        self._start, self._end = 0, n
