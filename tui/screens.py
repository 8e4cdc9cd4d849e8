"""Modal screens: help, the symbol and exchange pickers, the position-risk form."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
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
    """Where would my position be liquidated, how crowded is that price, could a cascade reach it? And for
    the positions I already hold: how much of the portfolio would be liquidated inside elevated/high zones,
    against my limit, and how large the position in the form may be to stay under it."""

    BINDINGS = [Binding("escape", "cancel", "close")]
    DEFAULT_CSS = """
    RiskScreen { align: center middle; }
    RiskScreen > VerticalScroll { width: 84; max-width: 98%; height: auto; max-height: 95%; border: round $accent; background: $surface; padding: 0 1; }
    RiskScreen Grid { grid-size: 4; grid-gutter: 0 1; height: auto; grid-columns: 1fr 1fr 1fr 1fr; }
    RiskScreen Input, RiskScreen Select { width: 100%; }
    RiskScreen #buttons { height: auto; }
    RiskScreen #buttons Button { margin-right: 1; }
    RiskScreen #result, RiskScreen #portfolio { height: auto; margin-top: 1; }
    """

    def __init__(self, compute: Callable[[str, float, float, float], Awaitable[dict[str, Any]]], price: float,
                 portfolio: Callable[..., Awaitable[dict[str, Any]]] | None = None, store: Any = None,
                 market: str = "") -> None:
        super().__init__()
        self.compute = compute
        self.price = price
        self.portfolio = portfolio
        self.store = store  # tui.positions.PositionStore
        self.market = market

    def compose(self) -> ComposeResult:
        with VerticalScroll():
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
            with Horizontal(id="buttons"):
                yield Button("compute", id="go", variant="primary")
                if self.store is not None:
                    yield Button("add to portfolio", id="add")
                    yield Button("remove last", id="remove")
                    yield Label(" limit % ")
                    yield Input(value=f"{self.store.limit_share * 100:g}", id="limit", type="number")
            yield Static("", id="result")
            yield Static("", id="portfolio")

    def on_mount(self) -> None:
        self.query_one("#entry", Input).focus()
        if self.store is not None:
            self.run_worker(self._show_portfolio(None), exclusive=True, group="portfolio")

    def _form(self) -> tuple[str, float, float, float]:
        side = str(self.query_one("#side", Select).value)
        entry = read_number(self.query_one("#entry", Input).value, "entry")
        lev = read_number(self.query_one("#leverage", Input).value, "leverage")
        size = read_number(self.query_one("#size", Input).value, "size USD")
        return side, entry, lev, size

    @on(Button.Pressed, "#go")
    @on(Input.Submitted)
    async def run_risk(self) -> None:
        out = self.query_one("#result", Static)
        try:
            side, entry, lev, size = self._form()
            risk = await self.compute(side, entry, lev, size)  # the engine's (remote: the server's) answer
        except ValueError as exc:
            out.update(Text(one_line(exc), style="bold red"))
            return
        out.update(describe_risk(risk))
        if self.store is not None:
            await self._show_portfolio((side, entry, lev, size))

    @on(Button.Pressed, "#add")
    async def add_position(self) -> None:
        from .positions import SavedPosition

        out = self.query_one("#result", Static)
        try:
            side, entry, lev, size = self._form()
            await self.compute(side, entry, lev, size)  # refuse what the exchange would refuse
            self.store.add(SavedPosition(self.market, side, entry, lev, size))
        except ValueError as exc:
            out.update(Text(one_line(exc), style="bold red"))
            return
        out.update(Text(f"added: {side} {fmt_usd(size)} at {fmt_price(entry)} {lev:g}x on {self.market}"))
        await self._show_portfolio(None)

    @on(Button.Pressed, "#remove")
    async def remove_position(self) -> None:
        self.store.remove_last()
        await self._show_portfolio(None)

    async def _show_portfolio(self, new: tuple[str, float, float, float] | None) -> None:
        """Each saved position's liquidation price and zone grade, the share exposed inside elevated/high
        zones against the limit, and (with a position in the form) the size that keeps the share under it."""
        from engine.analytics import PositionSpec

        out = self.query_one("#portfolio", Static)
        store = self.store
        try:
            limit = read_number(self.query_one("#limit", Input).value, "limit %") / 100
            if not 0.001 <= limit <= 1:
                raise ValueError("limit %: between 0.1 and 100")
            if abs(limit - store.limit_share) > 1e-12:
                store.set_limit(limit)
            if not store.positions and new is None:
                out.update(portfolio_hint(store))
                return
            specs = [PositionSpec(p.side, p.entry, p.leverage, p.size_usd, p.symbol) for p in store.positions]
            ask = None if new is None else PositionSpec(new[0], new[1], new[2], new[3], self.market)
            if self.portfolio is None:
                return
            body = await self.portfolio(specs, limit, ask)
        except ValueError as exc:
            out.update(Text(one_line(exc), style="bold red"))
            return
        out.update(describe_portfolio(body, store))

    def action_cancel(self) -> None:
        self.dismiss(None)


class SessionsScreen(ModalScreen[None]):
    """When liquidations happen: estimated realised liquidations by trading session (Asia / Europe / US) and
    by hour of the funding cycle, with the funding countdown — the engine's (remote: the server's) figures."""

    BINDINGS = [Binding("escape,t,q", "cancel", "close")]
    DEFAULT_CSS = """
    SessionsScreen { align: center middle; }
    SessionsScreen > VerticalScroll { width: 90; max-width: 98%; height: auto; max-height: 95%; border: round $accent; background: $surface; padding: 0 1; }
    """
    REFRESH_S = 10.0

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        super().__init__()
        self.fetch = fetch

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("sessions: loading…", style="dim"), id="sessions")

    def on_mount(self) -> None:
        self.run_worker(self._load(), exclusive=True, group="sessions")
        self.set_interval(self.REFRESH_S, lambda: self.run_worker(self._load(), exclusive=True, group="sessions"))

    async def _load(self) -> None:
        out = self.query_one("#sessions", Static)
        try:
            body = await self.fetch()
        except ValueError as exc:
            out.update(Text(f"sessions: {one_line(exc)}", style="bold red"))
            return
        out.update(describe_sessions(body))

    def action_cancel(self) -> None:
        self.dismiss(None)


def _bar(value: float, peak: float, width: int = 20) -> str:
    if peak <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / peak * width * 8))
    return "█" * (eighths // 8) + (" ▏▎▍▌▋▊▉"[eighths % 8] if eighths % 8 else "")


def describe_sessions(body: dict[str, Any]) -> Text:
    from datetime import UTC, datetime

    t = Text()
    span = body.get("span") or [0, 0]
    days = (span[1] - span[0]) / 86_400 if len(span) == 2 else 0
    when = " → ".join(datetime.fromtimestamp(int(x), UTC).strftime("%b %d") for x in span) if len(span) == 2 else ""
    t.append("Sessions — estimated realised liquidations", style="bold underline")
    t.append(f"  ({when}, {days:.1f} days of history)\n", style="dim")
    rows = body.get("sessions") or []
    peak = max((float(r.get("usd_per_hour") or 0) for r in rows), default=0.0)
    t.append(f"  {'session':<8} {'UTC':<12} {'longs':>8} {'shorts':>8} {'total':>8} {'share':>6} {'per hour':>9}\n",
             style="bold")
    for r in rows:
        now = r.get("session") == body.get("current_session")
        t.append(f"{'▶' if now else ' '} {r.get('session', ''):<8} {r.get('hours_utc', ''):<12} ",
                 style="bold" if now else "")
        t.append(f"{fmt_usd(r.get('long_usd')):>8} ", style="red")
        t.append(f"{fmt_usd(r.get('short_usd')):>8} ", style="green")
        t.append(f"{fmt_usd(r.get('usd')):>8} {float(r.get('share') or 0) * 100:>5.0f}% "
                 f"{fmt_usd(r.get('usd_per_hour')):>9} ")
        t.append(_bar(float(r.get("usd_per_hour") or 0), peak, 16) + "\n", style="yellow")
    rep = body.get("reported")
    if rep and rep.get("sessions"):
        t.append(f"  reported by the feed ({rep.get('events', 0)} events): ", style="dim")
        t.append(" · ".join(f"{r.get('session')} {float(r.get('share') or 0) * 100:.0f}%" for r in rep["sessions"]) + "\n",
                 style="dim")
    f = body.get("funding") or {}
    t.append("\nFunding", style="bold underline")
    rate = f.get("rate")
    t.append(f"  rate {rate * 100:+.4f}%" if isinstance(rate, (int, float)) else "  rate —")
    t.append(f" · next in {f.get('hhmmss', '—')} · every {float(f.get('interval_hours') or 8):g}h\n")
    cyc = body.get("funding_cycle") or {}
    means = [float(x or 0) for x in cyc.get("mean_usd") or []]
    hours = cyc.get("hour") or list(range(len(means)))
    slots = cyc.get("slots") or [0] * len(means)
    if means:
        t.append("  mean estimated liquidations by hour after a funding time:\n", style="dim")
        top = max(means)
        for h, m, n in zip(hours, means, slots, strict=False):
            t.append(f"  +{float(h):>2.0f}h {fmt_usd(m):>8} ")
            t.append(_bar(m, top, 30), style="yellow")
            t.append(f"  ({n} cycles)\n", style="dim")
    t.append("estimates from the model, not exchange data", style="dim italic")
    return t


def portfolio_hint(store: Any) -> Text:
    t = Text()
    t.append("Portfolio: ", style="bold")
    t.append("no saved positions — 'add to portfolio' keeps the form's position "
             f"(saved in {store.path}); the check then shows how much of the portfolio would be liquidated in "
             f"elevated or high zones, against your limit ({store.limit_share * 100:g}%).", style="dim")
    if store.error:
        t.append(f"\n{store.error}", style="bold red")
    return t


def describe_portfolio(body: dict[str, Any], store: Any) -> Text:
    """The portfolio JSON (engine.analytics, the same body as GET /api/v1/risk?positions=…) in words."""
    t = Text()
    t.append("Portfolio", style="bold underline")
    t.append(f"  ({len(body.get('positions', []))} saved in {store.path})\n", style="dim")
    for row in body.get("positions", []):
        pos = row.get("position", {})
        sym = str(row.get("symbol", "")).split(":")[-2] if ":" in str(row.get("symbol", "")) else str(row.get("symbol", ""))
        t.append(f"  {pos.get('side', '?'):<5} {fmt_usd(pos.get('size_usd')):>7} {sym} @{fmt_price(float(pos.get('entry', 0)))}"
                 f" {float(pos.get('leverage', 0)):g}x  ")
        if row.get("error"):
            t.append(f"— {row['error']}\n", style="red")
            continue
        grade = str(row.get("grade", "none"))
        t.append(f"liq {fmt_price(row['liquidation_price'])} ")
        t.append(f"{grade}\n", style=GRADE_STYLES.get(grade, ""))
    share, limit = float(body.get("exposed_share", 0.0)), float(body.get("limit_share", 0.1))
    over = bool(body.get("over_limit"))
    t.append("inside elevated/high zones: ")
    t.append(f"{fmt_usd(body.get('exposed_usd'))} of {fmt_usd(body.get('portfolio_usd'))} = {share * 100:.1f}%",
             style="bold red" if over else "bold green")
    t.append(f" (limit {limit * 100:g}%{', OVER' if over else ''})\n")
    sug = body.get("suggestion")
    if sug:
        t.append("the form's position: ", style="bold")
        t.append(f"suggested size {fmt_usd(sug.get('suggested_usd'))} of {fmt_usd(sug.get('requested_usd'))}",
                 style="bold yellow")
        if sug.get("cut_pct"):
            t.append(f" (cut {sug['cut_pct']:g}%: entering a cluster)")
        if sug.get("reason"):
            t.append(f" — {sug['reason']}")
        t.append("\n")
    if store.error:
        t.append(store.error + "\n", style="bold red")
    t.append("estimated; the 10% / cut-size rule is a trader's rule of thumb, not exchange data", style="dim italic")
    return t


GRADE_STYLES = {"low": "green", "elevated": "yellow", "high": "bold red", "none": "dim"}


def read_number(text: str, name: str) -> float:
    """A form field as a positive number, or a ValueError that names the field (never Python's own
    "could not convert string to float: ''")."""
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        raise ValueError(f"{name}: enter a number")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a positive number")
    return value


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
