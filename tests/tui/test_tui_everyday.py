"""Everyday defects a new user met (issue 14), each pressed and read as that user would: the status line
on a narrow terminal, a terminal too small, the zoom label, the risk form's empty field, the 16-colour
legend, Ctrl+C, the zones table's order, reading one cell, one side only, a time range."""

from __future__ import annotations

import numpy as np
import pytest
from rich.text import Text
from textual.widgets import DataTable
from tui_support import loaded, wait_for

from engine.model import Zone
from tui.palette import ColorMode, glyph_level, palette
from tui.panels import ZoneRow, ZonesTable
from tui.screens import RiskScreen

SIZE = (120, 40)


def header(app) -> str:
    return app.query_one("#header").plain


def legend(app) -> str:
    return app.query_one("#legend").plain


async def test_status_line_stays_on_a_narrow_terminal(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=(70, 24)) as pilot:
        await loaded(pilot)
        lines = header(app).splitlines()
        assert len(lines) == 2
        # the first line is cut at the edge instead of wrapping over the status line
        assert "ESTIMATED" in lines[1] and "5m · all tiers" in lines[1]


async def test_too_small_terminal_says_so(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause(0.2)
        note = app.query_one("#too-small")
        assert note.display and "terminal too small" in note.plain and "40×10" in note.plain
        assert not app.query_one("#header").display
        await pilot.resize_terminal(*SIZE)
        await loaded(pilot)
        assert not app.query_one("#too-small").display
        assert app.query_one("#header").display and "ESTIMATED" in header(app)


async def test_zoom_label_is_short(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("minus")
        await wait_for(pilot, lambda: "zoom" in header(app), what="the zoom label")
        assert "zoom 0.67x" in header(app) and "0.666" not in header(app)
        await pilot.press("plus", "plus", "plus")
        await wait_for(pilot, lambda: "zoom 2.25x" in header(app), what="zoom 2.25x")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("#leverage", "", "leverage: enter a number"),
    ("#entry", "abc", "entry: 'abc' is not a number"),
    ("#size", "-5", "size USD: must be a positive number"),
])
async def test_risk_form_says_which_field_is_wrong_in_one_line(make_tui, field, value, message):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        assert isinstance(app.screen, RiskScreen)
        box = app.screen.query_one(field)
        box.value = value
        box.focus()
        await pilot.press("enter")
        shown = str(app.screen.query_one("#result").render())
        assert shown == message
        assert "could not convert" not in shown and "\n" not in shown


async def test_16_colour_legend_gives_each_glyph_one_amount(make_tui):
    app = make_tui(paused=True, colors="16")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        text = legend(app)
        glyphs = [ch for ch in text if ch in "░▒▓█"][:8]  # the swatches (tier glyphs follow)
        swatches = glyphs[::2]
        assert swatches == ["░", "▒", "▓", "█"], text  # ">0" and the next amount no longer share "░"
        pal = palette(ColorMode.C16)
        assert [pal.swatch(lv)[0] for lv in (1, 5, 9, 13)] == swatches
        assert glyph_level(4) == glyph_level(1)  # what used to be shown twice


async def test_ctrl_c_quits(make_tui, feed):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: app.return_code is not None, what="exit")
    assert app.return_code == 0
    assert feed.closed


def _zone(side: str, low: float, usd: float) -> Zone:
    return Zone(side, low, low + 100, low + 50, usd, "elevated", 0.01, 90.0, (low - 90_000) / 900, (usd,))


async def test_zones_table_keeps_its_order_while_sizes_wobble(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(ZonesTable)

        def show(a: float, b: float, c: float) -> list[str]:
            rows = [ZoneRow(z, z.usd) for z in (_zone("long", 88_000, a), _zone("short", 92_000, b),
                                                _zone("short", 95_000, c))]
            table.show_zones(table.arrange(rows))
            return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]

        first = show(100e6, 95e6, 50e6)
        assert first[0].startswith("88,000")
        # the two leaders swap sizes by a few percent (and the ranges drift a little): no reordering
        assert show(95e6, 100e6, 50e6) == first
        assert show(98e6, 110e6, 52e6)[:2] == first[:2]
        # a clear overtake (more than 25% stronger) does move it up
        moved = show(90e6, 130e6, 50e6)
        assert moved[0].startswith("92,000")


async def test_zones_sorted_by_distance_and_one_side_only(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: app.query_one(ZonesTable).row_count > 2, what="zones")
        await pilot.press("o")
        assert "zones by distance" in header(app)
        await pilot.pause(0.1)
        table = app.query_one(DataTable)
        dist = [abs(float(str(table.get_row_at(i)[4]).rstrip("%"))) for i in range(table.row_count)]
        assert dist == sorted(dist)
        await pilot.press("f")
        assert "longs only" in header(app)
        await pilot.pause(0.1)
        sides = {str(table.get_row_at(i)[0]).split()[0] for i in range(table.row_count)}
        assert sides <= {"long", "none"}
        # the map shows the longs only: every cell above the price is empty of shorts
        bd = app.backdrop
        assert np.allclose(app.backdrop.grid(app.tier, "long"), bd.longs.sum(axis=2))
        await pilot.press("f")
        assert "shorts only" in header(app)
        await pilot.press("f", "o")
        assert "only" not in header(app) and "zones by" not in header(app)


async def test_reading_a_cell_gives_its_price_band_time_and_usd_by_side(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("i")
        assert app.cursor is not None and app.cursor[0] == 0
        assert "live (forming candle)" in legend(app)
        await pilot.press("left", "left", "left")
        assert app.cursor[0] == 3
        bd = app.backdrop
        x, y = app.cursor
        i = len(bd.times) - x
        rows = (len(bd.edges) - 1) // 2
        b0 = 2 * (rows - 1 - y)
        longs = bd.longs[i, b0:b0 + 2].sum()
        shorts = (bd.usd - bd.longs)[i, b0:b0 + 2].sum()
        text = legend(app)
        assert text.startswith("▸ ")
        from tui.viewport import fmt_price, fmt_usd, time_label_full

        assert f"{fmt_price(bd.edges[b0])}–{fmt_price(bd.edges[b0 + 2])}" in text
        assert time_label_full(int(bd.times[i])) in text
        assert f"longs {fmt_usd(longs)}" in text and f"shorts {fmt_usd(shorts)}" in text
        # the cursor is drawn on that cell of the map
        strip = app.map.render_line(y)
        assert "╋" in "".join(seg.text for seg in strip)
        await pilot.press("up")
        assert app.cursor[1] == y - 1
        await pilot.press("escape")
        assert app.cursor is None and "/cell" in legend(app)
        # a click reads the clicked cell
        await pilot.click("#map", offset=(app.map.size.width - 5, 4))
        assert app.cursor == (5, 4) and legend(app).startswith("▸ ")


async def test_range_key_picks_a_timeframe_that_fits_the_range(make_tui):
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: "range 12h" in header(app), what="12h range")
        want = "5m" if app.map.size.width * 300 >= 12 * 3600 else "15m"
        await wait_for(pilot, lambda: app.backdrop.view.timeframe == want, what=f"{want} for 12h")
        assert app.backdrop.view.columns <= 12 * 3600 // {"5m": 300, "15m": 900}[want] + 1
        await pilot.press("g", "g")
        await wait_for(pilot, lambda: "range 3d" in header(app), what="3d range")
        await wait_for(pilot, lambda: app.backdrop.view.timeframe == app.timeframe, what="reload")
        tf = {"5m": 300, "15m": 900, "1h": 3600}[app.timeframe]
        assert app.map.size.width * tf >= 3 * 86_400
        assert app.backdrop.view.columns <= 3 * 86_400 // tf + 1
        await pilot.press("3")
        assert "range" not in header(app)


def test_zone_rows_from_plain_zones_keep_touch_by_index():
    from tui.app import zone_rows

    rows = zone_rows([_zone("long", 88_000, 5e6), _zone("short", 92_000, 7e6)], {1: 0.4})
    assert [r.touch for r in rows] == [None, 0.4] and rows[1].score == 7e6
    assert isinstance(Text("x"), Text)


async def test_help_documents_every_key_and_the_accuracy(make_tui):
    from tui.screens import HelpScreen

    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("Static").render())
    for words in ("i, ← → or click", "read a cell", "time range", "longs only, shorts only", "nearest the price",
                  "ctrl+c", "accuracy:", "maintenance margin", "risk-weighted", "sessions (Asia", "portfolio"):
        assert words in text, words


def test_readme_documents_the_new_keys():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    tui = readme.split("<!-- section:tui -->")[1].split("<!-- /section:tui -->")[0]
    for key in ("`g` time range", "`i`", "`f` longs only", "`o` zones", "`ctrl+c`", "terminal too small", "--wait",
                "`w` risk-weighted", "`t` sessions", "positions.json", "limit (default 10%)"):
        assert key in tui, key


async def test_risk_form_keeps_a_portfolio_and_checks_its_exposure(make_tui, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RiskScreen)
        await wait_for(pilot, lambda: "no saved positions" in str(screen.query_one("#portfolio").render()),
                       what="the empty-portfolio hint")
        price = app.pulse.price
        for side, entry, lev, size in (("long", price, 20, 5000), ("short", price * 1.01, 10, 3000)):
            screen.query_one("#side").value = side
            screen.query_one("#entry").value = f"{entry:.1f}"
            screen.query_one("#leverage").value = str(lev)
            screen.query_one("#size").value = str(size)
            await pilot.click("#add")
            await pilot.pause(0.2)
        saved = json.loads((tmp_path / "liqheat" / "positions.json").read_text())
        assert [p["side"] for p in saved["positions"]] == ["long", "short"]
        assert saved["positions"][0]["symbol"] == app.source.market
        await wait_for(pilot, lambda: "inside elevated/high zones" in str(screen.query_one("#portfolio").render()),
                       what="the exposure line")
        text = str(screen.query_one("#portfolio").render())
        assert text.count(" liq ") == 2 and "limit 10%" in text
        # a new position in the form gets a suggested size under the limit
        screen.query_one("#limit").value = "5"
        screen.query_one("#size").value = "20000"
        await pilot.click("#go")
        await wait_for(pilot, lambda: "suggested size" in str(screen.query_one("#portfolio").render()),
                       what="the suggestion")
        assert "limit 5%" in str(screen.query_one("#portfolio").render())
        await pilot.click("#remove")
        await pilot.pause(0.2)
        assert len(json.loads((tmp_path / "liqheat" / "positions.json").read_text())["positions"]) == 1
        assert json.loads((tmp_path / "liqheat" / "positions.json").read_text())["limit_share"] == 0.05
        await pilot.press("escape")
    # a new session reads them back
    from tui.positions import PositionStore

    store = PositionStore()
    assert len(store.positions) == 1 and store.limit_share == 0.05


def test_a_damaged_positions_file_loses_only_the_bad_entries(tmp_path):
    from tui.positions import PositionStore

    path = tmp_path / "positions.json"
    path.write_text('{"positions": [{"symbol": "BTC", "side": "long", "entry": 1, "leverage": 5, "size": 100},'
                    ' {"side": "sideways"}, 7], "limit_share": 9}')
    store = PositionStore(path)
    assert [p.symbol for p in store.positions] == ["BTC"] and store.limit_share == 0.10
    path.write_text("{not json")
    assert PositionStore(path).positions == [] and PositionStore(path).error


async def test_sessions_and_funding_cycle_panel(make_tui):
    from tui.screens import SessionsScreen

    app = make_tui(paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        assert isinstance(app.screen, SessionsScreen)
        panel = app.screen.query_one("#sessions")
        await wait_for(pilot, lambda: "Funding" in str(panel.render()), what="the sessions panel")
        text = str(panel.render())
        body = await app.source.sessions()
        for row in body["sessions"]:
            assert row["session"] in text and row["hours_utc"] in text
        assert f"next in {body['funding']['hhmmss']}" in text
        assert text.count(" cycles)") == len(body["funding_cycle"]["mean_usd"])
        assert f"▶ {body['current_session']}" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, SessionsScreen)


async def test_risk_weighted_view_weights_the_map_by_touch_probability(make_tui):
    from tui.profile import Profile

    app = make_tui(paused=False)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        raw = float(app.query_one(Profile).row_usd.sum())
        await pilot.press("w")
        assert "risk-weighted" in header(app)
        await wait_for(pilot, lambda: app._risk_profile is not None, seconds=20, what="the risk-weighted map")
        await wait_for(pilot, lambda: "×P4h" in app.query_one("#profile-scale").plain, what="the weighted profile")
        bd, longs, shorts = app._risk_profile
        # the engine's own risk-weighted map, on the map's bins
        lm = app.source.svc.analytics.risk_weighted_map(400, 0.25)
        assert float(np.asarray(lm.long_usd).sum() + np.asarray(lm.short_usd).sum()) > 0
        weighted = float(app.query_one(Profile).row_usd.sum())
        assert weighted == pytest.approx(float(longs.sum() + shorts.sum()), rel=1e-9)
        assert 0 < weighted < raw  # every bin times a probability below one
        await pilot.press("w")
        assert "risk-weighted" not in header(app)
        await wait_for(pilot, lambda: "/row" in app.query_one("#profile-scale").plain, what="plain USD again")


def test_alerts_read_in_short_dollars_and_signed_percentages():
    from tui.panels import alert_words
    from tui.source import alert_from

    zone = _zone("long", 88_000, 8_123_456.0).to_dict()
    near = alert_from({"rule": "proximity", "symbol": "demo:BTC/USDT:USDT", "time": 0, "price": 88_800.0,
                       "message": "demo:BTC/USDT:USDT 0.80% from a elevated long zone below (88,000.0-88,100.0, "
                                  "est. $8,123,456)", "zone": zone, "zone_id": 3, "distance_pct": 0.8})
    said = alert_words(near)
    assert said == "BTC/USDT -0.80% to an elevated long zone 88,000.0–88,100.0 ($8.12M est.)"
    assert "8,123,456" not in said
    cascade = alert_from({"rule": "cascade", "symbol": "BTC/USDT:USDT", "time": 0, "message": "x",
                          "direction": "down", "total_usd": 41_500_000.0, "move_pct": 3.4, "end_price": 85_000.0})
    assert alert_words(cascade) == "BTC/USDT cascade risk down: $41.5M est. liquidated, price to 85,000.0 (-3.40%)"
    bare = alert_from({"rule": "custom", "message": "something else"})
    assert alert_words(bare) == "something else"


async def test_risk_weighted_profile_gets_a_scale_of_its_own(make_tui):
    from tui.profile import Profile

    app = make_tui(paused=False)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        raw_scale = app.query_one(Profile).scale
        await pilot.press("w")
        await wait_for(pilot, lambda: app._risk_profile is not None and "×P4h" in app.query_one("#profile-scale").plain,
                       seconds=20, what="the weighted profile")
        prof = app.query_one(Profile)
        assert prof.scale < raw_scale  # the bars fill the column instead of sitting at the raw USD scale
        assert float(prof.row_usd.max()) > 0.25 * prof.scale
