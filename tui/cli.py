"""``liqheat tui``: the terminal dashboard (registered through the ``liqheat.commands`` entry point).

Kept light on imports: textual and the engine load inside ``run()``, so ``liqheat -h`` stays instant.
"""

from __future__ import annotations

import argparse
import sys

COLORS = ("auto", "truecolor", "256", "16", "none")
TIMEFRAMES = ("5m", "15m", "1h", "4h", "1d", "1w")
HELP = "live terminal dashboard of estimated liquidation zones (works over SSH; demo market by default)"

FEED_HELP = (
    "demo (simulated, default) | binanceusdm | bybit | okx | binanceusdm+bybit+okx or all (one coin across venues)"
    " | file:PATH (replay a recorded file)"
)


def _speed(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number, got {text!r}") from None
    if not (0 < v <= 10_000):
        raise argparse.ArgumentTypeError("speed must be between 0 and 10000")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feed", default=None, help=FEED_HELP)
    parser.add_argument("--symbol", default=None, help="market, e.g. BTC/USDT:USDT or BTC (default: the feed's first)")
    parser.add_argument("--connect", metavar="URL", default=None,
                        help="show a running `liqheat serve` (e.g. http://127.0.0.1:8000) instead of computing here")
    parser.add_argument("--colors", choices=COLORS, default=None,
                        help="colour depth (auto: from TERM/COLORTERM; NO_COLOR is honoured)")
    parser.add_argument("--speed", type=_speed, default=None, help="demo/replay clock speed (1 = real time)")
    parser.add_argument("--ladder", default=None,
                        help="leverage ladder: default|high|swing|coinglass, JSON, or a JSON file (e.g. from backtest --calibrate)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="config file (default $XDG_CONFIG_HOME/liqheat/config.toml); flags override it")
    parser.add_argument("--timeframe", default=None, choices=TIMEFRAMES,
                        help="starting timeframe (keys 1-6 switch it)")
    parser.add_argument("--history-days", type=float, default=None, help="days of history to load (default: the service's)")
    parser.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                        help="with --connect: keep retrying a server that is not up yet this long (default 30)")
    parser.add_argument("--refresh", type=float, default=None, help="live updates per second (default 4)")
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # demo market seed (tests)


def run(args: argparse.Namespace) -> int:
    from engine.config import ConfigError, load_config
    from engine.service import LadderError, load_ladder

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"liqheat tui: {exc}", file=sys.stderr)
        return 2
    if args.connect and (args.feed not in (None, "demo") or args.ladder or args.speed):
        print("liqheat tui: with --connect the server decides feed, ladder and speed; drop --feed/--ladder/--speed",
              file=sys.stderr)
        return 2
    # flags, else the config file's [defaults] (not with --connect: the server decides those)
    if not args.connect:
        args.feed = args.feed or config.default("feed") or "demo"
        args.ladder = args.ladder or config.default("ladder")
        if args.history_days is None:
            args.history_days = config.default("history_days")
    args.symbol = args.symbol or config.default("symbol")
    args.timeframe = args.timeframe or config.default("timeframe", "5m")
    args.colors = args.colors or config.default("colors", "auto")
    args.refresh = args.refresh if args.refresh is not None else float(config.default("refresh", 4.0))
    for name, value, allowed in (("timeframe", args.timeframe, TIMEFRAMES), ("colors", args.colors, COLORS)):
        if value not in allowed:
            print(f"liqheat tui: {config.path}: defaults.{name} {value!r}: use one of {', '.join(allowed)}",
                  file=sys.stderr)
            return 2
    if args.ladder:
        try:
            load_ladder(args.ladder)
        except LadderError as exc:
            print(f"liqheat tui: {exc}", file=sys.stderr)
            return 2
    if args.history_days is not None and not (0 <= args.history_days <= 3650):
        print("liqheat tui: --history-days must be between 0 and 3650", file=sys.stderr)
        return 2
    if not (0 <= args.wait <= 86_400):
        print("liqheat tui: --wait must be between 0 and 86400 seconds", file=sys.stderr)
        return 2
    if not (0.2 <= args.refresh <= 30):
        print("liqheat tui: --refresh must be between 0.2 and 30 per second", file=sys.stderr)
        return 2
    if not sys.stdout.isatty() and not sys.stderr.isatty():
        print("liqheat tui: needs a terminal (run it in a terminal or through `ssh -t`)", file=sys.stderr)
        return 2
    from .app import make_app

    app = make_app(
        args.feed or "demo",
        args.symbol,
        connect=args.connect,
        colors=args.colors,
        speed=args.speed,
        ladder=args.ladder,
        seed=args.seed,
        history_days=args.history_days,
        refresh_hz=args.refresh,
        timeframe=args.timeframe,
        connect_wait=args.wait,
        exit_on_start_error=True,
        alerts=config.alerts,
    )
    result = app.run()
    if app.start_error:
        # a feed, symbol, file or server that cannot start is a bad command line, like a bad flag
        print(f"liqheat tui: {app.start_error}", file=sys.stderr)
        return 2
    if app.return_code not in (None, 0):
        return int(app.return_code)
    return int(result or 0)


command = sys.modules[__name__]
