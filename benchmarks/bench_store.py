"""Store and recorder throughput: how fast history goes in (rows/s) and comes back out (the 30-day read).

Every figure is measured in this run on a real SQLite file in a temporary folder; the table shows each
next to its goal or baseline and the ratio between them.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.feeds.base import Liquidation
from engine.feeds.files import FileFeed
from engine.formats import read_bars_file, write_bars_file
from engine.model.synthetic import synthetic_bars
from engine.recorder import Recorder
from engine.store import Store

MONTH = 30 * 1440
YEAR = 365 * 1440
KEY = "bench:BTC/USDT:USDT"
READ_GOAL_S = 0.100


def _timed(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """(best, median) seconds over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return min(runs), statistics.median(runs)


def _liquidations(n: int) -> list[Liquidation]:
    rng = np.random.default_rng(0)
    t = 1_700_000_000_000 + np.cumsum(rng.integers(1, 4000, n))
    price = 60_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    base = rng.uniform(0.001, 2.0, n)
    sides = np.where(rng.random(n) < 0.5, "long", "short")
    return [
        Liquidation(int(a), "bench", "BTC/USDT:USDT", str(s), float(p), float(b), float(b * p))
        for a, s, p, b in zip(t, sides, price, base, strict=True)
    ]


async def _record_replay(csv: Path, db: Path, n: int, batch: int) -> float:
    """Seconds for the recorder to take n bars from a replay feed (as fast as it can read) into the store."""
    feed = FileFeed(csv, speed=math.inf, start=0)  # everything through the stream, nothing as history
    with Store(db) as store:
        rec = Recorder(feed, store, ["b"], batch_rows=batch, flush_seconds=0.05, status_seconds=3600, log=lambda _: None)
        t = time.perf_counter()
        task = asyncio.ensure_future(rec.run())
        while rec.progress.get("file:b") is None or rec.progress["file:b"].bars < n:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        task.cancel()  # the stop flushes what is queued
        try:
            await task
        except asyncio.CancelledError:
            pass
        elapsed = time.perf_counter() - t
        assert store.count_bars("file:b") == n
    await feed.close()
    return elapsed


def main() -> None:
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        month = synthetic_bars(MONTH, seed=1)
        year = synthetic_bars(YEAR, seed=2)

        # -- ingest: one upsert call, then the recorder's 500-row transactions, then a replayed overlap
        db = folder / "a.sqlite"
        with Store(db) as s:
            t = time.perf_counter()
            s.write_bars(KEY, year)
            bulk = YEAR / (time.perf_counter() - t)
        with Store(folder / "b.sqlite") as s:
            t = time.perf_counter()
            for i in range(0, MONTH, 500):
                s.write_bars(KEY, month.slice(i, i + 500))
            batched = MONTH / (time.perf_counter() - t)
            t = time.perf_counter()
            s.write_bars(KEY, month)  # every row already there: the upsert path
            replay = MONTH / (time.perf_counter() - t)
        rows.append(("bars upsert, one call (1y of 1m)", f"{bulk:,.0f} rows/s", "", ""))
        rows.append(("bars upsert, 500-row transactions", f"{batched:,.0f} rows/s", f"{batched / bulk:.2f}x bulk", ""))
        rows.append(("bars re-write of stored rows (replay)", f"{replay:,.0f} rows/s", f"{replay / bulk:.2f}x bulk", ""))

        liqs = _liquidations(100_000)
        with Store(folder / "c.sqlite") as s:
            t = time.perf_counter()
            s.write_liquidations(liqs)
            liq_rate = len(liqs) / (time.perf_counter() - t)
            t = time.perf_counter()
            again = s.write_liquidations(liqs)
            liq_replay = len(liqs) / (time.perf_counter() - t)
            assert again == 0
        rows.append(("liquidations insert (100k events)", f"{liq_rate:,.0f} rows/s", "", ""))
        rows.append(("liquidations replay (all duplicates)", f"{liq_replay:,.0f} rows/s", f"{liq_replay / liq_rate:.2f}x insert", ""))

        # -- the recorder end to end: replay feed -> queue -> batched transactions
        csv = write_bars_file(folder / "b.csv", month.slice(0, 20_000))
        n = 20_000
        rec_s = asyncio.run(_record_replay(csv, folder / "rec.sqlite", n, 500))
        rec_rate = n / rec_s
        rows.append(("recorder end to end (replay feed, 500-row batches)", f"{rec_rate:,.0f} bars/s",
                     f"{rec_rate / 1440:,.0f} days of 1m per s", ""))

        # -- reads
        with Store(db) as s:
            since = int(year.time[-MONTH])
            best, med = _timed(lambda: s.read_bars(KEY, since=since), repeat=7)
            got = s.read_bars(KEY, since=since)
            assert len(got) == MONTH
            ybest, ymed = _timed(lambda: s.read_bars(KEY), repeat=3)
        rows.append(("read 30 days of 1m (43,200 bars) from a 1y store", f"{best * 1000:.1f} ms best / {med * 1000:.1f} median",
                     f"goal {READ_GOAL_S * 1000:.0f} ms", f"{READ_GOAL_S / best:.1f}x under goal" if best <= READ_GOAL_S else f"{best / READ_GOAL_S:.1f}x OVER goal"))
        rows.append(("read 1 year of 1m (525,600 bars)", f"{ybest * 1000:.0f} ms best / {ymed * 1000:.0f} median",
                     f"{YEAR / ybest:,.0f} bars/s", f"{(ybest / YEAR) / (best / MONTH):.2f}x per-bar cost of 30d"))

        # -- files, for comparison with the store
        gz = write_bars_file(folder / "m.csv.gz", month)
        fbest, _ = _timed(lambda: read_bars_file(gz), repeat=3)
        rows.append(("read the same 30 days from .csv.gz", f"{fbest * 1000:.0f} ms", f"{fbest / best:.1f}x the store", ""))
        try:
            pq = write_bars_file(folder / "m.parquet", month)
            pbest, _ = _timed(lambda: read_bars_file(pq), repeat=3)
            rows.append(("read the same 30 days from .parquet", f"{pbest * 1000:.1f} ms", f"{pbest / best:.2f}x the store", ""))
        except Exception as exc:  # noqa: BLE001 - pyarrow is optional
            rows.append(("read the same 30 days from .parquet", f"skipped ({exc})", "", ""))
        size = db.stat().st_size
        rows.append(("store size, 1y of 1m bars, all columns", f"{size / 2**20:.1f} MiB", f"{size / YEAR:.0f} bytes/bar", ""))

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("measure", "figure", "compared with", "ratio")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
