"""The text around the map: market header, colour legend, zones table, recent liquidations, alerts.

Each panel re-renders only when its text actually changed, so a tick that moves nothing sends nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich.text import Text
from textual.widgets import DataTable, Static

from engine.service import Zone

from .palette import LEVELS, Palette
from .source import Alert, Facts, LiquidationEvent
from .viewport import fmt_duration, fmt_price, fmt_usd, level_floor_usd

HEALTH_STYLE = {
    "live": "bold black on green",
    "demo": "bold black on cyan",
    "replay": "bold black on blue",
    "delayed": "bold black on yellow",
    "reconnecting": "bold white on red",
    "stale": "bold white on red",
    "loading": "bold black on white",
    "offline": "bold white on red",
}
GRADE_STYLE = {"low": "green", "elevated": "yellow", "high": "bold red"}


class TextPanel(Static):
    """A Static that ignores updates with the same text (a Static.update always repaints)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._last: object = None

    def set_text(self, text: Text | str) -> bool:
        key = text.markup if isinstance(text, Text) else text
        if key == self._last:
            return False
        self._last = key
        self.update(text)
        return True

    @property
    def plain(self) -> str:
        r = self.render()
        return r.plain if isinstance(r, Text) else str(r)


class MarketHeader(TextPanel):
    DEFAULT_CSS = """
    MarketHeader { height: 2; background: $panel; padding: 0 1; }
    """

    def show_facts(
        self,
        facts: Facts | None,
        *,
        timeframe: str,
        tier_label: str,
        paused: bool,
        zoom: float,
        now: float,
        loading: str = "",
    ) -> bool:
        line1 = Text(no_wrap=True, overflow="ellipsis")
        line2 = Text(no_wrap=True, overflow="ellipsis")
        if facts is None:
            line1.append("liqheat", style="bold")
            line1.append("  " + (loading or "starting…"))
            line2.append(" LOADING ", style=HEALTH_STYLE["loading"])
            line2.append("  ")
            line2.append(" ESTIMATED ", style="bold black on yellow")
            return self.set_text(Text("\n").join([line1, line2]))
        line1.append(facts.market, style="bold")
        line1.append("  ")
        line1.append(fmt_price(facts.price), style="bold")
        if facts.change_24h is not None:
            ch = facts.change_24h * 100
            line1.append(f" {ch:+.2f}% 24h", style="green" if ch >= 0 else "red")
        line1.append(f"  OI {fmt_usd(facts.oi_usd)}")
        if facts.funding_rate is not None:
            line1.append(f"  fund {facts.funding_rate * 100:+.4f}%")
            if facts.funding_next:
                line1.append(f" in {fmt_duration(facts.funding_next - now)}")
        state = facts.health or "loading"
        line2.append(f" {state.upper()} ", style=HEALTH_STYLE.get(state, "bold reverse"))
        if facts.health_reason and state not in ("live", "demo"):
            line2.append(f" {facts.health_reason[:40]}", style="italic")
        line2.append("  ")
        line2.append(" ESTIMATED ", style="bold black on yellow")
        line2.append(f"  {timeframe} · {tier_label} · ladder {facts.ladder}")
        if zoom != 1.0:
            line2.append(f" · zoom {zoom:g}x")
        if facts.seed_mode:
            line2.append(f" · seed {facts.seed_mode}", style="dim")
        if paused:
            line2.append("  ")
            line2.append(" PAUSED ", style="bold black on magenta")
        if loading:
            line2.append(f"  {loading}", style="italic")
        return self.set_text(Text("\n").join([line1, line2]))


class Legend(TextPanel):
    DEFAULT_CSS = """
    Legend { height: 1; padding: 0 1; }
    """

    def show_legend(self, pal: Palette, scale: float, bin_usd: float, tier_labels: tuple[str, ...], tier: int | None) -> bool:
        """Swatches with absolute USD, the price step of one bin, the tier colours — shortened until it fits."""
        width = max(self.size.width - 2, 20)
        for variant in range(3):
            t = Text(no_wrap=True, overflow="ellipsis")
            t.append("USD/cell " if variant == 0 else "$/cell ")
            for level in (1, 4, 8, 12, LEVELS - 1):
                ch, st = pal.swatch(level)
                t.append(ch * 2 if ch != " " else "  ", style=st)
                lo = level_floor_usd(level, scale)
                t.append(f"{'≥' if level == LEVELS - 1 else ''}{fmt_usd(lo, digits=2) if level > 1 else '>0'} ")
            if variant < 2:
                t.append(f"· bin {fmt_usd(bin_usd, digits=2) if bin_usd else '—'} · ", style="dim")
            for i, lab in enumerate(tier_labels):
                dim = tier is not None and tier != i
                t.append(pal.tier_glyph(i), style="dim" if dim else pal.tier_style(i))
                t.append(f"{lab} " if variant < 2 else lab, style="dim" if dim else "")
            if t.cell_len <= width:
                break
        return self.set_text(t)


class ZonesTable(DataTable[Text]):
    """Graded zones, strongest first. Not focusable: the arrow keys belong to the map."""

    can_focus = False
    DEFAULT_CSS = """
    ZonesTable { height: 1fr; width: 1fr; }
    """

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = False
        self._shown: object = None
        self._widths: tuple[int, ...] = ()
        self.touch = False

    def _set_columns(self, widths: tuple[int, ...]) -> None:
        """Fixed widths, from the rows: auto-sized columns would jitter as live numbers change length."""
        self.clear(columns=True)
        names = ["side", "price range", "est. USD", "grade", "dist", "touch 4h"][: len(widths)]
        for name, w in zip(names, widths, strict=True):
            self.add_column(name, width=max(w, len(name)))
        self._widths = widths
        self._shown = None

    def show_zones(self, zones: list[Zone], touch: dict[int, float] | None = None, limit: int = 12,
                   plain: bool = False) -> bool:
        """``plain``: no colour (NO_COLOR / --colors none), where dim red and green read as grey."""
        rows = []
        for i, z in enumerate(zones[:limit]):
            arrow = "↓" if z.side == "long" else "↑"
            row = [
                Text(f"{z.side} {arrow}", style="" if plain else ("red" if z.side == "long" else "green")),
                Text(f"{fmt_price(z.price_low)}–{fmt_price(z.price_high)}"),
                Text(fmt_usd(z.usd), justify="right"),
                Text(z.grade, style="bold" if plain and z.grade == "high" else "" if plain else GRADE_STYLE.get(z.grade, "")),
                Text(f"{z.distance_pct:+.2f}%", justify="right"),
            ]
            if touch is not None:
                p = touch.get(i)
                row.append(Text("—" if p is None else f"{p * 100:.0f}%", justify="right"))
            rows.append(row)
        ncols = 6 if touch is not None else 5
        widths = tuple(max([len(r[c].plain) for r in rows] + [4]) for c in range(ncols))
        if widths != self._widths:
            self._set_columns(widths)
        key = [[c.plain for c in r] for r in rows]
        if key == self._shown:
            return False
        self._shown = key
        self.clear()
        for r in rows:
            self.add_row(*r)
        if not rows:
            self.add_row(Text("none", style="dim"), *[Text("")] * (len(self.columns) - 1))
        return True


class LiquidationsList(TextPanel):
    """Liquidation events reported by the feed (real on an exchange, simulated on the demo market)."""

    DEFAULT_CSS = """
    LiquidationsList { width: 30; height: 1fr; padding: 0 1; border-left: vkey $panel-lighten-2; }
    """

    def show_events(self, events: list[LiquidationEvent], rows: int) -> bool:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("feed liquidations\n", style="bold")
        if not events:
            t.append("none yet", style="dim")
        for e in reversed(events[-max(rows - 1, 1) :]):
            hhmm = datetime.fromtimestamp(e.time_ms / 1000, UTC).strftime("%H:%M:%S")
            t.append(f"{hhmm} ")
            t.append("L" if e.side == "long" else "S", style="red" if e.side == "long" else "green")
            t.append(f" {fmt_usd(e.usd, digits=2):>6} @{fmt_price(e.price, 0 if e.price >= 1000 else None)}\n")
        t.rstrip()
        return self.set_text(t)


class AlertsLine(TextPanel):
    DEFAULT_CSS = """
    AlertsLine { height: 1; padding: 0 1; background: $boost; }
    """

    def show_alert(self, alert: Alert | None, now: float | None = None) -> bool:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("⚑ ", style="bold")
        if alert is None:
            t.append("no alerts", style="dim")
        else:
            when = datetime.fromtimestamp(alert.time, UTC).strftime("%H:%M:%S")
            t.append(f"{when} ", style="dim")
            t.append(alert.message, style="bold yellow" if alert.level == "warning" else "")
            age = (now or time.time()) - alert.time
            if age > 60:
                t.append(f" ({fmt_duration(age)} ago)", style="dim")
        return self.set_text(t)
