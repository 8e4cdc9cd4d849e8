"""A picture to share, with no browser and no imaging library: candles over the estimated heatmap, the
liquidation-map profile beside them, a price axis, an "ESTIMATED" label and the model's parameters —
rasterised in numpy and written as a PNG by a tiny encoder (zlib + struct).

``render_snapshot(...)`` returns an (H, W, 3) uint8 image; ``encode_png`` / ``decode_png`` turn it into
PNG bytes and back (the decoder handles all five PNG row filters, so it reads other encoders' files too).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from engine.model import Bars, Estimate, ModelParams, Zone, timeframe_name
from engine.model.views import price_edges
from engine.rasterfont import GLYPH_H, text_mask, text_width

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SnapshotError(ValueError):
    """Cannot draw (one line)."""


# ---- PNG ------------------------------------------------------------------------------------------
def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(img: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """8-bit RGB PNG, filter 0 on every row; ``text`` becomes tEXt chunks (Latin-1 keys and values)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise SnapshotError("encode_png needs an (H, W, 3) uint8 image")
    h, w, _ = img.shape
    if h == 0 or w == 0:
        raise SnapshotError("cannot encode an empty image")
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 1:] = img.reshape(h, 3 * w)
    out = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        out.append(_chunk(b"tEXt", key.encode("latin-1", "replace")[:79] + b"\x00" + value.encode("latin-1", "replace")))
    out.append(_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def decode_png(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """(image (H, W, 3 or 4) uint8, tEXt chunks) from 8-bit RGB/RGBA non-interlaced PNG bytes.
    Checks the signature and every chunk's CRC."""
    if not data.startswith(PNG_SIGNATURE):
        raise SnapshotError("not a PNG (bad signature)")
    pos = len(PNG_SIGNATURE)
    idat = b""
    text: dict[str, str] = {}
    header = None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(tag + body) & 0xFFFFFFFF != crc:
            raise SnapshotError(f"PNG chunk {tag!r} has a bad CRC")
        pos += 12 + length
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        elif tag == b"tEXt":
            k, _, v = body.partition(b"\x00")
            text[k.decode("latin-1")] = v.decode("latin-1")
        elif tag == b"IEND":
            break
    if header is None:
        raise SnapshotError("PNG has no IHDR")
    w, h, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise SnapshotError("only 8-bit RGB/RGBA non-interlaced PNGs are supported")
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.uint8)
    for y in range(h):
        ftype, line = int(raw[y, 0]), raw[y, 1:].copy()
        if ftype == 1 or ftype == 3 or ftype == 4:
            # left-dependent filters: go pixel by pixel (bpp bytes at a time)
            for x in range(0, len(line), bpp):
                left = line[x - bpp : x] if x else np.zeros(bpp, dtype=np.uint8)
                up = prev[x : x + bpp]
                if ftype == 1:
                    pred = left
                elif ftype == 3:
                    pred = ((left.astype(np.uint16) + up) // 2).astype(np.uint8)
                else:
                    ul = prev[x - bpp : x] if x else np.zeros(bpp, dtype=np.uint8)
                    pred = _paeth(left, up, ul)
                line[x : x + bpp] = line[x : x + bpp] + pred
        elif ftype == 2:
            line = line + prev
        elif ftype != 0:
            raise SnapshotError(f"PNG row {y} has an unknown filter {ftype}")
        out[y] = line
        prev = line
    return out.reshape(h, w, bpp), text


# ---- raster drawing -------------------------------------------------------------------------------
Colour = tuple[int, int, int]
BG: Colour = (14, 16, 22)
PANEL: Colour = (22, 25, 33)
GRID: Colour = (40, 44, 56)
TEXT: Colour = (210, 214, 222)
DIM: Colour = (130, 136, 150)
UP: Colour = (38, 166, 154)
DOWN: Colour = (239, 83, 80)
# Same convention as the page and the TUI: a long liquidation is a forced sell (red), a short one a forced buy.
LONG_C: Colour = (255, 105, 90)
SHORT_C: Colour = (0, 190, 170)
WARN: Colour = (250, 204, 21)
GRADE_C: dict[str, Colour] = {"low": (46, 160, 67), "elevated": (250, 204, 21), "high": (239, 68, 68)}
# purple -> blue -> green -> yellow, the heatmap convention traders know
_CMAP = np.array([(36, 14, 60), (88, 28, 130), (40, 110, 170), (50, 180, 120), (250, 230, 40)], dtype=np.float64)


def colormap(v: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 along the palette (piecewise linear)."""
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(v.astype(np.int64), len(_CMAP) - 2)
    f = (v - i)[..., None]
    return np.rint(_CMAP[i] * (1 - f) + _CMAP[i + 1] * f).astype(np.uint8)


@dataclass
class Canvas:
    img: np.ndarray

    @classmethod
    def blank(cls, width: int, height: int, colour: Colour = BG) -> Canvas:
        img = np.empty((height, width, 3), dtype=np.uint8)
        img[:] = colour
        return cls(img)

    @property
    def height(self) -> int:
        return int(self.img.shape[0])

    @property
    def width(self) -> int:
        return int(self.img.shape[1])

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: Colour) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        if x1 > x0 and y1 > y0:
            self.img[y0:y1, x0:x1] = colour

    def hline(self, x0: int, x1: int, y: int, colour: Colour, dash: int = 0) -> None:
        if not (0 <= y < self.height):
            return
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        if dash:
            xs = np.arange(x0, x1)
            xs = xs[(xs // dash) % 2 == 0]
            self.img[y, xs] = colour
        else:
            self.img[y, x0:x1] = colour

    def vline(self, x: int, y0: int, y1: int, colour: Colour) -> None:
        self.rect(x, min(y0, y1), x + 1, max(y0, y1) + 1, colour)

    def text(self, x: int, y: int, s: str, colour: Colour, scale: int = 1, max_width: int | None = None) -> int:
        """Draw ``s`` with its top-left at (x, y); cut to ``max_width`` pixels. Returns the width drawn."""
        if max_width is not None and text_width(s, scale) > max_width:
            keep = max(0, max_width // (6 * scale) - 1)
            s = s[:keep] + "…" if keep else ""
            s = s.replace("…", ".")
        mask = text_mask(s, scale)
        h, w = mask.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        if x1 <= x0 or y1 <= y0:
            return 0
        sub = mask[y0 - y : y1 - y, x0 - x : x1 - x]
        region = self.img[y0:y1, x0:x1]
        region[sub] = colour
        return w

    def label(self, x: int, y: int, s: str, colour: Colour, bg: Colour = BG, scale: int = 1,
              max_width: int | None = None) -> int:
        """Text on a solid box (readable over the heatmap or the profile bars)."""
        w = min(text_width(s, scale), max_width) if max_width is not None else text_width(s, scale)
        self.rect(x - 2, y - 2, x + w + 1, y + GLYPH_H * scale + 2, bg)
        return self.text(x, y, s, colour, scale, max_width)


def nice_ticks(lo: float, hi: float, target: int = 6) -> np.ndarray:
    """Round price levels (1, 2, 2.5, 5 x 10^k apart) inside [lo, hi]."""
    if not (hi > lo):
        return np.array([lo])
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    # the round step whose label count comes closest to the target
    step = min((m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0)), key=lambda st: abs((hi - lo) / st - target))
    first = math.ceil(lo / step) * step
    return np.arange(first, hi + step * 1e-9, step)


def format_price(p: float, step: float | None = None) -> str:
    if step is not None and step >= 1:
        return f"{p:,.0f}"
    if p >= 1000:
        return f"{p:,.1f}"
    if p >= 1:
        return f"{p:.3f}".rstrip("0").rstrip(".")
    return f"{p:.6f}".rstrip("0").rstrip(".")


def format_usd(x: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= div:
            return f"${x / div:.1f}{unit}"
    return f"${x:.0f}"


# ---- the snapshot ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    header: int = 30
    footer: int = 34
    axis: int = 78  # price labels, right of the chart
    profile: int = 190  # the liquidation-map panel
    margin: int = 8

    @property
    def chart(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of the candles + heatmap area."""
        x1 = self.width - self.profile - self.axis - self.margin
        return self.margin, self.header, x1, self.height - self.footer

    @property
    def panel(self) -> tuple[int, int, int, int]:
        x0 = self.width - self.profile
        return x0, self.header, self.width - self.margin, self.height - self.footer


def params_line(params: ModelParams, seed_mode: str) -> str:
    d = params.describe()
    tiers = " ".join(f"{t['leverage']:g}X {t['weight']:.0%}" for t in d["tiers"])  # type: ignore[attr-defined]
    anchors = "/".join(f"{a:.0%}" for a in params.entry_anchors)
    return (
        f"MODEL: LADDER {params.ladder.name} ({tiers}) · SEED {seed_mode} · MARGIN {d['margin_table']} · "
        f"ENTRIES {anchors} OF RANGE · DECAY {'ON' if params.decay else 'OFF'} · WICK {params.wick_clear:g}"
    )


def render_snapshot(
    est: Estimate,
    symbol: str,
    timeframe: int | None = None,
    width: int = 1200,
    height: int = 720,
    candles: int = 120,
    pad: float = 0.04,
    zones: list[Zone] | None = None,
) -> np.ndarray:
    """Candles (``timeframe``, default the estimate's bars) over the heatmap, the map profile on the right."""
    if width < 480 or height < 240:
        raise SnapshotError("the picture must be at least 480 x 240 pixels")
    lay = Layout(width, height)
    cv = Canvas.blank(width, height)
    base = est.bars
    tf = timeframe or base.timeframe
    view: Bars = base.resample(tf) if tf != base.timeframe else base
    view = view.slice(max(0, len(view) - candles), None)
    n = len(view)
    if n == 0:
        raise SnapshotError("no candles to draw")
    lo = float(view.low.min()) * (1 - pad)
    hi = float(view.high.max()) * (1 + pad)
    cx0, cy0, cx1, cy1 = lay.chart
    cw, ch = cx1 - cx0, cy1 - cy0
    bins = max(20, min(ch // 3, 400))
    edges = price_edges(lo, hi, bins)

    def y_of(price: np.ndarray | float) -> np.ndarray:
        return np.rint(cy1 - 1 - (np.asarray(price, dtype=np.float64) - lo) / (hi - lo) * (ch - 1)).astype(np.int64)

    # heatmap: one column per candle, the book as it stood when that candle closed
    last_close = int(base.close_time[-1])
    times = np.minimum(view.close_time, last_close)
    hm = est.heatmap(times=times, edges=edges)
    long_t, short_t = hm.total()
    grid = long_t + short_t  # (n, bins)
    nz = grid[grid > 0]
    scale = float(np.percentile(nz, 99)) if len(nz) else 1.0
    colours = colormap(np.sqrt(np.clip(grid / scale, 0.0, 1.0)))  # (n, bins, 3)
    xs = np.arange(cw)
    col = np.minimum(xs * n // cw, n - 1)
    ys = np.arange(ch)
    row = np.minimum((ch - 1 - ys) * bins // ch, bins - 1)
    block = colours[col[None, :], row[:, None]]  # (ch, cw, 3)
    empty = grid[col[None, :], row[:, None]] <= 0
    block[empty] = PANEL
    cv.img[cy0:cy1, cx0:cx1] = block

    # grid lines and price labels
    ticks = nice_ticks(lo, hi)
    step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else None
    for p in ticks:
        y = int(y_of(p))
        cv.hline(cx0, cx1, y, GRID, dash=3)
        cv.hline(cx1, cx1 + 4, y, DIM)
        cv.text(cx1 + 7, y - GLYPH_H // 2, format_price(float(p), step), TEXT, max_width=lay.axis - 8)

    # candles
    slot = cw / n
    body_w = max(1, int(slot * 0.7))
    for i in range(n):
        xc = cx0 + int((i + 0.5) * slot)
        o, h_, l_, c = (float(view.open[i]), float(view.high[i]), float(view.low[i]), float(view.close[i]))
        colour = UP if c >= o else DOWN
        cv.vline(xc, int(y_of(h_)), int(y_of(l_)), colour)
        top, bot = int(y_of(max(o, c))), int(y_of(min(o, c)))
        cv.rect(xc - body_w // 2, top, xc - body_w // 2 + body_w, max(bot, top) + 1, colour)

    # current price
    price = float(base.close[-1])
    py = int(y_of(price))
    cv.hline(cx0, cx1, py, TEXT, dash=4)
    cv.rect(cx1 + 2, py - 6, width - lay.profile - 2, py + 7, TEXT)
    cv.text(cx1 + 5, py - 3, format_price(price, step), BG, max_width=lay.axis - 6)

    # profile: the book now on the same price bins, longs below the price, shorts above
    lmap = est.book().liquidation_map(edges=edges)
    longs, shorts = lmap.long_usd.sum(axis=1), lmap.short_usd.sum(axis=1)
    px0, py0, px1, py1 = lay.panel
    cv.rect(px0, py0, px1, py1, PANEL)
    pw = px1 - px0 - 4
    peak = float(max(longs.max(initial=0.0), shorts.max(initial=0.0))) or 1.0
    for b in range(bins):
        y_top, y_bot = int(y_of(edges[b + 1])), int(y_of(edges[b]))
        for usd, colour in ((longs[b], LONG_C), (shorts[b], SHORT_C)):
            if usd > 0:
                cv.rect(px0 + 2, y_top, px0 + 2 + max(1, int(usd / peak * pw)), max(y_bot, y_top + 1), colour)
    long_below, short_above = lmap.cumulative()
    cum_peak = float(max(long_below.max(initial=0.0), short_above.max(initial=0.0))) or 1.0
    prev_x = None
    centers = lmap.centers
    for b in range(bins):
        v = long_below[b] if centers[b] <= price else short_above[b]
        x = px0 + 2 + int(v / cum_peak * pw)
        y = int(y_of(centers[b]))
        if prev_x is not None:
            cv.hline(min(prev_x, x), max(prev_x, x) + 1, y, WARN)
        prev_x = x
    cv.hline(px0, px1, py, TEXT, dash=4)
    for z in zones or []:
        if z.price_high < lo or z.price_low > hi:
            continue
        cv.rect(px1 - 5, int(y_of(min(z.price_high, hi))), px1, int(y_of(max(z.price_low, lo))) + 1, GRADE_C[z.grade])
    cv.label(px0 + 4, py0 + 4, f"MAP NOW · MAX {format_usd(peak)}/BIN", TEXT, max_width=pw - 4)
    x = px0 + 4
    for word, colour in (("LONGS", LONG_C), ("SHORTS", SHORT_C), ("CUMULATIVE", WARN)):
        x += cv.label(x, py1 - 12, word, colour) + 8

    # header, the ESTIMATED label, the parameters line
    when = datetime.fromtimestamp(last_close, UTC).strftime("%Y-%m-%d %H:%M UTC")
    cv.text(lay.margin, 8, f"LIQHEAT  {symbol}  {timeframe_name(tf)}", TEXT, scale=2, max_width=width // 2)
    cv.text(width - lay.margin - text_width(when), 12, when, DIM)
    label = "ESTIMATED"
    cv.label(cx0 + 9, cy0 + 9, label, WARN, scale=2)
    cv.label(cx0 + 16 + text_width(label, 2), cy0 + 13,
             f"LIQUIDATION HEATMAP · {format_usd(scale)}+ PER CELL = BRIGHTEST · RIGHT EDGE: ZONE GRADES", TEXT,
             max_width=cw - text_width(label, 2) - 24)
    line = params_line(est.params, est.seed_mode)
    cv.text(lay.margin, height - lay.footer + 6, line, DIM, max_width=width - 2 * lay.margin)
    cv.text(lay.margin, height - lay.footer + 18,
            "AN ESTIMATE FROM CANDLES, OPEN INTEREST AND VOLUME - NOT A RECORD OF REAL POSITIONS", DIM,
            max_width=width - 2 * lay.margin)
    return cv.img


def snapshot_text(est: Estimate, symbol: str) -> dict[str, str]:
    """PNG tEXt metadata: what the picture is and the full parameter set (machine-readable)."""
    return {
        "Software": "liqheat",
        "Title": f"liqheat estimated liquidation heatmap {symbol}",
        "liqheat.model": json.dumps({**est.params.describe(), "seed_mode": est.seed_mode, "estimate": True}, default=str),
    }
