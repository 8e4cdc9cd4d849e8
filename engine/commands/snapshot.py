"""``liqheat snapshot --png FILE`` (and/or ``--svg FILE``): candles + estimated heatmap + liquidation-map
profile as a picture, drawn without a browser (engine/snapshot.py, matplotlib). ``--feed demo`` (the simulated market; default) or
``--feed file:PATH`` (a candle file). Bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from engine.feeds.base import FeedError
from engine.ladderfile import load_ladder
from engine.model import Bars, BarsError, LadderError, ModelParams, ViewError, estimate, timeframe_seconds
from engine.snapshot import SnapshotError, render_snapshot, snapshot_bytes

HELP = "draw candles + the estimated heatmap + the liquidation map to a PNG or SVG (no browser needed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--png", metavar="FILE", help="write the picture as PNG here")
    p.add_argument("--svg", metavar="FILE", help="write the picture as SVG here (text stays text)")
    p.add_argument("--feed", default="demo", help="demo (the simulated market) or file:PATH (a candle file)")
    p.add_argument("--symbol", help="market, e.g. BTC/USDT:USDT (default: the feed's first)")
    p.add_argument("--venue", help="file feed: pick a venue from a multi-venue file")
    p.add_argument("--coin", help="file feed: pick a coin from a multi-coin file")
    p.add_argument("--timeframe", default="1h", help="candle timeframe drawn (default 1h)")
    p.add_argument("--candles", type=int, default=120, help="how many candles (default 120)")
    p.add_argument("--ladder", default="default", help="preset name, JSON, or a ladder JSON file")
    p.add_argument("--contract-size", type=float, default=1.0, help="multiply file volumes by this (OKX contracts)")
    p.add_argument("--width", type=int, default=1200, help="pixels (default 1200)")
    p.add_argument("--height", type=int, default=720, help="pixels (default 720)")
    p.add_argument("--dpi", type=float, default=100.0, help="dots per inch: the text's size in pixels (default 100)")
    p.add_argument("--seed", type=int, default=7, help="demo feed seed")
    p.add_argument("--days", type=float, default=10.0, help="demo feed: days of history to draw from")


def _fail(msg: str) -> int:
    print(f"liqheat snapshot: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


async def _demo_history(args: argparse.Namespace) -> tuple[Bars, str]:
    """History from the simulated market (imported lazily: only this path needs it)."""
    from engine.service import open_feed

    feed: Any = open_feed("demo", seed=args.seed, history_days=args.days)
    try:
        markets = await feed.markets()
        symbol = args.symbol or markets[0].symbol
        bars = await feed.history(symbol)
        return bars, f"DEMO {symbol}"
    finally:
        await feed.close()


def load_bars(args: argparse.Namespace) -> tuple[Bars, str]:
    if args.feed == "demo":
        return asyncio.run(_demo_history(args))
    if args.feed.startswith("file:"):
        from engine.formats import read_bars_file

        path = args.feed[5:]
        if not path:
            raise FeedError("file feed needs a path: --feed file:PATH")
        bars = read_bars_file(path, venue=args.venue, coin=args.coin)
        if args.contract_size != 1.0:
            bars = bars.with_columns(
                **{k: None if getattr(bars, k) is None else getattr(bars, k) * args.contract_size
                   for k in ("volume", "taker_buy_volume", "taker_sell_volume")}
            )
        label = args.symbol or " ".join(x for x in (args.venue, args.coin) if x).upper() or Path(path).name
        return bars, label
    raise FeedError(f"unknown feed {args.feed!r}: use demo or file:PATH")


def run(args: argparse.Namespace) -> int:
    try:
        ladder = load_ladder(args.ladder)
        if not (args.png or args.svg):
            raise SnapshotError("give --png FILE and/or --svg FILE")
        if args.candles < 2:
            raise SnapshotError("--candles must be at least 2")
        tf = timeframe_seconds(args.timeframe)
        bars, label = load_bars(args)
        if tf < bars.timeframe or tf % bars.timeframe:
            raise SnapshotError(f"--timeframe {args.timeframe} is not a whole multiple of the data's bars")
        coin = (args.coin or (args.symbol or "BTC").split("/")[0]).upper()
        est = estimate(bars, ModelParams(ladder=ladder, coin=coin, exchange=args.venue or "binance"))
        snap = render_snapshot(est, label, tf, args.width, args.height, args.candles, zones=est.zones(), dpi=args.dpi)
        files = [(path, snapshot_bytes(snap, fmt, label)) for fmt, path in (("png", args.png), ("svg", args.svg)) if path]
    except (FeedError, BarsError, LadderError, SnapshotError, ViewError, ValueError) as exc:
        return _fail(str(exc))
    for path, data in files:
        try:
            Path(path).write_bytes(data)
        except OSError as exc:
            return _fail(f"cannot write {path}: {exc.strerror or exc}")
        print(f"wrote {path} ({args.width}x{args.height}, {len(data):,} bytes): {label}, {len(bars):,} bars, estimate")
    return 0
