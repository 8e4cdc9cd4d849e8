"""Modal screens: help, the symbol and exchange pickers, the position-risk form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from .viewport import fmt_price, fmt_usd


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q,f1", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    """

    def __init__(self, keys: list[tuple[str, str]], model_text: str) -> None:
        super().__init__()
        self.keys = keys
        self.model_text = model_text

    def compose(self) -> ComposeResult:
        t = Text()
        t.append("liqheat — estimated liquidation zones\n\n", style="bold")
        t.append("Keys\n", style="bold underline")
        for key, what in self.keys:
            t.append(f"  {key:<14}", style="bold")
            t.append(f"{what}\n")
        t.append("  ctrl+p        command palette (every action above, by name)\n\n")
        t.append("Reading the map\n", style="bold underline")
        t.append(
            "Time runs left to right: one column per candle of the timeframe, the rightmost column is the live "
            "book. Price runs bottom to top, two price bins per row. Colour (or glyph density without colour) is "
            "the estimated USD of leveraged positions that would be liquidated in that cell; the legend gives "
            "absolute USD, not a relative scale. The white trace is the price.\n\n"
            "Beside the map: the liquidation map now, longs below the price and shorts above, stacked by leverage "
            "tier, with its USD scale. Under the map: estimated realised liquidations per candle (red: longs, "
            "green: shorts). The feed list shows liquidations the exchange reported (L long, S short; simulated "
            "on the demo market). The zones table grades clusters low / elevated / high by their share of daily "
            "traded USD; 'touch 4h' is the chance price reaches the zone within 4 hours.\n\n"
        )
        t.append("Everything here is an ESTIMATE\n", style="bold underline")
        t.append(self.model_text + "\n")
        with VerticalScroll():
            yield Static(t)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


class PickerScreen(ModalScreen[str | None]):
    """Choose one of a list of names, with a filter box when the list is long."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical { width: 60; max-width: 95%; height: auto; max-height: 80%; border: round $accent; background: $surface; }
    PickerScreen Input { margin: 0 0 1 0; }
    PickerScreen OptionList { height: auto; max-height: 20; }
    """

    def __init__(self, title: str, names: list[str], current: str = "", notes: dict[str, str] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.names = names
        self.current = current
        self.notes = notes or {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text, style="bold"))
            if len(self.names) > 8:
                yield Input(placeholder="type to filter", id="filter")
            yield OptionList(*self._options(""), id="choices")

    def _options(self, text: str) -> list[Option]:
        out = []
        for name in self.names:
            if text.lower() in name.lower():
                label = Text(name, style="bold" if name == self.current else "")
                if name in self.notes:
                    label.append(f"  {self.notes[name]}", style="dim")
                out.append(Option(label, id=name))
        return out

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        if self.current in self.names and len(self.query("#filter")) == 0:
            ol.highlighted = self.names.index(self.current)
        ol.focus() if len(self.query("#filter")) == 0 else self.query_one("#filter").focus()

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        ol.add_options(self._options(event.value))
        if ol.option_count:
            ol.highlighted = 0

    @on(Input.Submitted, "#filter")
    def _submit(self) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is not None:
            self.dismiss(ol.get_option_at_index(ol.highlighted).id)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RiskScreen(ModalScreen[None]):
    """Where would my position be liquidated, how crowded is that price, could a cascade reach it?"""

    BINDINGS = [Binding("escape", "cancel", "close")]
    DEFAULT_CSS = """
    RiskScreen { align: center middle; }
    RiskScreen > Vertical { width: 76; max-width: 98%; height: auto; max-height: 95%; border: round $accent; background: $surface; padding: 0 1; }
    RiskScreen Grid { grid-size: 4; grid-gutter: 0 1; height: auto; grid-columns: 1fr 1fr 1fr 1fr; }
    RiskScreen Input, RiskScreen Select { width: 100%; }
    RiskScreen #result { height: auto; margin-top: 1; }
    """

    def __init__(self, compute: Callable[[str, float, float, float], Awaitable[dict[str, Any]]], price: float) -> None:
        super().__init__()
        self.compute = compute
        self.price = price

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Position risk (estimated)", style="bold"))
            with Grid():
                yield Label("side")
                yield Label("entry")
                yield Label("leverage")
                yield Label("size USD")
                yield Select([("long", "long"), ("short", "short")], value="long", allow_blank=False, id="side")
                yield Input(value=f"{self.price:.2f}", id="entry", type="number")
                yield Input(value="10", id="leverage", type="number")
                yield Input(value="10000", id="size", type="number")
            yield Button("compute", id="go", variant="primary")
            yield Static("", id="result")

    def on_mount(self) -> None:
        self.query_one("#entry", Input).focus()

    @on(Button.Pressed, "#go")
    @on(Input.Submitted)
    async def run_risk(self) -> None:
        out = self.query_one("#result", Static)
        try:
            side = str(self.query_one("#side", Select).value)
            entry = float(self.query_one("#entry", Input).value)
            lev = float(self.query_one("#leverage", Input).value)
            size = float(self.query_one("#size", Input).value)
            risk = await self.compute(side, entry, lev, size)  # the engine's (remote: the server's) answer
        except ValueError as exc:
            out.update(Text(str(exc).splitlines()[0] if str(exc) else "not a number", style="bold red"))
            return
        out.update(describe_risk(risk))

    def action_cancel(self) -> None:
        self.dismiss(None)


def describe_risk(r: dict[str, Any]) -> Text:
    """The position-risk JSON (engine.analytics, the same body as GET /api/v1/risk) in words."""
    t = Text()
    t.append("liquidation price ", style="bold")
    t.append(f"{fmt_price(r['liquidation_price'])}", style="bold yellow")
    t.append(f"  ({r['distance_pct']:+.2f}% from {fmt_price(r['price'])}, maintenance margin {r['mmr'] * 100:.2f}%)\n")
    zone = r.get("zone")
    if zone is not None:
        t.append(f"inside a {r['grade']} {zone['side']} zone {fmt_price(zone['price_low'])}–{fmt_price(zone['price_high'])}"
                 f" ({fmt_usd(zone['usd'])} estimated)\n")
    else:
        t.append("not inside an estimated zone\n")
    if r.get("nearest_high") is not None and r.get("nearest_high_distance_pct") is not None:
        t.append(f"nearest high-grade cluster {r['nearest_high_distance_pct']:+.2f}% from it; "
                 f"{r['high_between']} high-grade cluster(s) between here and there\n")
    cascade = r.get("cascade")
    if cascade is not None:
        end = cascade.get("end_price")
        t.append("a cascade from here would ")
        reaches = bool(r.get("cascade_reaches"))
        t.append("REACH" if reaches else "not reach", style="bold red" if reaches else "green")
        t.append(" it" + (f" (ends near {fmt_price(end)})" if end else "") + "\n")
    touch = r.get("touch") or {}
    if touch:
        t.append("chance price reaches it: " + ", ".join(f"{h} {p * 100:.0f}%" for h, p in touch.items()) + "\n")
    t.append("estimates from the model's book and recent volatility, not exchange data", style="dim italic")
    return t
