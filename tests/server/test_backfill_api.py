"""While a market's older history is still backfilling, every answer says so (issue 14: nothing shows a
half-loaded history as if it were complete); when it lands, the same request answers from all of it."""

from __future__ import annotations

import asyncio

from history_feeds import RealBarsFeed, real_bars

from engine.service import Hub
from server.app import create_app
from server.config import ServerConfig


async def test_answers_say_backfilling_until_the_whole_history_is_in(aiohttp_client, shared_data):
    feed = RealBarsFeed(real_bars(shared_data), 60 * 288, hold=True)  # the older history waits for the test
    hub = Hub(feed, history_days=30)
    await hub.start()
    try:
        client = await aiohttp_client(create_app(hub, ServerConfig()))
        query = {"symbol": "BTC", "timeframe": "1d", "columns": "60", "encoding": "json"}
        r = await client.get("/api/v1/heatmap", params=query)
        assert r.status == 200
        early = await r.json()
        assert early["history"]["phase"] == "recent" and early["history"]["wanted_days"] == 30
        assert early["columns"] <= 3  # two days of daily columns, not thirty
        health = await (await client.get("/api/v1/health")).json()
        assert health["markets"][0]["history"]["phase"] == "recent"

        assert feed.hold is not None
        feed.hold.set()
        svc = hub.get("BTC")
        await asyncio.wait_for(svc.complete.wait(), 60)
        for _ in range(100):  # the cached answer is replaced once the market's generation moves on
            late = await (await client.get("/api/v1/heatmap", params=query)).json()
            if late["history"]["phase"] == "complete":
                break
            await asyncio.sleep(0.05)
        assert late["history"]["phase"] == "complete" and late["columns"] >= 30
        health = await (await client.get("/api/v1/health")).json()
        assert health["markets"][0]["history"]["phase"] == "complete"
    finally:
        await hub.stop()
