"""The recorder writing to a real PostgreSQL that is stopped in the middle of the stream and started again:
it keeps what it could not write, retries, and the store ends up with every bar and liquidation once."""

from __future__ import annotations

import asyncio

from recorder_fakes import SYMBOLS, ClockedFeed
from test_recorder import KEY, Running, _check_bars_equal_source, _liqs, until

from engine.store_pg import PgStore


async def test_postgres_stopped_mid_stream_loses_nothing_and_doubles_nothing(own_postgres):
    store = PgStore(own_postgres.new_database(), timeout=0.5)
    feed = ClockedFeed(speed=60 * 400, warmup=100, stop_at=100)
    run = Running(feed, store, retry_seconds=0.2)
    try:
        await until(lambda: all((p := run.progress(s)) and p.health == "live" for s in SYMBOLS), what="live")
        t = feed.source(SYMBOLS[0]).time
        await until(lambda: all(store.last_time(KEY[s]) == int(t[99]) for s in SYMBOLS), what="history stored")

        await asyncio.to_thread(own_postgres.stop, "immediate")  # a crash, not a polite shutdown
        feed.stop_at = 300  # 200 more bars and 400 liquidations per market arrive while it is down
        await until(lambda: any("store unavailable" in line for line in run.lines), what="the failure noticed")
        assert not run.task.done()  # the recorder keeps running and keeps what it has
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_postgres.start)
        await until(lambda: all(store.last_time(KEY[s]) == int(t[299]) for s in SYMBOLS), limit=30, what="catch-up")
        await run.stop()
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed, s, 300)
            assert store.count_bars(KEY[s]) == 300
            want = sorted(_liqs(feed, s, range(100, 300)), key=lambda e: (e.time_ms, e.side, e.price))
            assert store.read_liquidations(KEY[s]) == want  # every one, once
        assert store.gaps() == []  # nothing was reported missing: nothing was
    finally:
        if not run.task.done():
            await run.stop()
        store.close()
