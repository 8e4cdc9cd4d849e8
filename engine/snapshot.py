"""A picture to share, with no browser: candles over the estimated heatmap, the liquidation-map profile
beside them with the zones' grades, an "ESTIMATED" label, a USD colour scale and the model's parameters.
Drawn with matplotlib (its Agg renderer for PNG, its SVG writer for SVG; no pyplot, no global state).

``render_snapshot(...)`` returns a :class:`Snapshot` (the figure and its two panels); ``snapshot_bytes``
writes it as PNG or SVG bytes with the model's parameters in the file's metadata.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from engine.model import Bars, Estimate, ModelParams, Zone, timeframe_name
from engine.model.views import price_edges


class SnapshotError(ValueError):
    """Cannot draw (one line)."""


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# Same colours as the page and the TUI: a long liquidation is a forced sell (red), a short one a forced buy.
BG, PANEL, GRID, TEXT, DIM = "#0e1016", "#161921", "#282c38", "#d2d6de", "#828896"
UP, DOWN = "#26a69a", "#ef5350"
LONG_C, SHORT_C, WARN = "#ff695a", "#00beaa", "#facc15"
GRADE_C = {"low": "#2ea043", "elevated": "#facc15", "high": "#ef4444"}
# purple -> blue -> green -> yellow, the heatmap convention traders know
HEAT = LinearSegmentedColormap.from_list(
    "liqheat", [_hex(c) for c in ((36, 14, 60), (88, 28, 130), (40, 110, 170), (50, 180, 120), (250, 230, 40))]
)
MIN_WIDTH, MIN_HEIGHT = 480, 240
FORMATS = ("png", "svg")


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


def params_line(params: ModelParams, seed_mode: str) -> str:
    d = params.describe()
    tiers = " ".join(f"{t['leverage']:g}x {t['weight']:.0%}" for t in d["tiers"])  # type: ignore[attr-defined]
    anchors = "/".join(f"{a:.0%}" for a in params.entry_anchors)
    return (
        f"Model: ladder {params.ladder.name} ({tiers}) · seed {seed_mode} · margin {d['margin_table']} · "
        f"entries {anchors} of range · decay {'on' if params.decay else 'off'} · wick {params.wick_clear:g}"
    )


@dataclass(frozen=True)
class Snapshot:
    figure: Figure
    chart: object  # the candles + heatmap axes
    profile: object  # the liquidation-map axes
    colour_scale_usd: float  # USD per cell at the brightest colour
    model: dict[str, object]


def render_snapshot(
    est: Estimate,
    symbol: str,
    timeframe: int | None = None,
    width: int = 1200,
    height: int = 720,
    candles: int = 120,
    pad: float = 0.04,
    zones: list[Zone] | None = None,
    dpi: float = 100.0,
) -> Snapshot:
    """Candles (``timeframe``, default the estimate's bars) over the heatmap, the map profile on the
    right; ``width`` x ``height`` pixels at ``dpi``."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise SnapshotError(f"the picture must be at least {MIN_WIDTH} x {MIN_HEIGHT} pixels")
    if not (20 <= dpi <= 600):
        raise SnapshotError("--dpi must be between 20 and 600")
    base = est.bars
    tf = timeframe or base.timeframe
    view: Bars = base.resample(tf) if tf != base.timeframe else base
    view = view.slice(max(0, len(view) - candles), None)
    n = len(view)
    if n == 0:
        raise SnapshotError("no candles to draw")
    lo = float(view.low.min()) * (1 - pad)
    hi = float(view.high.max()) * (1 + pad)
    bins = max(20, min(int(height * 0.8) // 3, 400))
    edges = price_edges(lo, hi, bins)

    # heatmap: one column per candle, the book as it stood when that candle closed (tiers summed)
    last_close = int(base.close_time[-1])
    times = np.minimum(view.close_time, last_close)
    hm = est.heatmap(times=times, edges=edges, by_tier=False)
    long_t, short_t = hm.total()
    grid = (long_t + short_t).astype(np.float64)  # (n, bins)
    nz = grid[grid > 0]
    scale = float(np.percentile(nz, 99)) if len(nz) else 1.0

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=BG)
    gs = fig.add_gridspec(1, 2, width_ratios=(5.2, 1.0), left=0.01, right=0.985, top=0.9, bottom=0.13, wspace=0.12)
    ax = fig.add_subplot(gs[0])
    pax = fig.add_subplot(gs[1], sharey=ax)
    for a in (ax, pax):
        a.set_facecolor(PANEL)
        a.tick_params(colors=TEXT, labelsize=8, length=3)
        for spine in a.spines.values():
            spine.set_color(GRID)

    cmap = HEAT.with_extremes(bad=PANEL, over=HEAT(1.0))
    shown = np.ma.masked_less_equal(grid.T, 0.0)  # empty cells stay the panel's colour
    image = ax.imshow(shown, aspect="auto", origin="lower", extent=(0, n, lo, hi), cmap=cmap,
                      norm=PowerNorm(0.5, vmin=0.0, vmax=scale), interpolation="nearest")

    # candles on top: wicks, then bodies (a doji still gets a visible body)
    x = np.arange(n) + 0.5
    up = view.close >= view.open
    colours = [UP if u else DOWN for u in up.tolist()]
    ax.vlines(x, view.low, view.high, colors=colours, linewidth=0.8)
    body_lo = np.minimum(view.open, view.close)
    body_h = np.maximum(np.abs(view.close - view.open), (hi - lo) * 0.0015)
    ax.bar(x, body_h, bottom=body_lo, width=0.7, color=colours, linewidth=0)
    ax.set_xlim(0, n)
    ax.set_ylim(lo, hi)
    ax.yaxis.tick_right()
    ax.grid(axis="y", color=GRID, linestyle=(0, (2, 3)), linewidth=0.6)
    ticks = ax.get_yticks()
    step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else None
    ax.yaxis.set_major_formatter(FuncFormatter(lambda p, _: format_price(p, step)))
    # time axis: a few candle opens, as dates
    idx = np.linspace(0, n - 1, min(n, 6)).astype(int)
    ax.set_xticks(idx + 0.5)
    labels = ax.set_xticklabels([datetime.fromtimestamp(int(view.time[i]), UTC).strftime("%m-%d %H:%M") for i in idx])
    labels[0].set_horizontalalignment("left")  # the first would run off the picture's edge

    price = float(base.close[-1])
    for a in (ax, pax):
        a.axhline(price, color=TEXT, linestyle=(0, (4, 4)), linewidth=0.8)
    ax.annotate(format_price(price, step), xy=(1.0, price), xycoords=("axes fraction", "data"), xytext=(4, 0),
                textcoords="offset points", va="center", fontsize=8, color=BG,
                bbox={"boxstyle": "square,pad=0.2", "fc": TEXT, "ec": TEXT})

    # the profile: the book now on the same price bins, longs below the price, shorts above
    lmap = est.book().liquidation_map(edges=edges)
    longs, shorts = lmap.long_usd.sum(axis=1), lmap.short_usd.sum(axis=1)
    heights = np.diff(edges)
    pax.barh(edges[:-1], longs, height=heights, align="edge", color=LONG_C, linewidth=0, label="longs")
    pax.barh(edges[:-1], shorts, height=heights, align="edge", color=SHORT_C, linewidth=0, label="shorts")
    peak = float(max(longs.max(initial=0.0), shorts.max(initial=0.0))) or 1.0
    long_below, short_above = lmap.cumulative()
    cum = np.where(lmap.centers <= price, long_below, short_above)
    cum_peak = float(cum.max(initial=0.0)) or 1.0
    pax.plot(cum / cum_peak * peak, lmap.centers, color=WARN, linewidth=1.0, label="cumulative (scaled)")
    pax.set_xlim(0, peak * 1.08)
    pax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_usd(v)))
    pax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(2))
    pax.tick_params(axis="y", labelleft=False, labelright=False)
    pax.set_title(f"Map now · max {format_usd(peak)}/bin", color=TEXT, fontsize=9, loc="left")
    edge = blended_transform_factory(pax.transAxes, pax.transData)
    for z in zones or []:
        if z.price_high < lo or z.price_low > hi:
            continue
        z_lo, z_hi = max(z.price_low, lo), min(z.price_high, hi)
        pax.add_patch(Rectangle((0.965, z_lo), 0.035, z_hi - z_lo, transform=edge, color=GRADE_C[z.grade], linewidth=0))
        pax.text(0.955, (z_lo + z_hi) / 2, f"{z.grade} {format_usd(z.usd)}", transform=edge, ha="right", va="center",
                 fontsize=6.5, color=GRADE_C[z.grade])
    pax.legend(loc="lower left", fontsize=7, frameon=False, labelcolor=TEXT, handlelength=1.2)

    # the USD colour scale, inside the chart's lower left
    cax = ax.inset_axes((0.015, 0.04, 0.22, 0.025))
    bar = fig.colorbar(image, cax=cax, orientation="horizontal", extend="max")
    bar.set_ticks([0.0, scale / 4, scale])
    bar.ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_usd(v)))
    bar.ax.tick_params(colors=TEXT, labelsize=7, length=2)
    bar.outline.set_edgecolor(GRID)  # type: ignore[operator]
    cax.set_title("USD per cell", color=TEXT, fontsize=7, loc="left", pad=2)

    # header, the ESTIMATED label, the parameters line
    when = datetime.fromtimestamp(last_close, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.text(0.01, 0.955, f"liqheat  {symbol}  {timeframe_name(tf)}", color=TEXT, fontsize=14, weight="bold", va="center")
    fig.text(0.985, 0.955, when, color=DIM, fontsize=9, ha="right", va="center")
    ax.text(0.01, 0.985, "ESTIMATED", transform=ax.transAxes, color=WARN, fontsize=13, weight="bold", va="top",
            bbox={"boxstyle": "square,pad=0.25", "fc": BG, "ec": BG})
    ax.text(0.17, 0.982, "liquidation heatmap · right: the map now and its zone grades", transform=ax.transAxes,
            color=TEXT, fontsize=8, va="top", bbox={"boxstyle": "square,pad=0.2", "fc": BG, "ec": BG})
    fig.text(0.01, 0.045, params_line(est.params, est.seed_mode), color=DIM, fontsize=7.5)
    fig.text(0.01, 0.015, "An estimate from candles, open interest and volume - not a record of real positions",
             color=DIM, fontsize=7.5)
    model = {**est.params.describe(), "seed_mode": est.seed_mode, "estimate": True}
    return Snapshot(fig, ax, pax, scale, model)


def snapshot_bytes(snap: Snapshot, fmt: str, symbol: str) -> bytes:
    """The picture as PNG or SVG; the model's parameters travel in the file (PNG tEXt ``liqheat.model``,
    SVG description), and SVG keeps its text as text."""
    if fmt not in FORMATS:
        raise SnapshotError(f"unknown picture format {fmt!r}; use png or svg")
    out = io.BytesIO()
    model = json.dumps(snap.model, default=str)
    title = f"liqheat estimated liquidation heatmap {symbol}"
    if fmt == "png":
        meta = {"Software": "liqheat", "Title": title, "liqheat.model": model}
    else:
        meta = {"Creator": "liqheat", "Title": title, "Description": model}
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "liqheat"}):
        snap.figure.savefig(out, format=fmt, facecolor=BG, metadata=meta)
    return out.getvalue()

