"""Recorded history: one SQLite file per installation (candles, open interest, funding, liquidations, gaps).

Why SQLite: one file a trader can copy, read with any SQLite tool, and write from a recorder while the
server reads it (WAL). ``synchronous=NORMAL`` in WAL mode means a crash of the process (``kill -9``) loses
nothing that was committed; only a power cut can drop the last transactions, and never corrupts the file.

Conventions: bar times are UNIX seconds of the bar's open, liquidation times UNIX milliseconds, gaps are
``[start, end)`` in UNIX seconds. A market is named ``EXCHANGE:SYMBOL`` (``okx:BTC/USDT:USDT``). NaN in a
``Bars`` column is stored as NULL (SQLite does that when a NaN is bound) and read back as NaN.
Every write is an idempotent upsert: replaying or overlapping the same data never duplicates a row.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from engine.feeds.base import Liquidation
from engine.feeds.normalise import bankruptcy_factor, price_kind
from engine.model import Bars, BarsError

# The schema this code writes. Older stores are migrated on open; a newer one is refused.
SCHEMA_VERSION = 2

# How long a stored OI point / funding settlement may stand in for a bar that has none (seconds).
# OI history comes in 5-minute buckets at best; funding settles every 1-8 hours.
OI_MAX_AGE = 3600
FUNDING_MAX_AGE = 86_400

# Writes wait this long for another process's write (e.g. an import while the recorder runs).
BUSY_TIMEOUT_MS = 10_000

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE markets (
    id       INTEGER PRIMARY KEY,
    exchange TEXT NOT NULL,
    symbol   TEXT NOT NULL,
    UNIQUE (exchange, symbol)
);

-- one row per closed bar; times are the bar's open in UNIX seconds
CREATE TABLE candles (
    market            INTEGER NOT NULL REFERENCES markets (id),
    timeframe         INTEGER NOT NULL,
    time              INTEGER NOT NULL,
    open              REAL NOT NULL,
    high              REAL NOT NULL,
    low               REAL NOT NULL,
    close             REAL NOT NULL,
    volume            REAL,
    taker_buy_volume  REAL,
    taker_sell_volume REAL,
    oi_usd            REAL,
    funding_rate      REAL,
    PRIMARY KEY (market, timeframe, time)
) WITHOUT ROWID;

-- open interest at its own resolution (USD at that time)
CREATE TABLE open_interest (
    market INTEGER NOT NULL REFERENCES markets (id),
    time   INTEGER NOT NULL,
    oi_usd REAL NOT NULL,
    PRIMARY KEY (market, time)
) WITHOUT ROWID;

-- funding settlements (fraction per funding interval)
CREATE TABLE funding (
    market INTEGER NOT NULL REFERENCES markets (id),
    time   INTEGER NOT NULL,
    rate   REAL NOT NULL,
    PRIMARY KEY (market, time)
) WITHOUT ROWID;

-- side is the position that was force-closed; the key is natural so a replayed event is not doubled
CREATE TABLE liquidations (
    market  INTEGER NOT NULL REFERENCES markets (id),
    time_ms INTEGER NOT NULL,
    side    TEXT NOT NULL CHECK (side IN ('long', 'short')),
    price   REAL NOT NULL,
    base    REAL NOT NULL,
    usd     REAL NOT NULL,
    PRIMARY KEY (market, time_ms, side, price, base)
) WITHOUT ROWID;

-- stretches the recorder knows it does not have, and why ([start_time, end_time) in UNIX seconds)
CREATE TABLE gaps (
    market     INTEGER NOT NULL REFERENCES markets (id),
    kind       TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    end_time   INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (market, kind, start_time)
) WITHOUT ROWID;

-- the same tables with the market spelled out, for anyone reading the file with the sqlite3 shell
CREATE VIEW candles_named AS
    SELECT m.exchange, m.symbol, c.timeframe, c.time, c.open, c.high, c.low, c.close, c.volume,
           c.taker_buy_volume, c.taker_sell_volume, c.oi_usd, c.funding_rate
    FROM candles c JOIN markets m ON m.id = c.market;
CREATE VIEW liquidations_named AS
    SELECT m.exchange, m.symbol, l.time_ms, l.side, l.price, l.base, l.usd
    FROM liquidations l JOIN markets m ON m.id = l.market;
CREATE VIEW gaps_named AS
    SELECT m.exchange, m.symbol, g.kind, g.start_time, g.end_time, g.reason
    FROM gaps g JOIN markets m ON m.id = g.market;
"""

# ---- schema v2: where a liquidation price comes from ---------------------------------------------------
# Bybit and OKX print the *bankruptcy* price of a liquidated position, Binance the liquidation order's fill.
# v2 keeps both numbers: ``price`` = where the position was liquidated (estimated from the bankruptcy price
# on those venues: engine.model.margin.liquidation_from_bankruptcy), ``reported_price`` = what the venue
# sent, ``price_kind`` = 'fill' | 'bankruptcy'. The natural key moves to the reported price, so a replayed
# event is still recognised if the estimate changes (a newer tier table). SQLite cannot change a primary
# key in place: the table is rebuilt (its view depends on it, so that is rebuilt too).
_V2 = """
DROP VIEW liquidations_named;

CREATE TABLE liquidations_v2 (
    market         INTEGER NOT NULL REFERENCES markets (id),
    time_ms        INTEGER NOT NULL,
    side           TEXT NOT NULL CHECK (side IN ('long', 'short')),
    price          REAL NOT NULL,
    reported_price REAL NOT NULL,
    price_kind     TEXT NOT NULL CHECK (price_kind IN ('fill', 'bankruptcy')),
    base           REAL NOT NULL,
    usd            REAL NOT NULL,
    PRIMARY KEY (market, time_ms, side, reported_price, base)
) WITHOUT ROWID;

INSERT INTO liquidations_v2 (market, time_ms, side, price, reported_price, price_kind, base, usd)
    SELECT market, time_ms, side, price, price, 'fill', base, usd FROM liquidations;

DROP TABLE liquidations;

ALTER TABLE liquidations_v2 RENAME TO liquidations;

CREATE VIEW liquidations_named AS
    SELECT m.exchange, m.symbol, l.time_ms, l.side, l.price, l.reported_price, l.price_kind, l.base, l.usd
    FROM liquidations l JOIN markets m ON m.id = l.market;
"""


def _v2_settle_bankruptcy_prices(db: sqlite3.Connection) -> None:
    """v1 stored what the venue printed as ``price``. On venues that print bankruptcy prices, mark those
    rows 'bankruptcy' and estimate the liquidation price. The estimate is the reported price times a
    factor that depends on the venue, coin, side and the tier table in force on the day, so it is applied
    one (market, side, day) group at a time."""
    for mid, exchange, symbol in db.execute("SELECT id, exchange, symbol FROM markets").fetchall():
        if price_kind(exchange) != "bankruptcy":
            continue
        coin = symbol.split("/")[0]
        groups = db.execute(
            "SELECT DISTINCT side, date(time_ms / 1000, 'unixepoch') FROM liquidations WHERE market = ?", (mid,)
        ).fetchall()
        for side, day in groups:
            factor = bankruptcy_factor(exchange, coin, side, day)  # the estimate is proportional
            db.execute(
                "UPDATE liquidations SET price = reported_price * ?, price_kind = 'bankruptcy' "
                "WHERE market = ? AND side = ? AND date(time_ms / 1000, 'unixepoch') = ?",
                (factor, mid, side, day),
            )


# (version it brings the store to, SQL). Append a step for every schema change; never edit a shipped one.
MIGRATIONS: list[tuple[int, str]] = [(1, _V1), (2, _V2)]
# Data a version's SQL cannot upgrade alone: a Python step run right after it, in the same transaction.
MIGRATION_STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _v2_settle_bankruptcy_prices}

_OPTIONAL = ("volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate")
_CANDLE_COLS = ("time", "open", "high", "low", "close") + _OPTIONAL
# A newer write replaces prices; an optional column it lacks (NULL) keeps what was stored.
_UPSERT_CANDLES = (
    "INSERT INTO candles (market, timeframe, time, open, high, low, close, volume, taker_buy_volume, "
    "taker_sell_volume, oi_usd, funding_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (market, timeframe, time) DO UPDATE SET open = excluded.open, high = excluded.high, "
    "low = excluded.low, close = excluded.close, volume = coalesce(excluded.volume, volume), "
    "taker_buy_volume = coalesce(excluded.taker_buy_volume, taker_buy_volume), "
    "taker_sell_volume = coalesce(excluded.taker_sell_volume, taker_sell_volume), "
    "oi_usd = coalesce(excluded.oi_usd, oi_usd), funding_rate = coalesce(excluded.funding_rate, funding_rate)"
)
_CANDLE_DTYPE = np.dtype([("time", np.int64)] + [(c, np.float64) for c in _CANDLE_COLS[1:]])


class StoreError(Exception):
    """The store cannot be used as asked; the message is one line a user can act on."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached right now (a PostgreSQL restart): the failed write was rolled
    back whole, so trying it again later is safe."""


@dataclass(frozen=True)
class Gap:
    market: str  # EXCHANGE:SYMBOL
    kind: str  # "bars" | "liquidations" | ...
    start: int  # UNIX seconds, inclusive
    end: int  # UNIX seconds, exclusive
    reason: str


@dataclass(frozen=True)
class StoredMarket:
    exchange: str
    symbol: str
    timeframe: int | None  # the finest stored bar length (None: only events stored)
    first: int | None  # open time of the first bar at that timeframe
    last: int | None  # open time of the last bar at that timeframe
    bars: int
    liquidations: int

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


def parse_market_key(key: str) -> tuple[str, str]:
    """``okx:BTC/USDT:USDT`` -> (``okx``, ``BTC/USDT:USDT``); the exchange is everything before the first ':'."""
    exchange, sep, symbol = key.partition(":")
    if not sep or not exchange or not symbol:
        raise StoreError(f"market {key!r} must be EXCHANGE:SYMBOL, e.g. okx:BTC/USDT:USDT")
    return exchange, symbol


def default_db_path() -> Path:
    """$LIQHEAT_DB, else the XDG data directory (~/.local/share/liqheat/liqheat.sqlite)."""
    if env := os.environ.get("LIQHEAT_DB"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "liqheat" / "liqheat.sqlite"


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """SQLite failures (locked, malformed, disk full) become one-line StoreErrors, never tracebacks."""

    @wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            raise StoreError(f"{getattr(store, 'path', 'store')}: {_one_line(exc)}") from None

    return wrapper


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Store:
    """The recorded-history file. Safe to share between threads; several processes may open one file
    (one writer at a time; readers never block the writer)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction()
        self._market_ids: dict[tuple[str, str], int] = {}
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a store file")
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no such store")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create its folder ({_one_line(exc)})") from None
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so a batch is one commit.
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open ({_one_line(exc)})") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            msg = _one_line(exc)
            if "not a database" in msg or "malformed" in msg or "encrypted" in msg:
                raise StoreError(f"{self.path}: not a readable liqheat store ({msg})") from None
            raise StoreError(f"{self.path}: {msg}") from None
        except StoreError:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch the store to WAL mode (got {mode})")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            current = 0
        elif "meta" not in tables:
            raise StoreError(f"{self.path}: a SQLite database, but not a liqheat store (no meta table)")
        else:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            try:
                current = int(row[0]) if row else 0
            except ValueError:
                raise StoreError(f"{self.path}: schema_version {row[0]!r} is not a number") from None
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer liqheat (store schema v{current}; this liqheat reads up to "
                f"v{SCHEMA_VERSION}) - upgrade liqheat to use it"
            )
        if current < SCHEMA_VERSION:
            self._migrate(current)

    def _migrate(self, current: int) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated between our check and the lock: look again.
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            if has_meta:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                current = int(row[0]) if row else 0
            for version, sql in MIGRATIONS:
                if version <= current:
                    continue
                for statement in _statements(sql):
                    db.execute(statement)
                step = MIGRATION_STEPS.get(version)
                if step is not None:
                    step(db)
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
                current = version
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_by', 'liqheat')")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ---- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit (the recorder's batch). Nested calls join the outer one."""
        with self._lock:
            if self._depth == 0:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise StoreError(f"{self.path}: {_one_line(exc)}") from None
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    # market ids created inside the rolled-back transaction no longer exist
                    self._market_ids.clear()
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the failure being raised matters more than a failed rollback
                raise
            self._depth -= 1
            if self._depth == 0:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._market_ids.clear()
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise StoreError(f"{self.path}: {_one_line(exc)}") from None

    # ---- markets ------------------------------------------------------------------------------------
    def _market_id(self, key: str, create: bool) -> int | None:
        exchange, symbol = parse_market_key(key)
        cached = self._market_ids.get((exchange, symbol))
        if cached is not None:
            return cached
        row = self._db.execute(
            "SELECT id FROM markets WHERE exchange = ? AND symbol = ?", (exchange, symbol)
        ).fetchone()
        if row is None:
            if not create:
                return None
            with self.transaction():
                self._db.execute(
                    "INSERT OR IGNORE INTO markets (exchange, symbol) VALUES (?, ?)", (exchange, symbol)
                )
                row = self._db.execute(
                    "SELECT id FROM markets WHERE exchange = ? AND symbol = ?", (exchange, symbol)
                ).fetchone()
        self._market_ids[(exchange, symbol)] = int(row[0])
        return int(row[0])

    def _require_market(self, key: str) -> int:
        mid = self._market_id(key, create=False)
        if mid is None:
            known = ", ".join(m.key for m in self.markets()) or "nothing yet"
            raise StoreError(f"{self.path}: no market {key!r} (the store holds {known})")
        return mid

    @_guarded
    def markets(self) -> list[StoredMarket]:
        """Every market with anything stored, with its finest bar timeframe and range."""
        with self._lock:
            names = {r[0]: (r[1], r[2]) for r in self._db.execute("SELECT id, exchange, symbol FROM markets")}
            finest: dict[int, tuple[int, int, int, int]] = {}
            for mid, tf, first, last, count in self._db.execute(
                "SELECT market, timeframe, min(time), max(time), count(*) FROM candles "
                "GROUP BY market, timeframe ORDER BY market, timeframe DESC"
            ):
                finest[mid] = (tf, first, last, count)  # DESC order: the smallest timeframe wins
            liqs = dict(self._db.execute("SELECT market, count(*) FROM liquidations GROUP BY market").fetchall())
        out = []
        for mid, (exchange, symbol) in sorted(names.items(), key=lambda kv: kv[1]):
            tf, first, last, count = finest.get(mid, (None, None, None, 0))
            n_liq = int(liqs.get(mid, 0))
            if count == 0 and n_liq == 0:
                continue
            out.append(StoredMarket(exchange, symbol, tf, first, last, int(count), n_liq))
        return out

    # ---- bars ---------------------------------------------------------------------------------------
    @_guarded
    def write_bars(self, market: str, bars: Bars) -> int:
        """Upsert closed bars; returns how many rows were sent. A newer write replaces prices and volumes;
        optional columns that are NaN in the newer write keep the stored value (so a re-fetch without OI
        does not erase recorded OI)."""
        n = len(bars)
        if n == 0:
            return 0
        try:
            bars.validate()
        except BarsError as exc:
            raise StoreError(f"refusing to store bars for {market}: {exc}") from None
        cols: list[list[object]] = [[bars.timeframe] * n, bars.time.tolist()]
        for name in _CANDLE_COLS[1:]:
            arr = getattr(bars, name)
            cols.append([None] * n if arr is None else arr.tolist())
        with self._lock, self.transaction():
            mid = self._market_id(market, create=True)
            self._db.executemany(_UPSERT_CANDLES, zip([mid] * n, *cols, strict=True))
        return n

    @_guarded
    def read_bars(
        self, market: str, since: int | None = None, until: int | None = None, timeframe: int | None = None
    ) -> Bars:
        """Stored bars with open time in [since, until) (UNIX seconds; None = open-ended), at ``timeframe``
        (None = the finest stored). OI and funding gaps in the candles are filled from the open_interest
        and funding tables (the latest value at or before the bar's close, if recent enough)."""
        with self._lock:
            mid = self._require_market(market)
            if timeframe is None:
                row = self._db.execute("SELECT min(timeframe) FROM candles WHERE market = ?", (mid,)).fetchone()
                if row[0] is None:
                    raise StoreError(f"{self.path}: no bars stored for {market} (only liquidations)")
                timeframe = int(row[0])
            lo = -(2**62) if since is None else int(since)
            hi = 2**62 if until is None else int(until)
            rows = self._candle_rows(mid, timeframe, lo, hi)
            cols: dict[str, np.ndarray | None] = {c: rows[c] for c in _CANDLE_COLS}
            for name in _OPTIONAL:
                arr = cols[name]
                if arr is not None and (len(arr) == 0 or np.isnan(arr).all()):
                    cols[name] = None
            if len(rows):
                close_time = rows["time"] + timeframe
                cols["oi_usd"] = self._fill_asof(
                    cols["oi_usd"], close_time, "open_interest", "oi_usd", mid, OI_MAX_AGE
                )
                cols["funding_rate"] = self._fill_asof(
                    cols["funding_rate"], close_time, "funding", "rate", mid, FUNDING_MAX_AGE
                )
        return Bars(timeframe=timeframe, **cols)  # type: ignore[arg-type]

    def _candle_rows(self, mid: int, timeframe: int, lo: int, hi: int) -> np.ndarray:
        """The stored candles of [lo, hi) as a structured array (_CANDLE_DTYPE), NULL as NaN."""
        cur = self._db.execute(
            f"SELECT {', '.join(_CANDLE_COLS)} FROM candles "  # noqa: S608 - fixed column names
            "WHERE market = ? AND timeframe = ? AND time >= ? AND time < ? ORDER BY time",
            (mid, timeframe, lo, hi),
        )
        # fromiter straight off the cursor: no list of tuples, and NULL arrives as NaN
        return np.fromiter(cur, dtype=_CANDLE_DTYPE)

    def _fill_asof(
        self, have: np.ndarray | None, at: np.ndarray, table: str, col: str, mid: int, max_age: int
    ) -> np.ndarray | None:
        missing = np.ones(len(at), bool) if have is None else np.isnan(have)
        if not missing.any():
            return have
        t0, t1 = int(at[missing].min()) - max_age, int(at[missing].max())
        pts = np.fromiter(
            self._db.execute(
                f"SELECT time, {col} FROM {table} WHERE market = ? AND time >= ? AND time <= ? ORDER BY time",  # noqa: S608
                (mid, t0, t1),
            ),
            dtype=np.dtype([("t", np.int64), ("v", np.float64)]),
        )
        if len(pts) == 0:
            return have
        out = np.full(len(at), np.nan) if have is None else have.copy()
        idx = np.searchsorted(pts["t"], at, side="right") - 1
        ok = missing & (idx >= 0)
        ok[ok] &= (at[ok] - pts["t"][idx[ok]]) <= max_age
        out[ok] = pts["v"][idx[ok]]
        return out

    @_guarded
    def last_time(self, market: str, timeframe: int | None = None) -> int | None:
        """Open time of the newest stored bar (None if there is none)."""
        with self._lock:
            mid = self._market_id(market, create=False)
            if mid is None:
                return None
            if timeframe is None:
                row = self._db.execute("SELECT max(time) FROM candles WHERE market = ?", (mid,)).fetchone()
            else:
                row = self._db.execute(
                    "SELECT max(time) FROM candles WHERE market = ? AND timeframe = ?", (mid, timeframe)
                ).fetchone()
        return None if row[0] is None else int(row[0])

    @_guarded
    def count_bars(self, market: str, timeframe: int | None = None) -> int:
        with self._lock:
            mid = self._market_id(market, create=False)
            if mid is None:
                return 0
            q, args = "SELECT count(*) FROM candles WHERE market = ?", [mid]
            if timeframe is not None:
                q, args = q + " AND timeframe = ?", args + [timeframe]
            return int(self._db.execute(q, args).fetchone()[0])

    # ---- open interest and funding at their own resolution ------------------------------------------
    @_guarded
    def count_funding(self, market: str) -> int:
        return self._count(market, "funding")

    @_guarded
    def count_open_interest(self, market: str) -> int:
        return self._count(market, "open_interest")

    def _count(self, market: str, table: str) -> int:
        with self._lock:
            mid = self._market_id(market, create=False)
            if mid is None:
                return 0
            return int(self._db.execute(f"SELECT count(*) FROM {table} WHERE market = ?", (mid,)).fetchone()[0])  # noqa: S608

    @_guarded
    def write_open_interest(self, market: str, time: np.ndarray, oi_usd: np.ndarray) -> int:
        return self._write_series(market, "open_interest", "oi_usd", time, oi_usd)

    @_guarded
    def write_funding(self, market: str, time: np.ndarray, rate: np.ndarray) -> int:
        return self._write_series(market, "funding", "rate", time, rate)

    def _write_series(self, market: str, table: str, col: str, time: np.ndarray, value: np.ndarray) -> int:
        t = np.asarray(time, dtype=np.int64)
        v = np.asarray(value, dtype=np.float64)
        if t.shape != v.shape:
            raise StoreError(f"{table}: {len(t)} times for {len(v)} values")
        keep = np.isfinite(v)
        if not len(t[keep]):
            return 0
        with self._lock, self.transaction():
            mid = self._market_id(market, create=True)
            self._db.executemany(
                f"INSERT INTO {table} (market, time, {col}) VALUES (?, ?, ?) "  # noqa: S608
                f"ON CONFLICT (market, time) DO UPDATE SET {col} = excluded.{col}",
                zip([mid] * int(keep.sum()), t[keep].tolist(), v[keep].tolist(), strict=True),
            )
        return int(keep.sum())

    @_guarded
    def read_open_interest(
        self, market: str, since: int | None = None, until: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._read_series(market, "open_interest", "oi_usd", since, until)

    @_guarded
    def read_funding(
        self, market: str, since: int | None = None, until: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._read_series(market, "funding", "rate", since, until)

    def _read_series(
        self, market: str, table: str, col: str, since: int | None, until: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            mid = self._require_market(market)
            pts = np.fromiter(
                self._db.execute(
                    f"SELECT time, {col} FROM {table} WHERE market = ? AND time >= ? AND time < ? ORDER BY time",  # noqa: S608
                    (mid, -(2**62) if since is None else since, 2**62 if until is None else until),
                ),
                dtype=np.dtype([("t", np.int64), ("v", np.float64)]),
            )
        return pts["t"].copy(), pts["v"].copy()

    # ---- liquidations -------------------------------------------------------------------------------
    @_guarded
    def write_liquidations(self, events: Iterable[Liquidation]) -> int:
        """Insert liquidation events; returns how many were new (a replayed event is ignored). An event is
        known by its market, time, side, *reported* price and size."""
        rows: list[tuple[int, int, str, float, float, str, float, float]] = []
        with self._lock, self.transaction():
            for ev in events:
                if ev.side not in ("long", "short"):
                    raise StoreError(f"liquidation side must be 'long' or 'short', got {ev.side!r}")
                if ev.price_kind not in ("fill", "bankruptcy"):
                    raise StoreError(f"liquidation price_kind must be 'fill' or 'bankruptcy', got {ev.price_kind!r}")
                mid = self._market_id(f"{ev.exchange}:{ev.symbol}", create=True)
                assert mid is not None
                rows.append((mid, int(ev.time_ms), ev.side, float(ev.price), float(ev.reported), ev.price_kind,
                             float(ev.base), float(ev.usd)))
            before = self._db.total_changes  # after any new market rows: count events only
            self._db.executemany(
                "INSERT OR IGNORE INTO liquidations (market, time_ms, side, price, reported_price, price_kind, "
                "base, usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._db.total_changes - before

    @_guarded
    def read_liquidations(
        self, market: str, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[Liquidation]:
        """Events with time in [since_ms, until_ms), oldest first."""
        exchange, symbol = parse_market_key(market)
        with self._lock:
            mid = self._market_id(market, create=False)
            if mid is None:
                return []
            rows = self._db.execute(
                "SELECT time_ms, side, price, reported_price, price_kind, base, usd FROM liquidations "
                "WHERE market = ? AND time_ms >= ? AND time_ms < ? ORDER BY time_ms, side, price",
                (mid, -(2**62) if since_ms is None else since_ms, 2**62 if until_ms is None else until_ms),
            ).fetchall()
        # a fill's reported price is its price: read back as written (reported_price None)
        return [
            Liquidation(t, exchange, symbol, side, p, b, u, None if kind == "fill" and rp == p else rp, kind)
            for t, side, p, rp, kind, b, u in rows
        ]

    @_guarded
    def count_liquidations(self, market: str) -> int:
        with self._lock:
            mid = self._market_id(market, create=False)
            if mid is None:
                return 0
            return int(
                self._db.execute("SELECT count(*) FROM liquidations WHERE market = ?", (mid,)).fetchone()[0]
            )

    # ---- gaps ---------------------------------------------------------------------------------------
    @_guarded
    def add_gap(self, market: str, kind: str, start: int, end: int, reason: str) -> None:
        """Record that [start, end) of ``kind`` data is missing and why (same start again = updated)."""
        if end <= start:
            return
        with self._lock, self.transaction():
            mid = self._market_id(market, create=True)
            self._db.execute(
                "INSERT INTO gaps (market, kind, start_time, end_time, reason) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (market, kind, start_time) DO UPDATE SET end_time = excluded.end_time, "
                "reason = excluded.reason",
                (mid, kind, int(start), int(end), " ".join(reason.split())),
            )

    @_guarded
    def gaps(self, market: str | None = None, kind: str | None = None) -> list[Gap]:
        q = (
            "SELECT m.exchange, m.symbol, g.kind, g.start_time, g.end_time, g.reason "
            "FROM gaps g JOIN markets m ON m.id = g.market WHERE 1 = 1"
        )
        args: list[object] = []
        if market is not None:
            exchange, symbol = parse_market_key(market)
            q += " AND m.exchange = ? AND m.symbol = ?"
            args += [exchange, symbol]
        if kind is not None:
            q += " AND g.kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY m.exchange, m.symbol, g.kind, g.start_time", args).fetchall()
        return [Gap(f"{ex}:{sym}", k, s, e, r) for ex, sym, k, s, e, r in rows]

    @_guarded
    def integrity(self) -> str:
        """``ok`` or SQLite's first complaint (PRAGMA integrity_check)."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (sqlite3.complete_statement respects quotes)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


# ---- replay ---------------------------------------------------------------------------------------------
class _StoreRecording:
    """A store as the replay feed's Recording (engine/feeds/files.py): the store depends on the feeds'
    types, never the other way round."""

    def __init__(self, path: Path) -> None:
        from engine.feeds.base import FeedError

        self._error = FeedError
        try:
            self._store = Store(path, create=False)
        except StoreError as exc:
            raise FeedError(str(exc)) from None

    def recorded(self) -> list[tuple[str, str, int]]:
        try:
            return [(m.symbol, m.key, m.timeframe or 60) for m in self._store.markets() if m.bars]
        except StoreError as exc:
            raise self._error(str(exc)) from None

    def bars(self, key: str) -> Bars:
        try:
            return self._store.read_bars(key)
        except StoreError as exc:
            raise self._error(str(exc)) from None

    def liquidations(self, key: str) -> list[Liquidation]:
        try:
            return list(self._store.read_liquidations(key))
        except StoreError as exc:
            raise self._error(str(exc)) from None

    def close(self) -> None:
        self._store.close()


def open_replay(spec: str, speed: float = 60.0, start: int | None = None) -> Any:
    """``file:PATH`` (or a bare path) as a replay feed: a bars file, or every market of a store DB."""
    from engine.feeds.files import FileFeed, file_feed_path
    from engine.formats import STORE_SUFFIXES

    path = file_feed_path(spec)
    if path.suffix.lower() in STORE_SUFFIXES and path.exists():
        return FileFeed(path, speed=speed, start=start, recording=_StoreRecording(path))
    return FileFeed(path, speed=speed, start=start)
