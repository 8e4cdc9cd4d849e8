"""Line-API widgets that repaint only the rows whose content changed.

A subclass describes each row by a hashable key (everything that decides how the row looks) and builds a
``Strip`` from a key. Finished strips live in an LRU cache keyed by (key, width), so an unchanged row is
never rebuilt, and ``show()`` marks only the rows whose key changed as dirty. Textual re-sends a dirty row
from the widget's left edge to its right edge, which is why the live column is its own 1-cell widget.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


def merged_strip(cells: Sequence[tuple[str, Style]], width: int, fill: Style | None = None) -> Strip:
    """One segment per run of equal styles (a 200-cell map row is typically a dozen runs, not 200)."""
    segments: list[Segment] = []
    text: list[str] = []
    style: Style | None = None
    for ch, st in cells:
        if st is style or st == style:
            text.append(ch)
            continue
        if text:
            segments.append(Segment("".join(text), style))
        text, style = [ch], st
    if text:
        segments.append(Segment("".join(text), style))
    strip = Strip(segments, len(cells))
    if len(cells) != width:
        # never a None style: Textual's monochrome filter (NO_COLOR) cannot take one
        strip = strip.adjust_cell_length(width, fill or Style())
    return strip


class RowWidget(Widget):
    """Base for the map, live column, axes and profile."""

    DEFAULT_CSS = """
    RowWidget { height: 1fr; }
    """

    def __init__(self, *, cache_size: int = 512, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._keys: list[Hashable] = []
        self._strips: LRUCache[tuple[Hashable, int], Strip] = LRUCache(cache_size)
        self.rows_repainted = 0  # rows marked dirty by show() since start (tests and benchmarks read it)

    @property
    def keys(self) -> list[Hashable]:
        return self._keys

    def show(self, keys: list[Hashable]) -> int:
        """Set every row's key; repaint only rows that changed. Returns how many rows were repainted."""
        old, self._keys = self._keys, keys
        width = self.size.width
        if len(old) != len(keys) or not width:
            self.refresh()
            self.rows_repainted += len(keys)
            return len(keys)
        changed = [y for y, (a, b) in enumerate(zip(old, keys, strict=True)) if a != b]
        if len(changed) > len(keys) // 2:
            self.refresh()
        else:
            for y in changed:
                self.refresh(Region(0, y, width, 1))
        self.rows_repainted += len(changed)
        return len(changed)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        key = self._keys[y] if y < len(self._keys) else None
        cached = self._strips.get((key, width))
        if cached is not None:
            return cached
        strip = self.build(key, width, y) if key is not None else self.blank(width, y)
        self._strips.set((key, width), strip)
        return strip

    def build(self, key: Hashable, width: int, y: int) -> Strip:  # pragma: no cover - abstract
        raise NotImplementedError

    def blank(self, width: int, y: int) -> Strip:
        return Strip.blank(width, self.rich_style)

    def forget(self) -> None:
        """Drop cached strips (the palette changed)."""
        self._strips.clear()
        self.refresh()
