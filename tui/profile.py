"""The liquidation map beside the zone map: the live book per price row, stacked by leverage tier, on an
absolute USD scale. Long liquidation levels sit below the price, short ones above it."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from .palette import ColorMode, Palette, palette
from .rows import RowWidget, merged_strip
from .viewport import nice_ceiling, row_sums

EIGHTHS = " ▏▎▍▌▋▊▉"


class Profile(RowWidget):
    DEFAULT_CSS = """
    Profile { width: 24; height: 1fr; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.pal: Palette = palette(ColorMode.TRUECOLOR)
        self.scale = 0.0  # USD at full width; sticky so bars do not all rescale (and repaint) every tick
        self.tiers: tuple[str, ...] = ()
        self.row_usd = np.zeros(0)

    def set_palette(self, pal: Palette) -> None:
        self.pal = pal
        self.forget()

    def reset_scale(self) -> None:
        self.scale = 0.0

    def show_profile(self, long_tiers: np.ndarray, short_tiers: np.ndarray, tier: int | None) -> int:
        """(B, T) per side on the map's bins. With one tier selected, only that tier is drawn."""
        both = long_tiers + short_tiers
        if tier is not None:
            mask = np.zeros(both.shape[1], dtype=bool)
            mask[tier] = True
            both = np.where(mask[None, :], both, 0.0)
        rows = row_sums(both)  # (R, T)
        total = rows.sum(axis=1)
        self.row_usd = total
        peak = float(total.max()) if len(total) else 0.0
        if peak > self.scale or self.scale == 0.0:
            self.scale = nice_ceiling(max(peak, 1.0) * 1.25)
        width = max(self.size.width, 1)
        units = width * 8
        cum = np.cumsum(rows, axis=1) / self.scale * units  # eighths of a cell, per tier boundary
        ends = np.minimum(np.rint(cum), units).astype(np.int32)
        mode = self.pal.mode
        return self.show([(mode, width, row.tobytes()) for row in ends])

    def build(self, key: Hashable, width: int, y: int) -> Strip:
        assert isinstance(key, tuple)
        ends = np.frombuffer(key[2], dtype=np.int32)
        pal = self.pal
        blank = Style()
        glyph_mode = not pal.mode.blocks
        cells: list[tuple[str, Style]] = []
        full = int(ends[-1]) // 8 if len(ends) else 0
        rest = int(ends[-1]) % 8 if len(ends) else 0
        for x in range(min(full, width)):
            centre = x * 8 + 4
            t = int(np.searchsorted(ends, centre, side="right"))
            t = min(t, len(ends) - 1)
            cells.append((pal.tier_glyph(t) if glyph_mode else "█", pal.tier_style(t)))
        if rest and full < width:
            t = min(int(np.searchsorted(ends, full * 8, side="right")), len(ends) - 1)
            cells.append((EIGHTHS[rest] if not glyph_mode else pal.tier_glyph(t), pal.tier_style(t)))
        if not cells:
            return Strip([Segment(" " * width, blank)], width)
        return merged_strip(cells, width, blank)
