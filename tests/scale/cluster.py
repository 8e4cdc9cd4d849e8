"""Helpers for the cluster tests: real ``liqheat worker`` / ``liqheat serve`` processes on loopback, and a
WebSocket client that follows the protocol the way the page does (snapshot, deltas in seq order, resync)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
DEMO = ["--feed", "demo", "--seed", "7", "--speed", "60", "--history-days", "1", "--symbols", "BTC"]


class Proc:
    """A liqheat process; its output goes to a log file the assertion messages quote."""

    def __init__(self, name: str, args: list[str], logdir: Path) -> None:
        self.name, self.args, self.log = name, args, logdir / f"{name}.log"
        self.p: subprocess.Popen[bytes] | None = None
        self.killed = False  # by the test, on purpose

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen([sys.executable, "-m", "engine.cli", *self.args], cwd=REPO,
                                      stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        return self

    def kill(self) -> None:
        self.killed = True
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)

    def stop(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def signal(self, sig: int) -> None:
        assert self.p is not None
        self.p.send_signal(sig)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def worker(bus: str, logdir: Path, name: str = "worker", extra: list[str] | None = None) -> Proc:
    return Proc(name, ["worker", "--bus", bus, *DEMO, *(extra or [])], logdir)


def replica(bus: str, port: int, logdir: Path, name: str) -> Proc:
    return Proc(name, ["serve", "--bus", bus, "--port", str(port)], logdir)


def single(port: int, logdir: Path) -> Proc:
    return Proc("single", ["serve", *DEMO, "--port", str(port)], logdir)


async def health(port: int) -> dict[str, Any] | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/api/v1/health",
                                                       timeout=aiohttp.ClientTimeout(total=3)) as r:
            return await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def wait_healthy(port: int, procs: list[Proc], timeout: float = 90.0) -> dict[str, Any]:  # noqa: ASYNC109 - a deadline, not a cancel scope
    deadline = time.monotonic() + timeout
    while True:
        h = await health(port)
        if h and h.get("status") == "ok":
            return h
        for p in procs:
            if p.p is not None and not p.killed and p.p.poll() is not None:
                raise AssertionError(f"{p.name} exited ({p.p.returncode}):\n{p.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} not healthy: {h}\n" + "\n".join(p.tail() for p in procs))
        await asyncio.sleep(0.2)


@dataclass
class Client:
    """One chart: subscribes to BTC 1m and keeps what a page keeps (candles by time), per the protocol."""

    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    candles: dict[int, dict[str, Any]] = field(default_factory=dict)
    last_seq: int | None = None
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    gaps: int = 0
    resyncs: int = 0
    closed: bool = False
    ws: Any = None
    _session: Any = None
    _task: Any = None

    async def connect(self, port: int | None = None) -> None:
        if port is not None:
            self.port = port
        self._session = aiohttp.ClientSession()
        self.ws = await self._session.ws_connect(f"http://127.0.0.1:{self.port}/api/v1/ws")
        self.closed = False
        self.last_seq = None
        await self.ws.send_json({"op": "subscribe", "id": "m", "symbol": "BTC", "timeframe": "1m", "bins": 40, "columns": 30})
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                m = json.loads(msg.data)
                m["_at"] = time.monotonic()
                self.messages.append(m)
                self._apply(m)
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed = True

    def _apply(self, m: dict[str, Any]) -> None:
        kind = m["type"]
        if kind == "snapshot":
            self.snapshots.append(m)
            self.last_seq = m["seq"]
            c = m["candles"]
            self.candles = {t: {"open": o, "high": h, "low": lo, "close": cl}
                            for t, o, h, lo, cl in zip(c["t"], c["o"], c["h"], c["l"], c["c"], strict=True)}
        elif kind == "resync":
            self.resyncs += 1
            self.last_seq = None
        elif "seq" in m and self.last_seq is not None:
            if m["seq"] != self.last_seq + 1:
                self.gaps += 1
                self.last_seq = None
                asyncio.ensure_future(self.ws.send_json({"op": "resync", "sub": "m"}))
                return
            self.last_seq = m["seq"]
            if kind == "bar":
                self.candles[m["time"]] = {k: m[k] for k in ("open", "high", "low", "close")}

    def deltas(self) -> list[tuple[str, str]]:
        """(type, body without routing fields) of every delta, in order."""
        out = []
        for m in self.messages:
            if "seq" in m and m["type"] != "snapshot":
                body = {k: v for k, v in m.items() if k not in ("sub", "seq", "_at")}
                out.append((m["type"], json.dumps(body, sort_keys=True)))
        return out

    def closed_bars(self) -> dict[int, dict[str, Any]]:
        return {m["time"]: {k: m[k] for k in ("open", "high", "low", "close", "volume")}
                for m in self.messages if m["type"] == "bar" and m.get("closed")}

    def closed_history(self) -> dict[int, tuple[float, float, float, float]]:
        """Every closed candle the client was shown: its snapshots' (all but the forming last) and the
        closed `bar` deltas, as (open, high, low, close)."""
        out: dict[int, tuple[float, float, float, float]] = {}
        for m in self.messages:
            if m["type"] == "snapshot":
                c = m["candles"]
                for i in range(len(c["t"]) - 1):
                    out[c["t"][i]] = (c["o"][i], c["h"][i], c["l"][i], c["c"][i])
            elif m["type"] == "bar" and m.get("closed"):
                out[m["time"]] = (m["open"], m["high"], m["low"], m["close"])
        return out

    def count(self, kind: str) -> int:
        return sum(1 for m in self.messages if m["type"] == kind)

    async def wait_for(self, pred: Any, timeout: float = 20.0, what: str = "condition") -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                kinds: dict[str, int] = {}
                for m in self.messages:
                    kinds[m["type"]] = kinds.get(m["type"], 0) + 1
                raise AssertionError(f"timed out waiting for {what}; got {kinds}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
