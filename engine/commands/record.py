"""``liqheat record``: the recorder daemon (one feed, some markets, one store file)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

HELP = "record candles and liquidations into a store file, resuming where it stopped (Ctrl-C/SIGTERM stops it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exchange", default="demo",
        help="demo (the simulated market, default), an exchange (binanceusdm, bybit, okx) or file:PATH to replay",
    )
    parser.add_argument(
        "--symbols", default="",
        help="comma-separated markets, e.g. BTC/USDT:USDT,ETH/USDT:USDT (BTCUSDT and BTC work too); "
        "default: every market of the demo or the replayed file",
    )
    parser.add_argument(
        "--db", "--store", dest="db", default=None,
        help="store file or postgresql://user@host/db (default: $LIQHEAT_DB or ~/.local/share/liqheat/liqheat.sqlite)",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="demo/replay clock speed (1 = real time)")
    parser.add_argument(
        "--since", default=None,
        help="first start only: how far back to fetch history (2024-05-01, 2024-05-01T12:00, or 30d / 12h ago)",
    )
    parser.add_argument("--batch", type=int, default=500, help="rows per write transaction (default 500)")
    parser.add_argument("--flush", type=float, default=0.5, help="write at least this often, seconds (default 0.5)")
    parser.add_argument("--status-every", type=float, default=30.0, help="status line interval, seconds (default 30)")


def parse_since(text: str | None, now: float | None = None) -> int | None:
    """'30d', '12h', '90m' before now, or an ISO date/time (UTC) -> UNIX seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", text)
    if m:
        unit = {"d": 86_400, "h": 3600, "m": 60}[m.group(2)]
        return int((time.time() if now is None else now) - float(m.group(1)) * unit)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: use a date (2024-05-01), a time (2024-05-01T12:00) or 30d/12h/90m") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def build_feed(exchange: str, speed: float, since: int | None = None) -> Any:
    """The feed for ``--exchange``; each kind is imported only when chosen (ccxt is slow to import).
    The demo market simulates its history from ``since`` (default: its own 30 days)."""
    if exchange.startswith("file:"):
        from engine.store import open_replay

        return open_replay(exchange, speed=speed)
    if exchange == "demo":
        from engine.feeds.demo import DemoFeed

        if since is None:
            return DemoFeed(speed=speed)
        return DemoFeed(speed=speed, history_days=max((time.time() - since) / 86_400, 1 / 1440))
    from engine.feeds.exchange import ExchangeFeed

    return ExchangeFeed("binanceusdm" if exchange == "binance" else exchange)


def run(args: argparse.Namespace) -> int:
    from engine.feeds.base import FeedError
    from engine.recorder import record, stderr_log
    from engine.store import StoreError
    from engine.stores import open_store

    def fail(msg: str, code: int = 1) -> int:
        print(f"liqheat record: {msg}", file=sys.stderr)
        return code

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        return fail(str(exc), 2)
    if args.speed <= 0:
        return fail("--speed must be positive", 2)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols and args.exchange != "demo" and not args.exchange.startswith("file:"):
        return fail(f"name the markets to record from {args.exchange} with --symbols (e.g. BTC/USDT:USDT)", 2)
    try:
        feed = build_feed(args.exchange, args.speed, since)
    except ImportError as exc:
        return fail(f"the {args.exchange} feed is not available ({exc})", 2)
    except (FeedError, ValueError) as exc:
        return fail(" ".join(str(exc).split()), 2)
    try:
        store = open_store(args.db)
    except StoreError as exc:
        return fail(str(exc))

    async def main() -> int:
        return await record(
            feed, store, symbols, since=since, batch_rows=args.batch, flush_seconds=args.flush,
            status_seconds=args.status_every, log=stderr_log,
        )

    try:
        return asyncio.run(main())
    finally:
        store.close()
