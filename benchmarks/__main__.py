"""``python -m benchmarks [name ...]``: run every benchmarks/bench_*.py (or the named ones: ``engine`` runs
bench_engine.py), each printing its own table of measured figures."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    found = sorted(p.stem for p in HERE.glob("bench_*.py"))
    wanted = [a.removeprefix("bench_") for a in argv if not a.startswith("-")]
    unknown = [w for w in wanted if f"bench_{w}" not in found]
    if unknown:
        print(f"benchmarks: no bench_{unknown[0]}.py (have: {', '.join(f[6:] for f in found)})", file=sys.stderr)
        return 2
    chosen = [f for f in found if not wanted or f[6:] in wanted]
    for name in chosen:
        print(f"== {name} ==", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name}: {time.perf_counter() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
