"""The text around the map: market header, colour legend, zones table, recent liquidations, alerts.

Each panel re-renders only when its text actually changed, so a tick that moves nothing sends nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.text import Text
from textual.widgets import DataTable, Static

from engine.service import Zone

from .palette import LEVELS, Palette, glyph_level
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
# the first intensity level of each glyph of the ramp (palette.glyph_level)
GLYPH_FLOORS = tuple(min(lv for lv in range(1, LEVELS) if glyph_level(lv) == g) for g in range(1, 5))
REORDER_MARGIN = 0.25  # a zone overtakes the one above it only when its score is 25% higher
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
    MarketHeader { height: 2; background: $panel; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
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
            return self.set_text(_two_lines(line1, line2))
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
        if facts.backfilling:  # the views stand on the recent days only until the rest is in
            line2.append(f" BACKFILLING {facts.backfilling} ", style=HEALTH_STYLE["loading"])
        line2.append("  ")
        line2.append(" ESTIMATED ", style="bold black on yellow")
        line2.append(f"  {timeframe} · {tier_label} · ladder {facts.ladder}")
        if zoom != 1.0:
            line2.append(f" · zoom {fmt_zoom(zoom)}x")
        if facts.seed_mode:
            line2.append(f" · seed {facts.seed_mode}", style="dim")
        if paused:
            line2.append("  ")
            line2.append(" PAUSED ", style="bold black on magenta")
        if loading:
            line2.append(f"  {loading}", style="italic")
        return self.set_text(_two_lines(line1, line2))


def _two_lines(line1: Text, line2: Text) -> Text:
    """Each line cut at the edge, never wrapped: a wrapped first line pushed the status line (health,
    ESTIMATED, view) off a narrow terminal."""
    return Text("\n", no_wrap=True, overflow="ellipsis").join([line1, line2])


def fmt_zoom(zoom: float) -> str:
    """1.5, 2.25, 0.67 — not 0.666667."""
    return f"{zoom:.2f}".rstrip("0").rstrip(".")


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
            # with glyphs, one swatch per glyph (at the first level that draws it): two swatches sharing
            # a glyph would claim a difference the map cannot show
            swatches = (1, 4, 8, 12, LEVELS - 1) if pal.mode.blocks else GLYPH_FLOORS
            for level in swatches:
                ch, st = pal.swatch(level)
                t.append(ch * 2 if ch != " " else "  ", style=st)
                lo = level_floor_usd(level, scale)
                t.append(f"{'≥' if level == swatches[-1] else ''}{fmt_usd(lo, digits=2) if level > 1 else '>0'} ")
            if variant < 2:
                t.append(f"· bin {fmt_usd(bin_usd, digits=2) if bin_usd else '—'} · ", style="dim")
            for i, lab in enumerate(tier_labels):
                dim = tier is not None and tier != i
                t.append(pal.tier_glyph(i), style="dim" if dim else pal.tier_style(i))
                t.append(f"{lab} " if variant < 2 else lab, style="dim" if dim else "")
            if t.cell_len <= width:
                break
        return self.set_text(t)


@dataclass(frozen=True)
class ZoneRow:
    """One zones-table row, whatever ranked it: the zone, the score the order uses, the chance of a touch
    within 4h, and (from the engine's ranking) how many lookback windows agree and how long it has stood."""

    zone: Zone
    score: float
    touch: float | None = None
    ident: int | None = None  # the engine's stable zone id, when it gives one
    confluence: int | None = None
    persistence_s: float | None = None


def fmt_age(seconds: float) -> str:
    """How long a zone has stood, in market time: 45m, 5h, 3d."""
    s = int(seconds)
    return f"{s // 86_400}d" if s >= 86_400 else f"{s // 3600}h" if s >= 3600 else f"{s // 60}m"


def stable_order(previous: list[int], scores: dict[int, float], margin: float = REORDER_MARGIN) -> list[int]:
    """Rank by score, but keep the order already shown unless a row beats the one above it by more than
    ``margin``: without this hysteresis two zones of similar size swap places every second."""
    order = [k for k in previous if k in scores]
    for k in sorted((k for k in scores if k not in order), key=lambda k: -scores[k]):
        at = next((i for i, j in enumerate(order) if scores[j] < scores[k]), len(order))
        order.insert(at, k)
    for _ in range(len(order)):
        moved = False
        for i in range(len(order) - 1, 0, -1):
            up, down = order[i - 1], order[i]
            if scores[down] > scores[up] * (1 + margin):
                order[i - 1], order[i] = down, up
                moved = True
        if not moved:
            break
    return order


class ZonesTable(DataTable[Text]):
    """Graded zones: strongest first (with hysteresis) or nearest first. Not focusable: the arrow keys
    belong to the map."""

    can_focus = False
    DEFAULT_CSS = """
    ZonesTable { height: 1fr; width: 1fr; }
    """

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = False
        self._shown: object = None
        self._widths: tuple[int, ...] = ()
        self._names: tuple[str, ...] = ()
        self._order: list[int] = []  # keys in the order last shown
        self._known: dict[int, Zone] = {}  # key -> the zone last shown under it
        self._next_key = 1
        self.touch = False
        self.order_label = "strength"

    def _set_columns(self, names: tuple[str, ...], widths: tuple[int, ...]) -> None:
        """Fixed widths, from the rows: auto-sized columns would jitter as live numbers change length."""
        self.clear(columns=True)
        for name, w in zip(names, widths, strict=True):
            self.add_column(name, width=max(w, len(name)))
        self._widths = widths
        self._names = names
        self._shown = None

    def _key(self, row: ZoneRow, taken: set[int]) -> int:
        """The same zone keeps its key from one update to the next: the engine's id when it sends one,
        else the previously shown zone of the same side whose price range overlaps it most."""
        if row.ident is not None:
            return row.ident
        z = row.zone
        best, overlap = None, 0.0
        for k, old in self._known.items():
            if k in taken or old.side != z.side:
                continue
            ov = min(old.price_high, z.price_high) - max(old.price_low, z.price_low)
            if ov >= 0 and (best is None or ov > overlap):
                best, overlap = k, ov
        if best is None:
            best = -self._next_key  # negative: never clashes with an engine id
            self._next_key += 1
        return best

    def arrange(self, rows: list[ZoneRow], by: str = "strength", side: str | None = None) -> list[ZoneRow]:
        """The rows in display order: ``by`` strength (score, with hysteresis) or distance from the price;
        ``side`` keeps only longs or shorts."""
        if side is not None:
            rows = [r for r in rows if r.zone.side == side]
        keyed: dict[int, ZoneRow] = {}
        for r in rows:
            keyed[self._key(r, set(keyed))] = r
        self._known = {k: r.zone for k, r in keyed.items()}
        if by == "distance":
            order = sorted(keyed, key=lambda k: abs(keyed[k].zone.distance_pct))
        elif rows and all(r.ident is not None for r in rows):
            order = list(keyed)  # the engine's rank order, already held stable by its own hysteresis
        else:
            order = stable_order(self._order, {k: r.score for k, r in keyed.items()})
        self._order = order
        self.order_label = by
        return [keyed[k] for k in order]

    def show_zones(self, rows: list[ZoneRow], limit: int = 12, plain: bool = False, touch: bool = True) -> bool:
        """``rows`` in display order (``arrange``). ``plain``: no colour (NO_COLOR / --colors none), where
        dim red and green read as grey."""
        out = []
        extra = any(r.confluence is not None for r in rows)
        for r in rows[:limit]:
            z = r.zone
            arrow = "↓" if z.side == "long" else "↑"
            row = [
                Text(f"{z.side} {arrow}", style="" if plain else ("red" if z.side == "long" else "green")),
                Text(f"{fmt_price(z.price_low)}–{fmt_price(z.price_high)}"),
                Text(fmt_usd(z.usd), justify="right"),
                Text(z.grade, style="bold" if plain and z.grade == "high" else "" if plain else GRADE_STYLE.get(z.grade, "")),
                Text(f"{z.distance_pct:+.2f}%", justify="right"),
            ]
            if touch:
                row.append(Text("—" if r.touch is None else f"{r.touch * 100:.0f}%", justify="right"))
            if extra:
                row.append(Text(f"{r.confluence}/3" if r.confluence else "—", justify="right"))
                age = r.persistence_s
                row.append(Text("—" if age is None else "new" if age < 60 else fmt_age(age), justify="right"))
            out.append(row)
        names = ("side", "price range", "est. USD", "grade", "dist") + (("touch 4h",) if touch else ()) + (
            ("confl", "age") if extra else ())
        widths = tuple(max([len(r[c].plain) for r in out] + [4]) for c in range(len(names)))
        if widths != self._widths or names != self._names:
            self._set_columns(names, widths)
        key = [[c.plain for c in r] for r in out]
        if key == self._shown:
            return False
        self._shown = key
        self.clear()
        for r in out:
            self.add_row(*r)
        if not out:
            self.add_row(Text("none", style="dim"), *[Text("")] * (len(self.columns) - 1))
        return True

    def visible_order(self) -> list[tuple[str, float, float]]:
        """(side, low, high) of the rows as shown (tests read it)."""
        return [(self._known[k].side, self._known[k].price_low, self._known[k].price_high) for k in self._order
                if k in self._known]


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


def alert_words(alert: Alert) -> str:
    """An alert as the dashboard says everything else: $8.1M not $8,123,456, and percentages signed
    (below the price negative) — from the rule's own fields; the engine's message when they are missing."""
    d = alert.data
    parts = str(d.get("symbol") or "").split(":")  # "demo:BTC/USDT:USDT" or "BTC/USDT:USDT"
    sym = parts[1] if len(parts) == 3 else parts[0]
    try:
        if alert.kind == "proximity" and isinstance(d.get("zone"), dict):
            z = d["zone"]
            below = z["side"] == "long"
            dist = -abs(float(d["distance_pct"])) if below else abs(float(d["distance_pct"]))
            article = "an" if str(z["grade"])[:1] in "aeiou" else "a"
            return (f"{sym} {dist:+.2f}% to {article} {z['grade']} {z['side']} zone {fmt_price(float(z['price_low']))}–"
                    f"{fmt_price(float(z['price_high']))} ({fmt_usd(float(z['usd']))} est.)")
        if alert.kind == "cascade" and "total_usd" in d:
            down = d.get("direction") == "down"
            move = -abs(float(d["move_pct"])) if down else abs(float(d["move_pct"]))
            end = d.get("end_price")
            to = f", price to {fmt_price(float(end))}" if end else ""
            return f"{sym} cascade risk {'down' if down else 'up'}: {fmt_usd(float(d['total_usd']))} est. liquidated{to} ({move:+.2f}%)"
        if alert.kind == "grade_change" and isinstance(d.get("zone"), dict):
            z = d["zone"]
            return (f"{sym} {z['side']} zone {fmt_price(float(z['price_low']))}–{fmt_price(float(z['price_high']))} "
                    f"{d.get('previous_grade')} → {d.get('grade')} ({fmt_usd(float(z['usd']))} est.)")
    except (KeyError, TypeError, ValueError):
        pass
    return alert.message


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
            t.append(alert_words(alert), style="bold yellow" if alert.level == "warning" else "")
            age = (now or time.time()) - alert.time
            if age > 60:
                t.append(f" ({fmt_duration(age)} ago)", style="dim")
        return self.set_text(t)
