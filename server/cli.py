"""``liqheat serve``: the chart page, REST API, WebSocket and UDF datafeed (simulated market by default)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

from aiohttp import web

from engine.config import Config, ConfigError, load_config
from engine.service import FeedError, LadderError, load_ladder

from . import assets
from .app import FeedSpec, create_app
from .config import ServerConfig

HELP = "serve the live liquidation heatmap in the browser (+ REST/WebSocket/UDF API); demo market by default"


def _port(text: str) -> int:
    """A TCP port (0 = pick a free one); anything else is a usage error, not a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feed", action="append", metavar="FEED",
                        help="demo (default) | binanceusdm | bybit | okx | binanceusdm+bybit+okx or all (one coin across venues) | file:PATH; repeat to serve several")
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL",
                        help="markets to serve, e.g. BTC ETH or BTC/USDT:USDT (default: the feed's main ones)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--speed", type=float, default=None,
                        help="demo/replay speed, x real time (e.g. 60 = one simulated minute per second)")
    parser.add_argument("--ladder", default=None, metavar="NAME|JSON|FILE",
                        help="leverage ladder: default, high, swing, coinglass, JSON like '{\"10\":0.5,\"25\":0.5}', "
                             "or a JSON file (e.g. from `liqheat backtest --calibrate FILE`)")
    parser.add_argument("--history-days", type=float, default=None, help="history to load per market (default 30)")
    parser.add_argument("--webhook", default=None, metavar="URL",
                        help="also POST every alert as JSON to this URL (retried; never blocks the feed)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="config file (default $XDG_CONFIG_HOME/liqheat/config.toml); flags override it")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="another page origin allowed to open the WebSocket (e.g. https://my.site); '*' = any")
    parser.add_argument("--seed", type=int, default=None, help="demo market random seed")
    parser.add_argument("--bus", default=None, metavar="redis://HOST:PORT/DB",
                        help="run as a stateless replica of a cluster: views from this Redis, written by `liqheat worker`s")
    parser.add_argument("--verbose", action="store_true", help="log requests")


def _spec(args: argparse.Namespace, config: Config | None = None) -> FeedSpec:
    """The markets to serve: flags, else the config file's [defaults], else the built-in defaults."""
    config = config or Config()
    ladder = args.ladder or config.default("ladder")
    if ladder:
        load_ladder(ladder)  # fail before starting anything
    speed = args.speed if args.speed is not None else config.default("speed")
    if speed is not None and not (0 < speed <= 100_000):
        raise LadderError("--speed must be above 0 and at most 100000")
    history_days = args.history_days if args.history_days is not None else float(config.default("history_days", 30.0))
    if not history_days > 0:
        raise LadderError("--history-days must be positive")
    webhook = args.webhook or config.alerts.webhook
    if webhook and not webhook.startswith(("http://", "https://")):
        raise LadderError(f"--webhook {webhook!r}: must start with http:// or https://")
    feed = config.default("feed")
    symbols = args.symbols or config.default("symbols")
    return FeedSpec(
        feeds=tuple(args.feed or ([feed] if feed else ["demo"])),
        symbols=tuple(symbols) if symbols else None,
        speed=speed,
        ladder=ladder,
        history_days=history_days,
        seed=args.seed,
        alerts=config.alerts,
        webhook=webhook,
    )


async def serve(spec: FeedSpec, config: ServerConfig, verbose: bool = False, bus: str | None = None) -> int:
    if bus:
        from .replica import create_replica_app

        app = create_replica_app(bus, config)
    else:
        app = create_app(spec, config)
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if verbose else None,
                           handle_signals=True)
    await runner.setup()  # starts the markets (cleanup_ctx): history loads here
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = config.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    host = config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104 - printing only
    what = f"the cluster on {bus}" if bus else ", ".join(spec.feeds)
    print(f"liqheat: serving {what} at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        file_config = load_config(args.config)
        spec = _spec(args, file_config)
    except (ConfigError, LadderError, ValueError) as exc:
        print(f"liqheat serve: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(host=args.host, port=args.port, allow_origins=tuple(args.allow_origin),
                          risk_limit=file_config.risk_limit)
    if args.port:
        # Fail before loading a month of history, not after.
        try:
            with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((args.host, args.port))
        except OSError as exc:
            print(f"liqheat serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if not assets.installed():
        try:
            assets.ensure()
        except assets.AssetError as exc:
            print(f"liqheat serve: the chart library is missing and could not be installed: {exc}\n"
                  "  run `python -m server.assets` once with network access; the API works without it.", file=sys.stderr)
    try:
        return asyncio.run(serve(spec, config, args.verbose, args.bus))
    except FeedError as exc:
        print(f"liqheat serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"liqheat serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


command = sys.modules[__name__]  # the entry point `server.cli:command` names this module
