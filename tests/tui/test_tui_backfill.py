"""The map appears from the recent days while the rest of the history is still on its way (issue 14: "the
map takes 4.2-5.1 s to appear — show the recent days first, backfill the rest"). Measured in market work,
not wall clock: the older history is held back by the feed, so the map with its USD legend can only be on
the screen if it came from the recent-window pass; the header says BACKFILLING until the rest is in,
then the map redraws over the whole history."""

from __future__ import annotations

from history_feeds import RealBarsFeed, real_bars
from tui_support import loaded, wait_for

from engine.service import RECENT_DAYS

SIZE = (120, 40)


def header(app) -> str:
    return app.query_one("#header").plain


async def test_map_shows_from_the_recent_days_and_redraws_when_the_backfill_lands(shared_data):
    from tui.app import make_app
    from tui.source import LocalSource

    bars = real_bars(shared_data)
    feed = RealBarsFeed(bars, 60 * 288, hold=True)  # the backfill waits until the test lets it through
    app = make_app(source=LocalSource(feed, None, history_days=30), timeframe="1d", colors="truecolor",
                   clock=feed.now, paused=False)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, seconds=60)
        legend = app.query_one("#legend").plain
        assert "/cell" in legend, legend  # the USD scale of the map
        assert "BACKFILLING 2.0/30d" in header(app)
        assert len(app.backdrop.times) <= RECENT_DAYS + 1  # daily columns of the recent window only
        reloads = app.reloads

        assert feed.hold is not None
        feed.hold.set()
        await wait_for(pilot, lambda: "BACKFILLING" not in header(app) and app.reloads > reloads
                       and len(app.backdrop.times) >= 29, 60, "the map redrawn over the whole history")
        assert "/cell" in app.query_one("#legend").plain


async def test_connected_dashboard_follows_the_servers_backfill(shared_data):
    """``--connect``: the server answers from its recent days and says so; when its backfill lands it
    resyncs the chart and the dashboard redraws over the whole history."""
    from aiohttp.test_utils import TestServer
    from tui_support import free_port

    from engine.service import Hub
    from server.app import create_app
    from tui.app import make_app

    bars = real_bars(shared_data)
    feed = RealBarsFeed(bars, 60 * 288, hold=True)
    hub = Hub(feed, history_days=30)
    await hub.start()
    server = TestServer(create_app(hub), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        app = make_app(connect=f"http://127.0.0.1:{server.port}", timeframe="1d", colors="truecolor",
                       clock=feed.now)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, seconds=60)
            assert "/cell" in app.query_one("#legend").plain
            assert "BACKFILLING 2.0/30d" in header(app)
            assert len(app.backdrop.times) <= RECENT_DAYS + 1
            assert feed.hold is not None
            feed.hold.set()
            await wait_for(pilot, lambda: "BACKFILLING" not in header(app) and len(app.backdrop.times) >= 29, 60,
                           "the map redrawn over the server's whole history")
    finally:
        await server.close()
        await hub.stop()
