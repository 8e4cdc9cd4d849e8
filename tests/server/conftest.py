"""Server tests run the real engine service (Hub) over a scripted feed the test drives bar by bar, and
the real app through aiohttp's test client on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from engine.feeds.base import BarUpdate, FeedEvent, Liquidation, Market
from engine.model import Bars
from engine.model.synthetic import synthetic_bars
from engine.service import Hub
from server.app import create_app
from server.config import ServerConfig

N_HISTORY = 2400  # 40 hours of 1m bars
N_FUTURE = 600


class ScriptedFeed:
    """A Feed the test controls: synthetic history, then exactly the live events the test pushes."""

    exchange = "test"
    timeframe = 60

    def __init__(self, coins: tuple[str, ...] = ("BTC", "ETH"), seed: int = 3) -> None:
        self.coins = coins
        self.bars: dict[str, Bars] = {}
        for i, coin in enumerate(coins):
            price = 60_000.0 if coin == "BTC" else 3_000.0
            self.bars[f"{coin}/USDT:USDT"] = synthetic_bars(N_HISTORY + N_FUTURE, seed=seed + i, price=price)
        self.next = {sym: N_HISTORY for sym in self.bars}
        self.queues: dict[str, asyncio.Queue[FeedEvent]] = {sym: asyncio.Queue() for sym in self.bars}
        self.closed = False

    async def markets(self) -> list[Market]:
        return [Market("test", sym, sym.split("/")[0]) for sym in self.bars]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        return self.bars[symbol].slice(0, N_HISTORY)

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        queue = self.queues[symbol]
        while True:
            yield await queue.get()

    async def close(self) -> None:
        self.closed = True

    # ---- driving it ----
    def bar(self, symbol: str = "BTC/USDT:USDT") -> Bars:
        j = self.next[symbol]
        return self.bars[symbol].slice(j, j + 1)

    def push_forming(self, symbol: str = "BTC/USDT:USDT") -> Bars:
        """The next bar, still forming (close halfway)."""
        bar = self.bar(symbol)
        mid = (bar.open + bar.close) / 2
        forming = bar.with_columns(close=mid, high=np.maximum(bar.open, mid), low=np.minimum(bar.open, mid))
        self.queues[symbol].put_nowait(BarUpdate(forming, closed=False))
        return forming

    def push_close(self, symbol: str = "BTC/USDT:USDT") -> Bars:
        bar = self.bar(symbol)
        self.queues[symbol].put_nowait(BarUpdate(bar, closed=True))
        self.next[symbol] += 1
        return bar

    def push_liquidation(self, symbol: str = "BTC/USDT:USDT", side: str = "long", usd: float = 250_000.0) -> None:
        bar = self.bar(symbol)
        price = float(bar.low[0])
        self.queues[symbol].put_nowait(
            Liquidation(int(bar.time[0]) * 1000 + 500, "test", symbol, side, price, usd / price, usd)
        )


@pytest.fixture
async def feed() -> ScriptedFeed:
    return ScriptedFeed()


@pytest.fixture
async def hub(feed: ScriptedFeed) -> AsyncIterator[Hub]:
    h = Hub(feed, history_days=0)
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(heartbeat_s=0.5, queue_size=64, map_interval_s=0.0)


@pytest.fixture
async def client(aiohttp_client, hub: Hub, config: ServerConfig):  # type: ignore[no-untyped-def]
    app = create_app(hub, config)
    return await aiohttp_client(app)


@pytest.fixture
def wait_for():  # type: ignore[no-untyped-def]
    return _wait_for


async def _wait_for(predicate, within: float = 5.0, step: float = 0.01) -> None:  # type: ignore[no-untyped-def]
    """Poll instead of sleeping a fixed time."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling a plain predicate on purpose
            await asyncio.sleep(step)


class ThreadedServer:
    """The real app on a loopback port, in its own thread and event loop (for synchronous clients such as
    schemathesis' requests session)."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="liqheat-test-server", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(60) or self.error is not None:
            raise RuntimeError(f"test server did not start: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to the test through __enter__
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        hub = Hub(ScriptedFeed(), history_days=0)
        await hub.start()
        runner = web.AppRunner(create_app(hub, self.config))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await hub.stop()


@pytest.fixture(scope="module")
def threaded_server():  # type: ignore[no-untyped-def]
    with ThreadedServer() as server:
        yield server
