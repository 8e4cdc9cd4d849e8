"""Trading sessions and funding cycles: *when* liquidations happen in the day and in the funding cycle.

Sessions (UTC, a partition of the day — every hour belongs to exactly one):
- **Asia**   22:00–07:00 UTC: Sydney opens ~22:00–23:00 UTC, Tokyo/Hong Kong/Singapore trade 00:00–08:00 UTC.
- **Europe** 07:00–13:00 UTC: Frankfurt/London open (07:00–08:00 UTC) until US pre-market.
- **US**     13:00–22:00 UTC: US pre-market and the NYSE session (13:30/14:30–20:00/21:00 UTC by DST).
Sessions have different lengths, so the breakdown also gives USD per hour of session observed.

Funding: perpetuals settle funding every ``interval`` hours from 00:00 UTC (8h on most symbols; 4h or 1h
on some — read it from the venue, never assume it). The funding-cycle effect is the mean realised
liquidation USD per hour, grouped by hours since the last settlement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (name, start hour, end hour) in UTC; a session that wraps midnight has start > end.
SESSIONS: tuple[tuple[str, float, float], ...] = (("Asia", 22.0, 7.0), ("Europe", 7.0, 13.0), ("US", 13.0, 22.0))


class SessionError(ValueError):
    """Bad session or funding inputs (one line)."""


def session_of(times: np.ndarray, sessions: tuple[tuple[str, float, float], ...] = SESSIONS) -> np.ndarray:
    """Session index per UNIX-seconds time (-1 if the sessions do not cover that hour)."""
    hour = (np.asarray(times, dtype=np.int64) % 86_400) / 3600.0
    out = np.full(hour.shape, -1, dtype=np.int64)
    for i, (_, start, end) in enumerate(sessions):
        inside = (hour >= start) & (hour < end) if start < end else (hour >= start) | (hour < end)
        out[(out < 0) & inside] = i
    return out


@dataclass(frozen=True)
class SessionStats:
    name: str
    hours_utc: str  # "22:00-07:00"
    long_usd: float
    short_usd: float
    events: int  # events (or non-empty bars for per-bar input)
    hours_observed: float  # hours of this session covered by the data

    @property
    def usd(self) -> float:
        return self.long_usd + self.short_usd

    @property
    def usd_per_hour(self) -> float:
        return self.usd / self.hours_observed if self.hours_observed > 0 else 0.0

    def to_dict(self, total: float) -> dict[str, object]:
        return {
            "session": self.name,
            "hours_utc": self.hours_utc,
            "long_usd": self.long_usd,
            "short_usd": self.short_usd,
            "usd": self.usd,
            "share": self.usd / total if total > 0 else 0.0,
            "events": self.events,
            "hours_observed": self.hours_observed,
            "usd_per_hour": self.usd_per_hour,
        }


def _observed_hours(start: int, end: int, sessions: tuple[tuple[str, float, float], ...]) -> np.ndarray:
    """Hours of each session inside [start, end), at one-minute resolution (exact for whole-minute edges)."""
    if end <= start:
        return np.zeros(len(sessions))
    minutes = np.arange(start // 60 * 60, end, 60, dtype=np.int64)
    minutes = minutes[minutes >= start]
    idx = session_of(minutes, sessions)
    return np.bincount(idx[idx >= 0], minlength=len(sessions)).astype(np.float64) / 60.0


def session_breakdown(
    times: np.ndarray,
    long_usd: np.ndarray,
    short_usd: np.ndarray,
    span: tuple[int, int] | None = None,
    sessions: tuple[tuple[str, float, float], ...] = SESSIONS,
) -> list[SessionStats]:
    """Realised liquidations per session. ``times`` are UNIX seconds (event times, or bar open times for
    per-bar totals); ``span`` = the [start, end) the data covers (default: first to last time, + 1 s)."""
    times = np.asarray(times, dtype=np.int64)
    long_usd = np.asarray(long_usd, dtype=np.float64)
    short_usd = np.asarray(short_usd, dtype=np.float64)
    if not (times.shape == long_usd.shape == short_usd.shape):
        raise SessionError("times, long_usd and short_usd must have the same length")
    if span is None:
        span = (int(times.min()), int(times.max()) + 1) if len(times) else (0, 0)
    idx = session_of(times, sessions)
    hours = _observed_hours(span[0], span[1], sessions)
    out = []
    for i, (name, start, end) in enumerate(sessions):
        m = idx == i
        nonempty = m & ((long_usd + short_usd) > 0)
        out.append(
            SessionStats(
                name,
                f"{int(start):02d}:{int(round(start % 1 * 60)):02d}-{int(end):02d}:{int(round(end % 1 * 60)):02d}",
                float(long_usd[m].sum()),
                float(short_usd[m].sum()),
                int(nonempty.sum()),
                float(hours[i]),
            )
        )
    return out


# ---- funding ---------------------------------------------------------------------------------------
def next_funding_time(now: int | float, interval_hours: float = 8.0, anchor: int = 0) -> int:
    """The next settlement strictly after ``now`` (UNIX seconds) for settlements every ``interval_hours``
    from ``anchor`` (default 00:00 UTC)."""
    if interval_hours <= 0:
        raise SessionError("funding interval must be positive")
    step = int(round(interval_hours * 3600))
    k = (int(now) - anchor) // step + 1
    return anchor + k * step


def funding_countdown(now: int | float, interval_hours: float = 8.0, anchor: int = 0) -> dict[str, object]:
    """{"next_time", "seconds_left", "hhmmss", "interval_hours"} — what a UI shows next to the rate."""
    nxt = next_funding_time(now, interval_hours, anchor)
    left = max(int(nxt - now), 0)
    return {
        "next_time": nxt,
        "seconds_left": left,
        "hhmmss": f"{left // 3600:02d}:{left % 3600 // 60:02d}:{left % 60:02d}",
        "interval_hours": interval_hours,
    }


@dataclass(frozen=True)
class FundingCycleProfile:
    interval_hours: float
    hour: np.ndarray  # (K,) hours since the last settlement (bucket starts)
    mean_usd: np.ndarray  # (K,) mean realised USD per observed hour-slot in that bucket
    slots: np.ndarray  # (K,) how many hour-slots were observed (cycles that contributed)

    def to_dict(self) -> dict[str, object]:
        return {
            "interval_hours": self.interval_hours,
            "hour": self.hour.tolist(),
            "mean_usd": self.mean_usd.tolist(),
            "slots": self.slots.tolist(),
        }


def funding_cycle_profile(
    times: np.ndarray,
    usd: np.ndarray,
    interval_hours: float = 8.0,
    span: tuple[int, int] | None = None,
    anchor: int = 0,
) -> FundingCycleProfile:
    """Mean realised liquidations by hour in the funding cycle. Every whole hour inside ``span`` counts as
    one observed slot (hours with nothing liquidated count as zero), so the mean is not biased toward
    busy hours. Default span: the hours from the first to the last time."""
    times = np.asarray(times, dtype=np.int64)
    usd = np.asarray(usd, dtype=np.float64)
    if times.shape != usd.shape:
        raise SessionError("times and usd must have the same length")
    step = int(round(interval_hours * 3600))
    if step < 3600 or step % 3600:
        raise SessionError("funding interval must be a whole number of hours (1, 4, 8, ...)")
    k = step // 3600
    if span is None:
        if len(times) == 0:
            return FundingCycleProfile(interval_hours, np.arange(k, dtype=np.float64), np.zeros(k), np.zeros(k, dtype=np.int64))
        span = (int(times.min()) // 3600 * 3600, (int(times.max()) // 3600 + 1) * 3600)
    first_hour = -(-span[0] // 3600)  # whole hours fully inside the span
    last_hour = span[1] // 3600
    hours = np.arange(first_hour, last_hour, dtype=np.int64) * 3600
    slot_phase = ((hours - anchor) % step) // 3600
    slots = np.bincount(slot_phase, minlength=k)
    inside = (times >= first_hour * 3600) & (times < last_hour * 3600)
    phase = ((times[inside] - anchor) % step) // 3600
    total = np.bincount(phase, weights=usd[inside], minlength=k)
    mean = np.where(slots > 0, total / np.maximum(slots, 1), 0.0)
    return FundingCycleProfile(interval_hours, np.arange(k, dtype=np.float64), mean, slots)
