"""Browser tests drive the real server (``liqheat serve`` on the demo market, fast) in Debian's chromium
through Playwright, with every request that is not loopback blocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LIQHEAT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = REPO / "artifacts" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes] | None, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(base + "/api/v1/health", timeout=2) as r:  # loopback only
                body = json.loads(r.read())
                if body.get("markets"):
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"server at {base} did not become healthy: {last}")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A running liqheat server: ``LIQHEAT_BROWSER_URL`` if set (debugging), else ``liqheat serve`` on
    the demo market at 60x on a free loopback port."""
    given = os.environ.get("LIQHEAT_BROWSER_URL")
    if given:
        wait_healthy(given.rstrip("/"), None)
        yield given.rstrip("/")
        return
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (make system-deps)")
    vendor = REPO / "server" / "static" / "vendor" / "lightweight-charts.standalone.production.js"
    if not vendor.exists():
        pytest.fail("the chart library is not installed: run `python -m server.assets` (make assets)")
    port = free_port()
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--feed", "demo", "--speed", "60", "--port", str(port),
           "--history-days", "7"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:  # else a ResourceWarning (an error under -W error) lands on a later test
            proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Module scope, not session: sync Playwright runs an event loop in this thread while it is open,
    # which would stop the asyncio tests of other folders from running their own.
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM} (make system-deps)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Offline:
    """A browser context that refuses every request leaving the machine and remembers them."""

    def __init__(self, browser: object) -> None:
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1400, "height": 820}, device_scale_factor=1)  # type: ignore[attr-defined]
        self.context.route("**/*", self._route)

    def _route(self, route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        host = urlparse(url).hostname or ""
        if url.startswith("data:") or host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()  # type: ignore[attr-defined]
        else:
            self.blocked.append(url)
            route.abort()  # type: ignore[attr-defined]

    def page(self) -> object:
        page = self.context.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        return page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: object) -> Iterator[Offline]:
    ctx = Offline(browser)
    yield ctx
    ctx.close()


@pytest.fixture
def own_server() -> Iterator[dict]:
    """A server of this test's own, on a fixed port (the test may stop and start it again), with one day
    of demo history (so the 5x tier's levels, ~19% from price, are outside the chart's price range)."""
    port = free_port()
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--feed", "demo", "--speed", "60", "--port", str(port),
           "--history-days", "1"]
    box: dict = {"url": f"http://127.0.0.1:{port}", "proc": None}

    def start() -> None:
        box["proc"] = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(box["url"], box["proc"])

    def stop() -> None:
        proc = box["proc"]
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    box["start"], box["stop"] = start, stop
    start()
    try:
        yield box
    finally:
        stop()
