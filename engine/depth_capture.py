"""Read a raw Binance USDⓈ-M websocket capture (``<local_ns> <json>`` per line: one REST depth snapshot,
``depth@0ms`` diffs, trades, book tickers) and rebuild the order book at regular moments.

This is the IO half of the cascade model's depth calibration (engine/model/cascade.py holds the pure
fitting); the shared capture is ../shared/data/binance_usdm_btcusdt_depth_trades_2024-08-08.gz.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BookSample:
    """The rebuilt book at one moment: (price, base qty) rows, bids descending, asks ascending."""

    time_ms: int
    bids: np.ndarray  # (N, 2)
    asks: np.ndarray  # (M, 2)

    @property
    def mid(self) -> float:
        return 0.5 * (float(self.bids[0, 0]) + float(self.asks[0, 0]))


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


def book_samples(path: str | Path, every_s: float = 10.0, max_depth_levels: int = 1000) -> list[BookSample]:
    """Replay the capture: start from the REST snapshot, apply every later diff (a zero quantity removes
    the level), and take a sample every ``every_s`` seconds of exchange time.

    Only the ``max_depth_levels`` levels nearest the touch are kept per side in a sample: the snapshot
    covered 1000 levels, and levels further out are known only if a diff happened to touch them, so they
    would make the far book look thinner than it is.
    """
    path = Path(path)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    last_id = None
    out: list[BookSample] = []
    next_sample = None
    for line in _lines(path):
        _, _, payload = line.partition(" ")
        if not payload.strip():
            continue
        if last_id is None:
            if '"lastUpdateId"' not in payload[:40]:
                continue  # diffs before the snapshot cannot be placed
            snap = json.loads(payload)
            last_id = int(snap["lastUpdateId"])
            bids = {float(p): float(q) for p, q in snap["bids"]}
            asks = {float(p): float(q) for p, q in snap["asks"]}
            next_sample = int(snap["E"])
            continue
        if '"depthUpdate"' not in payload[:120]:
            continue
        data = json.loads(payload)["data"]
        if int(data["u"]) < last_id:
            continue  # already contained in the snapshot
        for side, book in (("b", bids), ("a", asks)):
            for p, q in data[side]:
                price, qty = float(p), float(q)
                if qty == 0.0:
                    book.pop(price, None)
                else:
                    book[price] = qty
        now = int(data["E"])
        if next_sample is not None and now >= next_sample and bids and asks:
            b = np.array(sorted(bids.items(), reverse=True)[:max_depth_levels], dtype=np.float64)
            a = np.array(sorted(asks.items())[:max_depth_levels], dtype=np.float64)
            if b[0, 0] < a[0, 0]:  # skip the odd crossed moment mid-update
                out.append(BookSample(now, b, a))
            next_sample = now + int(every_s * 1000)
    if last_id is None:
        raise ValueError(f"{path.name}: no depth snapshot (a line with lastUpdateId) in the capture")
    return out
