"""Analytics over one market's live estimate, written once for both faces (docs/ANALYTICS_API.md).

``MarketAnalytics`` (reached as ``svc.analytics``) turns the service's book into what a trader reads
beside the map: zones ranked by what predicts best, with touch probabilities, confluence and
persistence; the risk-weighted map; cascades; position and portfolio risk (always with the market's own
exchange, coin and contract); sessions and the funding cycle; alerts on market time. The server serves
these as JSON, the TUI shows them (locally, or from the server's JSON with ``--connect``); neither
computes them itself.

Everything here is synchronous numpy work on the service's cached views: call it from a worker thread.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.alerts import AlertEngine, WebhookSender
from engine.config import DEFAULT_LIMIT_SHARE, AlertSettings
from engine.model.cascade import cascade_risk
from engine.model.confluence import ZoneTracker, lookback_zones, overlaps
from engine.model.risk import Position, RiskError, position_risk
from engine.model.sessions import (
    SESSIONS,
    funding_countdown,
    funding_cycle_profile,
    session_breakdown,
    session_of,
)
from engine.model.touch import (
    HORIZONS_HOURS,
    TouchError,
    Volatility,
    realised_volatility,
    risk_weighted_map,
    zone_touch,
)
from engine.model.views import GRADES, LiquidationMap, Zone

if TYPE_CHECKING:
    from engine.service import MarketService

# Zones are ranked by USD^(1/4) x P(touch within this horizon). The accuracy suite (README, Accuracy) on the
# default ladder, share of the next 4h's liquidated USD in the top 10% of buckets: raw USD 3% (worse than
# random), USD x touch 38%, USD^(1/4) x touch 51% on Bybit 2024 (Binance 5m 51%, OKX 68%): where the price
# will go matters more than how much sits there, and the fourth root keeps the size from swamping it.
TOUCH_HORIZON_HOURS = 4.0
USD_POWER = 0.25
# A zone overtakes the one listed above it only when its score is this much higher: scores move with
# every tick of the price, and a table that reorders every second cannot be read.
HYSTERESIS = 0.25
# Grades that count as "a cluster" for the exposure rule.
CLUSTER_GRADES = ("elevated", "high")
# Size cut for a new position whose entry sits inside a cluster (the 30-50% rule of thumb, midpoint).
ENTRY_CUT = 0.40
MAX_POSITIONS = 20
WEIGHTS = ("touch", "usd")
# Confluence (three small estimates) is recomputed at most once per this much market time.
CONFLUENCE_EVERY_S = 300
_VIEWS_KEPT = 8  # (bins, span) pairs whose zone identities / order are kept


class AnalyticsError(ValueError):
    """An analytics request that cannot be answered (one line)."""


@dataclass(frozen=True)
class RankedZone:
    zone: Zone
    id: int
    rank: int
    score: float
    touch: dict[float, float] = field(default_factory=dict)
    risk_usd: dict[float, float] = field(default_factory=dict)
    confluence: int = 0
    confluence_frames: tuple[str, ...] = ()
    first_seen: int = 0
    persistence_s: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.zone.to_dict())
        out.update({"id": self.id, "rank": self.rank, "score": self.score})
        for h, p in self.touch.items():
            out[f"touch_{h:g}h"] = p
            out[f"risk_usd_{h:g}h"] = self.risk_usd.get(h, p * self.zone.usd)
        if 24.0 in self.touch:
            out["touch_probability"] = self.touch[24.0]  # kept for clients written before the horizons
        out.update({"confluence": self.confluence, "confluence_frames": list(self.confluence_frames),
                    "first_seen": self.first_seen, "persistence_s": self.persistence_s})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], rank: int | None = None) -> RankedZone:
        """Rebuild from the API's JSON row (the remote TUI)."""
        zone = Zone(
            side=str(d["side"]),
            price_low=float(d["price_low"]),
            price_high=float(d["price_high"]),
            peak_price=float(d.get("peak_price", d["price_low"])),
            usd=float(d["usd"]),
            grade=str(d.get("grade", "low")),
            share_of_daily_volume=d.get("share_of_daily_volume"),
            percentile=float(d.get("percentile", 0.0)),
            distance_pct=float(d.get("distance_pct", 0.0)),
            tier_usd=tuple(float(x) for x in d.get("tier_usd", ())),
        )
        touch = {float(k[6:-1]): float(v) for k, v in d.items() if k.startswith("touch_") and k.endswith("h")}
        risk = {float(k[9:-1]): float(v) for k, v in d.items() if k.startswith("risk_usd_") and k.endswith("h")}
        return cls(
            zone,
            int(d.get("id", 0)),
            int(d.get("rank", rank or 0)),
            float(d.get("score", zone.usd)),
            touch,
            risk,
            int(d.get("confluence", 0)),
            tuple(str(f) for f in d.get("confluence_frames", ())),
            int(d.get("first_seen", 0)),
            int(d.get("persistence_s", 0)),
        )


@dataclass(frozen=True)
class PositionSpec:
    side: str
    entry: float
    leverage: float
    size_usd: float
    symbol: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "position", default_entry: float | None = None,
                  default_size: float | None = None) -> PositionSpec:
        """From the API's JSON object {"symbol", "side", "entry", "leverage", "size"}; AnalyticsError
        (one line) on anything missing or not a number."""
        if not isinstance(d, Mapping):
            raise AnalyticsError(f"{where}: expected an object like {{\"side\": \"long\", \"entry\": 60000, "
                                 f"\"leverage\": 10, \"size\": 5000}}")
        unknown = set(d) - {"symbol", "side", "entry", "leverage", "size", "size_usd"}
        if unknown:
            raise AnalyticsError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        side = d.get("side", "long")
        if side not in ("long", "short"):
            raise AnalyticsError(f"{where}: side must be long or short")

        def number(name: str, default: float | None) -> float:
            v = d.get(name, default)
            if name == "size" and v is None:
                v = d.get("size_usd", default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AnalyticsError(f"{where}: {name} must be a number")
            return float(v)

        symbol = d.get("symbol")
        if symbol is not None and not isinstance(symbol, str):
            raise AnalyticsError(f"{where}: symbol must be a string")
        return cls(side, number("entry", default_entry), number("leverage", None), number("size", default_size), symbol)


def _order_with_hysteresis(previous: list[int], score: dict[int, float], hysteresis: float) -> list[int]:
    """Zones in score order, except that a zone already listed keeps its place until one below it scores
    more than (1 + hysteresis) times as much. New zones go where their score puts them."""
    order = [i for i in previous if i in score]
    for new in sorted((i for i in score if i not in set(order)), key=lambda i: -score[i]):
        at = next((k for k, i in enumerate(order) if score[i] < score[new]), len(order))
        order.insert(at, new)
    for k in range(1, len(order)):
        j = k
        while j > 0 and score[order[j]] > (1.0 + hysteresis) * score[order[j - 1]]:
            order[j - 1], order[j] = order[j], order[j - 1]
            j -= 1
    return order


class MarketAlerts:
    """One market's alert rules (the config file's, or the defaults), run on market time."""

    def __init__(self, svc: MarketService, settings: AlertSettings, webhook: WebhookSender | None = None) -> None:
        self.svc = svc
        self.settings = settings
        self.webhook = webhook
        self.engine = AlertEngine(settings.rules(), cooldown_s=settings.cooldown_s, symbol=svc.market.key,
                                  webhook=webhook)

    @property
    def rules(self) -> list[dict[str, Any]]:
        return self.settings.describe()

    def check(self) -> list[dict[str, Any]]:
        """The alerts that fire now (cooldowns in market time: replays and the sped-up demo stay sane)."""
        svc = self.svc
        zones = svc.zones()
        lmap = svc.liquidation_map(bins=400, span=0.25)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            summary = cascade_risk(lmap, zones)
        return self.engine.feed(lmap.price, zones, summary, now=svc.market_time())

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return list(self.engine.history)[-limit:] if limit > 0 else []

    def webhook_stats(self) -> dict[str, Any] | None:
        if self.webhook is None:
            return None
        s = self.webhook.stats
        return {"url": self.webhook.url, "sent": s.sent, "failed": s.failed, "dropped": s.dropped,
                "last_error": s.last_error}


class MarketAnalytics:
    """The analytics of one market service (``svc.analytics``)."""

    def __init__(self, svc: MarketService, alerts: AlertSettings | None = None,
                 webhook: WebhookSender | None = None) -> None:
        self.svc = svc
        self.alerts = MarketAlerts(svc, alerts or AlertSettings(), webhook)
        self._lock = threading.RLock()
        self._vol: tuple[int, Volatility | None] = (-1, None)
        self._trackers: OrderedDict[tuple[int, float], tuple[ZoneTracker, dict[str, list[int]]]] = OrderedDict()
        self._ranked: OrderedDict[tuple[Any, ...], list[RankedZone]] = OrderedDict()
        self._confluence: OrderedDict[tuple[int, float], tuple[int, dict[str, list[Zone]]]] = OrderedDict()

    # ---- volatility and touch -----------------------------------------------------------------------
    def volatility(self) -> Volatility | None:
        """From hourly candles (the touch model is calibrated on hourly returns), once per closed bar;
        None while there is too little history to measure it (no probabilities rather than a guess)."""
        version = self.svc.version
        with self._lock:
            if self._vol[0] == version:
                return self._vol[1]
        try:
            vol: Volatility | None = realised_volatility(self.svc.candles("1h"))
        except (TouchError, ValueError):
            vol = None
        with self._lock:
            self._vol = (version, vol)
        return vol

    # ---- zones --------------------------------------------------------------------------------------
    def zones(self, bins: int = 200, span: float = 0.25, weight: str = "touch", *,
              refresh_confluence: bool = True) -> list[RankedZone]:
        """Graded zones in a stable rank order (USD x P(touch within 4h) by default; ``weight="usd"``:
        raw USD), each with touch probabilities, confluence and persistence. ``refresh_confluence=False``
        (the service's event path, on the event loop) reuses the last confluence instead of running the
        three small lookback estimates."""
        if weight not in WEIGHTS:
            raise AnalyticsError(f"weight {weight!r}: use one of {', '.join(WEIGHTS)}")
        svc = self.svc
        key = (bins, span, weight, svc.live_version)
        with self._lock:
            hit = self._ranked.get(key)
            if hit is not None:
                return list(hit)
        zones = svc.zones(bins=bins, span=span)
        price = svc.last_price
        now = int(svc.market_time())
        vol = self.volatility()
        touches: list[dict[float, float]] = [{} for _ in zones]
        if vol is not None and zones:
            with np.errstate(over="ignore", under="ignore"):  # far zones underflow to 0: fine
                for i, zt in enumerate(zone_touch(zones, price, vol, HORIZONS_HOURS)):
                    touches[i] = zt.probability
        frames = self._lookback_frames(bins, span, refresh_confluence)
        with self._lock:
            tracker, orders = self._tracker(bins, span)
            tracked = tracker.update(zones, now)
            score = {t.id: (z.usd ** USD_POWER * touches[i].get(TOUCH_HORIZON_HOURS, 0.0) if weight == "touch" and vol is not None
                            else z.usd) for i, (t, z) in enumerate(zip(tracked, zones, strict=True))}
            order = _order_with_hysteresis(orders.get(weight, []), score, HYSTERESIS)
            orders[weight] = order
            by_id = {t.id: i for i, t in enumerate(tracked)}
            out = []
            for rank, zid in enumerate(order, start=1):
                i = by_id[zid]
                z, t = zones[i], tracked[i]
                agree = tuple(name for name, fz in frames.items() if any(overlaps(z, o) for o in fz))
                out.append(RankedZone(z, zid, rank, float(score[zid]), touches[i],
                                      {h: p * z.usd for h, p in touches[i].items()}, len(agree), agree,
                                      t.first_seen, t.persistence_s))
            self._ranked[key] = out
            while len(self._ranked) > 4 * _VIEWS_KEPT:
                self._ranked.popitem(last=False)
        return list(out)

    def zone_rows(self, bins: int = 200, span: float = 0.25, weight: str = "touch", *,
                  refresh_confluence: bool = True) -> list[dict[str, Any]]:
        return [z.to_dict() for z in self.zones(bins, span, weight, refresh_confluence=refresh_confluence)]

    def zones_body(self, bins: int = 200, span: float = 0.25, weight: str = "touch") -> dict[str, Any]:
        """GET /api/v1/zones."""
        svc = self.svc
        rows = self.zone_rows(bins, span, weight)
        vol = self.volatility()
        return {"symbol": svc.market.key, "price": svc.last_price, "daily_volume_usd": svc.daily_volume_usd(),
                "estimate": True, "weight": weight, "horizon_hours": TOUCH_HORIZON_HOURS,
                "volatility": None if vol is None else vol.to_dict(), "zones": rows}

    def _tracker(self, bins: int, span: float) -> tuple[ZoneTracker, dict[str, list[int]]]:
        k = (bins, span)
        if k not in self._trackers:
            # a zone that flickers out for a minute of market time keeps its identity and its age
            self._trackers[k] = (ZoneTracker(grace_s=120), {})
            while len(self._trackers) > _VIEWS_KEPT:
                self._trackers.popitem(last=False)
        self._trackers.move_to_end(k)
        return self._trackers[k]

    def _lookback_frames(self, bins: int, span: float, refresh: bool = True) -> dict[str, list[Zone]]:
        """Zones from positions opened in the last 1h / 4h / 1d (engine.model.confluence), refreshed at
        most every CONFLUENCE_EVERY_S of market time (~80 ms for three estimates over a day of 1m bars)."""
        k = (bins, span)
        slot = int(self.svc.market_time()) // CONFLUENCE_EVERY_S
        with self._lock:
            hit = self._confluence.get(k)
            if hit is not None and (hit[0] == slot or not refresh):
                return hit[1]
        if not refresh:
            return {}
        svc = self.svc
        bars = svc.bars
        recent = bars.slice(int(np.searchsorted(bars.time, int(bars.close_time[-1]) - 86_400)), None)
        try:
            with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
                frames = lookback_zones(recent, svc.params, bins=bins, span=span)
        except ValueError:  # too little recent history: no confluence rather than an error
            frames = {}
        with self._lock:
            self._confluence[k] = (slot, frames)
            while len(self._confluence) > _VIEWS_KEPT:
                self._confluence.popitem(last=False)
        return frames

    # ---- maps and cascades --------------------------------------------------------------------------
    def risk_weighted_map(self, bins: int = 200, span: float = 0.25, log: bool = False,
                          horizon_hours: float = TOUCH_HORIZON_HOURS) -> LiquidationMap:
        """Every bin's USD x the chance price reaches it within the horizon."""
        vol = self.volatility()
        if vol is None:
            raise AnalyticsError("too little history to measure volatility: no risk-weighted map yet")
        lmap = self.svc.liquidation_map(bins=bins, span=span, log=log)
        with np.errstate(over="ignore", under="ignore"):
            return risk_weighted_map(lmap, vol, horizon_hours)

    def cascade(self, bins: int = 400, span: float = 0.25) -> dict[str, Any]:
        svc = self.svc
        lmap = svc.liquidation_map(bins=bins, span=span)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            summary = cascade_risk(lmap, svc.zones())
        return {"symbol": svc.market.key, "price": lmap.price, **summary.to_dict(), "estimate": True}

    # ---- risk ---------------------------------------------------------------------------------------
    def position(self, side: str, entry: float, leverage: float, size_usd: float) -> dict[str, Any]:
        """One position against this market's estimate, with the market's own exchange, coin and
        contract. RiskError (one line) on a position the exchange would not accept."""
        svc = self.svc
        p = svc.params
        pos = Position(side, entry, leverage, size_usd, exchange=p.exchange, coin=p.coin, contract=p.contract)
        lmap = svc.liquidation_map(bins=400, span=0.5)
        zones = svc.zones(bins=400, span=0.5)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            risk = position_risk(pos, svc.last_price, zones, lmap, vol=self.volatility())
        return {"symbol": svc.market.key, **risk.to_dict(), "in_cluster": risk.grade in CLUSTER_GRADES,
                "estimate": True}

    def entering_cluster(self, entry: float) -> bool:
        """Is ``entry`` inside an elevated or high zone (either side)?"""
        return any(z.grade in CLUSTER_GRADES and z.price_low <= entry <= z.price_high
                   for z in self.svc.zones(bins=400, span=0.5))

    def portfolio(
        self,
        positions: list[PositionSpec],
        limit_share: float = DEFAULT_LIMIT_SHARE,
        new: PositionSpec | None = None,
        portfolio_usd: float | None = None,
        resolve: Callable[[str], MarketService] | None = None,
    ) -> dict[str, Any]:
        """Several positions (maybe on several markets, through ``resolve``): each one's liquidation
        price and zone grade, the share of the portfolio whose liquidation sits in an elevated/high zone
        against ``limit_share``, and a suggested size for ``new`` that keeps the share under it."""
        if len(positions) > MAX_POSITIONS:
            raise AnalyticsError(f"at most {MAX_POSITIONS} positions")
        if not (0.001 <= limit_share <= 1.0):
            raise AnalyticsError("limit must be a share between 0.001 and 1 (0.10 = 10%)")
        if portfolio_usd is not None and not (portfolio_usd > 0 and math.isfinite(portfolio_usd)):
            raise AnalyticsError("portfolio must be a positive USD amount")

        def market(spec: PositionSpec) -> MarketService:
            if spec.symbol is None or resolve is None:
                return self.svc
            return resolve(spec.symbol)

        rows: list[dict[str, Any]] = []
        total = exposed = 0.0
        for spec in positions:
            svc = market(spec)
            total += spec.size_usd
            try:
                row = svc.analytics.position(spec.side, spec.entry, spec.leverage, spec.size_usd)
            except RiskError as exc:
                rows.append({"symbol": svc.market.key, "position": {"side": spec.side, "entry": spec.entry,
                             "leverage": spec.leverage, "size_usd": spec.size_usd}, "error": str(exc),
                             "estimate": True})
                continue
            rows.append(row)
            if row["in_cluster"]:
                exposed += spec.size_usd
        base = portfolio_usd if portfolio_usd is not None else total
        share = exposed / base if base > 0 else 0.0
        out: dict[str, Any] = {
            "estimate": True,
            "limit_share": limit_share,
            "portfolio_usd": base,
            "exposed_usd": exposed,
            "exposed_share": share,
            "over_limit": share > limit_share + 1e-12,
            "positions": rows,
            "suggestion": None,
        }
        if new is not None:
            out["suggestion"] = self._suggest(market(new), new, limit_share, exposed, base, portfolio_usd is None)
        return out

    @staticmethod
    def _suggest(svc: MarketService, new: PositionSpec, limit: float, exposed: float, base: float,
                 grows: bool) -> dict[str, Any]:
        an = svc.analytics
        entry = new.entry
        out: dict[str, Any] = {"symbol": svc.market.key, "side": new.side, "entry": entry, "leverage": new.leverage,
                               "requested_usd": new.size_usd}
        try:
            row = an.position(new.side, entry, new.leverage, new.size_usd)
        except RiskError as exc:
            out.update({"error": str(exc), "suggested_usd": 0.0, "max_usd": 0.0, "cut_pct": 0,
                        "in_cluster": False, "entering_cluster": False, "grade": "none",
                        "liquidation_price": None, "reason": str(exc)})
            return out
        in_cluster = bool(row["in_cluster"])
        entering = an.entering_cluster(entry)
        if not in_cluster:
            max_usd = new.size_usd
        elif grows:  # the new position adds to the portfolio too: (E + s) / (P + s) <= L
            max_usd = (limit * base - exposed) / (1.0 - limit) if limit < 1.0 else new.size_usd
        else:  # a fixed portfolio: (E + s) / P <= L
            max_usd = limit * base - exposed
        max_usd = max(0.0, min(max_usd, new.size_usd)) if in_cluster else new.size_usd
        cut = ENTRY_CUT if entering else 0.0
        suggested = max_usd * (1.0 - cut)
        reasons = []
        if in_cluster:
            if max_usd <= 0:
                reasons.append(f"its liquidation sits in a {row['grade']} zone and the portfolio is already at or "
                               f"over the {limit * 100:g}% limit")
            elif max_usd < new.size_usd:
                reasons.append(f"its liquidation sits in a {row['grade']} zone: at most ${max_usd:,.0f} keeps the "
                               f"exposure under {limit * 100:g}%")
            else:
                reasons.append(f"its liquidation sits in a {row['grade']} zone; the exposure stays under "
                               f"{limit * 100:g}%")
        else:
            reasons.append("its liquidation is outside elevated/high zones")
        if entering:
            reasons.append(f"the entry is inside a cluster: size cut {ENTRY_CUT * 100:.0f}%")
        out.update({
            "liquidation_price": row["liquidation_price"],
            "grade": row["grade"],
            "in_cluster": in_cluster,
            "entering_cluster": entering,
            "max_usd": max_usd,
            "cut_pct": round(cut * 100),
            "suggested_usd": suggested,
            "reason": "; ".join(reasons),
        })
        return out

    # ---- sessions and funding -----------------------------------------------------------------------
    def sessions(self, days: float | None = None) -> dict[str, Any]:
        """Estimated realised liquidations by trading session and by hour of the funding cycle (hourly
        buckets: every session edge is a whole hour), plus the feed's reported events by session."""
        svc = self.svc
        r = svc.realised("1h")
        if len(r.time) == 0:
            raise AnalyticsError("no history yet")
        end = int(r.time[-1]) + 3600
        start = int(r.time[0])
        if days is not None:
            start = max(start, end - int(days * 86_400))
        sel = r.time >= start
        times, longs, shorts = r.time[sel], r.long_usd[sel], r.short_usd[sel]
        span = (start, end)
        total = float(longs.sum() + shorts.sum())
        rows = [s.to_dict(total) for s in session_breakdown(times, longs, shorts, span)]
        funding = svc.funding()
        interval = float(funding.get("interval_hours") or 8.0)
        now = svc.market_time()
        countdown = funding_countdown(now, interval)
        cycle = funding_cycle_profile(times, longs + shorts, interval, span)
        out: dict[str, Any] = {
            "symbol": svc.market.key,
            "estimate": True,
            "span": [start, end],
            "current_session": SESSIONS[int(session_of(np.array([int(now)]))[0])][0],
            "sessions": rows,
            "funding": {"rate": funding.get("rate"), **countdown},
            "funding_cycle": cycle.to_dict(),
            "reported": None,
        }
        events = [e for e in svc.liquidations(limit=20_000) if e.time_ms // 1000 >= start]
        if events:
            t = np.array([e.time_ms // 1000 for e in events], dtype=np.int64)
            usd = np.array([e.usd for e in events], dtype=np.float64)
            is_long = np.array([e.side == "long" for e in events])
            rep = session_breakdown(t, np.where(is_long, usd, 0.0), np.where(is_long, 0.0, usd),
                                    (int(t.min()), int(t.max()) + 1))
            rep_total = float(usd.sum())
            out["reported"] = {"events": len(events), "sessions": [s.to_dict(rep_total) for s in rep]}
        return out


__all__ = [
    "CLUSTER_GRADES", "DEFAULT_LIMIT_SHARE", "ENTRY_CUT", "GRADES", "HYSTERESIS", "TOUCH_HORIZON_HOURS", "WEIGHTS",
    "AlertSettings", "AnalyticsError", "MarketAlerts", "MarketAnalytics", "PositionSpec", "RankedZone",
]
