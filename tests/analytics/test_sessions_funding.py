"""Sessions (UTC partition of the day) and the funding cycle."""

import gzip
from datetime import UTC, datetime

import numpy as np
import pytest
from analytics_data import OKX_LIQ, need

from engine.model.sessions import (
    SESSIONS,
    SessionError,
    funding_countdown,
    funding_cycle_profile,
    next_funding_time,
    session_breakdown,
    session_of,
)

DAY = 1_772_668_800  # 2026-03-05 00:00 UTC


def at(h, m=0, s=0):
    return DAY + h * 3600 + m * 60 + s


def test_session_boundaries_partition_the_day():
    names = [n for n, _, _ in SESSIONS]
    cases = {at(21, 59): "US", at(22): "Asia", at(0): "Asia", at(6, 59): "Asia", at(7): "Europe",
             at(12, 59): "Europe", at(13): "US"}
    for t, name in cases.items():
        assert names[int(session_of(np.array([t]))[0])] == name
    minutes = DAY + 60 * np.arange(1440)
    assert np.all(session_of(minutes) >= 0)


def test_breakdown_adds_up_and_normalises_by_session_length():
    t = np.array([at(1), at(3), at(8), at(14), at(23)])
    longs = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    shorts = np.array([0.5, 0.0, 0.0, 0.0, 0.0])
    out = session_breakdown(t, longs, shorts, span=(DAY, DAY + 86_400))
    by = {s.name: s for s in out}
    assert by["Asia"].usd == 19.5 and by["Europe"].usd == 4.0 and by["US"].usd == 8.0
    assert sum(s.usd for s in out) == longs.sum() + shorts.sum()
    assert [s.hours_observed for s in out] == [9.0, 6.0, 9.0]
    assert by["Asia"].usd_per_hour == pytest.approx(19.5 / 9)
    assert by["Asia"].events == 3 and by["Asia"].hours_utc == "22:00-07:00"
    d = by["US"].to_dict(total=31.5)
    assert d["share"] == pytest.approx(8 / 31.5)


def test_next_funding_and_countdown():
    assert next_funding_time(at(7, 59, 59)) == at(8)
    assert next_funding_time(at(8)) == at(16)  # strictly after a settlement
    assert next_funding_time(at(23, 30)) == DAY + 86_400
    assert next_funding_time(at(5), interval_hours=4) == at(8)
    assert next_funding_time(at(5, 30), interval_hours=1) == at(6)
    c = funding_countdown(at(6, 58, 30))
    assert c["next_time"] == at(8) and c["seconds_left"] == 3690 and c["hhmmss"] == "01:01:30"
    with pytest.raises(SessionError):
        next_funding_time(0, interval_hours=0)


def test_funding_cycle_profile_finds_a_spike_after_settlement_and_counts_quiet_hours():
    days = 5
    hours = DAY + 3600 * np.arange(24 * days)
    usd = np.where((hours - DAY) % (8 * 3600) == 0, 9e6, 1e6)  # a spike in the first hour of each cycle
    keep = usd > 1e6  # record only the spikes: quiet hours must still count as observed zeros
    prof = funding_cycle_profile(hours[keep] + 600, usd[keep], 8.0, span=(DAY, DAY + days * 86_400))
    assert prof.slots.tolist() == [15] * 8
    assert prof.mean_usd[0] == pytest.approx(9e6) and np.all(prof.mean_usd[1:] == 0)
    full = funding_cycle_profile(hours, usd, 8.0)
    assert full.mean_usd[0] == pytest.approx(9e6) and full.mean_usd[5] == pytest.approx(1e6)
    with pytest.raises(SessionError):
        funding_cycle_profile(hours, usd, 2.5)


def test_real_okx_liquidations_by_session():
    rows = []
    with gzip.open(need(OKX_LIQ), "rt") as f:
        next(f)
        for line in f:
            ts, coin, side, _, _, usd = line.strip().split(",")
            if coin == "BTC":
                rows.append((int(ts) / 1000, side == "long", float(usd)))
    t = np.array([r[0] for r in rows])
    is_long = np.array([r[1] for r in rows])
    usd = np.array([r[2] for r in rows])
    out = session_breakdown(t, np.where(is_long, usd, 0.0), np.where(is_long, 0.0, usd))
    assert sum(s.usd for s in out) == pytest.approx(usd.sum())
    # the recording runs 22:45 -> 11:17 UTC: Asia from 22:45, Europe until 11:17, no US hours at all
    start = datetime.fromtimestamp(t.min(), UTC)
    assert (start.hour, start.minute) == (22, 45)
    by = {s.name: s for s in out}
    assert by["US"].hours_observed == 0 and by["US"].usd == 0
    assert by["Asia"].hours_observed == pytest.approx(8.25, abs=0.02)
    assert by["Europe"].hours_observed == pytest.approx(4.3, abs=0.05)
    assert by["Asia"].events + by["Europe"].events == len(rows)
