"""``python -m benchmarks``: run every benchmarks/bench_*.py (each prints its own table of figures)."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    only = set(sys.argv[1:])  # python -m benchmarks bench_store  -> just that one
    for name in names:
        if only and name not in only:
            continue
        print(f"\n== {name} ==", flush=True)
        t = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name}: {time.perf_counter() - t:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
