"""The zone map: estimated liquidation notional over time x price, the live column, both axes and the
realised-liquidations strip under it.

The history (``ZoneMap``) changes only when a candle closes; the forming candle's column (``LiveColumn``)
is a separate 1-cell-wide widget so the several-times-a-second updates cost a few bytes per changed row
instead of a whole map row each (notes/textual.md: Textual re-sends dirty lines from the widget's left edge).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.message import Message
from textual.strip import Strip

from .palette import ColorMode, Palette, palette
from .rows import RowWidget, merged_strip
from .viewport import axis_decimals, fmt_price, row_of_price

BAR_GLYPHS = " ▁▂▃▄▅▆▇█"
CURSOR_GLYPH = "╋"  # the cell whose value the readout line shows (key i, arrows, or a click)


class MapRows(RowWidget):
    """Rows of map cell codes (see ``viewport.cell_codes``), right-aligned: the newest column at the right."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.pal: Palette = palette(ColorMode.TRUECOLOR)
        self.message = ""
        self.cursor: tuple[int, int] | None = None
        self._codes: np.ndarray | None = None

    def set_palette(self, pal: Palette) -> None:
        self.pal = pal
        self.forget()

    def show_codes(self, codes: np.ndarray) -> int:
        """codes: (rows, columns) uint16."""
        self.message = ""
        self._codes = codes
        mode = self.pal.mode
        cx, cy = self.cursor if self.cursor is not None else (-1, -1)
        return self.show([(mode, row.tobytes(), cx if y == cy else -1) for y, row in enumerate(codes)])

    def set_cursor(self, cursor: tuple[int, int] | None) -> None:
        """Mark one cell (x counted from the right edge, y from the top) for the value readout."""
        if cursor == self.cursor:
            return
        self.cursor = cursor
        if self._codes is not None and not self.message:
            self.show_codes(self._codes)

    def show_message(self, text: str) -> None:
        self.message = text
        h = max(self.size.height, 1)
        self.show([("msg", text if y == h // 2 else "", self.pal.mode) for y in range(h)])

    def build(self, key: Hashable, width: int, y: int) -> Strip:
        assert isinstance(key, tuple)
        if key[0] == "msg":
            body = key[1][:width].center(width)
            return Strip([Segment(body, self.bg() + Style(bold=True))], width)
        codes = np.frombuffer(key[1], dtype=np.uint16)
        if len(codes) > width:
            codes = codes[-width:]
        cells = self.pal.cells
        pad = width - len(codes)
        row = [cells[0]] * pad + [cells[c] for c in codes]
        cx = key[2] if len(key) > 2 else -1
        if 0 <= cx < width:
            row[width - 1 - cx] = (CURSOR_GLYPH, self.pal.price_marker)
        return merged_strip(row, width, self.bg())

    def bg(self) -> Style:
        return self.pal.cells[0][1]

    def blank(self, width: int, y: int) -> Strip:
        return Strip.blank(width, self.bg())


class ZoneMap(MapRows):
    """Closed candles' columns of the estimated book (time x price)."""

    DEFAULT_CSS = """
    ZoneMap { width: 1fr; height: 1fr; }
    """

    class Resized(Message):
        """The map has a new size: the app fetches columns and bins to fit it."""

    class Clicked(Message):
        """A click on a cell: x counted from the right edge of the map (0 = the live column), y from the top."""

        def __init__(self, x_from_right: int, y: int) -> None:
            super().__init__()
            self.x_from_right = x_from_right
            self.y = y

    def on_resize(self, event: events.Resize) -> None:
        self.post_message(self.Resized())

    def on_click(self, event: events.Click) -> None:
        self.post_message(self.Clicked(self.size.width - event.x, event.y))


class LiveColumn(MapRows):
    """The forming candle's column: the live book, redrawn several times a second."""

    DEFAULT_CSS = """
    LiveColumn { width: 1; height: 1fr; }
    """

    def show_message(self, text: str) -> None:  # too narrow for words
        h = max(self.size.height, 1)
        self.show([(self.pal.mode, b"") for _ in range(h)])

    def on_click(self, event: events.Click) -> None:
        self.post_message(ZoneMap.Clicked(0, event.y))


class PriceAxis(RowWidget):
    """Price labels for the rows, the current price marked."""

    DEFAULT_CSS = """
    PriceAxis { width: 11; height: 1fr; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.pal = palette(ColorMode.TRUECOLOR)

    def set_palette(self, pal: Palette) -> None:
        self.pal = pal
        self.forget()

    def show_axis(self, edges: np.ndarray, price: float | None) -> int:
        rows = (len(edges) - 1) // 2
        if rows <= 0:
            return self.show([])
        dec = axis_decimals(float(edges[0]), float(edges[-1]), rows)
        every = 2 if rows < 16 else 3 if rows < 40 else 4
        marker = row_of_price(price, edges) if price is not None else None
        keys: list[Hashable] = []
        for y in range(rows):
            if y == marker:
                assert price is not None
                keys.append(("price", fmt_price(price, dec), self.pal.mode))
            elif y % every == every // 2:
                mid = float(edges[2 * (rows - 1 - y) + 1])
                keys.append(("label", fmt_price(mid, dec), self.pal.mode))
            else:
                keys.append(("tick", "", self.pal.mode))
        return self.show(keys)

    def build(self, key: Hashable, width: int, y: int) -> Strip:
        assert isinstance(key, tuple)
        kind, text = key[0], key[1]
        if kind == "price":
            body = ("◀" + text)[:width].ljust(width)
            return Strip([_seg(body, self.pal.price_marker)], width)
        if kind == "label":
            body = ("┤" + text)[:width].ljust(width)
            return Strip([_seg(body, self.pal.axis)], width)
        return Strip([_seg("│".ljust(width), self.pal.axis)], width)


class RealisedStrip(RowWidget):
    """Estimated liquidations per candle, under the map columns: bar height by USD, colour by the side
    that dominated (longs liquidated = forced selling)."""

    DEFAULT_CSS = """
    RealisedStrip { height: 1; width: 1fr; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.pal = palette(ColorMode.TRUECOLOR)
        self.scale = 0.0

    def set_palette(self, pal: Palette) -> None:
        self.pal = pal
        self.forget()

    def show_realised(self, long_usd: np.ndarray, short_usd: np.ndarray, scale: float) -> int:
        self.scale = scale
        total = long_usd + short_usd
        h = np.ceil(np.clip(total / scale, 0, 1) * 8).astype(np.int8) if scale > 0 else np.zeros(len(total), np.int8)
        h[(total > 0) & (h == 0)] = 1
        side = np.where(long_usd >= short_usd, 1, 2).astype(np.int8)
        side[h == 0] = 0
        return self.show([(self.pal.mode, h.tobytes(), side.tobytes())])

    def build(self, key: Hashable, width: int, y: int) -> Strip:
        assert isinstance(key, tuple)
        h = np.frombuffer(key[1], dtype=np.int8)[-width:]
        side = np.frombuffer(key[2], dtype=np.int8)[-width:]
        styles = (self.pal.axis, self.pal.side["long"], self.pal.side["short"])
        cells = [(" ", styles[0])] * (width - len(h))
        cells += [(BAR_GLYPHS[int(a)], styles[int(s)]) for a, s in zip(h, side, strict=True)]
        return merged_strip(cells, width)


def _seg(text: str, style: Style) -> Segment:
    return Segment(text, style)
