"""Files in and out: candles and liquidations from CSV (optionally gzipped), Parquet and JSON, and a feed
that replays a recorded file or store as if it were a live market.

Reading is strict: a file the model cannot trust is refused with one line naming the file, the line (CSV)
or row (Parquet/JSON) and what is wrong, never guessed at. Columns are matched by name, case-insensitively;
unknown columns are ignored, so exchange exports with extra fields load as they are.

Bar columns: a time (``timestamp_ms``; or ``timestamp`` as ISO-8601 or epoch seconds/ms; or ``time`` in
UNIX seconds; or ``open_time`` as Binance writes it), ``open, high, low, close``, optional ``volume`` (base
coin), taker volume as ``taker_buy_volume`` and/or ``taker_sell_volume`` (the other side is volume minus
it) or ``net_taker_volume`` (buy minus sell), ``oi_usd`` and ``funding_rate``. Files holding several
markets (``venue``/``exchange`` and ``coin`` columns) are filtered with ``venue=`` and ``coin=``.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import math
import os
import tempfile
import time as wallclock
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.feeds.base import BarUpdate, FeedError, FeedEvent, Health, HealthChange, Liquidation, Market
from engine.model import Bars, BarsError

STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
PARQUET_SUFFIXES = (".parquet", ".pq")

_TIME_COLUMNS = ("timestamp_ms", "timestamp", "time", "open_time")
_VENUE_COLUMNS = ("venue", "exchange")
_COIN_COLUMNS = ("coin", "base", "asset")  # "base" only counts as a coin column when it holds text


class BadFile(FeedError):
    """A file that cannot be read as asked; the message is one line naming the file and the row."""


class SeveralMarkets(BadFile):
    """The file mixes venues/coins and the filters given do not narrow it to one."""


class NoMarketColumn(BadFile):
    """A venue/coin filter was given for a file that has no such column."""


# ---- reading tables ---------------------------------------------------------------------------------
@dataclass
class _Table:
    """Raw columns by lower-cased name (lists of str/None, or numpy arrays), plus where each row came
    from, so messages can say ``line 17`` (CSV) or ``row 17`` (Parquet/JSON)."""

    path: str
    columns: dict[str, Any]
    origin: np.ndarray  # line/row number of each row, for messages
    unit: str  # "line" | "row"
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.origin)

    def where(self, i: int) -> str:
        return f"{self.path} {self.unit} {int(self.origin[i])}"

    def take(self, mask: np.ndarray) -> _Table:
        cols = {
            k: (v[mask] if isinstance(v, np.ndarray) else [x for x, keep in zip(v, mask, strict=True) if keep])
            for k, v in self.columns.items()
        }
        return _Table(self.path, cols, self.origin[mask], self.unit, self.meta)


def _suffixes(path: Path) -> tuple[str, bool]:
    """('.csv', gzipped?) from 'x.csv.gz'."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return (Path(name).suffix or ".csv"), gz


def _read_table(path: str | os.PathLike[str]) -> _Table:
    p = Path(path)
    label = str(path)
    if not p.exists():
        raise BadFile(f"{label}: no such file")
    if p.is_dir():
        raise BadFile(f"{label}: is a folder, not a file")
    suffix, gz = _suffixes(p)
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(p, label)
    if suffix == ".json":
        return _read_json(p, label, gz)
    return _read_csv(p, label, gz)


def _open_text(p: Path, gz: bool) -> Any:
    with open(p, "rb") as head:
        magic = head.read(2)
    if gz or magic == b"\x1f\x8b":
        return gzip.open(p, "rt", encoding="utf-8-sig", newline="")
    return open(p, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the caller's with


def _read_csv(p: Path, label: str, gz: bool) -> _Table:
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with _open_text(p, gz) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise BadFile(f"{label}: not a text CSV file (undecodable bytes)") from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise BadFile(f"{label}: cannot read ({' '.join(str(exc).split())})") from None
    except csv.Error as exc:
        raise BadFile(f"{label}: not a valid CSV ({exc})") from None
    if header is None:
        raise BadFile(f"{label}: empty file (expected a header row and bars)")
    if any("\x00" in h for h in header):
        raise BadFile(f"{label}: not a CSV file (binary content)")
    names = [h.strip().lower() for h in header]
    width = len(names)
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            raise BadFile(f"{label} line {line}: {len(row)} fields, the header has {width}")
    cols: dict[str, Any] = {}
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    for name, values in zip(names, transposed, strict=True):
        if name and name not in cols:
            cols[name] = list(values)
    return _Table(label, cols, np.asarray(lines, dtype=np.int64), "line", {})


def _require_pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise BadFile("Parquet needs pyarrow: pip install pyarrow (or pip install 'liqheat[parquet]')") from None
    return pq


def _read_parquet(p: Path, label: str) -> _Table:
    pq = _require_pyarrow()
    import pyarrow as pa

    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise BadFile(f"{label}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        key = name.strip().lower()
        if pa.types.is_timestamp(col.type):
            # a real timestamp column: epoch milliseconds whatever its unit
            col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
            cols[key] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
            if key == "timestamp":
                cols["timestamp_ms"] = cols.pop(key)
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            cols[key] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        else:
            cols[key] = [None if v is None else str(v) for v in col.to_pylist()]
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k.startswith(b"liqheat")}
    return _Table(label, cols, np.arange(1, table.num_rows + 1, dtype=np.int64), "row", meta)


def _read_json(p: Path, label: str, gz: bool) -> _Table:
    try:
        with _open_text(p, gz) as f:
            doc = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFile(f"{label}: not valid JSON ({' '.join(str(exc).split())})") from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise BadFile(f"{label}: cannot read ({' '.join(str(exc).split())})") from None
    meta: dict[str, Any] = {}
    if isinstance(doc, dict):
        # liqheat's own layout {"timeframe": 60, "columns": {...}} or a plain {column: [values]}
        if "timeframe" in doc:
            meta["liqheat.timeframe"] = str(doc["timeframe"])
        body = doc.get("columns", doc)
        cols = {str(k).strip().lower(): v for k, v in body.items() if isinstance(v, list)}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise BadFile(f"{label}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
    elif isinstance(doc, list):
        # a list of row objects
        n = len(doc)
        cols = {}
        for i, rec in enumerate(doc):
            if not isinstance(rec, dict):
                raise BadFile(f"{label} row {i + 1}: expected an object with named fields")
            for k, v in rec.items():
                cols.setdefault(str(k).strip().lower(), [None] * n)[i] = v
    else:
        raise BadFile(f"{label}: expected a list of rows or an object of columns")
    cols = {k: [None if v is None else v for v in vals] for k, vals in cols.items()}
    return _Table(label, cols, np.arange(1, n + 1, dtype=np.int64), "row", meta)


# ---- column conversion --------------------------------------------------------------------------------
def _numbers(t: _Table, name: str) -> np.ndarray:
    """A column as float64; empty cells and nulls become NaN; anything else unparsable is an error."""
    raw = t.columns[name]
    if isinstance(raw, np.ndarray):
        return raw.astype(np.float64, copy=False)
    try:
        return np.array(raw, dtype=np.float64)
    except (ValueError, TypeError):
        pass
    out = np.empty(len(raw))
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, str) and not v.strip()):
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (ValueError, TypeError):
            raise BadFile(f"{t.where(i)}: {name} is not a number ({str(v)[:40]!r})") from None
    return out


def _first_present(t: _Table, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in t.columns), None)


def _epoch_scale(values: np.ndarray) -> float:
    """Milliseconds per unit of a numeric epoch column, judged by magnitude (s, ms or µs)."""
    finite = np.abs(values[np.isfinite(values)])
    typical = float(np.median(finite)) if len(finite) else 0.0
    if typical > 1e14:
        return 1e-3  # microseconds
    if typical > 1e11:
        return 1.0  # milliseconds
    return 1000.0  # seconds


def _times_ms(t: _Table) -> np.ndarray:
    """Epoch milliseconds of every row, from whichever time column the file has."""
    name = _first_present(t, _TIME_COLUMNS)
    if name is None:
        raise BadFile(f"{t.path}: no time column (expected one of {', '.join(_TIME_COLUMNS)})")
    raw = t.columns[name]
    if name == "timestamp_ms":
        ms = _numbers(t, name)
    elif name == "time":
        ms = _numbers(t, name) * 1000.0
    elif name == "open_time" or isinstance(raw, np.ndarray) or _looks_numeric(raw):
        ms = _numbers(t, name)
        ms = ms * _epoch_scale(ms)
    else:
        ms = np.empty(len(raw))
        for i, v in enumerate(raw):
            ms[i] = _iso_ms(t, i, name, v)
    bad = ~np.isfinite(ms)
    if bad.any():
        raise BadFile(f"{t.where(int(np.flatnonzero(bad)[0]))}: {name} is empty")
    return np.floor(ms).astype(np.int64)


def _is_numeric_column(raw: Any) -> bool:
    return isinstance(raw, np.ndarray) or _looks_numeric(raw)


def _looks_numeric(raw: Sequence[Any]) -> bool:
    for v in raw:
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        try:
            float(v)
            return True
        except (TypeError, ValueError):
            return False
    return False


def _iso_ms(t: _Table, i: int, name: str, v: Any) -> float:
    if v is None or not str(v).strip():
        return math.nan
    try:
        dt = datetime.fromisoformat(str(v).strip())
    except ValueError:
        raise BadFile(f"{t.where(i)}: {name} {str(v)[:40]!r} is not an ISO-8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # exchanges publish UTC; a naive time means UTC
    return dt.timestamp() * 1000.0


def venue_of(exchange: str) -> str:
    """A ccxt exchange id -> the venue name data files use (binanceusdm -> binance)."""
    for venue in ("binance", "bybit", "okx", "bitget", "deribit", "hyperliquid", "kraken"):
        if exchange.lower().startswith(venue):
            return venue
    return exchange.lower()


def _market_hint(market: str | None) -> dict[str, str]:
    if not market or ":" not in market:
        return {}
    exchange, _, symbol = market.partition(":")
    return {"venue": venue_of(exchange), "coin": symbol.split("/")[0].split(":")[0].lower()}


def _market_columns(t: _Table) -> tuple[str | None, str | None]:
    """The columns naming a row's venue and coin, if the file has them."""
    venue_col = _first_present(t, _VENUE_COLUMNS)
    coin_col = next((c for c in _COIN_COLUMNS if c in t.columns and not _is_numeric_column(t.columns[c])), None)
    return venue_col, coin_col


def _markets_in(t: _Table, venue: str | None, coin: str | None) -> list[tuple[str | None, str | None]]:
    """Every (venue, coin) the file holds that matches the filters given, in order of appearance."""
    venue_col, coin_col = _market_columns(t)
    n = len(t)
    venues = [str(v).strip() for v in t.columns[venue_col]] if venue_col else [None] * n
    coins = [str(v).strip() for v in t.columns[coin_col]] if coin_col else [None] * n
    out = []
    for v, c in dict.fromkeys(zip(venues, coins, strict=True)):
        if venue is not None and (v or "").lower() != venue.strip().lower():
            continue
        if coin is not None and (c or "").lower() != coin.strip().lower():
            continue
        out.append((v, c))
    return out


def _filter_market(
    t: _Table, venue: str | None, coin: str | None, market: str | None = None
) -> tuple[_Table, str | None, str | None]:
    """Keep one venue/coin of a multi-market file; refuse to mix markets silently. ``market``
    (EXCHANGE:SYMBOL) picks its own rows when the file holds several and venue/coin do not say."""
    venue_col, coin_col = _market_columns(t)
    if venue is not None and venue_col is None:
        raise NoMarketColumn(f"{t.path}: venue={venue!r} given but the file has no venue/exchange column")
    if coin is not None and coin_col is None:
        raise NoMarketColumn(f"{t.path}: coin={coin!r} given but the file has no coin column")
    cols = {k: c for k, c in (("venue", venue_col), ("coin", coin_col)) if c}
    if not cols:
        return t, None, None
    shown = {k: np.array([str(v).strip() for v in t.columns[c]], dtype=object) for k, c in cols.items()}
    lowered = {k: np.array([v.lower() for v in arr], dtype=object) for k, arr in shown.items()}

    def select(filters: dict[str, str]) -> np.ndarray:
        mask = np.ones(len(t), bool)
        for k, v in filters.items():
            mask &= lowered[k] == v.strip().lower()
        return mask

    def held(mask: np.ndarray) -> list[tuple[str, ...]]:
        return sorted(set(zip(*(shown[k][mask] for k in cols), strict=True)))

    filters = {k: v for k, v in (("venue", venue), ("coin", coin)) if v is not None and k in cols}
    mask = select(filters)
    combos = held(mask)
    hint = _market_hint(market)
    if len(combos) > 1 and hint:
        filters.update({k: hint[k] for k in cols if k not in filters})
        mask = select(filters)
        combos = held(mask)
    if len(combos) > 1:
        listed = ", ".join(" ".join(x for x in c if x) for c in combos[:8])
        more = "" if len(combos) <= 8 else f" and {len(combos) - 8} more"
        which = "/".join(k for k in cols if k not in filters)
        raise SeveralMarkets(
            f"{t.path}: holds several markets ({listed}{more}); pick one by {which} "
            f"(--{which.replace('/', '/--')} on the command line)"
        )
    if not combos and len(t):
        everything = ", ".join(" ".join(c) for c in held(np.ones(len(t), bool))[:12])
        raise BadFile(f"{t.path}: no rows for {' '.join(filters.values())} (it holds {everything})")
    found = dict(zip(cols, combos[0], strict=True)) if combos else {}
    return t.take(mask), found.get("venue"), found.get("coin")


# ---- bars ---------------------------------------------------------------------------------------------
def read_bars_file(
    path: str | os.PathLike[str],
    *,
    venue: str | None = None,
    coin: str | None = None,
    timeframe: int | None = None,
    market: str | None = None,
) -> Bars:
    """Candles from a CSV (.csv, .csv.gz), Parquet or JSON file. The timeframe is the median spacing of
    the rows unless given. In a file of several markets, ``venue``/``coin`` pick one (or, failing those,
    the rows of ``market``, EXCHANGE:SYMBOL). Raises BadFile with one line naming the row on anything
    untrustworthy."""
    table, _, _ = _filter_market(_read_table(path), venue, coin, market)
    return _bars_from_table(table, timeframe)


def _bars_from_table(t: _Table, timeframe: int | None) -> Bars:
    missing = [c for c in ("open", "high", "low", "close") if c not in t.columns]
    if _first_present(t, _TIME_COLUMNS) is None:
        missing.insert(0, "timestamp_ms (or timestamp/time)")
    if missing:
        raise BadFile(f"{t.path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if len(t) == 0:
        raise BadFile(f"{t.path}: no bars (only a header)")
    ms = _times_ms(t)
    secs = ms // 1000
    step = np.diff(secs)
    if (step <= 0).any():
        i = int(np.flatnonzero(step <= 0)[0]) + 1
        what = "duplicate" if step[i - 1] == 0 else "out-of-order"
        raise BadFile(f"{t.where(i)}: {what} timestamp {_iso(int(secs[i]))} (after {_iso(int(secs[i - 1]))})")
    cols: dict[str, np.ndarray | None] = {}
    for name in ("open", "high", "low", "close"):
        arr = _numbers(t, name)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise BadFile(f"{t.where(int(np.flatnonzero(bad)[0]))}: {name} is empty or NaN")
        if (arr <= 0).any():
            i = int(np.flatnonzero(arr <= 0)[0])
            raise BadFile(f"{t.where(i)}: {name} must be positive (got {arr[i]:g})")
        cols[name] = arr
    assert cols["open"] is not None and cols["close"] is not None and cols["high"] is not None
    assert cols["low"] is not None
    body_hi = np.maximum(cols["open"], cols["close"])
    body_lo = np.minimum(cols["open"], cols["close"])
    bad = (cols["high"] < body_hi * (1 - 1e-9)) | (cols["low"] > body_lo * (1 + 1e-9))
    if bad.any():
        raise BadFile(f"{t.where(int(np.flatnonzero(bad)[0]))}: high/low do not contain open/close")
    volume = _numbers(t, "volume") if "volume" in t.columns else None
    buy = _numbers(t, "taker_buy_volume") if "taker_buy_volume" in t.columns else None
    sell = _numbers(t, "taker_sell_volume") if "taker_sell_volume" in t.columns else None
    if buy is None and sell is None and "net_taker_volume" in t.columns:
        if volume is None:
            raise BadFile(f"{t.path}: net_taker_volume needs a volume column to split into buy and sell")
        net = _numbers(t, "net_taker_volume")
        over = np.abs(net) > volume * (1 + 1e-9) + 1e-12
        if over.any():
            raise BadFile(f"{t.where(int(np.flatnonzero(over)[0]))}: |net_taker_volume| exceeds volume")
        buy, sell = (volume + net) / 2, (volume - net) / 2
    elif (buy is None) != (sell is None) and volume is not None:
        # one side given (Binance klines carry taker buy volume): the other is the rest of the volume
        known = buy if buy is not None else sell
        assert known is not None
        over = known > volume * (1 + 1e-9) + 1e-12
        if over.any():
            side = "taker_buy_volume" if buy is not None else "taker_sell_volume"
            raise BadFile(f"{t.where(int(np.flatnonzero(over)[0]))}: {side} exceeds volume")
        other = np.maximum(volume - known, 0.0)
        buy, sell = (known, other) if buy is not None else (other, known)
    elif (buy is None) != (sell is None):
        raise BadFile(f"{t.path}: one taker volume column without a volume column; give both sides")
    for name, vol in (("volume", volume), ("taker_buy_volume", buy), ("taker_sell_volume", sell)):
        if vol is not None and (vol < 0).any():
            raise BadFile(f"{t.where(int(np.flatnonzero(vol < 0)[0]))}: {name} is negative")
        cols[name] = vol
    for name in ("oi_usd", "funding_rate"):
        cols[name] = _numbers(t, name) if name in t.columns else None
    oi = cols["oi_usd"]
    if oi is not None and (oi < 0).any():
        raise BadFile(f"{t.where(int(np.flatnonzero(oi < 0)[0]))}: oi_usd is negative")
    tf = timeframe or _meta_timeframe(t) or _infer_timeframe(t, secs)
    try:
        return Bars.from_columns(tf, time=secs, **cols)  # type: ignore[arg-type]
    except BarsError as exc:
        raise BadFile(f"{t.path}: {exc}") from None


def _meta_timeframe(t: _Table) -> int | None:
    v = t.meta.get("liqheat.timeframe")
    try:
        return int(v) if v else None
    except ValueError:
        return None


def _infer_timeframe(t: _Table, secs: np.ndarray) -> int:
    if len(secs) < 2:
        raise BadFile(f"{t.path}: one bar is not enough to infer the timeframe; pass it (timeframe=60)")
    return int(np.median(np.diff(secs)))


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---- writing ------------------------------------------------------------------------------------------
_BAR_OPTIONAL = ("volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate")


def _bar_columns(bars: Bars) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {"timestamp_ms": bars.time * 1000}
    for name in ("open", "high", "low", "close") + _BAR_OPTIONAL:
        arr = getattr(bars, name)
        if arr is not None:
            cols[name] = arr
    return cols


def write_bars_file(path: str | os.PathLike[str], bars: Bars) -> Path:
    """Write bars as CSV (.csv/.csv.gz), Parquet (.parquet) or JSON (.json) by the file's extension.
    Written to a temporary file and renamed, so a reader never sees half a file. NaN becomes an empty
    cell (CSV) or null (Parquet/JSON); floats are written in full precision (round trips are exact)."""
    p = Path(path)
    suffix, gz = _suffixes(p)
    if suffix not in (".csv", ".json") + PARQUET_SUFFIXES:
        raise BadFile(f"{path}: unknown format {suffix!r}; use .csv, .csv.gz, .parquet or .json")
    if suffix in PARQUET_SUFFIXES:
        _require_pyarrow()
    cols = _bar_columns(bars)

    def write(tmp: Path) -> None:
        if suffix in PARQUET_SUFFIXES:
            _write_parquet(tmp, cols, bars.timeframe)
        elif suffix == ".json":
            doc = {"timeframe": bars.timeframe, "columns": {k: _json_list(v) for k, v in cols.items()}}
            with _open_out(tmp, gz) as f:
                json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        else:
            with _open_out(tmp, gz) as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(cols)
                text = [_csv_cells(k, v) for k, v in cols.items()]
                w.writerows(zip(*text, strict=True))

    _atomic_write(p, write)
    return p


def _csv_cells(name: str, arr: np.ndarray) -> list[str]:
    if name == "timestamp_ms":
        return [str(int(v)) for v in arr.tolist()]
    # repr is the shortest text that reads back to the same float
    return ["" if v != v else repr(v) for v in arr.tolist()]


def _json_list(arr: np.ndarray) -> list[Any]:
    if arr.dtype.kind == "i":
        return [int(v) for v in arr.tolist()]
    return [None if v != v else v for v in arr.tolist()]


def _open_out(p: Path, gz: bool) -> Any:
    if gz:
        return gzip.open(p, "wt", encoding="utf-8", newline="")
    return open(p, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller's with


def _write_parquet(p: Path, cols: dict[str, np.ndarray], timeframe: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(v, from_pandas=True) for k, v in cols.items()})
    table = table.replace_schema_metadata({"liqheat.timeframe": str(timeframe)})
    pq.write_table(table, p)


def _atomic_write(p: Path, write: Callable[[Path], None]) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise BadFile(f"{p}: cannot write ({' '.join(str(exc).split())})") from None
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, p)
    except OSError as exc:
        raise BadFile(f"{p}: cannot write ({' '.join(str(exc).split())})") from None
    finally:
        tmp.unlink(missing_ok=True)


# ---- liquidations -------------------------------------------------------------------------------------
def read_liquidations_file(
    path: str | os.PathLike[str],
    *,
    exchange: str = "file",
    symbol: str | None = None,
    coin: str | None = None,
    venue: str | None = None,
    market: str | None = None,
) -> list[Liquidation]:
    """Liquidation events, oldest first. Columns: a time (as for bars), ``side`` or ``liquidated_side``
    (``long``/``short`` = the position force-closed), ``price`` or ``bankruptcy_price``, and the size as
    ``notional_usd`` and/or ``base`` (base coin); with only ``contracts``, base = notional / price.
    A ``coin`` column (several coins in one file, like OKX's dump) is filtered with ``coin=``; the symbol
    defaults to ``COIN/USDT:USDT``."""
    table, _, found_coin = _filter_market(_read_table(path), venue, coin, market)
    t = table
    if _first_present(t, _TIME_COLUMNS) is None:
        raise BadFile(f"{t.path}: no time column (expected one of {', '.join(_TIME_COLUMNS)})")
    side_col = _first_present(t, ("side", "liquidated_side"))
    price_col = _first_present(t, ("price", "bankruptcy_price"))
    usd_col = _first_present(t, ("notional_usd", "usd", "quote"))
    base_col = next((c for c in ("base", "base_volume", "amount") if c in t.columns and _looks_numeric(t.columns[c])), None)
    missing = [n for n, c in (("side", side_col), ("price", price_col)) if c is None]
    if usd_col is None and base_col is None:
        missing.append("notional_usd (or base)")
    if missing:
        raise BadFile(f"{t.path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    assert side_col is not None and price_col is not None
    if len(t) == 0:
        return []
    ms = _times_ms(t)
    price = _numbers(t, price_col)
    usd = _numbers(t, usd_col) if usd_col else None
    base = _numbers(t, base_col) if base_col else None
    if base is None:
        assert usd is not None
        base = usd / price
    if usd is None:
        usd = base * price
    sides = []
    for i, v in enumerate(t.columns[side_col]):
        s = str(v).strip().lower() if v is not None else ""
        if s not in ("long", "short"):
            raise BadFile(
                f"{t.where(i)}: {side_col} must be long or short (the position liquidated), got {str(v)[:20]!r}"
            )
        sides.append(s)
    for name, arr in ((price_col, price), ("size", base), ("notional", usd)):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise BadFile(f"{t.where(int(np.flatnonzero(bad)[0]))}: {name} must be a positive number")
    sym = symbol or (f"{found_coin.upper()}/USDT:USDT" if found_coin else Path(str(path)).name.split(".")[0])
    order = np.argsort(ms, kind="stable")
    ms_l, side_l, p_l, b_l, u_l = ms.tolist(), sides, price.tolist(), base.tolist(), usd.tolist()
    return [Liquidation(ms_l[i], exchange, sym, side_l[i], p_l[i], b_l[i], u_l[i]) for i in order.tolist()]


def read_funding_file(
    path: str | os.PathLike[str], *, venue: str | None = None, coin: str | None = None, market: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Funding settlements: (UNIX seconds, rate as a fraction per interval), oldest first. Columns: a time
    (as for bars) and ``funding_rate`` (or ``rate``); venue/coin columns are filtered as for bars."""
    t, _, _ = _filter_market(_read_table(path), venue, coin, market)
    rate_col = _first_present(t, ("funding_rate", "rate", "fundingrate"))
    if rate_col is None or _first_present(t, _TIME_COLUMNS) is None:
        raise BadFile(f"{t.path}: expected a time column (timestamp_ms, timestamp or time) and funding_rate")
    if len(t) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    secs = _times_ms(t) // 1000
    rate = _numbers(t, rate_col)
    bad = ~np.isfinite(rate)
    if bad.any():
        raise BadFile(f"{t.where(int(np.flatnonzero(bad)[0]))}: {rate_col} is empty or NaN")
    if (np.abs(rate) > 0.5).any():
        # a rate of 50% per interval is a file in percent or basis points, not fractions
        raise BadFile(f"{t.where(int(np.flatnonzero(np.abs(rate) > 0.5)[0]))}: {rate_col} must be a fraction (0.0001 = 0.01%)")
    order = np.argsort(secs, kind="stable")
    secs, rate = secs[order], rate[order]
    dup = np.flatnonzero(np.diff(secs) == 0)
    if len(dup):
        raise BadFile(f"{t.where(int(order[dup[0] + 1]))}: duplicate funding time {_iso(int(secs[dup[0]]))}")
    return secs, rate


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
        self._store: Any = None
        self.timeframe = 60
        if not self.path.exists():
            raise FeedError(f"{self.path}: no such file to replay")
        self._is_store = self.path.suffix.lower() in STORE_SUFFIXES

    @classmethod
    def from_spec(cls, spec: str, speed: float = 60.0, start: int | None = None) -> FileFeed:
        return cls(file_feed_path(spec), speed=speed, start=start)

    # -- loading
    def _load(self) -> list[Market]:
        if self._markets is not None:
            return self._markets
        if self._is_store:
            from engine.store import Store, StoreError

            try:
                self._store = Store(self.path, create=False)
                stored = [m for m in self._store.markets() if m.bars]
            except StoreError as exc:
                raise FeedError(str(exc)) from None
            if not stored:
                raise FeedError(f"{self.path}: the store holds no bars to replay")
            symbols = [m.symbol for m in stored]
            for m in stored:
                sym = m.symbol if symbols.count(m.symbol) == 1 else m.key
                self._source[sym] = m.key
            self._markets = [_market(sym) for sym in self._source]
            self.timeframe = min(m.timeframe or 60 for m in stored)
        else:
            table = _read_table(self.path)
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
                    self._liqs[sym] = [
                        Liquidation(e.time_ms, self.exchange, sym, e.side, e.price, e.base, e.usd)
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
            from engine.store import StoreError

            try:
                self._bars[symbol] = self._store.read_bars(key)
                self._liqs[symbol] = [
                    Liquidation(e.time_ms, self.exchange, symbol, e.side, e.price, e.base, e.usd)
                    for e in self._store.read_liquidations(key)
                ]
            except StoreError as exc:
                raise FeedError(str(exc)) from None
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
        if self._store is not None:
            self._store.close()
            self._store = None


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
