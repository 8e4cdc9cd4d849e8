"""The simulated market's cost: backfilling a month of 1-minute history at start, and ticking many symbols
live on one core.

History: a fresh feed generates 30 days x N symbols (the default feed backfills 3); CPU seconds against
the 2-second start-up target. Live: every listed symbol streams at once for ``LIVE_SECONDS`` of wall time,
consumed by one asyncio task each; the CPU share is process CPU time over wall time during that window
(100% = one core busy), at 1x (one update per symbol per second) and at 60x (a simulated minute per second).
"""

from __future__ import annotations

import asyncio
import time

from engine.feeds.base import BarUpdate, Liquidation
from engine.feeds.demo import DemoFeed

NOW = 1_780_000_000 // 86_400 * 86_400 + 43_200 + 30  # fixed, so runs compare
HISTORY_TARGET_S = 2.0  # for 30 days x 3 symbols
LIVE_SECONDS = 20.0


def _history(n_symbols: int) -> tuple[float, float, int]:
    """(CPU s, wall s, bars) for a month of history of the first ``n_symbols`` markets."""
    feed = DemoFeed(seed=7, now=NOW, history_days=30)
    symbols = [s.symbol for s in feed.offered[:n_symbols]]
    cpu, wall = time.process_time(), time.perf_counter()
    bars = sum(len(feed.history_now(s)) for s in symbols)
    return time.process_time() - cpu, time.perf_counter() - wall, bars


async def _live(speed: float, seconds: float) -> dict[str, float]:
    feed = DemoFeed(seed=7, speed=speed, history_days=1)
    symbols = [s.symbol for s in feed.offered]
    for s in symbols:  # backfill before the clock of the measurement starts
        await feed.history(s)
    counts = {"forming": 0, "closed": 0, "liquidations": 0}

    async def consume(symbol: str) -> None:
        async for event in feed.stream(symbol):
            if isinstance(event, BarUpdate):
                counts["closed" if event.closed else "forming"] += 1
            elif isinstance(event, Liquidation):
                counts["liquidations"] += 1

    cpu, wall = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(consume(s)) for s in symbols]
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await feed.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"symbols": len(symbols), "cpu_share": cpu / wall, "wall": wall, **{k: v / wall for k, v in counts.items()}}


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    for n in (3, 10):
        cpu, wall, bars = _history(n)
        note = f"{cpu / HISTORY_TARGET_S:.2f} x the 2 s target" if n == 3 else f"{cpu / n * 1000:.0f} ms CPU per symbol"
        rows.append((f"history 30 d x {n} symbols ({bars:,} bars)", f"{cpu:.2f} s CPU / {wall:.2f} s wall", note))
    for speed in (1.0, 60.0):
        r = asyncio.run(_live(speed, LIVE_SECONDS))
        rows.append(
            (
                f"live {r['symbols']:.0f} symbols at {speed:g}x for {r['wall']:.0f} s",
                f"CPU share {r['cpu_share']:.1%} of one core",
                f"{r['forming']:.1f} forming + {r['closed']:.2f} closed bars + {r['liquidations']:.2f} liquidations /s",
            )
        )
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'figure':<{w0}}  {'measured':<{w1}}  ratio / rate")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")


if __name__ == "__main__":
    main()
