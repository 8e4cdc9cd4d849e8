"""``liqheat import``: load candle / liquidation / funding files into a store (safe to run twice)."""

from __future__ import annotations

import argparse
import sys

HELP = "load bars, liquidations or funding from CSV/Parquet/JSON files into a store (idempotent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", "--store", dest="db", default=None,
        help="store file or postgresql://user@host/db (default: $LIQHEAT_DB or ~/.local/share/liqheat/liqheat.sqlite)",
    )
    parser.add_argument("--market", required=True, help="where the rows go: EXCHANGE:SYMBOL, e.g. okx:BTC/USDT:USDT")
    parser.add_argument("--bars", help="candles file (.csv, .csv.gz, .parquet, .json)")
    parser.add_argument("--liquidations", help="liquidation events file (CSV/Parquet/JSON)")
    parser.add_argument("--funding", help="funding settlements file (timestamp_ms, funding_rate)")
    parser.add_argument(
        "--venue", default=None,
        help="in files holding several venues, the rows to take (default: guessed from the market's exchange)",
    )
    parser.add_argument(
        "--coin", default=None,
        help="in files holding several coins, the rows to take (default: the market's base coin)",
    )
    parser.add_argument("--timeframe", default=None, help="bar length when the file cannot tell (e.g. 1m, 1h)")


def run(args: argparse.Namespace) -> int:
    from engine.feeds.base import FeedError
    from engine.feeds.normalise import with_estimated_price
    from engine.formats import read_bars_file, read_funding_file, read_liquidations_file
    from engine.model import BarsError, timeframe_seconds
    from engine.store import StoreError, parse_market_key
    from engine.stores import open_store

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    if not (args.bars or args.liquidations or args.funding):
        say("liqheat import: give at least one of --bars, --liquidations, --funding")
        return 2
    try:
        exchange, symbol = parse_market_key(args.market)
        tf = timeframe_seconds(args.timeframe) if args.timeframe else None
    except (StoreError, BarsError) as exc:
        say(f"liqheat import: {exc}")
        return 2
    # files mixing venues/coins give up the market's own rows unless --venue/--coin say otherwise
    pick = {"venue": args.venue, "coin": args.coin, "market": args.market}
    try:
        with open_store(args.db) as store:
            if args.bars:
                bars = read_bars_file(args.bars, timeframe=tf, **pick)
                before = store.count_bars(args.market, bars.timeframe)
                store.write_bars(args.market, bars)
                added = store.count_bars(args.market, bars.timeframe) - before
                say(
                    f"{args.market}: {len(bars)} bars ({_tf(bars.timeframe)}, {_day(int(bars.time[0]))} -> "
                    f"{_day(int(bars.time[-1]))}) from {args.bars}: {added} new, {len(bars) - added} already stored"
                )
            if args.liquidations:
                # Bybit/OKX files print bankruptcy prices: store the estimated liquidation price beside them
                raw = read_liquidations_file(args.liquidations, exchange=exchange, symbol=symbol, **pick)
                events = [with_estimated_price(e) for e in raw]
                added = store.write_liquidations(events)
                say(
                    f"{args.market}: {len(events)} liquidations from {args.liquidations}: "
                    f"{added} new, {len(events) - added} already stored"
                )
            if args.funding:
                t, rate = read_funding_file(args.funding, **pick)
                before = store.count_funding(args.market)
                store.write_funding(args.market, t, rate)
                added = store.count_funding(args.market) - before
                say(f"{args.market}: {len(t)} funding settlements from {args.funding}: {added} new")
    except (StoreError, FeedError) as exc:
        say(f"liqheat import: {' '.join(str(exc).split())}")
        return 1
    return 0


def _tf(seconds: int) -> str:
    from engine.model import timeframe_name

    return timeframe_name(seconds)


def _day(ts: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
