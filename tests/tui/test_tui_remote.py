"""``liqheat tui --connect``: the dashboard on a real ``liqheat serve`` app (aiohttp, loopback) over its
WebSocket protocol and REST API, with the server's engine on the scripted feed."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from tui_support import N_HISTORY, ScriptedFeed, free_port, loaded, wait_for

from engine.service import Hub
from server.app import create_app
from tui.app import make_app
from tui.remote import RemoteError, base_url, decode_grid, rebin

SIZE = (120, 40)


def header(app) -> str:
    return app.query_one("#header").plain


@pytest.fixture
async def served(feed: ScriptedFeed):
    """A running server on a free loopback port; ``restart()`` brings it back on the same port."""
    hub = Hub(feed, history_days=0)
    await hub.start()
    port = free_port()

    class Served:
        server: TestServer | None = None
        url = f"http://127.0.0.1:{port}"

        async def start(self) -> None:
            self.server = TestServer(create_app(hub), host="127.0.0.1", port=port)
            await self.server.start_server()

        async def stop(self) -> None:
            if self.server is not None:
                await self.server.close()
                self.server = None

    s = Served()
    await s.start()
    yield s
    await s.stop()
    await hub.stop()


def test_url_forms():
    assert base_url("127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert base_url("ws://127.0.0.1:8000/api/v1/ws") == "http://127.0.0.1:8000"
    assert base_url("https://example.org/") == "https://example.org"
    with pytest.raises(RemoteError):
        base_url("ftp://x")


def test_sqrt_u8_decoding_gives_absolute_usd():
    levels = np.array([[0, 255], [128, 1]], dtype=np.uint8)
    payload = {"encoding": "sqrt-u8", "max_usd": 4e6, "long": base64.b64encode(levels.tobytes()).decode()}
    usd = decode_grid(payload, "long", (2, 2))
    assert usd[0, 0] == 0 and usd[0, 1] == pytest.approx(4e6)
    assert usd[1, 0] == pytest.approx(4e6 * (128 / 255) ** 2)


def test_rebin_keeps_the_usd_that_falls_inside():
    src = np.array([100.0, 110.0, 120.0, 130.0])
    vals = np.array([[10.0, 1.0], [20.0, 2.0], [30.0, 3.0]])
    out = rebin(src, vals, np.array([100.0, 105.0, 130.0]))
    assert out.shape == (2, 2)
    assert out.sum(axis=0) == pytest.approx(vals.sum(axis=0))
    assert out[0] == pytest.approx([5.0, 0.5])
    part = rebin(src, vals, np.array([115.0, 125.0]))
    assert part[0] == pytest.approx([10.0 + 15.0, 1.0 + 1.5])


async def test_connect_shows_the_servers_market_and_follows_it(served, feed):
    app = make_app(connect=served.url, colors="truecolor", clock=lambda: 0.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        text = header(app)
        assert "test:BTC/USDT:USDT" in text and "ESTIMATED" in text and "(server)" in text
        last = float(feed.bars["BTC/USDT:USDT"].close[N_HISTORY - 1])
        assert f"{last:,.1f}" in text
        bd = app.backdrop
        assert bd.window.low < last < bd.window.high
        assert len(bd.edges) - 1 == 2 * app.map.size.height
        assert bd.usd.sum() > 0 and app.query_one("#zones").row_count > 0
        # live deltas reach the live column and the header
        frames = app.frames
        part = feed.push_forming(frac=0.9)
        await wait_for(pilot, lambda: app.pulse is not None and app.pulse.price == pytest.approx(float(part.close[0])),
                       what="the forming bar's price")
        assert app.frames > frames
        # one tier at a time over the wire: switching asks the server again
        r = app.reloads
        await pilot.press("l", "l", "l")
        await wait_for(pilot, lambda: app.reloads > r and app.backdrop.data_tier == 2, what="the 25x view")
        assert "25x only" in header(app)
        r = app.reloads
        await pilot.press("b")  # straight to 50x with its own key: the server is asked for that tier
        await wait_for(pilot, lambda: app.reloads > r and app.backdrop.data_tier == 3, what="the 50x view")
        assert "50x only" in header(app)
        await pilot.press("3")
        await wait_for(pilot, lambda: app.backdrop.view.timeframe == "1h", what="1h from the server")
        assert set(np.diff(app.backdrop.times).tolist()) == {3600}


async def test_connect_survives_a_server_restart(served, feed):
    app = make_app(connect=served.url, colors="truecolor")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        picture = list(app.map.keys)
        await served.stop()
        await wait_for(pilot, lambda: "RECONNECTING" in header(app), seconds=15, what="the reconnecting badge")
        assert list(app.map.keys) == picture  # the last map stays on screen
        await served.start()
        await wait_for(pilot, lambda: "RECONNECTING" not in header(app), seconds=30, what="reconnected")
        frames = app.frames
        feed.push_forming(frac=0.3)
        await wait_for(pilot, lambda: app.frames > frames, seconds=15, what="live frames after the restart")


async def test_connect_to_nothing_says_so(make_tui):
    app = make_app(connect=f"http://127.0.0.1:{free_port()}", colors="truecolor", connect_wait=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "could not start" in app.loading, seconds=15, what="the error")
        assert "could not start" in app.map.message


async def test_connect_before_the_server_is_up_retries_until_it_is(feed):
    """`liqheat tui --connect` started before `liqheat serve`: it waits (saying so) and then connects,
    as it does after a lost connection."""
    hub = Hub(feed, history_days=0)
    await hub.start()
    port = free_port()
    server = TestServer(create_app(hub), host="127.0.0.1", port=port)
    app = make_app(connect=f"http://127.0.0.1:{port}", colors="truecolor", connect_wait=60.0)
    try:
        async with app.run_test(size=SIZE) as pilot:
            try:
                await wait_for(pilot, lambda: "waiting for" in app.loading and "attempt 2" in app.loading, seconds=30,
                               what="the retry note")
            except AssertionError:
                raise AssertionError(f"no retry note; the app says {app.loading!r} / {app.error!r}") from None
            assert "waiting for" in header(app)
            await server.start_server()
            await loaded(pilot, seconds=60)
            assert "BTC/USDT:USDT" in header(app)
    finally:
        await server.close()
        await hub.stop()


async def test_reconnect_raises_no_false_alert(served, feed):
    app = make_app(connect=served.url, colors="truecolor")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for _ in range(2):
            await served.stop()
            await wait_for(pilot, lambda: "RECONNECTING" in header(app), seconds=15, what="reconnecting")
            await served.start()
            await wait_for(pilot, lambda: "RECONNECTING" not in header(app) and app.source._sub.seq >= 0,
                           seconds=30, what="reconnected and resubscribed")
        await pilot.pause(1.0)
        messages = [a.message for a in app.source.alerts()]
        assert not [m for m in messages if "no subscription" in m], messages
        assert "no subscription" not in app.query_one("#alerts").plain


async def test_connect_reads_touch_probabilities_and_risk_from_the_server(served, feed):
    """With --connect the touch column and the risk form's probability line come from the server's
    engine (they were "—" and missing when the remote dashboard tried to recompute them)."""
    import aiohttp

    from tui.screens import RiskScreen

    app = make_app(connect=served.url, colors="truecolor", clock=lambda: 0.0)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one("#zones")
        await wait_for(pilot, lambda: table.row_count > 0 and app.ranked_zones, what="the zones table")
        assert str(table.columns[list(table.columns)[5]].label) == "touch 4h"
        cells = [str(table.get_row_at(i)[5]) for i in range(table.row_count)]
        assert cells and all(c.endswith("%") for c in cells), cells
        async with aiohttp.ClientSession() as http:
            async with http.get(served.url + "/api/v1/zones", params={"symbol": "BTC"}) as r:
                body = await r.json()
        top = body["zones"][0]
        first = app.ranked_zones[0]
        assert (first.zone.price_low, first.zone.price_high) == (top["price_low"], top["price_high"])
        assert cells[0] == f"{top['touch_4h'] * 100:.0f}%"
        await pilot.press("r")
        assert isinstance(app.screen, RiskScreen)
        app.screen.query_one("#entry").value = f"{app.pulse.price:.1f}"
        app.screen.query_one("#leverage").value = "20"
        await pilot.click("#go")
        await wait_for(pilot, lambda: "liquidation price" in str(app.screen.query_one("#result").render()),
                       what="the risk answer")
        result = str(app.screen.query_one("#result").render())
        assert "chance price reaches it: 1h " in result and "4h " in result and "24h " in result


async def test_connect_has_sessions_risk_weighted_view_and_portfolio(served, feed, tmp_path, monkeypatch):
    """The panels that come from the engine's analytics work the same with --connect (from the API)."""
    from tui.profile import Profile
    from tui.screens import RiskScreen, SessionsScreen

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    app = make_app(connect=served.url, colors="truecolor")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        assert isinstance(app.screen, SessionsScreen)
        panel = app.screen.query_one("#sessions")
        await wait_for(pilot, lambda: "Funding" in str(panel.render()), what="sessions from the server")
        assert all(s in str(panel.render()) for s in ("Asia", "Europe", "US"))
        await pilot.press("escape")
        await pilot.press("w")
        await wait_for(pilot, lambda: app._risk_profile is not None and "×P4h" in app.query_one("#profile-scale").plain,
                       seconds=20, what="the server's risk-weighted map")
        assert float(app.query_one(Profile).row_usd.sum()) > 0
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RiskScreen)
        screen.query_one("#entry").value = f"{app.pulse.price:.1f}"
        await pilot.click("#add")
        await wait_for(pilot, lambda: "inside elevated/high zones" in str(screen.query_one("#portfolio").render()),
                       seconds=20, what="the server's portfolio check")
        assert " liq " in str(screen.query_one("#portfolio").render())


async def test_connect_reads_a_cell_and_filters_one_side(served, feed):
    app = make_app(connect=served.url, colors="truecolor")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("left", "left")
        bd = app.backdrop
        assert bd.longs is not None and app.cursor[0] == 1  # the first arrow starts reading at the live column
        text = app.query_one("#legend").plain
        assert text.startswith("▸ ") and "longs $" in text and "shorts $" in text
        await pilot.press("escape", "f")
        assert "longs only" in header(app)
        assert np.allclose(bd.grid(app.tier, "long") + bd.grid(app.tier, "short"), bd.grid(app.tier))
