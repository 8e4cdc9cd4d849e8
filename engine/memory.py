"""Caches bounded in bytes: a least-recently-used map that knows what its entries weigh.

Counting entries says nothing about memory when one heatmap is 50 kB and another 100 MB, so every cache
of the service and of the faces holds at most a number of *bytes*, measured by :func:`nbytes` (numpy
arrays by the buffer they keep alive, strings and bytes by length). Thread-safe: the views run in pools.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import numpy as np

V = TypeVar("V")

_SMALL = 64  # a Python number, None, a small tuple header: what an object costs before its contents


def nbytes(obj: Any, _depth: int = 0) -> int:
    """Approximate bytes ``obj`` keeps alive. A numpy view counts its whole base buffer: a small slice
    of a big array holds the big array (that is why cached slices must be copies)."""
    if obj is None or isinstance(obj, (bool, int, float)):
        return _SMALL // 2
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        return int(base.nbytes) + _SMALL
    if isinstance(obj, (bytes, bytearray, str)):
        return sys.getsizeof(obj)
    if _depth > 6:
        return _SMALL
    if isinstance(obj, dict):
        return _SMALL + sum(nbytes(k, _depth + 1) + nbytes(v, _depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return _SMALL + sum(nbytes(x, _depth + 1) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _SMALL + sum(nbytes(getattr(obj, f.name, None), _depth + 1) for f in dataclasses.fields(obj))
    slots = getattr(type(obj), "__slots__", None)
    if slots:
        return _SMALL + sum(nbytes(getattr(obj, s, None), _depth + 1) for s in slots if isinstance(s, str))
    if hasattr(obj, "__dict__"):
        return _SMALL + nbytes(vars(obj), _depth + 1)
    return sys.getsizeof(obj)


def owned(a: np.ndarray) -> np.ndarray:
    """``a`` itself if it owns its buffer, else a compact copy (so caching it does not pin a bigger array)."""
    return a if a.base is None else np.ascontiguousarray(a).copy()


class ByteLRU(Generic[V]):
    """At most ``limit`` bytes of entries; the least recently used go first. An entry bigger than
    ``max_item`` (default: half the limit) is not kept at all — caching it would evict everything else."""

    def __init__(self, name: str, limit: int, max_item: int | None = None) -> None:
        self.name = name
        self.limit = max(0, int(limit))
        self.max_item = self.limit // 2 if max_item is None else int(max_item)
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._used: dict[Hashable, float] = {}  # last use (monotonic), for expire()
        self._lock = threading.Lock()
        self.bytes = 0
        self.evictions = 0
        self.refused = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            self._used[key] = time.monotonic()
            return hit[0]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Hashable, value: V, size: int | None = None) -> bool:
        """Keep ``value`` (``size`` bytes, measured when not given); False when it is too big to keep."""
        size = nbytes(value) if size is None else int(size)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
                del self._used[key]
            if size > self.max_item or size > self.limit:
                self.refused += 1
                return False
            self._items[key] = (value, size)
            self._used[key] = time.monotonic()
            self.bytes += size
            self._shrink(self.limit)
            return True

    def pop(self, key: Hashable) -> V | None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is None:
                return None
            self.bytes -= old[1]
            del self._used[key]
            return old[0]

    def resize(self, limit: int, max_item: int | None = None) -> None:
        with self._lock:
            self.limit = max(0, int(limit))
            self.max_item = self.limit // 2 if max_item is None else int(max_item)
            self._shrink(self.limit)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used.clear()
            self.bytes = 0

    def _shrink(self, limit: int) -> None:
        while self.bytes > limit and self._items:
            key, (_, size) = self._items.popitem(last=False)
            del self._used[key]
            self.bytes -= size
            self.evictions += 1

    def prune(self, dead: Callable[[Hashable], bool], idle_s: float | None = None) -> int:
        """Drop entries whose key is ``dead`` (made for a state that is gone) or unused for ``idle_s``
        seconds: a cache the attack filled gives its memory back once the attack stops."""
        now = time.monotonic()
        with self._lock:
            gone = [k for k in self._items if dead(k) or (idle_s is not None and now - self._used[k] > idle_s)]
            for k in gone:
                _, size = self._items.pop(k)
                del self._used[k]
                self.bytes -= size
            return len(gone)

    def stats(self) -> dict[str, int]:
        return {"bytes": self.bytes, "limit": self.limit, "entries": len(self._items), "evictions": self.evictions,
                "refused": self.refused}
