"""How estimated USD becomes colour (or glyphs) in a terminal that may have 16.7M, 256, 16 or no colours.

Every ramp colour is an exact xterm-256 colour-cube entry, so a 256-colour terminal (the usual case over
SSH: OpenSSH forwards ``TERM`` but not ``COLORTERM``) shows the same picture as a truecolor one instead of
neighbouring levels collapsing into one palette entry. With 16 colours or none the map switches to a glyph
ramp (`` ░▒▓█``), so intensity stays readable without colour at all.

Styles are built once per mode into lookup tables: building a Rich ``Style`` per cell costs ~20x a table
lookup (notes/textual.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rich.color import Color
from rich.style import Style

LEVELS = 16  # intensity levels 0..15 of the half-block map (0 = nothing)
PRICE = LEVELS  # pseudo-level for "the price was here" (the price path drawn over the map)


class ColorMode(StrEnum):
    TRUECOLOR = "truecolor"
    C256 = "256"
    C16 = "16"
    NONE = "none"

    @property
    def blocks(self) -> bool:
        """Half-block cells need a colour per half; with 16 colours or none, glyphs carry intensity."""
        return self in (ColorMode.TRUECOLOR, ColorMode.C256)


def _cube(n: int) -> Color:
    """xterm-256 colour ``n`` as an RGB triplet (downgrades back to exactly ``n`` at 256 colours)."""
    if n >= 232:
        v = 8 + 10 * (n - 232)
        return Color.from_rgb(v, v, v)
    n -= 16
    steps = (0, 95, 135, 175, 215, 255)
    return Color.from_rgb(steps[n // 36], steps[(n // 6) % 6], steps[n % 6])


# Dark background, then indigo -> magenta -> orange -> pale yellow: the heat ramp traders know from
# the commercial heatmaps, along the 256-colour cube so every level stays distinct at 256 colours.
MAP_BACKGROUND = 233
HEAT_RAMP_256 = (MAP_BACKGROUND, 17, 18, 54, 55, 91, 127, 163, 162, 197, 202, 208, 214, 220, 226, 229)
PRICE_256 = 231  # white: the price path

# Leverage tiers in the profile (low leverage cool, high leverage hot), cycling if a ladder is longer.
TIER_256 = (39, 42, 220, 208, 197, 171, 45, 118)
TIER_16 = ("blue", "green", "yellow", "magenta", "red", "cyan", "bright_blue", "bright_green")
TIER_GLYPHS = ("█", "▓", "▒", "░", "#", "=", "+", ":")

GLYPH_RAMP = " ░▒▓█"
GLYPH_16 = ("default", "blue", "magenta", "yellow", "bright_yellow")
PRICE_GLYPH = "•"

SIDE_COLOR = {"long": "red", "short": "green"}  # a long liquidation is a forced sell


def glyph_level(level: int) -> int:
    """0..15 -> 0..4 for the glyph ramp (any non-zero level shows at least ``░``)."""
    return 0 if level <= 0 else 1 + (level - 1) * 4 // (LEVELS - 1)


@dataclass(frozen=True)
class Palette:
    """Everything a widget needs to draw in one colour mode, built once."""

    mode: ColorMode
    # cell code -> (text, style); code = upper * (LEVELS + 1) + lower for half-blocks,
    # or the glyph-ramp index (plus PRICE) in glyph mode
    cells: tuple[tuple[str, Style], ...]
    tier_styles: tuple[Style, ...]
    tier_glyphs: tuple[str, ...]
    axis: Style
    price_marker: Style
    dim: Style
    side: dict[str, Style]

    @property
    def codes(self) -> int:
        return len(self.cells)

    def swatch(self, level: int) -> tuple[str, Style]:
        """A one-cell legend sample for an intensity level."""
        if self.mode.blocks:
            return self.cells[level * (LEVELS + 1) + level]
        return self.cells[glyph_level(level)]

    def tier_style(self, i: int) -> Style:
        return self.tier_styles[i % len(self.tier_styles)]

    def tier_glyph(self, i: int) -> str:
        return self.tier_glyphs[i % len(self.tier_glyphs)]


def _half_block_cells() -> tuple[tuple[str, Style], ...]:
    colors = [_cube(n) for n in HEAT_RAMP_256] + [_cube(PRICE_256)]
    cells = []
    for up in range(LEVELS + 1):
        for lo in range(LEVELS + 1):
            if up == lo:
                # equal halves: a space on the background colour is fewer bytes than ▀ with two colours
                cells.append((" ", Style(bgcolor=colors[lo])))
            else:
                cells.append(("▀", Style(color=colors[up], bgcolor=colors[lo])))
    return tuple(cells)


def _glyph_cells(mode: ColorMode) -> tuple[tuple[str, Style], ...]:
    cells = []
    for g, ch in enumerate(GLYPH_RAMP):
        cells.append((ch, Style(color=GLYPH_16[g]) if mode is ColorMode.C16 else Style()))
    cells.append((PRICE_GLYPH, Style(color="bright_white", bold=True) if mode is ColorMode.C16 else Style(bold=True)))
    return tuple(cells)


_CACHE: dict[ColorMode, Palette] = {}


def palette(mode: ColorMode) -> Palette:
    if mode in _CACHE:
        return _CACHE[mode]
    if mode.blocks:
        cells = _half_block_cells()
        tiers = tuple(Style(color=_cube(n)) for n in TIER_256)
        side = {"long": Style(color=_cube(203)), "short": Style(color=_cube(77))}
        marker = Style(color=_cube(16), bgcolor=_cube(PRICE_256), bold=True)
    else:
        cells = _glyph_cells(mode)
        colored = mode is ColorMode.C16
        tiers = tuple(Style(color=c) if colored else Style() for c in TIER_16)
        side = {k: Style(color=v) if colored else Style() for k, v in SIDE_COLOR.items()}
        marker = Style(reverse=True, bold=True)
    pal = Palette(
        mode=mode,
        cells=cells,
        tier_styles=tiers,
        tier_glyphs=TIER_GLYPHS if mode is ColorMode.NONE else ("█",) * len(TIER_GLYPHS),
        axis=Style(dim=mode is not ColorMode.NONE),
        price_marker=marker,
        dim=Style(dim=True),
        side=side,
    )
    _CACHE[mode] = pal
    return pal


def mode_for(color_system: str | None, no_color: bool) -> ColorMode:
    """The map's mode from what Textual/Rich decided for the terminal."""
    if no_color or color_system is None:
        return ColorMode.NONE
    if color_system == "truecolor":
        return ColorMode.TRUECOLOR
    if color_system == "256":
        return ColorMode.C256
    return ColorMode.C16
