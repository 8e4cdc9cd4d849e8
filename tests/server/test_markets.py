"""View caching: one computation per market change shared by concurrent callers, and the bounded
stale-while-revalidate that keeps REST latency flat on a fast-ticking market."""

from __future__ import annotations

import asyncio
import threading

from server.markets import Markets


async def test_concurrent_callers_share_one_computation(hub):
    markets = Markets([hub])
    svc = hub.get("BTC")
    calls = []
    gate = threading.Event()

    def compute() -> str:
        calls.append(1)
        gate.wait(5)
        return "answer"

    try:
        waiting = [asyncio.ensure_future(markets.cached(svc, "k", compute)) for _ in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(*waiting) == ["answer"] * 20
        assert len(calls) == 1
        markets.bump(svc.market.key)  # the market changed: computed again
        assert await markets.cached(svc, "k", lambda: "new") == "new"
    finally:
        markets.close()


async def test_previous_answer_while_the_new_one_is_computed(hub):
    svc = hub.get("BTC")
    for max_stale, expect_first in ((5.0, "old"), (0.0, "new")):
        markets = Markets([hub], max_stale_s=max_stale)
        try:
            assert await markets.cached(svc, "k", lambda: "old") == "old"
            markets.bump(svc.market.key)
            gate = threading.Event()

            def slow(gate: threading.Event = gate) -> str:
                gate.wait(5)
                return "new"

            first = asyncio.ensure_future(markets.cached(svc, "k", slow))
            await asyncio.sleep(0.05)
            if expect_first == "old":
                assert first.done() and first.result() == "old"
                assert not markets.is_current(svc, "k", "old")
            else:
                assert not first.done()  # no staleness allowed: it waits
            gate.set()
            await first
            for _ in range(200):
                if markets.is_current(svc, "k", "new"):
                    break
                await asyncio.sleep(0.01)
            assert await markets.cached(svc, "k", slow) == "new"
        finally:
            markets.close()


async def test_the_loop_watch_measures_full_garbage_collector_passes_and_lets_go_of_the_collector() -> None:
    """A full collection stops every thread (the loop too): health reports its length apart from the
    loop's lateness. The watch's hook leaves the collector when the watch stops."""
    import gc

    from server.limits import LoopWatch

    watch = LoopWatch()
    watch.start()
    was_enabled = gc.isenabled()
    gc.disable()  # only the passes this test asks for
    try:
        junk = [[i] for i in range(200_000)]  # something for the pass to walk
        gc.collect(1)  # a younger generation: not counted
        assert not watch.gc_full_ms
        gc.collect()
        del junk
        assert len(watch.gc_full_ms) == 1 and watch.gc_full_ms[0] > 0.0
    finally:
        watch.stop()
        if was_enabled:
            gc.enable()
    assert all(getattr(cb, "__self__", None) is not watch for cb in gc.callbacks)
    gc.collect()
    assert len(watch.gc_full_ms) == 1
