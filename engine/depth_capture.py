"""Read a raw Binance USDⓈ-M websocket capture (``<local_ns> <json>`` per line: one REST depth snapshot,
``depth@0ms`` diffs, trades, book tickers) and rebuild the order book at regular moments.

This is the IO half of the cascade model's depth calibration (engine/model/cascade.py holds the pure
fitting); the shared capture is ../shared/data/binance_usdm_btcusdt_depth_trades_2024-08-08.gz.
"""

from __future__ import annotations

import gzip
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BookSample:
    """The rebuilt book at one moment: (price, base qty) rows, bids descending, asks ascending."""

    time_ms: int
    bids: np.ndarray  # (N, 2)
    asks: np.ndarray  # (M, 2)
    update_id: int = 0  # the book's last update id (``u`` of the last diff applied)

    @property
    def mid(self) -> float:
        return 0.5 * (float(self.bids[0, 0]) + float(self.asks[0, 0]))


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


# Diffs held while waiting for the snapshot (a capture starts the stream first, then asks for the
# snapshot; Binance's futures stream sends ~20 diffs a second, and the snapshot took ~0.3 s here).
MAX_EARLY_DIFFS = 10_000


class CaptureGap(ValueError):
    """The diffs do not continue the snapshot (or each other): the book after that point is unknown."""


def book_samples(path: str | Path, every_s: float = 10.0, max_depth_levels: int = 1000) -> list[BookSample]:
    """Replay the capture the way Binance documents keeping a local order book ("How to manage a local
    order book correctly", USDⓈ-M futures): start from the REST snapshot; drop every diff with
    ``u < lastUpdateId`` (already in the snapshot); the first diff applied must straddle it
    (``U <= lastUpdateId + 1`` and ``u >= lastUpdateId``); each later diff must continue the previous one
    (``pu`` = the previous ``u``). Diffs that arrived *before* the snapshot but post-date it are applied
    too — the capture opened the stream first, so the first of them is the one that straddles the
    snapshot. A zero quantity removes the level. A sample is taken every ``every_s`` seconds of exchange
    time. A diff chain that breaks ends the replay at the break (CaptureGap if no sample was taken).

    Only the ``max_depth_levels`` levels nearest the touch are kept per side in a sample: the snapshot
    covered 1000 levels, and levels further out are known only if a diff happened to touch them, so they
    would make the far book look thinner than it is.
    """
    path = Path(path)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    last_id: int | None = None
    prev_u: int | None = None  # ``u`` of the last diff applied
    early: deque[dict[str, Any]] = deque(maxlen=MAX_EARLY_DIFFS)
    out: list[BookSample] = []
    next_sample = 0

    def apply(data: dict[str, Any]) -> bool:
        """Apply one diff if it belongs after what the book holds; False if the chain is broken."""
        nonlocal prev_u
        assert last_id is not None
        first, final = int(data["U"]), int(data["u"])
        if final < last_id:
            return True  # already contained in the snapshot
        if prev_u is None:
            if first > last_id + 1:
                return False  # diffs between the snapshot and this one were never seen
        elif ("pu" in data and int(data["pu"]) != prev_u) or ("pu" not in data and first != prev_u + 1):
            return False  # futures diffs name the previous one (pu); spot diffs continue at u + 1
        for side, book in (("b", bids), ("a", asks)):
            for p, q in data[side]:
                price, qty = float(p), float(q)
                if qty == 0.0:
                    book.pop(price, None)
                else:
                    book[price] = qty
        prev_u = final
        return True

    for n, line in enumerate(_lines(path), 1):
        _, _, payload = line.partition(" ")
        if not payload.strip():
            continue
        if last_id is None and '"lastUpdateId"' in payload[:40]:
            snap = json.loads(payload)
            last_id = int(snap["lastUpdateId"])
            bids = {float(p): float(q) for p, q in snap["bids"]}
            asks = {float(p): float(q) for p, q in snap["asks"]}
            next_sample = int(snap["E"])
            for data in early:  # the stream ran ahead of the snapshot: catch up
                if not apply(data):
                    raise CaptureGap(f"{path.name}: the diffs received before the snapshot (lastUpdateId "
                                     f"{last_id}) do not continue it")
            early.clear()
            continue
        if '"depthUpdate"' not in payload[:120]:
            continue
        data = json.loads(payload)["data"]
        if last_id is None:
            early.append(data)
            continue
        if not apply(data):
            if not out:
                raise CaptureGap(f"{path.name}: line {n}: depth diff {data['U']}..{data['u']} does not continue "
                                 f"the book (last update {prev_u if prev_u is not None else last_id})")
            break  # the book is unknown from here on: keep the samples taken before the break
        now = int(data["E"])
        if now >= next_sample and bids and asks:
            b = np.array(sorted(bids.items(), reverse=True)[:max_depth_levels], dtype=np.float64)
            a = np.array(sorted(asks.items())[:max_depth_levels], dtype=np.float64)
            if b[0, 0] < a[0, 0]:  # skip the odd crossed moment mid-update
                out.append(BookSample(now, b, a, int(data["u"])))
            next_sample = now + int(every_s * 1000)
    if last_id is None:
        raise ValueError(f"{path.name}: no depth snapshot (a line with lastUpdateId) in the capture")
    return out
