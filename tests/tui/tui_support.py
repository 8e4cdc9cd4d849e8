"""Shared by the dashboard tests: the scripted feed and polling helpers.

Dashboard tests run the real app (Textual's headless driver, a real tmux terminal, a real SSH session)
on the real engine service over a scripted feed the test drives bar by bar: synthetic history from a
fixed seed, then exactly the live events the test pushes. Nothing depends on the wall clock."""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.feeds.base import BarUpdate, FeedEvent, Health, HealthChange, Liquidation, Market
from engine.model import Bars
from engine.model.synthetic import synthetic_bars

N_HISTORY = 3 * 1440  # three days of 1m bars
N_FUTURE = 600
START = 1_767_225_600  # 2026-01-01 00:00 UTC: every test sees the same candles
FIXED_NOW = float(START + N_HISTORY * 60 + 30)


class ScriptedFeed:
    """A Feed the test controls. ``push_*`` queue live events; nothing happens until the test says so."""

    timeframe = 60

    def __init__(self, exchange: str = "test", seed: int = 7) -> None:
        self.exchange = exchange
        self.bars: dict[str, Bars] = {
            "BTC/USDT:USDT": synthetic_bars(N_HISTORY + N_FUTURE, seed=seed, start=START, price=90_000.0),
            "ETH/USDT:USDT": synthetic_bars(N_HISTORY + N_FUTURE, seed=seed + 1, start=START, price=3_000.0),
        }
        self.next = {sym: N_HISTORY for sym in self.bars}
        self.queues: dict[str, asyncio.Queue[FeedEvent]] = {}
        self.closed = False

    async def markets(self) -> list[Market]:
        return [Market(self.exchange, sym, sym.split("/")[0]) for sym in self.bars]

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        return self.bars[symbol].slice(0, N_HISTORY)

    def _queue(self, symbol: str) -> asyncio.Queue[FeedEvent]:
        return self.queues.setdefault(symbol, asyncio.Queue())

    async def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        queue = self._queue(symbol)
        while True:
            yield await queue.get()

    async def close(self) -> None:
        self.closed = True

    # ---- driving it ----
    def push_forming(self, symbol: str = "BTC/USDT:USDT", frac: float = 0.5) -> Bars:
        j = self.next[symbol]
        bar = self.bars[symbol].slice(j, j + 1)
        c = bar.open + (bar.close - bar.open) * frac
        part = bar.with_columns(close=c, high=np.maximum(bar.open, c), low=np.minimum(bar.open, c))
        self._queue(symbol).put_nowait(BarUpdate(part, closed=False))
        return part

    def push_close(self, symbol: str = "BTC/USDT:USDT") -> Bars:
        j = self.next[symbol]
        bar = self.bars[symbol].slice(j, j + 1)
        self.next[symbol] = j + 1
        self._queue(symbol).put_nowait(BarUpdate(bar, closed=True))
        return bar

    def push_liquidation(self, symbol: str = "BTC/USDT:USDT", side: str = "long", usd: float = 2.5e6) -> None:
        j = self.next[symbol]
        bar = self.bars[symbol].slice(j, j + 1)
        price = float(bar.low[0] if side == "long" else bar.high[0])
        self._queue(symbol).put_nowait(
            Liquidation(int(bar.time[0]) * 1000 + 500, self.exchange, symbol, side, price, usd / price, usd)
        )

    def push_health(self, state: Health, reason: str = "", symbol: str = "BTC/USDT:USDT") -> None:
        self._queue(symbol).put_nowait(HealthChange(state, reason))


class FailingFeed(ScriptedFeed):
    """An exchange that cannot be reached (no network in tests)."""

    async def markets(self) -> list[Market]:
        raise ConnectionError("exchange unreachable (no network)")


async def wait_for(pilot: Any, condition: Callable[[], bool], seconds: float = 10.0, what: str = "") -> None:
    """Poll the app (never sleep a fixed time and hope)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)


async def loaded(pilot: Any, seconds: float = 20.0) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.backdrop is not None and app.pulse is not None and app.frames > 0, seconds,
                   "the first full frame")
    await pilot.pause()


def liqheat_script() -> Path:
    """The venv's ``liqheat`` console script: next to the interpreter running the tests (not resolved
    through symlinks, which would leave the venv)."""
    return Path(sys.executable).parent / "liqheat"


class Tmux:
    """A private tmux server (``tmux -L name``) running one command in a real pty of a given size."""

    def __init__(self, name: str, width: int = 120, height: int = 40) -> None:
        self.name = name
        self.width = width
        self.height = height

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", *args], capture_output=True, text=True,
                              check=check, timeout=20)

    def start(self, command: str, env: dict[str, str] | None = None) -> None:
        # Textual draws on stderr: the command's stderr must stay on the pane (no 2> redirection).
        # COLUMNS/LINES (set by some pytest plugins) would override the pty's size for the app
        env_prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        self._run("new-session", "-d", "-x", str(self.width), "-y", str(self.height),
                  f"env -u COLUMNS -u LINES {env_prefix} {command}")
        self._run("set-option", "-g", "remain-on-exit", "on", check=False)

    def capture(self, escapes: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", "0"] + (["-e"] if escapes else [])
        return self._run(*args).stdout

    def send(self, *keys: str) -> None:
        self._run("send-keys", "-t", "0", *keys)

    def wait_for(self, predicate: Callable[[str], bool], seconds: float = 60.0, what: str = "",
                 escapes: bool = False) -> str:
        end = time.monotonic() + seconds
        text = ""
        while time.monotonic() < end:
            text = self.capture(escapes)
            if predicate(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the pane shows:\n{text}")

    def kill(self) -> None:
        self._run("kill-server", check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_file(path: Path, seconds: float = 30.0) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not written")
