"""Whole-screen snapshots (SVG) of the dashboard on fixed data: the scripted feed's seeded history, a fixed
clock, paused. Update them after an intended change with ``pytest tests/tui --snapshot-update`` and look at
the diff report before committing. SVG is always truecolor: 256/16-colour output is checked in
test_tui_terminal.py instead."""

from __future__ import annotations

import pytest
from tui_support import loaded, wait_for


async def _ready(pilot) -> None:
    await loaded(pilot)
    app = pilot.app
    await wait_for(pilot, lambda: app.query_one("#zones").row_count > 0, what="the zones table")
    await pilot.pause()


def test_dashboard_120x40(make_tui, snap_compare):
    assert snap_compare(make_tui(paused=True), terminal_size=(120, 40), run_before=_ready)


def test_dashboard_80x24(make_tui, snap_compare):
    assert snap_compare(make_tui(paused=True), terminal_size=(80, 24), run_before=_ready)


def test_dashboard_one_tier_1h(make_tui, snap_compare):
    async def run_before(pilot) -> None:
        await _ready(pilot)
        app = pilot.app
        r = app.reloads
        await pilot.press("3", "l", "l", "l")
        await wait_for(pilot, lambda: app.reloads > r and app.backdrop.view.timeframe == "1h", what="1h")
        await pilot.pause()

    assert snap_compare(make_tui(paused=True), terminal_size=(120, 40), run_before=run_before)


@pytest.mark.parametrize("colors", ["16", "none"])
def test_dashboard_glyph_modes(make_tui, snap_compare, colors):
    assert snap_compare(make_tui(paused=True, colors=colors), terminal_size=(100, 30), run_before=_ready)


def test_help_screen(make_tui, snap_compare):
    async def run_before(pilot) -> None:
        await _ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_tui(paused=True), terminal_size=(100, 40), run_before=run_before)
