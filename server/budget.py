"""One memory budget for the server process (``liqheat serve --memory-budget 1GB``), split across its
caches, its WebSocket send queues and the numpy work in flight.

Every byte a client can make the server hold goes through one of these shares; /api/v1/health reports
them (``memory``) so tests and operators see the accounting, not only the process size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import sys
from dataclasses import dataclass

log = logging.getLogger("liqheat.server.budget")

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}

MIN_BUDGET = 64 * 1024**2

# What one heatmap cell costs while it is computed, per tier: long + short float64 grids and the copies
# made on the way (closed columns, the concatenation, the encoding). Measured with tracemalloc: a
# 2000 x 600 heatmap of 5 tiers peaks at 229 MB, 40 bytes per cell and tier (the same at 300 x 200).
BYTES_PER_CELL_TIER = 40


def parse_size(text: str) -> int:
    """``1GB``, ``512MB``, ``1.5G``, ``1048576`` → bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if m is None or m.group(2).upper() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 1GB or 512MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@dataclass(frozen=True)
class MemoryBudget:
    """The shares of ``total``. The rest (a quarter) is the process itself: interpreter, markets' history,
    the incremental engines."""

    total: int = 1024**3

    @property
    def engine_caches(self) -> int:
        """Cached views and closed heatmap columns of all markets (engine.service), split per market."""
        return int(self.total * 0.25)

    @property
    def answers(self) -> int:
        """Serialised REST answers (server.markets)."""
        return int(self.total * 0.08)

    @property
    def snapshots(self) -> int:
        """Serialised WebSocket snapshots, shared by the subscribers of a view (server.live)."""
        return int(self.total * 0.04)

    @property
    def queries(self) -> int:
        """Remembered query strings (a repeated query skips validation)."""
        return int(self.total * 0.01)

    @property
    def send_queues(self) -> int:
        """Messages waiting in all WebSocket send queues together."""
        return int(self.total * 0.12)

    @property
    def work(self) -> int:
        """Numpy work in flight (the heavy lane admits a request only if its estimate fits)."""
        return int(self.total * 0.25)


def rss_bytes() -> int | None:
    """This process's resident set (Linux /proc), for /api/v1/health and the soak benchmark."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


_libc: ctypes.CDLL | None = None
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if not name:
            return None
        try:
            lib = ctypes.CDLL(name)
            lib.mallopt  # noqa: B018 - glibc only
            lib.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


# Blocks at least this big get their own mapping, returned to the system when freed: the grids of
# batch-sized requests (tens of MB). Smaller ones (a page's 2.4 MB grid, its temporaries) are reused from
# the heap: with a 256 kB threshold every one was a fresh mmap, faulted in page by page and unmapped at
# free, and a candle close's live deltas took ~50 ms instead of ~10 ms (measured in-process). What the
# heap keeps free after a burst goes back with trim() (the server calls it when batch work stops).
MMAP_THRESHOLD = 16 * 1024 * 1024


def tune_malloc() -> bool:
    """Make freed memory go back to the system (glibc): big buffers (batch-sized grids) always get
    their own mmap — by default glibc raises that threshold after the first free, so later ones land in
    the heap and the process never shrinks — and worker threads share few arenas."""
    lib = _glibc()
    if lib is None:
        return False
    ok = bool(lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok &= bool(lib.mallopt(_M_TRIM_THRESHOLD, max(4 * 1024 * 1024, 2 * MMAP_THRESHOLD)))
    ok &= bool(lib.mallopt(_M_ARENA_MAX, 4))
    return ok


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_stats() -> dict[str, int] | None:
    """What the C allocator holds (glibc ``mallinfo2``): ``heap`` bytes taken from the system by the
    heaps and arenas (``in_use`` of them by live blocks, ``free`` waiting for reuse: what a trim can
    give back), ``mmapped`` by large blocks with their own mapping. Python's small objects live in
    their own arenas, counted here by ``python_blocks``. None off glibc."""
    lib = _glibc()
    fn = getattr(lib, "mallinfo2", None) if lib is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    m = fn()
    return {"heap": int(m.arena), "in_use": int(m.uordblks), "free": int(m.fordblks), "mmapped": int(m.hblkhd),
            "python_blocks": sys.getallocatedblocks()}


def trim() -> None:
    """Hand free heap pages back to the system (after a burst of work or a closed client)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
