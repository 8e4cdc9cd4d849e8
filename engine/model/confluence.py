"""Confluence and persistence: does a zone show up whatever window you look through, and how long has it
been there?

- **Confluence**: zones estimated from different lookback windows (positions opened in the last 1h, 4h,
  1d — the "range" of a heatmap) or from different bar timeframes, matched by price overlap on the same
  side. A zone built by fresh positions *and* by day-old ones is a stronger level than one seen in a
  single window. ``confluence`` = how many windows agree (1..N).
- **Persistence**: a tracker fed successive zone snapshots keeps an identity per zone (same side, price
  ranges overlapping) and reports since when it has existed and whether its grade changed.

Both come out as zone attributes (:func:`zone_table`), so the faces can sort zones by them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bars import Bars, timeframe_seconds
from .estimate import daily_volume_usd, estimate
from .ladder import ModelParams
from .touch import ZoneTouch
from .views import Zone, find_zones, price_edges

LOOKBACKS: dict[str, int] = {"1h": 3600, "4h": 14_400, "1d": 86_400}


def overlaps(a: Zone, b: Zone, tolerance_pct: float = 0.1) -> bool:
    """Same side and price ranges that overlap, or nearly (gap under ``tolerance_pct`` of the price)."""
    if a.side != b.side:
        return False
    tol = tolerance_pct / 100.0 * 0.5 * (a.peak_price + b.peak_price)
    return a.price_low <= b.price_high + tol and b.price_low <= a.price_high + tol


def overlap_amount(a: Zone, b: Zone) -> float:
    """Shared price width (0 when disjoint), used to pick the best match among several."""
    return max(0.0, min(a.price_high, b.price_high) - max(a.price_low, b.price_low))


@dataclass(frozen=True)
class ConfluentZone:
    zone: Zone
    frames: tuple[str, ...]  # the windows whose zones agree with this one (its own first)

    @property
    def confluence(self) -> int:
        return len(self.frames)

    def to_dict(self) -> dict[str, object]:
        out = dict(self.zone.to_dict())
        out["confluence"] = self.confluence
        out["confluence_frames"] = list(self.frames)
        return out


def confluence(frames: dict[str, list[Zone]], base: str | None = None, tolerance_pct: float = 0.1) -> list[ConfluentZone]:
    """For each zone of the ``base`` frame (default: the longest, i.e. the last key), the frames that have
    an overlapping zone on the same side. Sorted by confluence, then USD."""
    if not frames:
        return []
    names = list(frames)
    base = base or names[-1]
    if base not in frames:
        raise ValueError(f"base frame {base!r} is not among {names}")
    out = []
    for z in frames[base]:
        agree = [base] + [n for n in names if n != base and any(overlaps(z, o, tolerance_pct) for o in frames[n])]
        out.append(ConfluentZone(z, tuple(agree)))
    out.sort(key=lambda c: (c.confluence, c.zone.usd), reverse=True)
    return out


def lookback_zones(
    bars: Bars,
    params: ModelParams,
    lookbacks: dict[str, int] | None = None,
    bins: int = 200,
    span: float = 0.25,
) -> dict[str, list[Zone]]:
    """Zones from estimates over the last N seconds of ``bars`` for each lookback (only positions opened
    in that window), on one shared price grid and graded against the same daily volume."""
    lookbacks = lookbacks or LOOKBACKS
    price = float(bars.close[-1])
    edges = price_edges(price * (1 - span), price * (1 + span), bins)
    dv = daily_volume_usd(bars)
    out: dict[str, list[Zone]] = {}
    end = int(bars.close_time[-1])
    for name, seconds in lookbacks.items():
        window = bars.slice(int(np.searchsorted(bars.time, end - seconds)), None)
        if len(window) == 0:
            out[name] = []
            continue
        book = estimate(window, params).book()
        out[name] = find_zones(book.liquidation_map(edges=edges), dv)
    return out


def timeframe_zones(
    bars: Bars,
    params: ModelParams,
    timeframes: tuple[str, ...] = ("1h", "4h", "1d"),
    bins: int = 200,
    span: float = 0.25,
) -> dict[str, list[Zone]]:
    """Zones from estimates on the same history resampled to each timeframe (entries spread over wider
    candles; a level robust to that choice is a stronger one). Timeframes finer than the bars are skipped."""
    price = float(bars.close[-1])
    edges = price_edges(price * (1 - span), price * (1 + span), bins)
    dv = daily_volume_usd(bars)
    out: dict[str, list[Zone]] = {}
    for tf in timeframes:
        sec = timeframe_seconds(tf)
        if sec < bars.timeframe or sec % bars.timeframe:
            continue
        book = estimate(bars.resample(sec), params).book()
        out[tf] = find_zones(book.liquidation_map(edges=edges), dv)
    return out


# ---- persistence ------------------------------------------------------------------------------------
@dataclass
class TrackedZone:
    id: int
    zone: Zone
    first_seen: int  # UNIX seconds
    last_seen: int
    snapshots: int
    previous_grade: str | None = None  # grade in the snapshot before, when it changed
    grade_changed: bool = False

    @property
    def persistence_s(self) -> int:
        return self.last_seen - self.first_seen

    def to_dict(self) -> dict[str, object]:
        out = dict(self.zone.to_dict())
        out.update(
            {
                "id": self.id,
                "first_seen": self.first_seen,
                "persistence_s": self.persistence_s,
                "snapshots": self.snapshots,
                "grade_changed": self.grade_changed,
                "previous_grade": self.previous_grade,
            }
        )
        return out


@dataclass
class ZoneTracker:
    """Feed it zone snapshots in time order; it keeps one identity per zone across snapshots.

    Matching is one-to-one, largest price overlap first, same side only. A zone missing from a snapshot is
    kept for ``grace_s`` seconds (a zone flickering below the percentile threshold for one update should
    not lose its age), then forgotten."""

    tolerance_pct: float = 0.1
    grace_s: int = 0
    _live: list[TrackedZone] = field(default_factory=list)
    _next_id: int = 1

    def update(self, zones: list[Zone], time: int) -> list[TrackedZone]:
        """Tracked zones for this snapshot, in the order of ``zones``."""
        pairs = []
        for i, z in enumerate(zones):
            for j, t in enumerate(self._live):
                if overlaps(z, t.zone, self.tolerance_pct):
                    pairs.append((overlap_amount(z, t.zone), -abs(z.peak_price - t.zone.peak_price), i, j))
        pairs.sort(reverse=True)
        used_new: set[int] = set()
        used_old: set[int] = set()
        result: list[TrackedZone | None] = [None] * len(zones)
        for _, _, i, j in pairs:
            if i in used_new or j in used_old:
                continue
            used_new.add(i)
            used_old.add(j)
            t = self._live[j]
            changed = t.zone.grade != zones[i].grade
            result[i] = TrackedZone(
                t.id, zones[i], t.first_seen, int(time), t.snapshots + 1,
                t.zone.grade if changed else t.previous_grade, changed,
            )
        for i, z in enumerate(zones):
            if result[i] is None:
                result[i] = TrackedZone(self._next_id, z, int(time), int(time), 1)
                self._next_id += 1
        fresh = [r for r in result if r is not None]
        kept = [t for j, t in enumerate(self._live) if j not in used_old and time - t.last_seen <= self.grace_s]
        self._live = fresh + kept
        return fresh

    @property
    def live(self) -> list[TrackedZone]:
        return list(self._live)


# ---- one table with every attribute -------------------------------------------------------------------
def zone_table(
    zones: list[Zone],
    touch: list[ZoneTouch] | None = None,
    confluent: list[ConfluentZone] | None = None,
    tracked: list[TrackedZone] | None = None,
    tolerance_pct: float = 0.1,
) -> list[dict[str, object]]:
    """``Zone.to_dict()`` rows with the analytics merged in: ``touch_1h``… / ``risk_usd_1h``… (aligned
    with ``zones``), ``confluence`` / ``confluence_frames`` (matched by overlap; 0 when no frame has it)
    and ``id`` / ``persistence_s`` / ``snapshots`` / ``grade_changed`` (aligned). Sort on any key."""
    rows = []
    for i, z in enumerate(zones):
        row = dict(z.to_dict())
        if touch is not None:
            row.update({k: v for k, v in touch[i].to_dict().items() if k.startswith(("touch_", "risk_usd_"))})
        if confluent is not None:
            best = [c for c in confluent if overlaps(z, c.zone, tolerance_pct)]
            top = max(best, key=lambda c: (c.confluence, overlap_amount(z, c.zone))) if best else None
            row["confluence"] = top.confluence if top else 0
            row["confluence_frames"] = list(top.frames) if top else []
        if tracked is not None:
            t = tracked[i]
            row.update(
                {"id": t.id, "persistence_s": t.persistence_s, "snapshots": t.snapshots, "grade_changed": t.grade_changed}
            )
        rows.append(row)
    return rows
