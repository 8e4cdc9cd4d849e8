"""``liqheat export``: candles in, the estimate out as a file (CSV, CSV.gz, Parquet or JSON).

    liqheat export --bars candles.csv.gz --what heatmap --step 1h --bins 400 --out heatmap.csv
    liqheat export --store liqheat.sqlite --market okx:BTC/USDT:USDT --what zones --out zones.json

What each ``--what`` writes (one table; the JSON and Parquet files add the model's parameters, the seed
mode that ran and the source as metadata):

* ``realised``: ``time,long_usd,short_usd`` - estimated liquidations per candle; ``time`` is the UNIX
  second the candle opened; one row per candle of ``--timeframe`` (default: the input's own bars).
* ``heatmap``: ``time,price_low,price_high,long_usd,short_usd`` - one row per (column, price bin) whose
  notional rounds to at least a cent. ``time`` is the UNIX second at which the book is read: only bars
  closed by then count, so it is the map a trader could see when the candle opening at ``time`` began.
  Columns every ``--step`` (default: ``--timeframe``), aligned to UTC multiples of the step, the last one
  at the last close.
* ``map``: the liquidation map now (after the last bar), one row per price bin around the last price:
  ``price_low,price_high,long_usd,short_usd,long_below_usd,short_above_usd`` then ``long_<tier>`` and
  ``short_<tier>`` per leverage tier. ``long_below_usd``: longs liquidated if price falls to this bin
  (running outward from the price); ``short_above_usd``: shorts if it rises to it.
* ``zones``: price ranges of concentrated notional, strongest first:
  ``side,price_low,price_high,peak_price,usd,grade,share_of_daily_volume,percentile,distance_pct`` then
  ``usd_<tier>`` per tier. ``grade`` is low / elevated / high (share of average daily traded USD, or the
  percentile when the input has no volume).

Bad input (missing columns, NaN, unsorted or duplicate times, non-positive prices, an unknown ladder, an
empty file, absurd ``--bins``/``--step``) gets one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time as wallclock
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

HELP = "write the estimate (heatmap, liquidation map, zones or realised liquidations) to CSV, Parquet or JSON"

WHATS = ("heatmap", "map", "zones", "realised")
LONG_INPUT_BARS = 100_000  # from this many bars on, stage lines are printed even when stderr is not a TTY
LONG_INPUT_BYTES = 8_000_000  # ... and from this file size on, before reading it


class ExportError(Exception):
    """Input or options the export cannot use; one line for the user."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (__doc__ or "").split("\n\n", 1)[1].replace("``", "")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--bars", metavar="FILE", help="candles: CSV, CSV.gz, Parquet or JSON (see engine/formats.py)")
    src.add_argument("--store", metavar="DB", help="a liqheat store (SQLite file or postgresql://...) recorded by 'liqheat record' / 'import'")
    p.add_argument("--market", metavar="EXCHANGE:SYMBOL",
                   help="with --store: which market, e.g. okx:BTC/USDT:USDT; several comma-separated, or 'all' "
                        "(then --out names a file per market with {market}, e.g. out/{market}.csv)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="several markets: export N at a time in separate processes (default 1)")
    p.add_argument("--since", metavar="TIME", help="with --store: first bar (ISO date/time or UNIX seconds)")
    p.add_argument("--until", metavar="TIME", help="with --store: bars opened before this (ISO or UNIX seconds)")
    p.add_argument("--venue", help="files holding several venues: the one to use (also picks its margin tiers)")
    p.add_argument("--coin", help="files holding several coins: the one to use")
    p.add_argument("--what", required=True, choices=WHATS, help="which view to write")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file; the format follows the extension: .csv, .csv.gz, .parquet, .json ('-': CSV on stdout)")
    p.add_argument("--timeframe", metavar="TF",
                   help="candle timeframe of the output (1m 5m 15m 1h 4h 1d 1w, or e.g. 30m); default: the input's")
    p.add_argument("--step", metavar="TF", help="heatmap column spacing (default: --timeframe)")
    p.add_argument("--columns", type=int, metavar="N", help="heatmap: keep only the newest N columns")
    p.add_argument("--ladder", default="default", help="leverage ladder: preset name, JSON, or a ladder JSON file")
    p.add_argument("--bins", type=int, default=200, metavar="N", help="price bins (default 200)")
    p.add_argument("--log-prices", action="store_true", help="log-spaced price bins (default: linear)")
    p.add_argument("--price-low", type=float, metavar="P", help="heatmap: lowest price (default: 10%% under the low)")
    p.add_argument("--price-high", type=float, metavar="P", help="heatmap: highest price (default: 10%% over the high)")
    p.add_argument("--span", type=float, default=25.0, metavar="PCT",
                   help="map/zones: bins cover the last price +- this %% (default 25)")
    p.add_argument("--tier", help="heatmap/realised/map: one leverage tier only (label like 25x, or index)")
    p.add_argument("--exchange", help="whose margin tiers and liquidation formula (default: venue/market, else binance)")
    p.add_argument("--contract", choices=("linear", "inverse"), default="linear", help="contract type (default linear)")
    p.add_argument("--seed-mode", choices=("auto", "oi", "volume"), default="auto",
                   help="seed from open-interest changes, the volume proxy, or whichever the input allows (auto)")
    p.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")

    def one_line_error(message: str) -> NoReturn:  # argparse's usage block would be several lines
        print(f"liqheat export: {message} (see 'liqheat export -h')", file=sys.stderr)
        raise SystemExit(2)

    p.error = one_line_error  # type: ignore[method-assign]


# ---- running ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.store and args.market and ("," in args.market or args.market == "all"):
        return _run_many(args)
    progress = Progress(enabled=not args.quiet)
    try:
        return _run(args, progress)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # every failure is one line, never a traceback (LIQHEAT_DEBUG=1 shows it)
        progress.clear()
        if os.environ.get("LIQHEAT_DEBUG"):
            raise
        print(f"liqheat export: {_one_line(exc)}", file=sys.stderr)
        return 2


def _safe_name(market: str) -> str:
    """``okx:BTC/USDT:USDT`` -> ``okx_BTC-USDT-USDT`` (a file name on every system)."""
    exchange, _, symbol = market.partition(":")
    return exchange + "_" + "".join(c if c.isalnum() else "-" for c in symbol)


def _export_one(args: argparse.Namespace) -> tuple[str, int, float]:
    """One market of a many-market export (in a pool process)."""
    t = wallclock.perf_counter()
    code = run(args)
    return args.market, code, wallclock.perf_counter() - t


def _run_many(args: argparse.Namespace) -> int:
    """Markets are independent: a process pool exports them side by side (``--jobs``), each market's
    failure is its own line and sets the exit status, the others are still written."""
    from engine.batch import processes_used, side_by_side
    from engine.stores import open_store

    if "{market}" not in args.out:
        print("liqheat export: several markets need --out with {market} in it, e.g. out/{market}.csv", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("liqheat export: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        with open_store(args.store, create=False) as store:
            stored = [m.key for m in store.markets() if m.bars]
    except Exception as exc:  # noqa: BLE001 - one line, as for one market
        print(f"liqheat export: {_one_line(exc)}", file=sys.stderr)
        return 2
    wanted = stored if args.market == "all" else [m.strip() for m in args.market.split(",") if m.strip()]
    if not wanted:
        print(f"liqheat export: {args.store} holds no bars", file=sys.stderr)
        return 2
    jobs = []
    for market in wanted:
        one = argparse.Namespace(**vars(args))
        one.market, one.quiet = market, True
        one.out = args.out.replace("{market}", _safe_name(market))
        Path(one.out).parent.mkdir(parents=True, exist_ok=True)
        jobs.append(one)
    t0 = wallclock.perf_counter()
    worst = 0
    for market, code, secs in side_by_side(_export_one, jobs, args.jobs):
        worst = max(worst, code)
        if not args.quiet:
            print(f"  {market}: {'written' if code == 0 else 'FAILED'} in {secs:.1f} s", file=sys.stderr)
    if not args.quiet:
        print(f"liqheat export: {len(jobs)} markets with {processes_used(args.jobs, len(jobs))} processes in "
              f"{wallclock.perf_counter() - t0:.1f} s", file=sys.stderr)
    return worst


def _run(args: argparse.Namespace, progress: Progress) -> int:
    from engine.ladderfile import load_ladder
    from engine.model import ModelParams, daily_volume_usd, estimate, price_edges
    from engine.model.views import MAX_BINS, MAX_COLUMNS

    started = wallclock.perf_counter()
    if not (1 <= args.bins <= MAX_BINS):
        raise ExportError(f"--bins must be between 1 and {MAX_BINS}, got {args.bins}")
    if not (0.0 < args.span < 95.0):
        raise ExportError(f"--span must be a percentage between 0 and 95, got {args.span:g}")
    if args.columns is not None and not (1 <= args.columns <= MAX_COLUMNS):
        raise ExportError(f"--columns must be between 1 and {MAX_COLUMNS}")
    writer = output_writer(args.out)
    ladder = load_ladder(args.ladder)

    if args.bars and os.path.isfile(args.bars):
        progress.long_input = os.path.getsize(args.bars) > LONG_INPUT_BYTES
    progress.stage(f"reading {args.bars or args.market}")
    bars, source, exchange, coin = _load(args)
    progress.long_input = progress.long_input or len(bars) >= LONG_INPUT_BARS
    tf = _duration(args.timeframe, "--timeframe") if args.timeframe else bars.timeframe
    if tf < bars.timeframe or tf % bars.timeframe:
        raise ExportError(
            f"--timeframe {_tf_name(tf)} is not a whole multiple of the input's {_tf_name(bars.timeframe)} bars"
        )
    step = _duration(args.step, "--step") if args.step else tf
    if step < bars.timeframe:
        raise ExportError(f"--step {_tf_name(step)} is finer than the input's {_tf_name(bars.timeframe)} bars")

    params = ModelParams(
        ladder=ladder, exchange=args.exchange or exchange or "binance", coin=coin or "BTC",
        contract=args.contract, seed_mode=args.seed_mode,
    )
    tier = _tier_index(args.tier, params.ladder.labels)
    progress.stage(f"estimating {len(bars):,} bars")
    est = estimate(bars, params)
    meta = {
        "what": args.what,
        "source": source,
        "bars": len(bars),
        "input_timeframe": _tf_name(bars.timeframe),
        "timeframe": _tf_name(tf),
        "first_bar": int(bars.time[0]),
        "last_close": int(bars.close_time[-1]),
        "seed_mode": est.seed_mode,
        "inputs": inputs_used(bars),
        "model": params.describe(),
        "tier": None if tier is None else params.ladder.labels[tier],
        "estimate": True,
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

    table: Table
    if args.what == "realised":
        table = _realised_table(est, tf, tier)
    elif args.what == "heatmap":
        times = est.column_times(step)
        if args.columns is not None:
            times = times[-args.columns :]
        if len(times) > MAX_COLUMNS:
            raise ExportError(
                f"a heatmap every {_tf_name(step)} over these bars has {len(times):,} columns (max {MAX_COLUMNS:,}); "
                "pass a larger --step (e.g. --step 1h) or --columns N"
            )
        low = args.price_low if args.price_low is not None else float(bars.low.min()) * 0.9
        high = args.price_high if args.price_high is not None else float(bars.high.max()) * 1.1
        edges = price_edges(low, high, args.bins, args.log_prices)
        progress.stage(f"binning {len(times):,} columns x {args.bins} bins")
        # only what is written: the tiers summed, or the one tier asked for
        hm = est.heatmap(times=times, edges=edges, by_tier=False, tier=tier)
        meta.update(step=_tf_name(step), columns=len(times), bins=args.bins, log_prices=args.log_prices)
        table = _heatmap_table(hm)
    elif args.what == "map":
        lmap = est.book().liquidation_map(bins=args.bins, span=args.span / 100.0, log=args.log_prices)
        meta.update(price=lmap.price, bins=args.bins, span_pct=args.span, log_prices=args.log_prices)
        table = _map_table(lmap, tier)
    else:
        from engine.model import find_zones

        lmap = est.book().liquidation_map(bins=args.bins, span=args.span / 100.0, log=args.log_prices)
        dv = daily_volume_usd(bars)
        meta.update(price=lmap.price, daily_volume_usd=dv, bins=args.bins, span_pct=args.span)
        table = _zones_table(find_zones(lmap, dv), lmap.tiers)

    progress.stage(f"writing {len(table):,} rows")
    writer(table, meta, progress)
    progress.clear()
    if not args.quiet:
        mode = {"oi": "open-interest changes", "volume": "volume proxy (no open interest)", "hybrid": "OI + volume proxy"}
        print(
            f"liqheat export: {len(bars):,} {_tf_name(bars.timeframe)} bars from {source} -> {args.out}: "
            f"{len(table):,} {args.what} rows; seeded from {mode.get(est.seed_mode, est.seed_mode)}; "
            f"sides from {meta['inputs']['sides']}; "
            f"{wallclock.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
    return 0


def inputs_used(bars: Any) -> dict[str, Any]:
    """Which input columns the model had, in words: what seeded exposure and what tilted the sides."""
    if bars.has_taker and bars.volume is None:
        sides = "net taker flow relative to its recent size (no volume column)"
    elif bars.has_taker:
        sides = "taker buy/sell volume"
    else:
        sides = "candle direction (no taker flow)"
    return {"open_interest": bool(bars.has_oi), "volume": bars.volume is not None, "sides": sides}


def _load(args: argparse.Namespace) -> tuple[Any, str, str | None, str | None]:
    """(bars, description of the source, exchange, coin) from --bars or --store."""
    if bool(args.bars) == bool(args.store):
        raise ExportError("give exactly one input: --bars FILE or --store DB --market EXCHANGE:SYMBOL")
    if args.bars:
        if args.since or args.until or args.market:
            raise ExportError("--market/--since/--until go with --store")
        from engine.formats import read_bars_file

        path = Path(args.bars)
        if not path.is_file():
            raise ExportError(f"{args.bars}: no such file")
        if path.stat().st_size == 0:
            raise ExportError(f"{args.bars}: the file is empty")
        bars = read_bars_file(path, venue=args.venue, coin=args.coin)
        return bars, str(args.bars), args.venue, args.coin
    if not args.market:
        raise ExportError("--store needs --market EXCHANGE:SYMBOL (e.g. okx:BTC/USDT:USDT)")
    from engine.store import parse_market_key  # imported only when a store is used
    from engine.stores import open_store

    exchange, symbol = parse_market_key(args.market)
    since = _when(args.since, "--since") if args.since else None
    until = _when(args.until, "--until") if args.until else None
    with open_store(args.store, create=False) as store:
        bars = store.read_bars(args.market, since, until)
        where = str(store.path)  # a server URL without its password
    if len(bars) == 0:
        raise ExportError(f"{where}: no bars for {args.market} in the range asked")
    bars.validate()
    coin = args.coin or symbol.split("/")[0].split(":")[0].split("-")[0]
    return bars, f"{where} {args.market}", args.venue or exchange, coin


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _duration(text: str, flag: str) -> int:
    """'1h' -> 3600, '30m' -> 1800, '90' (seconds) -> 90."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise ExportError(f"{flag} {text!r}: use a duration like 1m, 15m, 1h, 4h, 1d, 1w (or seconds)")
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds > 366 * 86_400:
        raise ExportError(f"{flag} {text!r} is longer than a year")
    return seconds


def _when(text: str, flag: str) -> int:
    t = text.strip()
    if re.fullmatch(r"\d{9,11}", t):
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"{flag} {text!r}: use an ISO date/time (2026-03-01T12:00) or UNIX seconds") from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())


def _tf_name(seconds: int) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _tier_index(spec: str | None, labels: tuple[str, ...]) -> int | None:
    if spec is None:
        return None
    s = spec.strip().lower()
    for i, lab in enumerate(labels):
        if s in (lab.lower(), lab.lower().rstrip("x")):
            return i
    if s.isdigit() and int(s) < len(labels):
        return int(s)
    raise ExportError(f"--tier {spec!r}: the ladder's tiers are {', '.join(labels)}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or text}"
    return text or type(exc).__name__


# ---- tables -------------------------------------------------------------------------------------------
class Table:
    """Named columns of equal length, with a printf format per column for CSV."""

    def __init__(self, columns: dict[str, np.ndarray], formats: dict[str, str]) -> None:
        self.columns = columns
        self.formats = formats

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


USD, PRICE, INT = "%.2f", "%.10g", "%d"


def _realised_table(est: Any, tf: int, tier: int | None) -> Table:
    r = est.realised
    long_usd, short_usd = r.long_usd, r.short_usd
    if tier is not None:  # per tier: the realised of the cohorts of that tier only
        long_usd, short_usd = _realised_of_tier(est, tier)
    times = est.bars.time
    if tf != est.bars.timeframe:
        candles = est.bars.resample(tf).time  # UTC-aligned candle opens (weeks on Monday)
        idx = np.searchsorted(candles, times, side="right") - 1
        long_usd = np.bincount(idx, weights=long_usd, minlength=len(candles))
        short_usd = np.bincount(idx, weights=short_usd, minlength=len(candles))
        times = candles
    return Table({"time": times, "long_usd": long_usd, "short_usd": short_usd}, {"time": INT, "long_usd": USD, "short_usd": USD})


def _realised_of_tier(est: Any, tier: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(est.bars)
    c, d = est.cohorts, est.death
    dead = (d < n) & (c.tier == tier)
    dd, b = d[dead], c.birth[dead]
    value = c.usd[dead] * np.exp(est.F[tier, dd - 1] - est.F[tier, b])
    side = c.side[dead]
    return (
        np.bincount(dd[side == 0], weights=value[side == 0], minlength=n),
        np.bincount(dd[side == 1], weights=value[side == 1], minlength=n),
    )


def _heatmap_table(hm: Any) -> Table:
    longs, shorts = hm.total()  # (C, B): the heatmap holds the tiers asked for
    ncol, nb = longs.shape
    keep = (np.round(longs, 2) > 0) | (np.round(shorts, 2) > 0)
    col, b = np.nonzero(keep)  # row-major: by column, then price
    return Table(
        {
            "time": hm.times[col],
            "price_low": hm.edges[b],
            "price_high": hm.edges[b + 1],
            "long_usd": longs[col, b],
            "short_usd": shorts[col, b],
        },
        {"time": INT, "price_low": PRICE, "price_high": PRICE, "long_usd": USD, "short_usd": USD},
    )


def _map_table(lmap: Any, tier: int | None) -> Table:
    from engine.model import LiquidationMap

    if tier is not None:
        lmap = LiquidationMap(lmap.price, lmap.edges, lmap.long_usd[:, [tier]], lmap.short_usd[:, [tier]],
                              (lmap.tiers[tier],))
    below, above = lmap.cumulative()
    cols: dict[str, np.ndarray] = {
        "price_low": lmap.edges[:-1],
        "price_high": lmap.edges[1:],
        "long_usd": lmap.long_usd.sum(axis=1),
        "short_usd": lmap.short_usd.sum(axis=1),
        "long_below_usd": below,
        "short_above_usd": above,
    }
    for i, lab in enumerate(lmap.tiers):
        cols[f"long_{lab}"] = lmap.long_usd[:, i]
    for i, lab in enumerate(lmap.tiers):
        cols[f"short_{lab}"] = lmap.short_usd[:, i]
    return Table(cols, {k: PRICE if k.startswith("price") else USD for k in cols})


def _zones_table(zones: list[Any], tiers: tuple[str, ...]) -> Table:
    def col(f: Callable[[Any], Any], dtype: Any = np.float64) -> np.ndarray:
        return np.array([f(z) for z in zones], dtype=dtype)

    cols: dict[str, np.ndarray] = {
        "side": col(lambda z: z.side, object),
        "price_low": col(lambda z: z.price_low),
        "price_high": col(lambda z: z.price_high),
        "peak_price": col(lambda z: z.peak_price),
        "usd": col(lambda z: z.usd),
        "grade": col(lambda z: z.grade, object),
        # NaN (an empty CSV cell, JSON null) when the input has no volume: the grade is then the percentile's
        "share_of_daily_volume": col(lambda z: math.nan if z.share_of_daily_volume is None else z.share_of_daily_volume),
        "percentile": col(lambda z: z.percentile),
        "distance_pct": col(lambda z: z.distance_pct),
    }
    for i, lab in enumerate(tiers):
        cols[f"usd_{lab}"] = np.array([z.tier_usd[i] for z in zones], dtype=np.float64)
    fmt = {k: PRICE for k in cols}
    fmt.update({k: USD for k in cols if k.startswith("usd")}, side="%s", grade="%s", share_of_daily_volume="%.6g",
               percentile="%.2f", distance_pct="%.4f")
    return Table(cols, fmt)


# ---- writing ------------------------------------------------------------------------------------------
Writer = Callable[[Table, dict[str, Any], "Progress"], None]


def output_writer(out: str) -> Writer:
    """Pick the format from the extension (engine/formats.py writes it); refuse unknown ones up front."""
    from engine.formats import BadFile, check_writable_format, write_csv_stream, write_table

    if out == "-":
        return lambda table, meta, progress: write_csv_stream(sys.stdout, table.columns, table.formats, progress.fraction)
    target = Path(out)
    try:
        check_writable_format(target)
    except BadFile:
        raise ExportError(f"--out {out}: unknown format; use .csv, .csv.gz, .parquet or .json") from None
    if target.is_dir():
        raise ExportError(f"--out {out} is a directory")
    if not target.parent.is_dir():
        raise ExportError(f"--out {out}: folder {target.parent} does not exist")
    return lambda table, meta, progress: write_table(
        target, table.columns, formats=table.formats, json_meta={"liqheat": meta},
        parquet_meta={"liqheat": json.dumps(meta)}, progress=progress.fraction,
    )


# ---- progress -----------------------------------------------------------------------------------------
class Progress:
    """Stage names and a bar on stderr: redrawn in place on a terminal; for long inputs written to a
    pipe or log, one plain line per stage; otherwise silent."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.long_input = False
        self.name = ""
        self._drawn = False
        self._last = 0.0

    def stage(self, name: str) -> None:
        self.name = name
        if not self.enabled:
            return
        if self.tty:
            self._draw(0.0, force=True)
        elif self.long_input:
            print(f"liqheat export: {name}...", file=self.stream, flush=True)

    def fraction(self, done: float) -> None:
        if self.tty:
            self._draw(done)

    def _draw(self, done: float, force: bool = False) -> None:
        now = wallclock.monotonic()
        if not force and now - self._last < 0.1 and done < 1.0:
            return
        self._last = now
        width = 24
        filled = int(round(done * width))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:4.0%} {self.name}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
