"""``liqheat serve``: the chart page, REST API, WebSocket and UDF datafeed (simulated market by default)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys

from aiohttp import web

from engine.config import Config, ConfigError, load_config
from engine.service import FeedError, LadderError, StoreError, load_ladder, open_store

from . import assets
from .app import FeedSpec, create_app
from .budget import MIN_BUDGET, parse_size, tune_malloc
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


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < MIN_BUDGET:
        raise argparse.ArgumentTypeError(f"at least {MIN_BUDGET // 2**20}MB, got {text!r}")
    return size


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000000, got {n}")
    return n


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
    parser.add_argument("--memory-budget", type=_size, default=1024**3, metavar="SIZE",
                        help="memory for caches, send queues and work in flight, e.g. 512MB (default 1GB)")
    parser.add_argument("--max-clients", type=_positive, default=1000, metavar="N",
                        help="WebSocket connections at once (default 1000); more get 503 + Retry-After")
    parser.add_argument("--max-clients-per-ip", type=_positive, default=100, metavar="N",
                        help="WebSocket connections one address may hold (default 100; raise it behind a reverse "
                             "proxy); more get 429 + Retry-After")
    parser.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                        help="another Host name to answer on loopback (default: localhost, 127.0.0.1, [::1])")
    parser.add_argument("--bus", default=None, metavar="redis://HOST:PORT/DB",
                        help="run as a stateless replica of a cluster: views from this Redis, written by `liqheat worker`s")
    parser.add_argument("--store", default=None, metavar="DB|postgresql://...",
                        help="read each market's history from this store first (only the missing tail from the feed) "
                             "and record what the feed streams into it: a SQLite file or a PostgreSQL URL")
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
    # SIGTERM / SIGINT end the wait below; the finally closes the clients (1001) and the markets, and
    # the command exits 0 (aiohttp's own handlers raise GracefulExit, which exited 1).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if verbose else None,
                           handle_signals=False, shutdown_timeout=5.0)
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
        await stop.wait()
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
                          risk_limit=file_config.risk_limit,
                          memory_budget=args.memory_budget, max_clients=args.max_clients,
                          max_clients_per_ip=args.max_clients_per_ip,
                          allow_hosts=tuple(args.allow_host))
    tune_malloc()  # freed buffers go back to the system, so the process shrinks after a burst
    # Numpy work in the lanes' threads holds the interpreter lock between array operations; the event
    # loop (every page's live bars) waits up to one switch interval each time it wants it back. 1 ms
    # instead of 5 keeps that wait short while batch work runs (soak benchmark: live-bar lag).
    sys.setswitchinterval(0.001)
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
    # the config file's store is the single server's (a replica never opens one); the flag with --bus is a mistake
    store_target = args.store or (None if args.bus else file_config.default("store"))
    if store_target and args.bus:
        print("liqheat serve: --store is for a single server; with --bus the workers own the store", file=sys.stderr)
        return 2
    if store_target:
        try:  # a store that cannot be opened is one line before any market loads, not a traceback after
            spec = dataclasses.replace(spec, store=open_store(store_target))
        except StoreError as exc:
            print(f"liqheat serve: {exc}", file=sys.stderr)
            return 2
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
    finally:
        if spec.store is not None:
            spec.store.close()


command = sys.modules[__name__]  # the entry point `server.cli:command` names this module
