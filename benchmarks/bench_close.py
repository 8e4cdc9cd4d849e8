"""A candle's close on the live path: what the server computes for the views open pages hold, before →
after the close was made O(new column), measured side by side on the same bars in one run.

Two services load the same 30 days of the demo market (BTC, 1m base bars); then the same held-back bars
arrive on both, each as a forming update (the first of its candle: the previous candle's closed column
is added to the kept set here, the live views reach it through the exact cached path) and a close. Per
update, each computes the deltas of the views the soak benchmark's clients hold: the 20 watchers' page view (1m, 200 bins x 300 columns) and a
batch-sized view a client keeps open (1m, 1000 x 1000). Timed: until the page view's deltas are ready
(what its watchers wait for), and the whole update.

- before: the previous close path, kept below as a subclass: the kept closed columns rebuilt per close
  (every kept column copied), their membership tested against all of them, realised liquidations
  bucketed over the whole history, the forming candle merged into a copy of the whole candle history
  (for the last 3 candles), and every view in one computation (the page waits for the big one).
- after: engine/columns.py (one column appended per close), realised from the last bucket only, the
  forming candle merged into the candles asked for, page-sized views computed and sent before
  batch-sized ones (server/live.py).

``--kept 2000`` first fills the page grid's kept columns to the API's largest request (a server that has
been up a while, or a 2,000-column chart on the same grid); ``--contend`` runs batch-sized heatmap
requests in a thread meanwhile (as the soak's heavy GETs do: the interpreter lock is shared). Absolute
times are noisy on a shared machine (the load average is printed); the ratio is the figure.

    python -m benchmarks.bench_close [--closes 30] [--kept 2000] [--contend]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from engine.feeds.base import BarUpdate, Market
from engine.feeds.demo import DemoFeed
from engine.memory import owned
from engine.model import Bars, Heatmap, ModelParams, Realised
from engine.service import _CLOSED_KEPT, MarketService, _merge_forming, _window, timeframe_seconds
from server.limits import HEAVY_CELLS
from server.live import _view_deltas
from server.markets import dumps
from server.views import ViewSpec, heatmap_view, snapshot_body

PAGE = (200, 300)  # the soak's watchers (bins, columns)
BIG = (1000, 1000)  # the soak's non-reading clients


class BeforeService(MarketService):
    """The close path before (commit af200b3's parent): kept closed columns as one array per grid."""

    def _closed_columns(self, times: np.ndarray, edges: np.ndarray, grid_key: tuple[Any, ...], keep: bool = True) -> Heatmap:
        prev: Heatmap | None = self._closed_hm.get(grid_key)  # type: ignore[assignment]
        if prev is not None and len(prev.times):
            missing = times[~np.isin(times, prev.times)]
            only_newer = not len(missing) or missing[0] > prev.times[-1]
            if only_newer and all(self._book_at(int(m)) is not None for m in missing):
                if len(missing):
                    binned = [self._book_at(int(m)).binned(edges, spread=grid_key[-1]) for m in missing]  # type: ignore[union-attr]
                    prev = Heatmap(
                        owned(np.concatenate([prev.times, missing])[-_CLOSED_KEPT:]),
                        edges,
                        owned(np.concatenate([prev.long_usd, np.stack([lb for lb, _ in binned])])[-_CLOSED_KEPT:]),
                        owned(np.concatenate([prev.short_usd, np.stack([sb for _, sb in binned])])[-_CLOSED_KEPT:]),
                        prev.tiers,
                    )
                    self._closed_hm.put(grid_key, prev)  # type: ignore[arg-type]
                sel = np.isin(prev.times, times)
                if sel.sum() == len(times):
                    return Heatmap(times, edges, prev.long_usd[sel], prev.short_usd[sel], prev.tiers)
        est = self._current_estimate(int(times[-1]))
        out = est.heatmap(times=times, edges=edges, spread=grid_key[-1])
        if not keep:
            return out
        self._closed_hm.put(grid_key, Heatmap(owned(out.times), owned(out.edges), owned(out.long_usd),  # type: ignore[arg-type]
                                              owned(out.short_usd), out.tiers))
        return out

    def candles(self, timeframe: str | int = "5m", since: int | None = None, until: int | None = None,
                limit: int | None = None) -> Bars:
        tf = timeframe_seconds(timeframe)
        with self._lock:
            bars, forming, version = self.bars, self._forming, self._version
        key = ("candles", tf, version)
        closed = self._cache.get(key)
        if closed is None:
            closed = bars.resample(tf)
            self._cache.put(key, closed)
        out = closed if forming is None else _merge_forming(closed, forming.resample(tf))  # the whole history
        return _window(out, since, until, limit)

    def realised(self, timeframe: str | int = "5m", since: int | None = None, until: int | None = None) -> Realised:
        whole = super().realised(timeframe, None, until)  # bucketed over the whole history, then cut
        sel = whole.time >= since if since is not None else np.ones(len(whole.time), dtype=bool)
        return Realised(whole.time[sel], whole.long_usd[sel], whole.short_usd[sel])


class Held:
    """The demo market's history with the last ``n`` bars held back (they arrive live)."""

    exchange = "demo"
    timeframe = 60

    def __init__(self, market: Market, bars: Bars, n: int) -> None:
        self.market, self.bars, self.n = market, bars, n

    async def markets(self) -> list[Market]:
        return [self.market]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        return self.bars.slice(0, len(self.bars) - self.n)

    async def stream(self, symbol: str) -> Any:
        await asyncio.Event().wait()
        yield None

    async def close(self) -> None:
        return None


class Side:
    """One service and the views its clients hold (page first), as the fan-out tracks them."""

    def __init__(self, svc: MarketService, split: bool) -> None:
        self.svc, self.split = svc, split
        self.views: list[list[Any]] = []  # [spec, last_bar, last_column]
        self.page_ms: list[float] = []
        self.total_ms: list[float] = []
        self.close_page_ms: list[float] = []

    def open(self, bins: int, columns: int, kept: int) -> None:
        spec = ViewSpec(self.svc.market.key, "1m", None, bins, columns)
        body = snapshot_body(self.svc, spec, keep=bins * columns <= HEAVY_CELLS)
        heat = body["heatmap"]
        fixed = replace(spec, price_low=heat["edges"][0], price_high=heat["edges"][-1])
        if kept > columns:  # the same grid, asked for with more columns: the kept set grows to that
            self.svc.heatmap("1m", bins=bins, price_low=fixed.price_low, price_high=fixed.price_high,
                             columns=kept, spread=True)
        self.views.append([fixed, body["candles"]["t"][-1], heat["times"][-1]])

    def update(self, realised: list[int], closing: bool) -> list[list[tuple[str, str]]]:
        """The messages of each view (in ``self.views`` order) for one update; timings recorded."""
        groups = ([[v for v in self.views if v[0].bins * v[0].columns <= HEAVY_CELLS],
                   [v for v in self.views if v[0].bins * v[0].columns > HEAVY_CELLS]]
                  if self.split else [self.views])
        sent: dict[int, list[tuple[str, str]]] = {}
        t0 = time.perf_counter()
        for n, group in enumerate(groups):
            specs = [(v[0], v[1], v[2], True, True) for v in group]
            for v, (msgs, last_bar, last_col, out) in zip(group, _view_deltas(self.svc, specs, True, realised, 0), strict=True):
                assert not out, "price left the view's range: pick another --seed"
                sent[id(v)] = msgs
                v[1], v[2] = max(v[1], last_bar), max(v[2], last_col)
            if n == 0:
                page = (time.perf_counter() - t0) * 1000
        self.total_ms.append((time.perf_counter() - t0) * 1000)
        (self.close_page_ms if closing else self.page_ms).append(page)
        return [sent[id(v)] for v in self.views]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def load(cls: type[MarketService], market: Market, bars: Bars, n: int) -> MarketService:
    svc = cls(Held(market, bars, n), market, ModelParams(), history_days=0)  # type: ignore[arg-type]
    await svc.load()
    return svc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--closes", type=int, default=30)
    parser.add_argument("--kept", type=int, default=2000, help="closed columns kept for the page's grid (>= 300)")
    parser.add_argument("--contend", action="store_true", help="batch-sized heatmaps in a thread meanwhile")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args([] if argv is None and __name__ != "__main__" else argv)
    demo = DemoFeed(seed=args.seed, history_days=30, now=1_760_000_000)
    market = asyncio.run(demo.markets())[0]
    bars = demo.history_now(market.symbol)
    n = args.closes

    async def both() -> tuple[MarketService, MarketService]:
        return await load(BeforeService, market, bars, n), await load(MarketService, market, bars, n)

    before_svc, after_svc = asyncio.run(both())
    before, after = Side(before_svc, split=False), Side(after_svc, split=True)
    for side in (before, after):
        side.open(*PAGE, kept=max(PAGE[1], args.kept))
        side.open(*BIG, kept=0)
    stop = threading.Event()
    heavy_done = [0]

    def heavy() -> None:  # on the "after" service: its caches are the ones a batch request would churn
        r = random.Random(0)
        while not stop.is_set():
            spec = ViewSpec(market.key, "1m", None, r.randrange(400, 1000), 1200)
            dumps(heatmap_view(after_svc, spec, keep=False))
            heavy_done[0] += 1

    thread = threading.Thread(target=heavy, daemon=True)
    if args.contend:
        thread.start()
    same = 0
    for j in range(len(bars) - n, len(bars)):
        bar = bars.slice(j, j + 1)
        for closed in (False, True):
            order = (before, after) if j % 2 else (after, before)  # alternate who goes first: shared noise
            out = {}
            for side in order:
                side.svc.ingest(BarUpdate(bar, closed=closed))
                out[id(side)] = side.update([int(bar.time[0])] if closed else [], closed)
            # the same bars, the same views: the same bytes to every client, before and after
            assert out[id(before)] == out[id(after)], "the deltas differ between before and after"
            same += 1
    stop.set()
    if args.contend:
        thread.join()
    load_avg = os.getloadavg()
    contention = f"batch heatmaps in a thread ({heavy_done[0]} done)" if args.contend else "none"
    print(f"{n} closes of the demo BTC market (30 days of 1m history); page grid keeps "
          f"{max(PAGE[1], args.kept)} closed columns; views: page {PAGE[0]}x{PAGE[1]}, batch-sized {BIG[0]}x{BIG[1]}; "
          f"contention: {contention}; "
          f"load average {load_avg[0]:.1f} {load_avg[1]:.1f} {load_avg[2]:.1f} (absolute ms are noisy; the ratio is the figure)")
    rows = [
        ("a candle's close: the page view's deltas ready", before.close_page_ms, after.close_page_ms),
        ("the next candle's first update (adds the closed column): the same", before.page_ms, after.page_ms),
        ("a whole update, every view (close or forming)", before.total_ms, after.total_ms),
    ]
    print(f"{'':<66} {'before p50/p90 ms':>18} {'after p50/p90 ms':>18}  p50 ratio")
    for name, b, a in rows:
        print(f"{name:<66} {pct(b, 50):>8.1f} {pct(b, 90):>8.1f}  {pct(a, 50):>8.1f} {pct(a, 90):>8.1f}   "
              f"{pct(b, 50) / max(1e-9, pct(a, 50)):.1f}x")
    print(f"deltas identical before and after: {same} of {same} updates (every message of every view)")
    print("closed-column bytes kept (own accounting): before "
          f"{before_svc.cache_stats()['closed_columns']['bytes'] / 2**20:.1f} MB, after "
          f"{after_svc.cache_stats()['closed_columns']['bytes'] / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
