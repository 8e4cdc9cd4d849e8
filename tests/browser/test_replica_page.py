"""The chart page served by a cluster replica (``liqheat serve --bus``) in a real headless Chromium, offline:
a ``liqheat worker`` owns the demo market and publishes its views to a real redis-server; the replica serves
the page, forwards its REST calls to the worker and its WebSocket views from the bus. What the user sees is
the same as from the one-process server: the heatmap drawn under the candles, and live candles arriving."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_servers import free_port
from scale.cluster import replica, worker
from test_chart_page import READY, SCREENSHOTS, pane_pixels

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


@pytest.fixture
def replica_url(redis_server, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = free_port()
    procs = [worker(redis_server.url, tmp_path).start(), replica(redis_server.url, port, tmp_path, "replica").start()]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _health(base).get("status") != "ok":
            if time.monotonic() > deadline or any(p.p is not None and p.p.poll() is not None for p in procs):
                raise AssertionError("the cluster did not come up:\n" + "\n".join(p.tail() for p in procs))
            time.sleep(0.2)
        yield base
    finally:
        for p in procs:
            p.stop()


def _health(base: str) -> dict:
    try:
        with urllib.request.urlopen(base + "/api/v1/health", timeout=5) as r:  # loopback only
            return dict(json.loads(r.read()))
    except OSError:
        return {}


def test_the_chart_page_through_a_replica_draws_the_heatmap_and_goes_live(replica_url, offline):
    page = offline.page()
    page.goto(replica_url + "/?timeframe=5m")
    page.wait_for_function(READY, timeout=60_000)
    stats = page.evaluate("window.liqheat.heat.stats")
    assert stats["transport"] == "websocket" and stats["imageBuilds"] >= 1
    px = pane_pixels(page)
    assert px["changed"] > 0.05 * px["total"], px  # the overlay covers a good part of the pane
    assert px["probe"] is not None, "no visible heatmap cell"
    legend = page.inner_text(".liqheat-legend")
    assert "Estimated" in legend and "$" in legend
    assert page.locator("#zones tbody tr").count() >= 1  # REST, answered by the worker through the replica
    before = page.evaluate("({d: window.liqheat.heat.stats.deltas, t: window.liqheat.candles.data().at(-1).time})")
    # at 60x a 5m candle opens every 5 s on the worker: it reaches the page through Redis and the replica
    page.wait_for_function(f"() => window.liqheat.candles.data().at(-1).time > {before['t']}"
                           f" && window.liqheat.heat.stats.deltas > {before['d']}", timeout=60_000)
    stats = page.evaluate("window.liqheat.heat.stats")
    assert stats["gaps"] == 0 and stats["lastSeq"] > 0
    assert page.evaluate("window.liqheat.heat.times.at(-1)") == page.evaluate("window.liqheat.candles.data().at(-1).time")
    h = _health(replica_url)
    assert h["role"] == "replica" and h["live"]["connections"] >= 1 and h["live"]["forwarded"] > 0, h["live"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chart-replica.png"))
    assert offline.blocked == [], f"the page tried to leave the machine: {offline.blocked}"
    assert offline.errors == [], offline.errors
