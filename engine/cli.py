"""The ``liqheat`` command: one dispatcher, each sub-command imported only when it runs.

Batch commands live in the engine; the faces (``serve``, ``tui``) register themselves through the
``liqheat.commands`` entry points in pyproject.toml, so the engine never imports them by name.
A command is a module with ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# One BLAS thread unless the user asks for more (set before numpy loads OpenBLAS). liqheat's matrix
# products are small (a ladder's 5-6 weights times a window x bucket table); OpenBLAS's helper threads
# spin-wait around each one and cost ~25x its CPU time (6 ms instead of 0.2 ms per product, measured on a
# shared 2-core machine), which made them most of `backtest --suite`'s ladder search. The results are the
# same: each output element is the same dot product either way.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# name -> module, imported lazily (ccxt and textual are slow to import)
ENGINE_COMMANDS: dict[str, str] = {
    "export": "engine.commands.export",
    "backtest": "engine.commands.backtest",
    "record": "engine.commands.record",
    "import": "engine.commands.import_",
    "snapshot": "engine.commands.snapshot",
}


def _commands() -> dict[str, str]:
    from importlib.metadata import entry_points  # scanning the installed packages costs ~50 ms

    found = dict(ENGINE_COMMANDS)
    for ep in entry_points(group="liqheat.commands"):
        found[ep.name] = ep.value.split(":")[0]
    return found


def _load(module: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    # a batch command of the engine needs no look at the installed faces (serve, tui, worker)
    commands = dict(ENGINE_COMMANDS) if chosen in ENGINE_COMMANDS else _commands()
    parser = argparse.ArgumentParser(
        prog="liqheat",
        description="Estimated liquidation levels for crypto perpetual futures (an estimate, not a fact).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others are listed by name.
    modules = {}
    for name, module in sorted(commands.items()):
        if name == chosen:
            try:
                mod = _load(module)
            except ImportError as exc:
                print(f"liqheat: command {name!r} is not available: {exc}", file=sys.stderr)
                return 2
            modules[name] = mod
            p = sub.add_parser(name, help=getattr(mod, "HELP", ""), description=getattr(mod, "HELP", ""))
            mod.add_arguments(p)
        else:
            sub.add_parser(name, help=f"(run 'liqheat {name} -h')")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
