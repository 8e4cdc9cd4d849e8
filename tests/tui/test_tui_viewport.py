"""The arithmetic between the engine's numbers and terminal cells, and the colour tables (no Textual app)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.color import ColorSystem

from tui.palette import HEAT_RAMP_256, LEVELS, PRICE, ColorMode, glyph_level, mode_for, palette
from tui.viewport import (
    cell_codes,
    choose_window,
    colour_scale,
    fmt_duration,
    fmt_price,
    fmt_usd,
    level_floor_usd,
    levels,
    price_bins,
    row_of_price,
    row_sums,
    time_axis,
)


@settings(max_examples=200, deadline=None)
@given(
    price=st.floats(0.001, 2e6),
    spread=st.floats(0.0, 0.3),
    zoom=st.sampled_from([1 / 8, 1 / 1.5, 1.0, 1.5, 2.25, 64.0]),
    pan=st.sampled_from([-1.0, -0.25, 0.0, 0.25, 1.0]),
)
def test_window_holds_the_price_when_not_panned(price, spread, zoom, pan):
    low = np.array([price * (1 - spread)])
    high = np.array([price * (1 + spread / 2)])
    w = choose_window(low, high, price, zoom, pan)
    assert 0 < w.low < w.high
    if pan == 0:
        assert w.low <= price <= w.high
        if zoom == 1.0 and spread > 0.01:
            assert w.low <= low[0] and w.high >= high[0]  # the traded range fits at zoom 1


def test_window_is_stable_while_the_price_wiggles_and_moves_with_zoom_and_pan():
    low, high = np.array([59_000.0]), np.array([61_500.0])
    base = choose_window(low, high, 60_000.0)
    assert choose_window(low, high, 60_040.0) == base  # round numbers: small moves keep the bins
    zoomed = choose_window(low, high, 60_000.0, zoom=1.5)
    assert zoomed.high - zoomed.low < base.high - base.low
    up = choose_window(low, high, 60_000.0, pan=0.25)
    assert up.low > base.low and up.high - up.low == pytest.approx(base.high - base.low)


def test_levels_use_a_square_root_scale_and_keep_small_amounts_visible():
    scale = 1e6
    usd = np.array([0.0, 1.0, 0.25e6, 1e6, 5e6])
    lv = levels(usd, scale)
    assert lv.tolist()[0] == 0 and lv[1] == 1  # $1 is not nothing
    assert lv[2] == int(np.ceil(0.5 * (LEVELS - 1)))  # a quarter of the scale is half the ramp
    assert lv[3] == lv[4] == LEVELS - 1
    assert np.all(np.diff(lv) >= 0)
    for level in range(2, LEVELS):  # the legend's lower bounds are where the colours really change
        floor = level_floor_usd(level, scale)
        assert levels(np.array([floor * 1.0001]), scale)[0] == level
        assert levels(np.array([floor * 0.9999]), scale)[0] == level - 1


def test_colour_scale_is_a_round_number_above_almost_everything():
    rng = np.random.default_rng(1)
    usd = rng.lognormal(12, 1.5, 5000)
    usd[0] = 1e12  # one outlier does not wash the map out
    s = colour_scale(usd)
    assert s < 1e11 and np.mean(usd <= s) > 0.99
    mant = s / 10 ** np.floor(np.log10(s))
    assert round(mant, 6) in (1.0, 2.0, 2.5, 5.0)


def test_cell_codes_put_high_prices_on_top_and_draw_the_price_path():
    # 2 columns, 4 bins (2 rows): bin b holds level b+1 in column 0
    lv = np.array([[1, 2, 3, 4], [0, 0, 0, 9]], dtype=np.uint8)
    codes = cell_codes(lv, np.array([-1, 0]), blocks=True)
    assert codes.shape == (2, 2)
    k = LEVELS + 1
    assert codes[0, 0] == 4 * k + 3  # top row: upper half bin 3, lower half bin 2
    assert codes[1, 0] == 2 * k + 1
    assert codes[0, 1] == 9 * k + 0
    assert codes[1, 1] == 0 * k + PRICE  # the price sat in bin 0 of column 1: the lower half of the bottom row
    glyphs = cell_codes(lv, np.array([-1, 0]), blocks=False)
    assert glyphs[0, 0] == glyph_level(4) and glyphs[1, 1] == 5


def test_rows_and_prices_agree():
    edges = np.linspace(100.0, 108.0, 9)  # 8 bins, 4 rows, each row 2.0 wide
    assert row_of_price(107.5, edges) == 0
    assert row_of_price(100.1, edges) == 3
    assert row_of_price(99.0, edges) is None
    assert price_bins(np.array([100.0, 107.99, 108.0, np.nan]), edges).tolist() == [0, 7, -1, -1]
    vals = np.arange(8.0)
    assert row_sums(vals).tolist() == [13.0, 9.0, 5.0, 1.0]


def test_time_axis_labels_sit_on_round_times_and_shift_with_their_columns():
    t0 = 1_767_225_600  # midnight
    times = t0 + 300 * np.arange(60)
    axis = time_axis(times, 300, 60)
    assert "Jan 01" in axis and axis.index("Jan 01") == 0  # midnight shows the date
    later = time_axis(times + 300, 300, 60)  # one candle later every label moves one cell left
    assert later.index("01:00") == axis.index("01:00") - 1
    assert "Jan 01" not in later  # it would not fit at the left edge any more
    assert len(axis) == len(later) == 60


def test_hourly_labels_read_as_times_and_dates_not_two_numbers():
    t0 = 1_767_225_600 - 12 * 3600  # Dec 31 12:00
    axis = time_axis(t0 + 3600 * np.arange(100), 3600, 100)
    words = axis.split()
    assert "12:00" in words and "Jan" in words and "01" in words  # "12:00" and "Jan 01", not "31 12h"
    assert not any(w.endswith("h") for w in words)
    daily = time_axis(t0 + 12 * 3600 + 86_400 * np.arange(60), 86_400, 60)
    assert "Jan" in daily or "Feb" in daily


def test_words_for_numbers():
    assert fmt_usd(1_234_567) == "$1.23M"
    assert fmt_usd(950) == "$950"
    assert fmt_usd(2.5e9, digits=2) == "$2.5B"
    assert fmt_usd(None) == "—"
    assert fmt_price(97_806.14) == "97,806.1" and fmt_price(0.16234) == "0.162340"
    assert fmt_duration(3 * 3600 + 61) == "3h01m" and fmt_duration(59) == "0m59s"


def test_heat_ramp_survives_256_colours_exactly():
    pal = palette(ColorMode.C256)
    seen = []
    for level in range(LEVELS):
        _, style = pal.cells[level * (LEVELS + 1) + level]
        number = style.bgcolor.downgrade(ColorSystem.EIGHT_BIT).number
        seen.append(number)
    assert seen == list(HEAT_RAMP_256)
    assert len(set(seen)) == LEVELS  # no two levels collapse into one palette entry


def test_glyph_modes_carry_intensity_without_colour():
    plain = palette(ColorMode.NONE)
    assert [c[0] for c in plain.cells[:5]] == list(" ░▒▓█")
    assert all(c[1].color is None and c[1].bgcolor is None for c in plain.cells)
    sixteen = palette(ColorMode.C16)
    assert all(c[1].color is None or c[1].color.is_default or c[1].color.number < 16 for c in sixteen.cells)
    assert [glyph_level(v) for v in (0, 1, 5, 10, 15)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("system", "no_color", "mode"), [
    ("truecolor", False, ColorMode.TRUECOLOR), ("256", False, ColorMode.C256), ("standard", False, ColorMode.C16),
    ("windows", False, ColorMode.C16), (None, False, ColorMode.NONE), ("truecolor", True, ColorMode.NONE),
])
def test_mode_follows_the_terminal(system, no_color, mode):
    assert mode_for(system, no_color) is mode
