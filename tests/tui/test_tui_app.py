"""The dashboard driven by keys (Textual's Pilot), on the real engine service over a scripted feed.

Each test presses what a user would press and checks what a user would see: the header's words, the
map's cells, the picker's result, how many rows a live update repaints."""

from __future__ import annotations

import numpy as np
import pytest
from tui_support import N_HISTORY, FailingFeed, ScriptedFeed, loaded, wait_for

from engine.feeds.base import Health
from tui.palette import ColorMode
from tui.screens import HelpScreen, PickerScreen, RiskScreen

SIZE = (120, 40)


def header(app) -> str:
    return app.query_one("#header").plain


def codes(app) -> list:
    return list(app.map.keys)


async def test_first_frame_shows_market_price_and_estimate_label(make_tui, feed):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        assert "LOADING" in header(app) or app.backdrop is not None
        await loaded(pilot)
        text = header(app)
        assert "test:BTC/USDT:USDT" in text
        assert "ESTIMATED" in text and "ladder default" in text
        last_close = float(feed.bars["BTC/USDT:USDT"].close[N_HISTORY - 1])
        assert f"{last_close:,.1f}" in text
        assert "OI $" in text and "fund +0.0100% in" in text
        # the map has one row per two price bins and its newest columns carry data
        bd = app.backdrop
        assert len(bd.edges) - 1 == 2 * app.map.size.height
        assert len(app.map.keys) == app.map.size.height
        assert bd.usd.sum() > 0
        table = app.query_one("#zones")
        await wait_for(pilot, lambda: table.row_count > 0, what="the zones table")
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[:5] == ["side", "price range", "est. USD", "grade", "dist"]
        assert labels[5] == "touch 4h"  # P(price touches the zone within 4h)
        cells = [str(table.get_row_at(i)[5]) for i in range(table.row_count)]
        assert all(c.endswith("%") for c in cells)
        legend = app.query_one("#legend").plain
        assert "USD/cell" in legend and "$" in legend and "5x" in legend and "100x" in legend


@pytest.mark.parametrize(("key", "tf"), [("1", "5m"), ("2", "15m"), ("3", "1h"), ("4", "4h"), ("5", "1d"), ("6", "1w")])
async def test_timeframe_keys_redraw_at_once(make_tui, key, tf):
    app = make_tui(paused=True, timeframe="1h" if tf == "5m" else "5m")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        before_axis = app.query_one("#time-axis").plain
        before = app.reloads
        await pilot.press(key)
        await wait_for(pilot, lambda: app.reloads > before and app.backdrop.view.timeframe == tf, what=f"{tf} redraw")
        assert f" {tf} · " in header(app)
        assert app.query_one("#time-axis").plain != before_axis
        if tf != "1w":  # three days of history (Thu-Sun): the weekly map is the live column (below)
            steps = np.diff(app.backdrop.times)
            seconds = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}[tf]
            assert len(steps) and set(steps.tolist()) == {seconds}


async def test_weekly_view_starts_on_monday_and_live_ticks_do_not_reload_it(make_tui, feed):
    """1w: the live column's week is the candles' week (Monday 00:00 UTC), so live ticks update the
    live column instead of reloading the history every tick (weeks used to start on Sunday here)."""
    import datetime as dt

    app = make_tui(paused=False, timeframe="1w")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        bd = app.backdrop
        monday = dt.datetime.fromtimestamp(bd.bucket, dt.UTC)
        assert (monday.weekday(), monday.hour, monday.minute) == (0, 0, 0)
        assert app.pulse.bucket == bd.bucket
        reloads, frames = app.reloads, app.frames
        for _ in range(3):
            feed.push_forming(frac=0.7)
            feed.push_close()
        await wait_for(pilot, lambda: app.frames > frames + 1, what="live frames on 1w")
        await pilot.pause(0.3)
        assert app.reloads == reloads  # no history reload per tick
        assert app.pulse.bucket == bd.bucket


async def test_tier_keys_cycle_all_then_each_ladder_tier(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        tiers = app.source.tiers
        assert tiers == ("5x", "10x", "25x", "50x", "100x")
        all_codes = codes(app)
        seen = []
        for _ in tiers:
            await pilot.press("l")
            seen.append(header(app).split(" · ")[1])
        assert seen == [f"{t} only" for t in tiers]
        assert codes(app) != all_codes  # 100x alone is a different picture
        await pilot.press("l")
        assert "all tiers" in header(app) and app.tier is None
        assert codes(app) == all_codes
        await pilot.press("L")
        assert "100x only" in header(app)
        await pilot.press("a")
        assert app.tier is None
        await pilot.press("L", "0")
        assert app.tier is None
        # tier switches are instant: no refetch of the history
        assert app.reloads == 1


def footer_keys(app) -> list[str]:
    """The keys the footer shows, left to right, skipping greyed ones."""
    from textual.widgets._footer import FooterKey

    return [k.key_display for k in app.screen.query(FooterKey) if not k.has_class("-disabled")]


@pytest.mark.parametrize(("key", "index", "label"),
                         [("z", 0, "5x"), ("x", 1, "10x"), ("v", 2, "25x"), ("b", 3, "50x"), ("n", 4, "100x")])
async def test_each_tier_has_its_own_key_and_redraws_at_once(make_tui, key, index, label):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert [k for k in footer_keys(app) if k in "azxvbnm"] == ["a", "z", "x", "v", "b", "n"]
        all_codes = codes(app)
        await pilot.press(key)
        assert app.tier == index
        assert f" · {label} only" in header(app)
        shown = codes(app)
        assert shown != all_codes  # the map shows that tier alone, without waiting for a tick
        # the same picture as reaching the tier by cycling, and no refetch of the history
        await pilot.press("a")
        assert app.tier is None and "all tiers" in header(app) and codes(app) == all_codes
        for _ in range(index + 1):
            await pilot.press("l")
        assert app.tier == index and codes(app) == shown
        assert app.reloads == 1


async def test_tier_keys_jump_between_tiers_and_follow_the_ladder(feed):
    """Direct keys go by position on the ladder in use; a key past its last tier does nothing."""
    from tui_support import FIXED_NOW

    from tui.app import make_app
    from tui.source import LocalSource

    app = make_app(source=LocalSource(feed, None, ladder="high", history_days=0), clock=lambda: FIXED_NOW,
                   colors="truecolor", paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.source.tiers == ("25x", "50x", "100x", "125x")
        await pilot.pause()
        assert [k for k in footer_keys(app) if k in "azxvbnm"] == ["a", "z", "x", "v", "b"]
        seen = {}
        for key, label in (("b", "125x"), ("z", "25x"), ("v", "100x"), ("x", "50x")):
            await pilot.press(key)
            assert f" · {label} only" in header(app), key
            seen[label] = codes(app)
        assert len({repr(c) for c in seen.values()}) == 4  # four tiers, four different maps
        await pilot.press("n", "m")  # no fifth or sixth tier here
        assert app.tier == 1 and "50x only" in header(app)
        await pilot.press("0")
        assert app.tier is None


async def test_zoom_pan_and_recentre_change_the_price_window(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        w0 = app.backdrop.window
        r = app.reloads
        await pilot.press("plus")
        await wait_for(pilot, lambda: app.reloads > r, what="zoom in")
        w1 = app.backdrop.window
        assert (w1.high - w1.low) < (w0.high - w0.low)
        assert "zoom 1.5x" in header(app)
        r = app.reloads
        await pilot.press("minus", "minus")
        await wait_for(pilot, lambda: app.reloads > r and app.zoom < 1, what="zoom out")
        await wait_for(pilot, lambda: app.backdrop.view.zoom == app.zoom, what="zoomed-out map")
        assert (app.backdrop.window.high - app.backdrop.window.low) > (w0.high - w0.low)
        await pilot.press("c")
        await wait_for(pilot, lambda: app.backdrop.view.zoom == 1.0 and app.backdrop.view.pan == 0, what="recentre")
        assert app.backdrop.window == w0
        await pilot.press("up")
        await wait_for(pilot, lambda: app.backdrop.view.pan > 0, what="pan up")
        assert app.backdrop.window.low > w0.low
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: app.backdrop.view.pan < 0, what="pan down")
        assert app.backdrop.window.high < w0.high
        axis = app.query_one("#axis")
        assert any(k[0] == "label" for k in axis.keys)


async def test_live_updates_repaint_only_the_live_column_until_a_candle_closes(make_tui, feed):
    app = make_tui()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        # history ends on a 5m boundary: the first live bar opens a new candle, so the axis shifts once
        feed.push_forming(frac=0.1)
        await wait_for(pilot, lambda: app.reloads == 2 and app.pulse.bucket == app.backdrop.bucket, what="new candle")
        hist = app.map
        hist_rows = hist.rows_repainted
        frames = app.frames
        reloads = app.reloads
        for i in range(3):
            feed.push_forming(frac=(i + 1) / 4)
            await wait_for(pilot, lambda n=frames + i + 1: app.frames >= n, what="a live frame")
        assert app.reloads == reloads
        assert hist.rows_repainted == hist_rows  # the wide history was not touched
        # a forming bar moves the price marker: the live column and axis follow the last price
        assert app.pulse.price == pytest.approx(float(feed.bars["BTC/USDT:USDT"].open[N_HISTORY]
                                                      + (feed.bars["BTC/USDT:USDT"].close[N_HISTORY]
                                                         - feed.bars["BTC/USDT:USDT"].open[N_HISTORY]) * 0.75))
        assert any(k[0] == "price" for k in app.query_one("#axis").keys)
        # close bars until a 5m candle closes: the time axis shifts and the history is redrawn
        bucket = app.backdrop.bucket
        for _ in range(5):
            feed.push_close()
        feed.push_forming()
        await wait_for(pilot, lambda: app.backdrop.bucket > bucket, what="the next 5m column")
        assert app.reloads > reloads
        assert hist.rows_repainted > hist_rows


async def test_pause_freezes_the_map_and_resume_catches_up(make_tui, feed):
    app = make_tui()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        assert "PAUSED" in header(app)
        frames = app.frames
        for _ in range(6):
            feed.push_close()
        await pilot.pause(0.8)
        assert app.frames == frames
        await pilot.press("space")
        assert "PAUSED" not in header(app)
        await wait_for(pilot, lambda: app.frames > frames, what="frames after resume")


async def test_help_screen_lists_every_key_and_the_model(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("Static").render())
        for words in ("timeframe 5m, 15m, 1h, 4h, 1d, 1w", "leverage tier", "z 5x · x 10x · v 25x · b 50x · n 100x",
                      "all leverage tiers", "symbol picker", "exchange picker",
                      "zoom", "pan", "pause", "quit", "ESTIMATE", "maintenance margin", "command palette"):
            assert words in text, words
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        assert not isinstance(app.screen, HelpScreen)


async def test_symbol_picker_switches_market(make_tui, feed):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("s")
        assert isinstance(app.screen, PickerScreen)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.source.market == "test:ETH/USDT:USDT" and app.backdrop is not None
                       and app.pulse is not None and app.pulse.price < 10_000, what="ETH map")
        assert "test:ETH/USDT:USDT" in header(app)
        eth_close = float(feed.bars["ETH/USDT:USDT"].close[N_HISTORY - 1])
        assert app.backdrop.window.low < eth_close < app.backdrop.window.high
        # escape leaves the market alone
        await pilot.press("s", "escape")
        assert app.source.market == "test:ETH/USDT:USDT"


async def test_exchange_picker_switches_feed_and_survives_an_unreachable_one(make_tui):
    other = ScriptedFeed("bybit", seed=21)
    app = make_tui(paused=True, feeds={"bybit": other, "okx": FailingFeed("okx")})
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        names = None
        await pilot.press("e")
        assert isinstance(app.screen, PickerScreen)
        names = app.screen.names
        assert names == ["demo", "binanceusdm", "bybit", "okx"]
        # okx cannot be reached: the error is shown, the test market stays on screen
        await pilot.press("down", "down", "down", "enter")
        await wait_for(pilot, lambda: "exchange unreachable" in app.error, what="the okx error")
        assert app.source.label == "test" and "test:BTC/USDT:USDT" in header(app)
        assert app.backdrop is not None
        await pilot.press("e", "down", "down", "enter")
        await wait_for(pilot, lambda: app.source.label == "bybit" and app.backdrop is not None
                       and app.backdrop.view.market.startswith("bybit:"), what="the bybit map")
        assert "bybit:BTC/USDT:USDT" in header(app)


async def test_dropped_feed_shows_health_and_keeps_the_map(make_tui, feed):
    app = make_tui()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        picture = codes(app)
        feed.push_health(Health.RECONNECTING, "socket dropped")
        await wait_for(pilot, lambda: "RECONNECTING" in header(app), what="the reconnecting badge")
        assert "socket dropped" in header(app)
        assert codes(app) == picture  # the last map stays
        await wait_for(pilot, lambda: "socket dropped" in app.query_one("#alerts").plain, what="the alert line")
        feed.push_close()
        await wait_for(pilot, lambda: "LIVE" in header(app), what="back to live")


async def test_feed_liquidations_are_listed(make_tui, feed):
    app = make_tui()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        feed.push_liquidation(side="short", usd=3.2e6)
        await wait_for(pilot, lambda: "$3.2M" in app.query_one("#liqs").plain, what="the liquidation")
        assert " S " in app.query_one("#liqs").plain


async def test_command_palette_has_the_same_actions(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        r = app.reloads
        await pilot.press("ctrl+p")
        await pilot.press(*"timeframe 4h")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.timeframe == "4h" and app.reloads > r, what="4h via the palette")
        await pilot.press("ctrl+p")
        await pilot.press(*"tier: 50x")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.tier == 3, what="50x via the palette")
        assert "50x only" in header(app)


async def test_risk_form_reports_liquidation_price(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        assert isinstance(app.screen, RiskScreen)
        price = app.pulse.price
        entry = app.screen.query_one("#entry")
        entry.value = f"{price:.1f}"
        app.screen.query_one("#leverage").value = "20"
        await pilot.click("#go")
        await wait_for(pilot, lambda: "liquidation price" in str(app.screen.query_one("#result").render()),
                       what="the risk answer")
        result = str(app.screen.query_one("#result").render())
        assert "chance price reaches it" in result
        expected = price * (1 - 1 / 20) / (1 - 0.004)  # Binance BTC first bracket: 0.4% maintenance margin
        shown = float(result.split("liquidation price ")[1].split()[0].replace(",", ""))
        assert shown == pytest.approx(expected, rel=2e-3)
        lev = app.screen.query_one("#leverage")
        lev.value = "500"
        lev.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: "between 1x and 200x" in str(app.screen.query_one("#result").render()),
                       what="the refusal")
        await pilot.press("escape")
        assert not isinstance(app.screen, RiskScreen)


async def test_quit_key_exits_cleanly(make_tui, feed):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="exit")
    assert app.return_code == 0
    assert feed.closed


async def test_usable_at_80x24(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        for sel in ("#map", "#live", "#axis", "#profile", "#zones", "#legend", "#alerts", "#header"):
            w = app.query_one(sel)
            assert w.size.width > 0 and w.size.height > 0, sel
        assert app.map.size.width >= 40 and app.map.size.height >= 8
        assert not app.query_one("#liqs").display  # the feed list gives way on narrow terminals
        assert app.query_one("#zones").size.height >= 3


async def test_resize_redraws_to_the_new_size(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        rows = app.backdrop.view.rows
        await pilot.resize_terminal(160, 50)
        await wait_for(pilot, lambda: app.backdrop.view.rows != rows and app.backdrop.view.columns == app.map.size.width + 1,
                       what="redraw at the new size")
        assert len(app.map.keys) == app.map.size.height
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: app.backdrop.view.columns == app.map.size.width + 1, what="redraw at 80x24")


@pytest.mark.parametrize(("colors", "mode"), [("truecolor", ColorMode.TRUECOLOR), ("256", ColorMode.C256),
                                               ("16", ColorMode.C16), ("none", ColorMode.NONE)])
async def test_colour_modes(make_tui, colors, mode):
    app = make_tui(paused=True, colors=colors)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.mode is mode
        assert app.console.color_system == {"truecolor": "truecolor", "256": "256", "16": "standard", "none": "truecolor"}[colors] or colors == "none"
        if mode in (ColorMode.C16, ColorMode.NONE):
            text = "".join(s.text for y in range(app.map.size.height) for s in app.map.render_line(y))
            assert set(text) <= set(" ░▒▓█•") and set(text) & set("░▒▓█")
        else:
            text = "".join(s.text for y in range(app.map.size.height) for s in app.map.render_line(y))
            assert "▀" in text
        assert app.no_color == (colors == "none")


async def test_no_color_env_switches_to_glyphs(make_tui, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_tui(paused=True, colors="auto")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.mode is ColorMode.NONE and app.no_color
        text = "".join(s.text for y in range(app.map.size.height) for s in app.map.render_line(y))
        assert "▀" not in text and set(text) & set("░▒▓█")
