"""The chart page when the server is busy (issue 11): it says so and retries by itself when the server's
``Retry-After`` says, in real headless Chromium against a real ``liqheat serve``. The busy state is real:
batch-sized heatmap requests from the same address fill that address's share of the heavy lane, so the
page's batch-sized view (2,000 columns x 400 bins) is refused with ``retry_after``."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.browser

SNAPPED = "() => window.liqheat && window.liqheat.heat && window.liqheat.heat.stats.snapshots > 0"


def heavy_lane(base: str) -> dict:
    with urllib.request.urlopen(base + "/api/v1/health", timeout=10) as r:  # loopback only
        return json.loads(r.read())["memory"]["lanes"]["heavy"]


def flood(base: str, stop: threading.Event, worker: int) -> None:
    """Distinct batch-sized heatmaps (nothing cached to hit), back to back, until told to stop."""
    n = 0
    while not stop.is_set():
        n += 1
        bins = 500 + (worker * 997 + n) % 500
        url = f"{base}/api/v1/heatmap?symbol=BTC&timeframe=1m&columns=2000&bins={bins}"
        try:
            with urllib.request.urlopen(url, timeout=60) as r:  # loopback only
                r.read()
        except urllib.error.HTTPError as exc:  # 429: this address has its share waiting; ask again
            with exc:  # its body is an open response: close it (ResourceWarning otherwise)
                exc.read()
        except OSError:
            return


def test_a_busy_server_makes_the_page_wait_and_retry_by_itself(own_server, offline):
    base = own_server["url"]
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(base, stop, w), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    try:
        page = offline.page()
        for _ in range(200):  # the heavy lane holds this address's two requests
            if heavy_lane(base)["admitted"] >= 2:
                break
            page.wait_for_timeout(50)
        # 600,000 s of 5m candles: 2,000 columns x the page's 400 bins, a batch-sized view
        page.goto(base + "/?timeframe=5m&range=600000")
        page.wait_for_function("() => window.liqheat && window.liqheat.heat && window.liqheat.heat.stats.busy > 0",
                               timeout=30_000)
        assert page.evaluate("window.liqheat.heat.stats.snapshots") == 0
        assert page.evaluate("window.liqheat.heat.status").startswith("busy: retrying in")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    # nobody reloads the page: it asks again after Retry-After and gets its chart over the socket
    page.wait_for_function(SNAPPED, timeout=60_000)
    assert page.evaluate("window.liqheat.heat.stats.transport") == "websocket"
    assert page.evaluate("window.liqheat.heat.options().columns") == 2000
    deltas = page.evaluate("window.liqheat.heat.stats.deltas")
    page.wait_for_function(f"() => window.liqheat.heat.stats.deltas > {deltas}", timeout=30_000)
    assert not page.evaluate("window.liqheat.heat.status").startswith(("busy", "error"))
    assert offline.blocked == [] and offline.errors == [], offline.errors
