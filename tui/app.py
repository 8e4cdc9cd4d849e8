"""The dashboard: header, zone map with its live column and axes, liquidation-map profile, legend, zones
table, feed liquidations, alerts, footer. ``make_app()`` builds it for the CLI and the tests alike.

Update loop. Service events only mark what is stale; a timer (4 Hz by default) fetches a ``Pulse`` (live
book on the map's bins, the price) and repaints the live column, the axis marker and the profile rows
that changed. The wide history is fetched and repainted only when a candle of the chosen timeframe closes,
the price leaves the window, or the user changes the view — so an idle SSH session carries little.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from rich.text import Text
from textual import constants, events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from engine.analytics import TOUCH_HORIZON_HOURS, AlertSettings, RankedZone
from engine.service import timeframe_seconds

from .palette import ColorMode, Palette, mode_for, palette
from .panels import AlertsLine, LiquidationsList, MarketHeader, TextPanel, ZoneRow, ZonesTable
from .panels import Legend as LegendPanel
from .profile import Profile
from .screens import HelpScreen, PickerScreen, RiskScreen, SessionsScreen
from .source import Backdrop, Facts, Pulse, Source, View
from .viewport import (
    ZOOM_STEP,
    cell_codes,
    clamp_zoom,
    colour_scale,
    fmt_price,
    fmt_usd,
    levels,
    nice_ceiling,
    price_bins,
    row_of_price,
    time_axis,
    time_label_full,
)
from .zonemap import LiveColumn, PriceAxis, RealisedStrip, ZoneMap

TIMEFRAMES = ("5m", "15m", "1h", "4h", "1d", "1w")
COLORS = ("auto", "truecolor", "256", "16", "none")
RANGE_NAMES = {12 * 3600: "12h", 86_400: "1d", 3 * 86_400: "3d", 7 * 86_400: "1w", 14 * 86_400: "2w",
               30 * 86_400: "30d", 90 * 86_400: "90d", 180 * 86_400: "6m", 365 * 86_400: "1y"}
RANGES: tuple[int | None, ...] = (None, *RANGE_NAMES)  # key g cycles them; None = as many candles as fit
MIN_SIZE = (50, 14)  # columns, rows: below this the dashboard says "terminal too small"
SLOW_EVERY_S = 2.0  # zones table, touch probabilities, alert rules
_RICH_SYSTEM = {"truecolor": "truecolor", "256": "256", "16": "standard"}

TF_GROUP = Binding.Group("timeframe", compact=True)
ZOOM_GROUP = Binding.Group("zoom", compact=True)
PAN_GROUP = Binding.Group("pan", compact=True)
TIER_GROUP = Binding.Group("tier", compact=True)
# One key per ladder tier, by position (lowest leverage first): plain bottom-row letters, because a letter
# arrives as the same single byte over SSH/tmux on any layout (shifted digits move between layouts, F-keys
# get eaten by some terminals). `c` (recentre) is skipped; a ladder longer than this is reached with l/L.
TIER_KEYS = ("z", "x", "v", "b", "n", "m")
DEFAULT_TIER_COUNT = 5  # the default ladder: shown (disabled) in the footer until the source says otherwise


class LiqheatApp(App[int]):
    CSS_PATH = "liqheat.tcss"
    TITLE = "liqheat"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        *[
            Binding(str(i + 1), f"timeframe('{tf}')", tf, group=TF_GROUP, tooltip=f"{tf} candles")
            for i, tf in enumerate(TIMEFRAMES)
        ],
        # the footer shows the direct keys ("azxvbn tier"); l/L cycling stays, listed in the help
        Binding("a,0", "tier_all", "all tiers", group=TIER_GROUP, key_display="a", tooltip="all tiers"),
        *[
            Binding(key, f"set_tier({i})", f"tier {i + 1}", group=TIER_GROUP, tooltip=f"leverage tier {i + 1}")
            for i, key in enumerate(TIER_KEYS)
        ],
        Binding("l", "next_tier", "tier", group=TIER_GROUP, show=False),
        Binding("L", "prev_tier", "tier", group=TIER_GROUP, show=False),
        Binding("s", "pick_symbol", "symbol"),
        Binding("e", "pick_exchange", "exchange", show=False),
        Binding("plus,equals_sign", "zoom(1)", "zoom", group=ZOOM_GROUP, key_display="+"),
        Binding("minus", "zoom(-1)", "zoom", group=ZOOM_GROUP, key_display="-"),
        Binding("up,k", "arrow(0, -1)", "pan", group=PAN_GROUP, key_display="↑", show=False),
        Binding("down,j", "arrow(0, 1)", "pan", group=PAN_GROUP, key_display="↓", show=False),
        Binding("left,h", "arrow(1, 0)", "cell", show=False),
        Binding("right", "arrow(-1, 0)", "cell", show=False),
        Binding("i", "inspect", "read cell", show=False),
        Binding("escape", "leave_inspect", "leave", show=False),
        Binding("c", "recentre", "centre", show=False),
        Binding("p,space", "pause", "pause"),
        Binding("r", "risk", "risk", show=False),
        Binding("g", "range", "range", show=False),
        Binding("t", "sessions", "sessions", show=False),
        Binding("w", "risk_weighted", "risk-weighted", show=False),
        Binding("f", "side_filter", "longs/shorts", show=False),
        Binding("o", "zone_order", "zone order", show=False),
        Binding("question_mark,f1", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        # Ctrl+C quits, as in every other terminal program (Textual would only say "press ctrl+q")
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: Source,
        *,
        open_source: Callable[[str], Source] | None = None,
        colors: str = "auto",
        refresh_hz: float = 4.0,
        clock: Callable[[], float] = time.time,
        timeframe: str = "5m",
        paused: bool = False,
        start_wait: float = 0.0,
        exit_on_start_error: bool = False,
    ) -> None:
        if colors not in COLORS:
            raise ValueError(f"colors must be one of {', '.join(COLORS)}")
        # Textual reads the colour system and NO_COLOR when the App is built: set them for that moment.
        saved_system, saved_nc = constants.COLOR_SYSTEM, os.environ.get("NO_COLOR")
        try:
            if colors in _RICH_SYSTEM:
                constants.COLOR_SYSTEM = _RICH_SYSTEM[colors]  # type: ignore[misc]
                os.environ.pop("NO_COLOR", None)
            elif colors == "none":
                os.environ["NO_COLOR"] = "1"
            # without colour, Textual's default filter turns colours into greys, which still sends colour
            # codes; with native ANSI colours it removes them (NoColor): what NO_COLOR asks for
            no_colour = colors == "none" or (colors == "auto" and os.environ.get("NO_COLOR") is not None)
            super().__init__(ansi_color=True if colors == "16" or no_colour else None)
        finally:
            constants.COLOR_SYSTEM = saved_system  # type: ignore[misc]
            if saved_nc is None:
                os.environ.pop("NO_COLOR", None)
            else:
                os.environ["NO_COLOR"] = saved_nc
        self.color_choice = colors
        self.source: Source | None = None
        self._pending_source: Source | None = source
        self.open_source = open_source
        self.refresh_hz = refresh_hz
        self.clock = clock
        self.timeframe = timeframe
        self.tier: int | None = None
        self.paused = paused
        self.start_wait = start_wait  # seconds to keep retrying a source that is not reachable yet
        self.exit_on_start_error = exit_on_start_error
        self.start_error = ""  # why the first source could not start (the CLI prints it)
        self.zoom = 1.0
        self.pan = 0.0
        self.backdrop: Backdrop | None = None
        self.pulse: Pulse | None = None
        self.facts: Facts | None = None
        self.zones: list[Any] = []
        self.cursor: tuple[int, int] | None = None  # inspected cell: (columns from the right, 0 = live; row)
        self.zone_order = "strength"  # or "distance" (key o)
        self.range_s: int | None = None  # time range shown (key g); None: as many candles as fit
        self.risk_weighted = False  # key w: the profile as USD x P(touch within 4h)
        self._risk_profile: tuple[Backdrop, np.ndarray, np.ndarray] | None = None
        self.positions: Any = None  # tui.positions.PositionStore, read when the risk form first opens
        self.side_filter: str | None = None  # "long" / "short": one side only (key f)
        self._zone_rows: list[ZoneRow] = []
        self._zone_touch = False
        self.ranked_zones: list[RankedZone] = []  # the same zones with touch, confluence, persistence
        self.scale = 1.0
        self.loading = "starting"
        self.error = ""
        self.mode = ColorMode.TRUECOLOR
        self._dirty: set[str] = set()
        self._busy = False
        self._slow_busy = False
        self._frozen = False
        self._generation = 0
        self._last_live = 0.0
        self._last_slow = 0.0
        self._map_resize_timer: Any = None
        self._shown_realised: tuple[float, float] | None = None
        self.frames = 0  # live updates applied (tests and benchmarks read it)
        self.reloads = 0  # history redraws

    # ---- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield MarketHeader(id="header")
        with Horizontal(id="chart"):
            with Vertical(id="map-col"):
                with Horizontal(id="map-row"):
                    yield ZoneMap(id="map")
                    yield LiveColumn(id="live")
                yield TextPanel("", id="time-axis")
                yield RealisedStrip(id="realised")
            with Vertical(id="axis-col"):
                yield PriceAxis(id="axis")
                yield TextPanel("", id="axis-foot")
                yield TextPanel("", id="realised-scale")
            with Vertical(id="profile-col"):
                yield Profile(id="profile")
                yield TextPanel("", id="profile-scale")
                yield TextPanel("", id="profile-total")
        yield LegendPanel(id="legend")
        with Horizontal(id="bottom"):
            yield ZonesTable(id="zones")
            yield LiquidationsList(id="liqs")
        yield AlertsLine(id="alerts")
        yield Footer()
        yield TextPanel("", id="too-small")

    def on_mount(self) -> None:
        forced = {"truecolor": ColorMode.TRUECOLOR, "256": ColorMode.C256, "16": ColorMode.C16, "none": ColorMode.NONE}
        self.mode = forced.get(self.color_choice) or mode_for(self.console.color_system, self.no_color)
        if self.mode is ColorMode.C16:
            self.theme = "ansi-dark"
        pal = palette(self.mode)
        for w in (self.map, self.live, self.query_one(PriceAxis), self.query_one(Profile), self.query_one(RealisedStrip)):
            w.set_palette(pal)
        self._check_size(self.size.width, self.size.height)
        self._show_loading()
        self.set_interval(1.0 / self.refresh_hz, self._tick, name="live updates")
        if self._pending_source is not None:
            self._switch_source(self._pending_source)

    @property
    def map(self) -> ZoneMap:
        return self.query_one(ZoneMap)

    @property
    def live(self) -> LiveColumn:
        return self.query_one(LiveColumn)

    @property
    def pal(self) -> Palette:
        return palette(self.mode)

    # ---- sources ----------------------------------------------------------------------------------
    def _switch_source(self, new: Source) -> None:
        self.loading = f"loading {new.label}…"
        self._show_loading()
        self._start_source(new)

    @work(group="source", exclusive=True, exit_on_error=False)
    async def _start_source(self, new: Source) -> None:
        deadline = time.monotonic() + self.start_wait
        delay = 0.5
        attempt = 1
        while True:
            try:
                await new.start()
                break
            except Exception as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                left = deadline - time.monotonic()
                if getattr(exc, "retryable", False) and left > 0:
                    # a server that is not up yet (or restarting): retry with backoff, as after a lost
                    # connection, and say so instead of giving up
                    wait = min(delay, left)
                    self.loading = f"waiting for {new.label} (attempt {attempt}, next in {wait:.0f}s): {msg}"
                    self._show_loading()
                    await asyncio.sleep(wait)
                    delay, attempt = min(delay * 2, 8.0), attempt + 1
                    continue
                self._start_failed(new, msg)
                return
        old, self.source = self.source, new
        self._pending_source = None
        self.loading = ""
        self.error = ""
        self.backdrop = None
        self.pulse = None
        if self.tier is not None and self.tier >= len(new.tiers):
            self.tier = None  # another ladder: its tiers are not the old ones
        self._generation += 1
        if old is not None:
            await old.stop()
        self._listen(new)
        self.refresh_bindings()  # the footer shows one key per tier of this ladder
        self.call_after_refresh(self.request_reload)
        if not self._frozen:
            # start-up objects (history, caches, widgets) live as long as the app: keep them out of the
            # collector's full passes, which otherwise stall a frame for tens of milliseconds
            self._frozen = True
            gc.collect()
            gc.freeze()

    @work(group="events", exclusive=True, exit_on_error=False)
    async def _listen(self, source: Source) -> None:
        async for kind in source.changes():
            self._dirty.add(kind)

    # ---- drawing ----------------------------------------------------------------------------------
    def _view(self) -> View | None:
        if self.source is None:
            return None
        size = self.map.size
        if size.width < 2 or size.height < 2:
            return None
        columns = size.width + 1
        if self.range_s is not None:
            # a time range: the timeframe that fits it into the map, and only as many columns as it spans
            columns = min(columns, -(-self.range_s // timeframe_seconds(self.timeframe)) + 1)
        return View(self.source.market, self.timeframe, rows=size.height, columns=columns, zoom=self.zoom,
                    pan=self.pan, tier=self.tier)

    def request_reload(self) -> None:
        """Refetch the history for the current view (timeframe, zoom, pan, size, market changed)."""
        if self.source is None:
            return
        self._generation += 1
        self._reload(self._generation)

    @work(group="reload", exclusive=True, exit_on_error=False)
    async def _reload(self, generation: int) -> None:
        source, view = self.source, self._view()
        if source is None or view is None:
            return
        try:
            bd = await source.backdrop(view)
            pulse = await source.pulse(bd)
            facts = await source.facts()
        except Exception as exc:  # a failing view keeps the last picture and says why
            self._note_error(exc)
            return
        if generation != self._generation:
            return
        self.backdrop, self.facts = bd, facts
        self.reloads += 1
        self._paint_history()
        self._paint_pulse(pulse)
        self._refresh_header()
        # the table waits until the new map is on the screen (its numpy work would slow this frame)
        self.call_after_refresh(self._start_slow)
        self.call_after_refresh(source.drawn)

    def _start_failed(self, new: Source, msg: str) -> None:
        with_old = self.source is not None
        if not with_old and self.exit_on_start_error:
            # the command line asked for something that cannot start: one line on stderr, exit 2 (cli.py)
            self.start_error = f"could not start {new.label}: {msg}"
            self.exit(2, return_code=2)
            return
        self.loading = "" if with_old else f"could not start {new.label}: {msg}"
        self.error = msg
        self.notify(f"{new.label}: {msg}", severity="error", timeout=8)
        self._show_loading()
        if with_old:
            self._refresh_header()

    def _note_error(self, exc: BaseException) -> None:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.error = msg
        for line in self.query(AlertsLine):  # none while the app is shutting down
            line.set_text(Text(f"⚑ {msg}", style="bold red"))

    def _tick(self) -> None:
        """Timer: fetch and paint the live parts if the service said something changed (or every second
        for the header's clocks); the zones table and lists at most every SLOW_EVERY_S seconds."""
        if self.source is None or self.backdrop is None:
            self._show_loading()
            return
        if self.paused:
            return
        now = time.monotonic()
        if "history" in self._dirty:  # the rest of the history came in: the map redraws on all of it
            self._dirty.discard("history")
            self.request_reload()
        if not self._busy and (bool(self._dirty & {"book", "bar", "market"}) or now - self._last_live >= 1.0):
            self._busy = True
            self._dirty -= {"book", "bar", "market"}
            self._update(self._generation)
        if self._dirty & {"liquidation", "health", "alert"}:
            self._dirty -= {"liquidation", "health", "alert"}
            self._refresh_lists()
        if not self._slow_busy and now - self._last_slow >= SLOW_EVERY_S:
            self._start_slow()

    @work(group="live", exit_on_error=False)
    async def _update(self, generation: int) -> None:
        try:
            source, bd = self.source, self.backdrop
            if source is None or bd is None:
                return
            self._last_live = time.monotonic()
            pulse = await source.pulse(bd)
            if generation != self._generation or bd is not self.backdrop or self.paused:
                return
            if pulse.bucket != bd.bucket or not bd.window.contains(pulse.price, 0.02):
                # a candle closed (the time axis shifts) or the price left the window
                self.request_reload()
                return
            self._paint_pulse(pulse)
            self.facts = await source.facts()
            self._refresh_header()
        except Exception as exc:
            self._note_error(exc)
        finally:
            self._busy = False

    def _start_slow(self) -> None:
        self._slow_busy = True
        self._last_slow = time.monotonic()
        self._slow_update()

    @work(group="slow", exit_on_error=False)
    async def _slow_update(self) -> None:
        """Zones (with touch probabilities and the alert rules): numpy work in a thread, off the frame path."""
        try:
            await self._refresh_slow()
        except Exception as exc:
            self._note_error(exc)
        finally:
            self._slow_busy = False

    def _paint_history(self) -> None:
        bd = self.backdrop
        if bd is None:
            return
        grid = bd.grid(self.tier, self.side_filter)
        self.scale = colour_scale(grid) if grid.size and grid.max() > 0 else self.scale
        lv = levels(grid, self.scale)
        codes = cell_codes(lv, price_bins(bd.closes, bd.edges), self.mode.blocks)
        self.map.show_codes(codes)
        width = self.map.size.width
        self.query_one("#time-axis", TextPanel).set_text(Text(time_axis(bd.times, timeframe_seconds(bd.view.timeframe), width), style="dim"))
        self.query_one(Profile).reset_scale()
        if self.cursor is not None:
            self._set_cursor(self.cursor)  # the same cell of the new picture (clamped to its size)
        self._show_legend_or_readout()
        self._shown_realised = None  # the next pulse paints the strip with the forming candle

    def _paint_realised(self, pulse: Pulse | None) -> None:
        bd = self.backdrop
        if bd is None:
            return
        fl, fs = pulse.forming_realised if pulse is not None else (0.0, 0.0)
        rl = np.r_[bd.realised_long, fl]
        rs = np.r_[bd.realised_short, fs]
        total = rl + rs
        scale = nice_ceiling(float(np.percentile(total[total > 0], 98))) if (total > 0).any() else 1.0
        self.query_one(RealisedStrip).show_realised(rl, rs, scale)
        self.query_one("#realised-scale", TextPanel).set_text(Text(f"liq≤{fmt_usd(scale, digits=2)}", style="dim"))

    def _paint_pulse(self, pulse: Pulse) -> None:
        bd = self.backdrop
        if bd is None:
            return
        self.pulse = pulse
        col = pulse.column(self.tier, self.side_filter)
        lv = levels(col[None, :], self.scale)
        pb = price_bins(np.array([pulse.price]), bd.edges)
        self.live.show_codes(cell_codes(lv, pb, self.mode.blocks))
        self.query_one(PriceAxis).show_axis(bd.edges, pulse.price)
        prof = self.query_one(Profile)
        longs, shorts, unit = pulse.long_tiers, pulse.short_tiers, "/row"
        weighted = self._risk_profile
        if self.risk_weighted and weighted is not None and weighted[0] is bd and weighted[1].shape == longs.shape:
            # the risk-weighted view: each bin's USD x P(price reaches it within 4h), from the engine
            longs, shorts, unit = weighted[1], weighted[2], "×P4h"
        if self.side_filter == "short":
            longs = np.zeros_like(longs)
        if self.side_filter == "long":
            shorts = np.zeros_like(shorts)
        prof.show_profile(longs, shorts, self.tier)
        self.query_one("#profile-scale", TextPanel).set_text(Text(f" 0{'─' * 3}{fmt_usd(prof.scale, digits=2)}{unit}", style="dim"))
        below = longs.sum() if self.tier is None else longs[:, self.tier].sum()
        above = shorts.sum() if self.tier is None else shorts[:, self.tier].sum()
        total = Text(" ", no_wrap=True)
        total.append(f"L↓{fmt_usd(float(below))}", style=self.pal.side["long"])
        total.append(" ")
        total.append(f"S↑{fmt_usd(float(above))}", style=self.pal.side["short"])
        self.query_one("#profile-total", TextPanel).set_text(total)
        if pulse.forming_realised != self._shown_realised:
            self._shown_realised = pulse.forming_realised
            self._paint_realised(pulse)
        self.frames += 1

    async def _refresh_slow(self) -> None:
        source = self.source
        if source is None:
            return
        ranked = await source.zones()  # the engine's order: USD^(1/4) x P(touch 4h), stable (hysteresis)
        if source is not self.source:
            return
        self.ranked_zones = ranked
        self.zones = [r.zone for r in ranked]
        self._show_zone_rows(zone_rows(ranked), True)
        self._refresh_lists()
        bd = self.backdrop
        if self.risk_weighted and bd is not None:
            try:
                longs, shorts = await source.risk_map(bd.edges)
            except ValueError as exc:  # too little history for volatility: say so, keep the plain map
                self._risk_profile = None
                self._note_error(exc)
                return
            if bd is self.backdrop:
                if self._risk_profile is None or self._risk_profile[0] is not bd:
                    self.query_one(Profile).reset_scale()  # weighted USD is far smaller: a scale of its own
                self._risk_profile = (bd, longs, shorts)
                if self.pulse is not None:
                    self._paint_pulse(self.pulse)

    def _show_zone_rows(self, rows: list[ZoneRow] | None = None, touch: bool | None = None) -> None:
        """The zones table in the chosen order and side filter (``rows`` None: the last ones again)."""
        if rows is not None:
            self._zone_rows = rows
        if touch is not None:
            self._zone_touch = touch
        table = self.query_one(ZonesTable)
        shown = table.arrange(self._zone_rows, self.zone_order, self.side_filter)
        table.show_zones(shown, limit=max(table.size.height - 1, 3), plain=self.mode is ColorMode.NONE,
                         touch=self._zone_touch)

    def _refresh_lists(self) -> None:
        source = self.source
        if source is None:
            return
        liq = self.query_one(LiquidationsList)
        liq.show_events(source.liquidations(limit=20), liq.size.height)
        alerts = source.alerts()
        self.query_one(AlertsLine).show_alert(alerts[-1] if alerts else None, self.clock())

    def _refresh_header(self) -> None:
        tier_label = "all tiers" if self.tier is None or self.source is None else f"{self.source.tiers[self.tier]} only"
        if self.side_filter is not None:
            tier_label += f" · {self.side_filter}s only"
        if self.risk_weighted:
            tier_label += " · risk-weighted"
        if self.range_s is not None:
            tier_label += f" · range {RANGE_NAMES[self.range_s]}"
        if self.zone_order != "strength":
            tier_label += f" · zones by {self.zone_order}"
        self.query_one(MarketHeader).show_facts(
            self.facts,
            timeframe=self.timeframe,
            tier_label=tier_label,
            paused=self.paused,
            zoom=self.zoom,
            now=self.clock(),
            loading=self.loading,
        )

    def _show_loading(self) -> None:
        self._refresh_header()
        if self.backdrop is None:
            msg = self.loading or (f"could not load: {self.error}" if self.error else "waiting for data…")
            if self.map.message != msg:
                self.map.show_message(msg)
                self.live.show_message(msg)

    def on_resize(self, event: events.Resize) -> None:
        # the palette hint gives way to the quit key on narrow terminals (ctrl+p is in the help)
        for footer in self.query(Footer):
            footer.show_command_palette = event.size.width >= 100
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        """Below MIN_SIZE the panels would overlap into nonsense: say so instead of a half-drawn screen."""
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        for screen in self.screen_stack[:1]:
            screen.set_class(small, "-too-small")
        for note in self.query("#too-small").results(TextPanel):
            note.set_text(Text(f"terminal too small ({width}×{height}): liqheat needs at least "
                               f"{MIN_SIZE[0]}×{MIN_SIZE[1]} — enlarge it, or q to quit", style="bold")
                          if small else "")

    def on_zone_map_resized(self) -> None:
        if self._map_resize_timer is not None:
            self._map_resize_timer.stop()
        self._map_resize_timer = self.set_timer(0.15, self._reload_if_resized)

    def _reload_if_resized(self) -> None:
        view, bd = self._view(), self.backdrop
        if view is not None and (bd is None or (view.rows, view.columns) != (bd.view.rows, bd.view.columns)):
            self.request_reload()  # (no picture yet: the map had no room when the source started)

    # ---- actions ----------------------------------------------------------------------------------
    def action_timeframe(self, tf: str) -> None:
        if tf not in TIMEFRAMES:
            return
        self.range_s = None  # a chosen timeframe fills the map again
        self.timeframe = tf
        self._refresh_header()
        self.request_reload()

    def _set_tier(self, tier: int | None) -> None:
        """Tiers are switched on the data already held: no fetch, the map repaints at once."""
        self.tier = tier
        self._refresh_header()
        if self.backdrop is not None and not self.backdrop.covers(tier):
            self.request_reload()  # a remote view holds one tier: ask the server for this one
        elif self.backdrop is not None:
            self._paint_history()
            if self.pulse is not None:
                self._paint_pulse(self.pulse)

    def _tier_count(self) -> int:
        return len(self.source.tiers) if self.source is not None else 0

    def action_next_tier(self) -> None:
        n = self._tier_count()
        if n:
            self._set_tier(0 if self.tier is None else (None if self.tier + 1 >= n else self.tier + 1))

    def action_prev_tier(self) -> None:
        n = self._tier_count()
        if n:
            self._set_tier(n - 1 if self.tier is None else (None if self.tier == 0 else self.tier - 1))

    def action_tier_all(self) -> None:
        self._set_tier(None)

    def action_set_tier(self, index: int) -> None:
        if 0 <= index < self._tier_count():
            self._set_tier(index)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Direct tier keys exist only for the tiers of the ladder in use (hidden beyond it); before the
        source has started they show, greyed, for the default ladder."""
        if action == "set_tier" and parameters and isinstance(parameters[0], int):
            index = parameters[0]
            if self.source is None:
                return None if index < DEFAULT_TIER_COUNT else False
            return index < len(self.source.tiers)
        return True

    def tier_keys(self) -> list[tuple[str, str]]:
        """(key, tier label) for every tier that has a direct key."""
        labels = self.source.tiers if self.source is not None else ()
        return list(zip(TIER_KEYS, labels, strict=False))

    def action_zoom(self, direction: int) -> None:
        self.zoom = clamp_zoom(self.zoom * (ZOOM_STEP if direction > 0 else 1 / ZOOM_STEP))
        if abs(self.zoom - 1.0) < 1e-9:
            self.zoom = 1.0
        self._refresh_header()
        self.request_reload()

    def action_pan(self, direction: int) -> None:
        self.pan += 0.25 * direction
        self.request_reload()

    def action_recentre(self) -> None:
        self.zoom, self.pan = 1.0, 0.0
        self._refresh_header()
        self.request_reload()

    # ---- reading one cell ------------------------------------------------------------------------------
    def action_inspect(self) -> None:
        """Toggle the cell cursor; it starts on the live column at the price."""
        if self.cursor is not None:
            self._set_cursor(None)
            return
        bd, pulse = self.backdrop, self.pulse
        if bd is None:
            return
        row = row_of_price(pulse.price, bd.edges) if pulse is not None else None
        self._set_cursor((0, row if row is not None else self.map.size.height // 2))

    def action_leave_inspect(self) -> None:
        self._set_cursor(None)

    def action_arrow(self, dx: int, dy: int) -> None:
        """Arrows move the cell cursor while reading cells; otherwise ↑↓ pan and ←→ start reading."""
        if self.cursor is None:
            if dy:
                self.action_pan(-dy)
            else:
                self.action_inspect()
            return
        x, y = self.cursor
        self._set_cursor((x + dx, y + dy))

    def on_zone_map_clicked(self, event: ZoneMap.Clicked) -> None:
        self._set_cursor((event.x_from_right, event.y))

    def _set_cursor(self, cursor: tuple[int, int] | None) -> None:
        bd = self.backdrop
        if cursor is not None:
            if bd is None:
                return
            x, y = cursor
            cursor = (max(0, min(x, len(bd.times))), max(0, min(y, (len(bd.edges) - 1) // 2 - 1)))
        self.cursor = cursor
        self.map.set_cursor(None if cursor is None or cursor[0] == 0 else (cursor[0] - 1, cursor[1]))
        self.live.set_cursor(None if cursor is None or cursor[0] != 0 else (0, cursor[1]))
        self._show_legend_or_readout()

    def cell_reading(self) -> tuple[float, float, int | None, float | None, float | None] | None:
        """(price low, price high, candle open time or None for the live one, long USD, short USD) under
        the cursor; a USD is None when the source cannot split that column by side."""
        bd, cur = self.backdrop, self.cursor
        if bd is None or cur is None:
            return None
        x, y = cur
        rows = (len(bd.edges) - 1) // 2
        b0 = 2 * (rows - 1 - y)
        lo, hi = float(bd.edges[b0]), float(bd.edges[b0 + 2])
        if x == 0:
            p = self.pulse
            if p is None:
                return lo, hi, None, None, None
            longs = p.column(self.tier, "long")[b0 : b0 + 2].sum()
            shorts = p.column(self.tier, "short")[b0 : b0 + 2].sum()
            if p.live_column is not None and p.live_long is None:
                return lo, hi, None, None, float(p.live_column[b0 : b0 + 2].sum())
            return lo, hi, None, float(longs), float(shorts)
        i = len(bd.times) - x
        if not 0 <= i < len(bd.times):
            return lo, hi, None, None, None
        t = int(bd.times[i])
        if bd.longs is None:
            return lo, hi, t, None, float(bd.grid(self.tier)[i, b0 : b0 + 2].sum())
        longs = float(bd.grid(self.tier, "long")[i, b0 : b0 + 2].sum())
        shorts = float(bd.grid(self.tier, "short")[i, b0 : b0 + 2].sum())
        return lo, hi, t, longs, shorts

    def _show_legend_or_readout(self) -> None:
        """The legend line, or while a cell is inspected, that cell's values in words."""
        bd = self.backdrop
        if bd is None:
            return
        legend = self.query_one(LegendPanel)
        reading = self.cell_reading()
        if reading is None:
            bin_usd = float(bd.edges[1] - bd.edges[0]) if len(bd.edges) > 1 else 0.0
            legend.show_legend(self.pal, self.scale, bin_usd, bd.tiers, self.tier)
            return
        lo, hi, t, longs, shorts = reading
        when = "live (forming candle)" if t is None else f"{time_label_full(t)} ({bd.view.timeframe} candle)"
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("▸ ", style="bold")
        text.append(f"{fmt_price(lo)}–{fmt_price(hi)}", style="bold")
        text.append(f" · {when} · ")
        if longs is None:
            text.append(f"{fmt_usd(shorts)} estimated (both sides)")
        else:
            text.append(f"longs {fmt_usd(longs)}", style=self.pal.side["long"])
            text.append(" · ")
            text.append(f"shorts {fmt_usd(shorts)}", style=self.pal.side["short"])
            text.append(f" · {fmt_usd(longs + shorts)} estimated")
        text.append("  (esc: back)", style="dim")
        legend.set_text(text)

    def action_range(self) -> None:
        """Cycle the time range (12h … 1y); each picks the finest timeframe whose candles fit it into the map."""
        i = RANGES.index(self.range_s) if self.range_s in RANGES else 0
        self.range_s = RANGES[(i + 1) % len(RANGES)]
        if self.range_s is not None:
            width = max(self.map.size.width, 1)
            self.timeframe = next((tf for tf in TIMEFRAMES if width * timeframe_seconds(tf) >= self.range_s), TIMEFRAMES[-1])
        self._refresh_header()
        self.request_reload()

    def action_side_filter(self) -> None:
        """Both sides → longs only → shorts only: the map, the live column, the profile and the zones."""
        self.side_filter = {None: "long", "long": "short"}.get(self.side_filter)
        self._refresh_header()
        if self.backdrop is not None:
            self._paint_history()
            if self.pulse is not None:
                self._paint_pulse(self.pulse)
        self._show_zone_rows()

    def action_zone_order(self) -> None:
        """Zones table: strongest first (with hysteresis) or nearest the price first."""
        self.zone_order = "distance" if self.zone_order == "strength" else "strength"
        self._refresh_header()
        self._show_zone_rows()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._refresh_header()
        if not self.paused:
            self._dirty.add("book")
            self.request_reload()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_help(), self.model_text()))

    def action_pick_symbol(self) -> None:
        if self.source is None:
            self.notify("still loading", severity="warning")
            return
        src = self.source

        def chosen(name: str | None) -> None:
            if name and name != src.market:
                self._select_market(name)

        self.push_screen(PickerScreen("Symbol", src.markets(), src.market), chosen)

    @work(group="reload", exclusive=True, exit_on_error=False)
    async def _select_market(self, name: str) -> None:
        if self.source is None:
            return
        try:
            await self.source.select(name)
        except Exception as exc:
            self._note_error(exc)
            return
        self.backdrop = None
        self.pulse = None
        self.facts = None
        self.loading = ""
        if self.tier is not None and self.source is not None and self.tier >= len(self.source.tiers):
            self.tier = None
        self.refresh_bindings()  # a served market may use another ladder
        self.request_reload()

    def action_pick_exchange(self) -> None:
        current = self.source or self._pending_source
        names = list(current.exchanges) if current is not None else []
        label = current.label if current is not None else ""

        def chosen(name: str | None) -> None:
            if not name or name == label:
                return
            if self.open_source is None:
                self.notify("this view cannot switch exchange", severity="warning")
                return
            try:
                new = self.open_source(name)
            except Exception as exc:
                self.notify(str(exc), severity="error")
                return
            self._switch_source(new)

        notes = {"demo": "simulated market, no network", "binanceusdm": "Binance USDⓈ-M (network)",
                 "bybit": "Bybit (network)", "okx": "OKX (network)"}
        self.push_screen(PickerScreen("Exchange", names, label, notes), chosen)

    def action_risk(self) -> None:
        source = self.source
        if source is None or self.pulse is None:
            self.notify("still loading", severity="warning")
            return
        price = self.pulse.price
        # the engine's risk with the market's own exchange, coin and contract (remote: the server's);
        # the saved positions make the portfolio check
        if self.positions is None:
            from .positions import PositionStore

            self.positions = PositionStore()
        self.push_screen(RiskScreen(source.position, price, portfolio=source.portfolio, store=self.positions,
                                    market=source.market))

    def action_risk_weighted(self) -> None:
        """The liquidation map beside the chart as USD x P(price reaches the bin within 4h), or plain USD."""
        self.risk_weighted = not self.risk_weighted
        self._risk_profile = None  # fetched afresh (it is not kept up to date while the view is off)
        self.query_one(Profile).reset_scale()
        self._refresh_header()
        if self.pulse is not None:
            self._paint_pulse(self.pulse)
        if self.risk_weighted and not self._slow_busy:
            self._start_slow()

    def action_sessions(self) -> None:
        source = self.source
        if source is None:
            self.notify("still loading", severity="warning")
            return
        if not isinstance(self.screen, SessionsScreen):
            self.push_screen(SessionsScreen(source.sessions))

    async def action_quit(self) -> None:
        await self._stop_source()
        self.exit(0)

    async def _stop_source(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            with contextlib.suppress(Exception):  # quitting must always work, even on a broken feed
                await source.stop()

    async def on_unmount(self) -> None:
        self.workers.cancel_all()
        await self._stop_source()

    # ---- help and palette ---------------------------------------------------------------------------
    def key_help(self) -> list[tuple[str, str]]:
        tiers = ", ".join(self.source.tiers) if self.source else "the ladder's tiers"
        direct = self.tier_keys()
        if direct:
            keys, what = " ".join(k for k, _ in direct), " · ".join(f"{k} {lab}" for k, lab in direct)
            if self.source is not None and len(self.source.tiers) > len(direct):
                what += " (further tiers with l / L)"
        else:
            keys, what = " ".join(TIER_KEYS[:DEFAULT_TIER_COUNT]), "one leverage tier each, lowest leverage first"
        return [
            ("1 2 3 4 5 6", "timeframe 5m, 15m, 1h, 4h, 1d, 1w"),
            ("a or 0", "all leverage tiers"),
            (keys, f"only that tier: {what}"),
            ("l / L", f"next / previous leverage tier (all, then {tiers})"),
            ("s", "symbol picker"),
            ("e", "exchange picker (demo, binanceusdm, bybit, okx)"),
            ("+ / -", "zoom the price axis in / out"),
            ("↑ ↓ (k j)", "pan the price axis (move the cell cursor while reading cells)"),
            ("c", "centre on the price, zoom 1x"),
            ("i, ← → or click", "read a cell: its price band, candle time, USD of longs and shorts (esc: back)"),
            ("g", "time range: 12h, 1d, 3d, 1w, 2w, 30d, 90d, 6m, 1y, then fit the map (1-6 also reset it)"),
            ("f", "longs only, shorts only, both (map, profile and zones)"),
            ("o", "zones table: strongest first (stable order) or nearest the price first"),
            ("p or space", "pause / resume live updates (the map stays)"),
            ("r", "position risk and portfolio exposure (positions saved locally, limit, suggested size)"),
            ("w", "risk-weighted view: the map beside the chart as USD × chance price reaches it within 4h"),
            ("t", "sessions (Asia / Europe / US) and the funding cycle: when liquidations happen"),
            ("? or F1", "this help"),
            ("q or ctrl+c", "quit"),
        ]

    def model_text(self) -> str:
        f = self.facts
        if f is None:
            return "  (model details appear once the data has loaded)"
        lines = [f"  ladder {f.ladder}: {f.ladder_text}", f"  seed mode: {f.seed_mode}"]
        m = f.model
        for tier in m.get("tiers", []):
            lines.append(
                f"  {tier.get('leverage'):g}x weight {tier.get('weight', 0) * 100:.0f}%, maintenance margin "
                f"{tier.get('mmr', 0) * 100:.2f}%, half-life {tier.get('half_life_hours')}h"
            )
        if "margin_table" in m:
            lines.append(f"  margin table: {m['margin_table']}")
        for k in ("side_tilt", "wick_clear", "decay", "shrink_on_oi_drop", "volume_proxy_fraction", "fitted_on"):
            if k in m:
                lines.append(f"  {k}: {m[k]}")
        # the headline accuracy figure the model carries (engine: accuracy suite), or say there is none
        lines.append("")
        lines.append(f"  accuracy: {m['accuracy']}" if m.get("accuracy") else
                     "  accuracy: no out-of-sample figure for this model (see README: Accuracy)")
        if m.get("accuracy_suite"):
            lines.append(f"  measured by: {m['accuracy_suite']}")
        return "\n".join(lines)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for tf in TIMEFRAMES:
            yield SystemCommand(f"Timeframe {tf}", f"one column per {tf} candle", lambda tf=tf: self.action_timeframe(tf))
        yield SystemCommand("Tier: all", "every leverage tier stacked (key a)", self.action_tier_all)
        for i, lab in enumerate(self.source.tiers if self.source else ()):
            key = f" (key {TIER_KEYS[i]})" if i < len(TIER_KEYS) else ""
            yield SystemCommand(f"Tier: {lab}", f"only the {lab} tier{key}", lambda i=i: self.action_set_tier(i))
        yield SystemCommand("Pick symbol", "switch market", self.action_pick_symbol)
        yield SystemCommand("Pick exchange", "switch feed", self.action_pick_exchange)
        yield SystemCommand("Zoom in", "narrower price range", lambda: self.action_zoom(1))
        yield SystemCommand("Zoom out", "wider price range", lambda: self.action_zoom(-1))
        yield SystemCommand("Pan up", "higher prices", lambda: self.action_pan(1))
        yield SystemCommand("Pan down", "lower prices", lambda: self.action_pan(-1))
        yield SystemCommand("Centre", "back to the price, zoom 1x", self.action_recentre)
        yield SystemCommand("Read a cell", "cursor on the map, its values in words (key i)", self.action_inspect)
        yield SystemCommand("Time range", "next range: 12h … 1y (key g)", self.action_range)
        yield SystemCommand("Longs / shorts only", "show one side (key f)", self.action_side_filter)
        yield SystemCommand("Zone order", "strongest or nearest first (key o)", self.action_zone_order)
        yield SystemCommand("Pause / resume", "freeze the live updates", self.action_pause)
        yield SystemCommand("Position risk", "liquidation price of a position and the crowding there", self.action_risk)
        yield SystemCommand("Risk-weighted view", "USD x P(touch within 4h) beside the chart (key w)",
                            self.action_risk_weighted)
        yield SystemCommand("Sessions and funding", "liquidations by session and funding hour (key t)",
                            self.action_sessions)
        yield SystemCommand("Help", "keys and how to read the map", self.action_help)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self._note_error(event.worker.error)


def zone_rows(zones: list[Any], touch: dict[int, float] | None = None) -> list[ZoneRow]:
    """Table rows from the source's zones: the engine's ranked zones (score, touch, id, confluence,
    persistence) or plain zones ranked by USD."""
    rows = []
    for i, item in enumerate(zones):
        if isinstance(item, RankedZone):
            rows.append(ZoneRow(item.zone, float(item.score), item.touch.get(TOUCH_HORIZON_HOURS), int(item.id),
                                int(item.confluence), float(item.persistence_s)))
        else:
            rows.append(ZoneRow(item, float(item.usd), None if touch is None else touch.get(i)))
    return rows


def make_app(
    feed: str = "demo",
    symbol: str | None = None,
    *,
    connect: str | None = None,
    colors: str = "auto",
    speed: float | None = None,
    ladder: str | None = None,
    seed: int | None = None,
    now: float | None = None,
    history_days: float | None = None,
    refresh_hz: float = 4.0,
    timeframe: str = "5m",
    paused: bool = False,
    clock: Callable[[], float] = time.time,
    source: Source | None = None,
    connect_wait: float = 30.0,
    exit_on_start_error: bool = False,
    alerts: AlertSettings | None = None,
) -> LiqheatApp:
    """The dashboard on the engine in this process (default: the demo market), or on a running
    ``liqheat serve`` with ``connect=URL``. Nothing slow happens here: the source starts after the first
    frame."""
    if source is None and connect:
        from .remote import RemoteSource

        source = RemoteSource(connect, symbol=symbol, ladder=ladder)
        open_source: Callable[[str], Source] | None = lambda exchange: RemoteSource(  # noqa: E731
            connect, symbol=None, exchange=exchange, ladder=ladder
        )
    else:
        from .source import LocalSource

        def open_source(name: str) -> Source:
            return LocalSource(name, None, ladder=ladder, speed=speed if name == "demo" or name.startswith("file:") else None,
                               history_days=history_days, alerts=alerts)

        if source is None:
            source = LocalSource(feed, symbol, ladder=ladder, speed=speed, seed=seed, now=now, history_days=history_days,
                                 alerts=alerts)
    return LiqheatApp(
        source, open_source=open_source, colors=colors, refresh_hz=refresh_hz, clock=clock,
        timeframe=timeframe, paused=paused, start_wait=connect_wait if connect else 0.0,
        exit_on_start_error=exit_on_start_error,
    )
