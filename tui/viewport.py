"""The arithmetic between the engine's numbers and terminal cells: which price range is on screen, how USD
maps to an intensity level, which cell code each map cell gets, how labels read. Pure numpy, no Textual,
so it is unit-tested on its own.

Rows run top (highest price) to bottom; each terminal row holds two price bins (the upper one drawn as the
foreground of ``▀``, the lower one as its background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from .palette import LEVELS, PRICE, glyph_level

ZOOM_STEP = 1.5
MIN_ZOOM, MAX_ZOOM = 1 / 8, 64.0
MIN_HALF_SPAN = 0.002  # never narrower than +-0.2% of the price
MAX_HALF_SPAN = 0.9


@dataclass(frozen=True)
class Window:
    low: float
    high: float

    def contains(self, price: float, margin: float = 0.0) -> bool:
        pad = (self.high - self.low) * margin
        return self.low + pad <= price <= self.high - pad


def _nice_step(x: float) -> float:
    """The smallest 1-2-2.5-5 x 10^k step >= x."""
    if x <= 0 or not math.isfinite(x):
        return 1.0
    k = math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10**k >= x * (1 - 1e-12):
            return m * 10**k
    return 10.0 ** (k + 1)


def choose_window(low: np.ndarray, high: np.ndarray, price: float, zoom: float = 1.0, pan: float = 0.0) -> Window:
    """The price range on screen: the visible candles' range around the price, padded by half again for
    the liquidation levels beyond it, divided by ``zoom`` and shifted by ``pan`` half-spans (in steps of a
quarter). Snapped to
    round numbers so a moving price does not change the bins (and force a full redraw) on every tick."""
    if not (price > 0 and math.isfinite(price)):
        raise ValueError("no price yet")
    lo = float(np.nanmin(low)) if len(low) else price
    hi = float(np.nanmax(high)) if len(high) else price
    half = max(price - lo, hi - price) * 1.5
    half = min(max(half, price * MIN_HALF_SPAN * 4), price * MAX_HALF_SPAN) / zoom
    half = max(half, price * MIN_HALF_SPAN)
    step = _nice_step(half / 4)
    half = math.ceil(half / step) * step
    # pan moves in whole steps (a quarter of the half-span, rounded to a round number): one key press, one step
    centre = round(price / step) * step + round(pan * 4) * step
    # a zoomed-out or panned-down window must not reach zero: it stops at a tenth of the price, same height
    floor = price * (1 - MAX_HALF_SPAN)
    low_edge = max(centre - half, floor)
    return Window(low_edge, low_edge + 2 * half)


def clamp_zoom(z: float) -> float:
    return min(max(z, MIN_ZOOM), MAX_ZOOM)


def nice_ceiling(x: float) -> float:
    """A round number at or above ``x``, for scales a reader can remember."""
    return _nice_step(x)


def colour_scale(usd: np.ndarray) -> float:
    """The USD at which a cell reaches full intensity: a round number at the 99.5th percentile of the
    non-empty cells, so one outlier does not wash out the rest and the legend reads in round numbers."""
    nz = usd[usd > 0]
    if len(nz) == 0:
        return 1.0
    return nice_ceiling(float(np.percentile(nz, 99.5)))


def levels(usd: np.ndarray, scale: float) -> np.ndarray:
    """Intensity 0..15 per cell on a square-root scale (any non-zero amount shows as at least level 1)."""
    frac = np.sqrt(np.clip(usd / scale, 0.0, 1.0))
    lv = np.ceil(frac * (LEVELS - 1)).astype(np.uint8)
    lv[usd <= scale * 1e-9] = 0
    return lv


def level_floor_usd(level: int, scale: float) -> float:
    """The smallest USD a cell needs to reach ``level``."""
    return scale * ((level - 1) / (LEVELS - 1)) ** 2 if level > 0 else 0.0


def price_bins(prices: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each price on ``edges`` (-1 outside)."""
    b = np.searchsorted(edges, prices, side="right") - 1
    nb = len(edges) - 1
    return np.where((b >= 0) & (b < nb) & np.isfinite(prices), b, -1)


_GLYPH_LUT = np.array([glyph_level(i) for i in range(LEVELS)], dtype=np.uint16)
_GLYPH_PRICE = 5  # index of the price glyph in a glyph-mode palette


def cell_codes(lv: np.ndarray, price_bin: np.ndarray | None, blocks: bool) -> np.ndarray:
    """Map cells for columns of intensity levels.

    ``lv`` is (C, B) with B = 2 x rows; returns (rows, C) codes into ``Palette.cells``. ``price_bin`` (C,)
    draws the price path: the bin the price sat in becomes the PRICE pseudo-level.
    """
    ncol, nb = lv.shape
    rows = nb // 2
    work = lv[:, : rows * 2].astype(np.uint16)
    if price_bin is not None and ncol:
        ok = (price_bin >= 0) & (price_bin < rows * 2)
        work[np.flatnonzero(ok), price_bin[ok]] = PRICE
    lower = work[:, 0::2][:, ::-1].T  # (rows, C): bin 2r at row rows-1-r
    upper = work[:, 1::2][:, ::-1].T
    if blocks:
        return upper * (LEVELS + 1) + lower
    plain_up = np.where(upper == PRICE, 0, upper)
    plain_lo = np.where(lower == PRICE, 0, lower)
    g = _GLYPH_LUT[np.maximum(plain_up, plain_lo)]
    g[(upper == PRICE) | (lower == PRICE)] = _GLYPH_PRICE
    return g


def row_sums(values: np.ndarray) -> np.ndarray:
    """(B, ...) per-bin values -> (rows, ...) per terminal row, top row first."""
    rows = values.shape[0] // 2
    pairs = values[: rows * 2].reshape(rows, 2, *values.shape[1:]).sum(axis=1)
    return pairs[::-1]


def row_of_price(price: float, edges: np.ndarray) -> int | None:
    """Terminal row (0 = top) holding ``price``, or None off screen."""
    b = int(price_bins(np.array([price]), edges)[0])
    if b < 0:
        return None
    rows = (len(edges) - 1) // 2
    return rows - 1 - b // 2


# ---- words and numbers -------------------------------------------------------------------------------


def fmt_usd(x: float | None, signed: bool = False, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    sign = ("+" if x > 0 else "-" if x < 0 else "") if signed else ("-" if x < 0 else "")
    a = abs(x)
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= div:
            v = a / div
            return f"{sign}${v:.{digits}g}{unit}" if v < 10 ** (digits - 1) else f"{sign}${v:.0f}{unit}"
    return f"{sign}${a:.0f}"


def price_decimals(price: float) -> int:
    if price >= 1000:
        return 1
    if price >= 10:
        return 2
    if price >= 1:
        return 4
    return 6


def fmt_price(p: float, decimals: int | None = None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    d = price_decimals(p) if decimals is None else decimals
    return f"{p:,.{d}f}"


def axis_decimals(low: float, high: float, rows: int) -> int:
    """Enough decimals that neighbouring labelled rows differ."""
    step = (high - low) / max(rows, 1)
    if step <= 0:
        return 2
    return max(0, min(8, -math.floor(math.log10(step)) + 1))


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86_400:
        return f"{s // 86_400}d{(s % 86_400) // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def time_label(t: int, timeframe: int) -> str:
    """Clock time within a day, the date at midnight and on daily candles ("Jan 01", "12:00") — never a
    bare "30 12h" that reads as two numbers."""
    d = datetime.fromtimestamp(int(t), UTC)
    if timeframe < 86_400 and int(t) % 86_400:
        return d.strftime("%H:%M")
    return d.strftime("%b %d")


def time_label_full(t: int) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%b %d %H:%M UTC")


LABEL_LEN = 6  # "Jan 01"; clock times are 5


def time_axis(times: np.ndarray, timeframe: int, width: int, min_gap: int = 9) -> str:
    """Labels under the map columns, right-aligned like the map. Labels sit on round multiples of a
    label interval, so they move with their columns when the axis shifts instead of being re-spaced."""
    out = [" "] * width
    n = len(times)
    if n == 0 or width <= 0:
        return "".join(out)
    gap = max(min_gap, LABEL_LEN + 2)
    every = timeframe * gap
    for unit in (60, 300, 900, 1800, 3600, 7200, 4 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400, 7 * 86_400,
                 14 * 86_400, 28 * 86_400):
        if unit >= timeframe * gap:
            every = unit
            break
    offset = width - n  # the newest column sits at the right edge
    for i, t in enumerate(times):
        if int(t) % every:
            continue
        x = offset + i
        label = time_label(int(t), timeframe)
        if x < 0 or x + len(label) > width or any(c != " " for c in out[max(0, x - 1) : x + len(label) + 1]):
            continue
        out[x : x + len(label)] = label
    return "".join(out)


def rebin(src_edges: np.ndarray, values: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """Move per-bin amounts (B_src, ...) onto other bins by overlap, conserving what falls inside."""
    src_edges = np.asarray(src_edges, dtype=np.float64)
    lo = np.maximum(src_edges[:-1, None], dst_edges[None, :-1])
    hi = np.minimum(src_edges[1:, None], dst_edges[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None) / np.diff(src_edges)[:, None]  # (B_src, B_dst) share of each src bin
    return np.tensordot(overlap, values, axes=([0], [0]))


def span_around(price: float, edges: np.ndarray) -> float:
    """The ``span`` (fraction of the price either side) a liquidation-map request needs to cover these bins."""
    if price <= 0 or len(edges) < 2:
        return 0.25
    return float(min(0.9, max(0.001, max(abs(edges[0] / price - 1), abs(edges[-1] / price - 1)) * 1.02)))
