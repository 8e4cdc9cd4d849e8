"""File formats: candles, liquidations and funding from CSV (optionally gzipped), Parquet and JSON, and
bars and export tables written back in the same formats. Parsing is pyarrow's (C++, multi-threaded);
what follows it is validation, vectorised over whole columns.

Reading is strict: a file the model cannot trust is refused with one line naming the file, the line (CSV)
or row (Parquet/JSON) and what is wrong, never guessed at. Columns are matched by name, case-insensitively;
unknown columns are ignored, so exchange exports with extra fields load as they are.

Bar columns: a time (``timestamp_ms``; or ``timestamp`` as ISO-8601 or epoch seconds/ms; or ``time`` in
UNIX seconds; or ``open_time`` as Binance writes it), ``open, high, low, close``, optional ``volume`` (base
coin), taker volume as ``taker_buy_volume`` and/or ``taker_sell_volume`` (the other side is volume minus
it) or ``net_taker_volume`` (buy minus sell; without a volume column it is kept as net flow and tilts the
sides by its size relative to its recent absolute size), ``oi_usd`` and ``funding_rate``. Files holding
several markets (``venue``/``exchange`` and ``coin`` columns) are filtered with ``venue=`` and ``coin=``.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from engine.feeds.base import FeedError, Liquidation
from engine.model import Bars, BarsError

# pyarrow.parquet and pyarrow.compute are imported where they are used: together they add about a tenth
# of a second to the start of a command that only reads a CSV.
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
    """Raw columns by lower-cased name (float64 arrays, or object arrays of str/None), plus which data row
    of the file each row is, so messages can say ``line 17`` (CSV) or ``row 17`` (Parquet/JSON)."""

    path: str
    columns: dict[str, Any]
    rows: np.ndarray  # data row index in the file (0-based) of each row
    unit: str  # "line" | "row"
    meta: dict[str, Any]
    line_of: Callable[[int], int] = field(default=lambda r: r + 1)  # data row -> line/row number shown

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int) -> str:
        return f"{self.path} {self.unit} {self.line_of(int(self.rows[i]))}"

    def take(self, mask: np.ndarray) -> _Table:
        cols = {k: v[mask] for k, v in self.columns.items()}
        return _Table(self.path, cols, self.rows[mask], self.unit, self.meta, self.line_of)


def _suffixes(path: Path) -> tuple[str, bool]:
    """('.csv', gzipped?) from 'x.csv.gz'."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return (Path(name).suffix or ".csv"), gz


def read_table(path: str | os.PathLike[str]) -> _Table:
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


def _is_gzip(p: Path, gz: bool) -> bool:
    with open(p, "rb") as head:
        return gz or head.read(2) == b"\x1f\x8b"


def _open_text(p: Path, gz: bool) -> Any:
    if _is_gzip(p, gz):
        return gzip.open(p, "rt", encoding="utf-8-sig", newline="")
    return open(p, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the caller's with


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _from_arrow(col: Any) -> np.ndarray:
    """An Arrow column as float64 (numbers, nulls as NaN; timestamps as epoch ms) or object (text)."""
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        # straight to numpy (nulls become NaN): Arrow's cast would load pyarrow.compute (~50 ms) for it
        arr = np.asarray(col.to_numpy(zero_copy_only=False))
        if arr.dtype.kind == "f" or len(arr) == 0 or (int(arr.min()) >= -(2**53) and int(arr.max()) <= 2**53):
            return np.asarray(arr, dtype=np.float64)
        # integers a float64 cannot hold exactly: Arrow's checked cast refuses them, as it always has
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ms", tz=col.type.tz)).cast(pa.int64())
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_boolean(col.type):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_string(col.type):  # already text: no cast (which would load pyarrow.compute)
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    return np.asarray(col.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)


def _csv_lines(p: Path, gz: bool) -> Callable[[int], int]:
    """Data row -> line number, found by reading the file again (only when a message needs it: blank
    lines and quoted line breaks make the two differ)."""
    cache: list[int] = []

    def line_of(row: int) -> int:
        if not cache:
            with _open_text(p, gz) as f:
                reader = csv.reader(f)
                next(reader, None)
                cache.extend(reader.line_num for r in reader if r and not (len(r) == 1 and not r[0].strip()))
        return cache[row] if 0 <= row < len(cache) else row + 2

    return line_of


def _read_csv(p: Path, label: str, gz: bool) -> _Table:
    with open(p, "rb") as head:
        start = head.read(4096)
    packed = _is_gzip(p, gz)
    if not packed:
        if b"\x00" in start.split(b"\n", 1)[0]:
            raise BadFile(f"{label}: not a CSV file (binary content)")
        try:
            start[: len(start) - 4 if len(start) == 4096 else None].decode("utf-8")  # a cut character at the end is fine
        except UnicodeDecodeError:
            raise BadFile(f"{label}: not a text CSV file (undecodable bytes)") from None
    try:
        stream = pa.input_stream(str(p), compression="gzip" if packed else None)
        table = pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        text = _one_line(exc)
        if "Empty CSV file" in text:
            raise BadFile(f"{label}: empty file (expected a header row and bars)") from None
        if "utf8" in text.lower():
            raise BadFile(f"{label}: not a text CSV file (undecodable bytes)") from None
        _find_short_row(p, label, gz)  # names the line when a row has the wrong number of fields
        raise BadFile(f"{label}: not a valid CSV ({text[:160]})") from None
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise BadFile(f"{label}: cannot read ({_one_line(exc)[:160]})") from None
    names = [n.strip().lower().lstrip("\ufeff") for n in table.column_names]
    if any("\x00" in n for n in names):
        raise BadFile(f"{label}: not a CSV file (binary content)")
    cols: dict[str, Any] = {}
    for name, col in zip(names, table.columns, strict=True):
        if name == "timestamp" and pa.types.is_timestamp(col.type):
            name = "timestamp_ms"  # ISO times pyarrow recognised: epoch milliseconds now
        if name and name not in cols:
            cols[name] = _from_arrow(col)
    return _Table(label, cols, np.arange(table.num_rows, dtype=np.int64), "line", {}, _csv_lines(p, gz))


def _find_short_row(p: Path, label: str, gz: bool) -> None:
    """Raise the one-line error for the first row whose field count differs from the header's (read
    again row by row: only after pyarrow refused the file)."""
    try:
        with _open_text(p, gz) as f:
            reader = csv.reader(f)
            width = len(next(reader, []))
            for row in reader:
                if row and not (len(row) == 1 and not row[0].strip()) and len(row) != width:
                    raise BadFile(f"{label} line {reader.line_num}: {len(row)} fields, the header has {width}")
    except UnicodeDecodeError:
        raise BadFile(f"{label}: not a text CSV file (undecodable bytes)") from None
    except csv.Error as exc:
        raise BadFile(f"{label}: not a valid CSV ({exc})") from None


def _read_parquet(p: Path, label: str) -> _Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise BadFile(f"{label}: not a readable Parquet file ({_one_line(exc)})") from None
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        key = name.strip().lower()
        if pa.types.is_timestamp(col.type) and key == "timestamp":
            key = "timestamp_ms"  # a real timestamp column: epoch milliseconds whatever its unit
        cols[key] = _from_arrow(col)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k.startswith(b"liqheat")}
    return _Table(label, cols, np.arange(table.num_rows, dtype=np.int64), "row", meta)


def _read_json(p: Path, label: str, gz: bool) -> _Table:
    """liqheat's own layout {"timeframe": 60, "columns": {...}}, a plain {column: [values]}, a list of row
    objects, or JSON Lines (one row object per line, parsed by pyarrow)."""
    try:
        with _open_text(p, gz) as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        if "Extra data" in str(exc):
            return _read_json_lines(p, label, gz)
        raise BadFile(f"{label}: not valid JSON ({_one_line(exc)})") from None
    except UnicodeDecodeError as exc:
        raise BadFile(f"{label}: not valid JSON ({_one_line(exc)})") from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise BadFile(f"{label}: cannot read ({_one_line(exc)})") from None
    meta: dict[str, Any] = {}
    if isinstance(doc, dict):
        if "timeframe" in doc:
            meta["liqheat.timeframe"] = str(doc["timeframe"])
        body = doc.get("columns", doc)
        cols = {str(k).strip().lower(): v for k, v in body.items() if isinstance(v, list)}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise BadFile(f"{label}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
    elif isinstance(doc, list):
        n = len(doc)
        cols = {}
        for i, rec in enumerate(doc):
            if not isinstance(rec, dict):
                raise BadFile(f"{label} row {i + 1}: expected an object with named fields")
            for k, v in rec.items():
                cols.setdefault(str(k).strip().lower(), [None] * n)[i] = v
    else:
        raise BadFile(f"{label}: expected a list of rows or an object of columns")
    out = {k: _json_column(v) for k, v in cols.items()}
    return _Table(label, out, np.arange(n, dtype=np.int64), "row", meta)


def _json_column(values: list[Any]) -> np.ndarray:
    """Numbers (and nulls) as float64 through pyarrow; anything else as text, checked later by name."""
    try:
        arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return np.array([None if v is None else str(v) for v in values], dtype=object)
    return _from_arrow(arr)


def _read_json_lines(p: Path, label: str, gz: bool) -> _Table:
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(pa.input_stream(str(p), compression="gzip" if _is_gzip(p, gz) else None))
    except (pa.ArrowException, OSError) as exc:
        raise BadFile(f"{label}: not valid JSON ({_one_line(exc)[:160]})") from None
    cols = {name.strip().lower(): _from_arrow(col) for name, col in zip(table.column_names, table.columns, strict=True)}
    return _Table(label, cols, np.arange(table.num_rows, dtype=np.int64), "line", {})


# ---- column conversion --------------------------------------------------------------------------------
def _numbers(t: _Table, name: str) -> np.ndarray:
    """A column as float64; empty cells and nulls become NaN; anything else unparsable is an error."""
    raw = t.columns[name]
    if raw.dtype != object:
        return np.asarray(raw, dtype=np.float64)
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(pa.array(raw, type=pa.string()))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:
        return np.asarray(pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except pa.ArrowInvalid:
        pass
    for i, v in enumerate(text.to_pylist()):  # only to name the first bad row
        try:
            float(v) if v is not None else None
        except ValueError:
            raise BadFile(f"{t.where(i)}: {name} is not a number ({str(v)[:40]!r})") from None
    raise BadFile(f"{t.path}: {name} is not a number")


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
    elif name == "open_time" or _is_numeric_column(raw):
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


def _is_numeric_column(raw: np.ndarray) -> bool:
    return raw.dtype != object or _looks_numeric(raw)


def _looks_numeric(raw: Any) -> bool:
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
    table, _, _ = _filter_market(read_table(path), venue, coin, market)
    bars = _bars_from_table(table, timeframe)
    del table
    # Arrow's allocator keeps what the parse freed for later parses; a command reads its file once, and
    # the bars are numpy copies, so give it back (~8 MB on 5 months of 5m bars, more on a year of 1m)
    pa.default_memory_pool().release_unused()
    return bars


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
        net = _numbers(t, "net_taker_volume")
        if volume is None:  # flow without volume (charting sites' CVD exports): its sign and relative size
            buy, sell = flow_sides(net)
        else:
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
        # validated above, row by row names included: Bars need not check it all again
        return Bars.from_columns(tf, validate=False, time=secs, **cols)  # type: ignore[arg-type]
    except BarsError as exc:
        raise BadFile(f"{t.path}: {exc}") from None


FLOW_WINDOW = 96  # bars: "recent" for net taker flow without volume (8 hours of 5m bars, 4 days of 1h)


def flow_sides(net: np.ndarray, window: int = FLOW_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Buy and sell sides standing in for taker volumes when a file has net taker flow (CVD deltas) but
    no volume: the model only reads their imbalance (buy - sell) / (buy + sell), which here is the bar's
    flow over its recent absolute size — the mean |flow| of the last ``window`` bars, this one included
    (causal), or the bar's own |flow| when larger — so it stays in [-1, 1]. Bars without flow: no tilt
    from flow (the model falls back to the candle's direction)."""
    flow = np.nan_to_num(net, nan=0.0)
    size = np.abs(flow)
    run = np.cumsum(np.r_[0.0, size])
    idx = np.arange(1, len(flow) + 1)
    lo = np.maximum(idx - window, 0)
    recent = (run[idx] - run[lo]) / (idx - lo)
    scale = np.maximum(recent, size)
    return (scale + flow) / 2, (scale - flow) / 2


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
WRITE_SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz") + PARQUET_SUFFIXES


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
    check_writable_format(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadFile(f"{p}: cannot write ({_one_line(exc)})") from None
    cols = _bar_columns(bars)
    write_table(p, cols, json_layout="columns", json_meta={"timeframe": bars.timeframe},
                parquet_meta={"liqheat.timeframe": str(bars.timeframe)})
    return p


def check_writable_format(p: Path) -> None:
    """Refuse an extension we cannot write, before any work is done."""
    suffix, gz = _suffixes(p)
    if suffix not in (".csv", ".json") + PARQUET_SUFFIXES or (gz and suffix in PARQUET_SUFFIXES):
        raise BadFile(f"{p}: unknown format {suffix!r}; use .csv, .csv.gz, .parquet or .json")


def write_table(
    path: str | os.PathLike[str],
    columns: dict[str, np.ndarray],
    *,
    formats: dict[str, str] | None = None,
    json_layout: str = "rows",
    json_meta: dict[str, Any] | None = None,
    parquet_meta: dict[str, str] | None = None,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Named columns of equal length to CSV (.csv/.csv.gz), JSON (.json/.json.gz) or Parquet, by the
    extension, atomically (a temporary file renamed over the target). ``formats``: printf format per
    column for CSV (default: the shortest text that reads back to the same float; NaN is an empty cell).
    JSON is {**json_meta, "columns": [names], "rows": [[...], ...]} (``json_layout="rows"``) or
    {**json_meta, "columns": {name: [values]}} (``"columns"``); NaN is null. Parquet keeps
    ``parquet_meta`` in the schema metadata."""
    p = Path(path)
    check_writable_format(p)
    suffix, gz = _suffixes(p)

    def write(tmp: Path) -> None:
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            table = pa.table({k: pa.array(v.tolist() if v.dtype == object else v, from_pandas=True) for k, v in columns.items()})
            pq.write_table(table.replace_schema_metadata(parquet_meta or {}), tmp)
        elif suffix == ".json":
            names = list(columns)
            lists = [_json_list(columns[k], (formats or {}).get(k)) for k in names]
            body: Any = dict(zip(names, lists, strict=True)) if json_layout == "columns" else [list(r) for r in zip(*lists, strict=True)]
            doc = {**(json_meta or {}), "columns": body} if json_layout == "columns" else {**(json_meta or {}), "columns": names, "rows": body}
            with _open_out(tmp, gz) as f:
                json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        else:
            with _open_out(tmp, gz) as f:
                write_csv_stream(f, columns, formats, progress)

    _atomic_write(p, write)


def write_csv_stream(
    f: Any, columns: dict[str, np.ndarray], formats: dict[str, str] | None = None,
    progress: Callable[[float], None] | None = None, chunk: int = 50_000,
) -> None:
    """CSV text to an open text stream (a file, or stdout), in chunks of rows."""
    names = list(columns)
    f.write(",".join(names) + "\n")
    n = len(columns[names[0]]) if names else 0
    specs = [_printf_spec(columns[k], (formats or {}).get(k), k == "timestamp_ms") for k in names]
    row_format = ",".join(specs) + "\n"
    for lo in range(0, n, chunk):
        parts = [columns[k][lo : lo + chunk] for k in names]
        if _no_empty_cells(parts):
            # one printf over the whole chunk: the same text as cell by cell, in about 60% of the time
            m = len(parts[0])
            grid = np.empty((m, len(parts)), dtype=object)
            for j, part in enumerate(parts):
                grid[:, j] = part.tolist()
            f.write((row_format * m) % tuple(grid.ravel().tolist()))
        else:  # NaN / None become empty cells
            cells = [_csv_cells(part, (formats or {}).get(k), k == "timestamp_ms") for k, part in zip(names, parts, strict=True)]
            f.write("".join(",".join(row) + "\n" for row in zip(*cells, strict=True)))
        if progress is not None:
            progress(min(lo + chunk, n) / max(n, 1))


def _printf_spec(arr: np.ndarray, fmt: str | None, integer: bool) -> str:
    """The printf conversion that writes a column's cells as :func:`_csv_cells` does."""
    if arr.dtype.kind in "iu" or integer:
        return "%d"
    if arr.dtype.kind != "f":
        return "%s"
    return "%r" if fmt is None else fmt


def _no_empty_cells(parts: list[np.ndarray]) -> bool:
    for part in parts:
        if part.dtype.kind == "f" and not np.isfinite(part).all():
            return False  # NaN (and inf, whose text the cell-by-cell path owns)
        if part.dtype == object and any(v is None for v in part.tolist()):
            return False
    return True


def _csv_cells(arr: np.ndarray, fmt: str | None, integer: bool = False) -> list[str]:
    if arr.dtype.kind in "iu" or integer:
        return [str(int(v)) for v in arr.tolist()]
    if arr.dtype.kind != "f":
        return ["" if v is None else str(v) for v in arr.tolist()]
    if fmt is None:  # repr is the shortest text that reads back to the same float
        return ["" if v != v else repr(v) for v in arr.tolist()]
    return ["" if v != v else fmt % v for v in arr.tolist()]


def _json_list(arr: np.ndarray, fmt: str | None = None) -> list[Any]:
    if arr.dtype.kind in "iu":
        return [int(v) for v in arr.tolist()]
    if arr.dtype.kind == "f" and fmt == "%.2f":  # USD to the cent
        arr = np.round(arr, 2)
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in arr.tolist()]


def _open_out(p: Path, gz: bool) -> Any:
    if gz:
        return gzip.open(p, "wt", encoding="utf-8", newline="", compresslevel=6)
    return open(p, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller's with


def _atomic_write(p: Path, write: Callable[[Path], None]) -> None:
    if p.is_dir():
        raise BadFile(f"{p}: is a folder, not a file")
    if not p.parent.is_dir():
        raise BadFile(f"{p}: folder {p.parent} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise BadFile(f"{p}: cannot write ({_one_line(exc)})") from None
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, p)
    except OSError as exc:
        raise BadFile(f"{p}: cannot write ({_one_line(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


# ---- liquidations -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiquidationColumns:
    """Liquidation events as columns, oldest first (what scoring reads: no object per event)."""

    time_ms: np.ndarray  # int64
    long: np.ndarray  # bool: True = a long position was liquidated
    price: np.ndarray
    base: np.ndarray  # size in base coin
    usd: np.ndarray
    symbol: str

    def __len__(self) -> int:
        return len(self.time_ms)


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
    c = read_liquidation_columns(path, symbol=symbol, coin=coin, venue=venue, market=market)
    side = np.where(c.long, "long", "short").tolist()
    ms_l, p_l, b_l, u_l = c.time_ms.tolist(), c.price.tolist(), c.base.tolist(), c.usd.tolist()
    return [Liquidation(ms_l[i], exchange, c.symbol, side[i], p_l[i], b_l[i], u_l[i]) for i in range(len(c))]


def read_liquidation_columns(
    path: str | os.PathLike[str],
    *,
    symbol: str | None = None,
    coin: str | None = None,
    venue: str | None = None,
    market: str | None = None,
) -> LiquidationColumns:
    """:func:`read_liquidations_file` as columns, validated the same way (one line naming the row)."""
    table, _, found_coin = _filter_market(read_table(path), venue, coin, market)
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
    sym = symbol or (f"{found_coin.upper()}/USDT:USDT" if found_coin else Path(str(path)).name.split(".")[0])
    if len(t) == 0:
        empty = np.zeros(0)
        return LiquidationColumns(np.zeros(0, np.int64), np.zeros(0, bool), empty, empty, empty, sym)
    ms = _times_ms(t)
    price = _numbers(t, price_col)
    usd = _numbers(t, usd_col) if usd_col else None
    base = _numbers(t, base_col) if base_col else None
    if base is None:
        assert usd is not None
        base = usd / price
    if usd is None:
        usd = base * price
    long = _sides(t, side_col)
    for name, arr in ((price_col, price), ("size", base), ("notional", usd)):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise BadFile(f"{t.where(int(np.flatnonzero(bad)[0]))}: {name} must be a positive number")
    order = np.argsort(ms, kind="stable")
    return LiquidationColumns(ms[order], long[order], price[order], base[order], usd[order], sym)


def _sides(t: _Table, side_col: str) -> np.ndarray:
    """True where the row's side is ``long``, False for ``short`` (trimmed, any case); anything else is
    refused naming its row. Each distinct cell is read once (a column holds a handful of spellings)."""
    raw = t.columns[side_col]
    cells = raw.tolist()
    word = {v: str(v).strip().lower() if v is not None else "" for v in set(cells)}
    code = {v: {"long": 1, "short": 0}.get(w, -1) for v, w in word.items()}
    side = np.fromiter((code[v] for v in cells), dtype=np.int8, count=len(cells))
    if (side < 0).any():
        i = int(np.flatnonzero(side < 0)[0])
        raise BadFile(f"{t.where(i)}: {side_col} must be long or short (the position liquidated), got {str(raw[i])[:20]!r}")
    return side == 1


def read_funding_file(
    path: str | os.PathLike[str], *, venue: str | None = None, coin: str | None = None, market: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Funding settlements: (UNIX seconds, rate as a fraction per interval), oldest first. Columns: a time
    (as for bars) and ``funding_rate`` (or ``rate``); venue/coin columns are filtered as for bars."""
    t, _, _ = _filter_market(read_table(path), venue, coin, market)
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
