"""Independent batch jobs side by side: the ``--jobs N`` of ``liqheat export`` and ``liqheat backtest``.

Results come back in the order the jobs were given, whatever order the processes finish in, so what a
command prints or writes does not depend on N. With N = 1 (or a single job) the jobs run one after the
other in this process: no pool to start, and a traceback under LIQHEAT_DEBUG points at the real line.
A job's exception is raised here, in the caller, when its turn in the order comes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


def side_by_side(fn: Callable[[J], R], jobs: Iterable[J], processes: int) -> Iterator[R]:
    """``map(fn, jobs)`` over up to ``processes`` processes (``fn`` and the jobs must pickle: a
    module-level function and plain data)."""
    todo = list(jobs)
    n = min(max(1, processes), len(todo))
    if n <= 1:
        yield from map(fn, todo)
        return
    with ProcessPoolExecutor(max_workers=n) as pool:
        yield from pool.map(fn, todo)


def processes_used(processes: int, jobs: int) -> int:
    """How many processes ``side_by_side`` runs for this many jobs (for the summary lines)."""
    return max(1, min(processes, jobs))
