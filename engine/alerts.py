"""Alerts: rules over the live estimate, a cooldown so a level sitting near the price does not spam, and an
optional webhook that never holds up the feed.

Rules (all in the trader's words):
- ``ProximityRule(within_pct, min_usd)``: price is within X% of a zone holding at least $Y
  (optionally only zones of at least a grade).
- ``GradeChangeRule()``: a zone's grade changed (low / elevated / high), zones followed across updates by
  price overlap (engine.model.confluence.ZoneTracker).
- ``CascadeRule(min_usd=..., min_move_pct=...)``: the simulated cascade in either direction would
  liquidate at least $Y or move price at least X% (engine.model.cascade.cascade_risk).

``AlertEngine.feed(price, zones, cascade, now)`` is synchronous and cheap; it returns alert dicts and, if a
``WebhookSender`` is attached, hands them to it without waiting. The sender POSTs JSON from its own task
with an aiohttp ClientSession, retries 5xx/429/network errors with exponential backoff, gives up after
``retries`` and keeps a bounded queue that drops the *oldest* alert when full — the feed is never blocked
and a dead endpoint costs a counter, not memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as wallclock
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from engine.model.cascade import CascadeSummary
from engine.model.confluence import TrackedZone, ZoneTracker
from engine.model.touch import zone_near_edge
from engine.model.views import GRADES, Zone

log = logging.getLogger("liqheat.alerts")


class AlertError(ValueError):
    """A rule that makes no sense (one line)."""


@dataclass(frozen=True)
class Context:
    """What the rules look at on one update."""

    symbol: str
    price: float
    now: float
    zones: list[TrackedZone]
    cascade: Mapping[str, Any] | None


class Rule(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def cooldown_s(self) -> float | None: ...

    def check(self, ctx: Context) -> list[tuple[str, dict[str, Any]]]:
        """(cooldown key, alert fields) for every condition met now."""
        ...


def _grade_at_least(grade: str, minimum: str | None) -> bool:
    return minimum is None or GRADES.index(grade) >= GRADES.index(minimum)


@dataclass(frozen=True)
class ProximityRule:
    within_pct: float
    min_usd: float = 0.0
    min_grade: str | None = None
    name: str = "proximity"
    cooldown_s: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.within_pct <= 50):
            raise AlertError("proximity: within_pct must be in (0, 50]")
        if self.min_usd < 0:
            raise AlertError("proximity: min_usd must not be negative")
        if self.min_grade is not None and self.min_grade not in GRADES:
            raise AlertError(f"proximity: grade {self.min_grade!r}: use one of {', '.join(GRADES)}")

    def check(self, ctx: Context) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for t in ctx.zones:
            z = t.zone
            if z.usd < self.min_usd or not _grade_at_least(z.grade, self.min_grade):
                continue
            edge = zone_near_edge(z, ctx.price)
            dist = abs(edge / ctx.price - 1.0) * 100.0
            if dist <= self.within_pct:
                where = "below" if z.side == "long" else "above"
                out.append(
                    (
                        f"zone:{t.id}",
                        {
                            "message": f"{ctx.symbol} {dist:.2f}% from a {z.grade} {z.side} zone {where} "
                            f"({z.price_low:,.1f}-{z.price_high:,.1f}, est. ${z.usd:,.0f})",
                            "zone": z.to_dict(),
                            "zone_id": t.id,
                            "distance_pct": dist,
                        },
                    )
                )
        return out


@dataclass(frozen=True)
class GradeChangeRule:
    upgrades_only: bool = False
    name: str = "grade_change"
    cooldown_s: float | None = None

    def check(self, ctx: Context) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for t in ctx.zones:
            if not t.grade_changed or t.previous_grade is None:
                continue
            up = GRADES.index(t.zone.grade) > GRADES.index(t.previous_grade)
            if self.upgrades_only and not up:
                continue
            z = t.zone
            out.append(
                (
                    f"zone:{t.id}",
                    {
                        "message": f"{ctx.symbol} {z.side} zone {z.price_low:,.1f}-{z.price_high:,.1f} "
                        f"{'upgraded' if up else 'downgraded'} {t.previous_grade} -> {z.grade}",
                        "zone": z.to_dict(),
                        "zone_id": t.id,
                        "previous_grade": t.previous_grade,
                        "grade": z.grade,
                    },
                )
            )
        return out


@dataclass(frozen=True)
class CascadeRule:
    min_usd: float | None = None
    min_move_pct: float | None = None
    name: str = "cascade"
    cooldown_s: float | None = None

    def __post_init__(self) -> None:
        if self.min_usd is None and self.min_move_pct is None:
            raise AlertError("cascade: give min_usd and/or min_move_pct")

    def check(self, ctx: Context) -> list[tuple[str, dict[str, Any]]]:
        if not ctx.cascade:
            return []
        out = []
        for direction in ("down", "up"):
            c = ctx.cascade.get(direction)
            if not c:
                continue
            usd = float(c.get("total_usd", 0.0))
            move = abs(float(c.get("move_pct", 0.0)))
            hit_usd = self.min_usd is not None and usd >= self.min_usd
            hit_move = self.min_move_pct is not None and move >= self.min_move_pct
            if hit_usd or hit_move:
                out.append(
                    (
                        direction,
                        {
                            "message": f"{ctx.symbol} cascade risk {direction}: est. ${usd:,.0f} liquidated, "
                            f"price to {float(c.get('end_price', 0.0)):,.1f} ({move:.2f}%)",
                            "direction": direction,
                            "total_usd": usd,
                            "move_pct": move,
                            "end_price": c.get("end_price"),
                        },
                    )
                )
        return out


def parse_rules(specs: Iterable[Mapping[str, Any]]) -> list[Rule]:
    """Rules from plain dicts (config files, the API): {"type": "proximity", "within_pct": 1,
    "min_usd": 5e6}, {"type": "grade_change"}, {"type": "cascade", "min_usd": 1e8}."""
    kinds = {"proximity": ProximityRule, "grade_change": GradeChangeRule, "cascade": CascadeRule}
    rules: list[Rule] = []
    for spec in specs:
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in kinds:
            raise AlertError(f"alert rule type {kind!r}: use one of {', '.join(kinds)}")
        try:
            rules.append(kinds[kind](**spec))
        except TypeError as exc:
            raise AlertError(f"alert rule {kind}: {exc}") from None
    return rules


@dataclass
class AlertEngine:
    """Feed it every update; it returns the alerts that fire now (cooldown applied) and keeps the last
    ``keep`` for the API. Times are the caller's clock (``now``), so replays and tests are deterministic."""

    rules: list[Rule]
    cooldown_s: float = 900.0
    symbol: str = ""
    webhook: WebhookSender | None = None
    keep: int = 200
    tracker: ZoneTracker = field(default_factory=ZoneTracker)
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    history: deque[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.keep)

    def feed(
        self,
        price: float,
        zones: list[Zone],
        cascade: CascadeSummary | Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        now = wallclock.time() if now is None else float(now)
        tracked = self.tracker.update(zones, int(now))
        casc = cascade.to_dict() if isinstance(cascade, CascadeSummary) else cascade
        ctx = Context(self.symbol, float(price), now, tracked, casc)
        fired: list[dict[str, Any]] = []
        for rule in self.rules:
            cooldown = self.cooldown_s if rule.cooldown_s is None else rule.cooldown_s
            for key, fields in rule.check(ctx):
                last = self._last.get((rule.name, key))
                if last is not None and now - last < cooldown:
                    continue
                self._last[(rule.name, key)] = now
                alert = {"rule": rule.name, "key": key, "symbol": self.symbol, "time": now, "price": price, **fields}
                fired.append(alert)
        self.history.extend(fired)
        if self.webhook is not None:
            for alert in fired:
                self.webhook.submit(alert)
        return fired


@dataclass
class WebhookStats:
    sent: int = 0
    failed: int = 0  # gave up after the retries (or a 4xx that retrying cannot fix)
    dropped: int = 0  # pushed out of the full queue
    attempts: int = 0
    last_error: str = ""


class WebhookSender:
    """POSTs alert dicts as JSON to ``url`` from a background task. ``submit`` never blocks or raises."""

    def __init__(
        self,
        url: str,
        max_queue: int = 256,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise AlertError(f"webhook URL {url!r} must start with http:// or https://")
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.queue: deque[dict[str, Any]] = deque(maxlen=max_queue)
        self.stats = WebhookStats()
        self._session = session
        self._own_session = session is None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="liqheat-webhook")
        if self.queue:
            self._wake.set()

    def submit(self, alert: dict[str, Any]) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.stats.dropped += 1  # deque(maxlen) drops the oldest on append
        self.queue.append(alert)
        if self._wake is not None:
            self._wake.set()

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and nothing is in flight (tests, shutdown). True if drained."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.queue or self._busy:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            alert = self.queue.popleft()
            self._busy = True
            try:
                await self._post(alert)
            finally:
                self._busy = False

    async def _post(self, alert: dict[str, Any]) -> None:
        assert self._session is not None
        for attempt in range(self.retries + 1):
            self.stats.attempts += 1
            retry = True
            try:
                async with self._session.post(self.url, json=alert, timeout=self.timeout) as resp:
                    if resp.status < 300:
                        self.stats.sent += 1
                        return
                    self.stats.last_error = f"HTTP {resp.status}"
                    retry = resp.status >= 500 or resp.status == 429
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:200]
            if not retry or attempt == self.retries:
                break
            await asyncio.sleep(self.backoff_s * (2**attempt))
        self.stats.failed += 1
        log.warning("webhook %s gave up on an alert: %s", self.url, self.stats.last_error)
