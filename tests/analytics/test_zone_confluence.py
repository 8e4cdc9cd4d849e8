"""Confluence across lookbacks/timeframes and persistence across snapshots, as sortable zone attributes."""

import pytest

from engine.model import ModelParams
from engine.model.confluence import (
    ZoneTracker,
    confluence,
    lookback_zones,
    overlaps,
    timeframe_zones,
    zone_table,
)
from engine.model.touch import realised_volatility, zone_touch
from engine.model.views import Zone


def zone(side, lo, hi, usd=1e6, grade="high"):
    return Zone(side, lo, hi, 0.5 * (lo + hi), usd, grade, None, 95.0, 0.0, (usd,))


def test_overlap_is_same_side_with_a_small_tolerance():
    a = zone("long", 97.0, 98.0)
    assert overlaps(a, zone("long", 97.5, 99.0))
    assert overlaps(a, zone("long", 98.05, 99.0), tolerance_pct=0.1)  # a 0.05 gap at ~98 is under 0.1%
    assert not overlaps(a, zone("long", 98.5, 99.0), tolerance_pct=0.1)
    assert not overlaps(a, zone("short", 97.0, 98.0))


def test_confluence_counts_the_windows_that_agree():
    frames = {
        "1h": [zone("long", 97.2, 97.8)],
        "4h": [zone("long", 97.0, 97.5), zone("short", 103.0, 104.0)],
        "1d": [zone("long", 96.8, 98.0, 5e6), zone("short", 103.5, 104.5, 2e6), zone("long", 90.0, 91.0, 9e6)],
    }
    out = confluence(frames)
    assert [(c.zone.price_low, c.confluence) for c in out] == [(96.8, 3), (103.5, 2), (90.0, 1)]
    assert out[0].frames == ("1d", "1h", "4h")
    assert out[0].to_dict()["confluence"] == 3
    with pytest.raises(ValueError):
        confluence(frames, base="1w")
    assert confluence({}) == []


def test_tracker_keeps_identity_and_age_while_a_zone_drifts():
    tr = ZoneTracker()
    first = tr.update([zone("long", 97.0, 98.0, grade="low"), zone("short", 103.0, 104.0)], 1000)
    assert [t.id for t in first] == [1, 2] and all(t.persistence_s == 0 for t in first)
    second = tr.update([zone("short", 103.2, 104.1), zone("long", 97.1, 98.2, grade="high")], 1600)
    assert [t.id for t in second] == [2, 1]
    assert second[1].persistence_s == 600 and second[1].snapshots == 2
    assert second[1].grade_changed and second[1].previous_grade == "low"
    assert not second[0].grade_changed
    third = tr.update([zone("long", 80.0, 81.0)], 2200)  # both old zones gone, a new one appears
    assert third[0].id == 3 and third[0].persistence_s == 0
    assert tr.update([zone("long", 97.1, 98.2)], 2800)[0].id == 4  # forgotten without a grace period


def test_a_grace_period_bridges_a_zone_that_flickers():
    tr = ZoneTracker(grace_s=300)
    tr.update([zone("long", 97.0, 98.0)], 0)
    tr.update([], 120)
    back = tr.update([zone("long", 97.0, 98.0)], 240)
    assert back[0].id == 1 and back[0].persistence_s == 240


def test_matching_is_one_to_one_largest_overlap_first():
    tr = ZoneTracker()
    tr.update([zone("long", 97.0, 98.0)], 0)
    out = tr.update([zone("long", 97.9, 98.5), zone("long", 96.9, 97.95)], 60)
    assert [t.id for t in out] == [2, 1]


def test_lookback_and_timeframe_zones_on_a_real_estimate(synth_bars):
    params = ModelParams()
    frames = lookback_zones(synth_bars, params)
    assert list(frames) == ["1h", "4h", "1d"]
    price = float(synth_bars.close[-1])
    for zs in frames.values():
        for z in zs:
            assert price * 0.74 < z.price_low < z.price_high < price * 1.26
    conf = confluence(frames)
    assert all(1 <= c.confluence <= 3 for c in conf)
    assert conf == sorted(conf, key=lambda c: (c.confluence, c.zone.usd), reverse=True)
    tfs = timeframe_zones(synth_bars.resample("15m"), params, ("1m", "15m", "1h"))
    assert list(tfs) == ["15m", "1h"]  # finer than the data: skipped
    assert confluence({"a": frames["1d"], "b": frames["1d"]})[0].confluence == 2


def test_zone_table_merges_every_attribute_and_sorts(synth_est):
    zones = synth_est.zones()
    price = synth_est.liquidation_map().price
    vol = realised_volatility(synth_est.bars)
    tracker = ZoneTracker()
    tracked = tracker.update(zones, 1000)
    tracked = tracker.update(zones, 4600)
    frames = lookback_zones(synth_est.bars, synth_est.params)
    rows = zone_table(zones, zone_touch(zones, price, vol), confluence(frames), tracked)
    assert len(rows) == len(zones)
    for row, z in zip(rows, zones, strict=True):
        assert row["price_low"] == z.price_low
        assert {"touch_1h", "risk_usd_24h", "confluence", "confluence_frames", "id", "persistence_s"} <= row.keys()
        assert row["persistence_s"] == 3600
    by_risk = sorted(rows, key=lambda r: r["risk_usd_24h"], reverse=True)
    assert by_risk[0]["risk_usd_24h"] >= by_risk[-1]["risk_usd_24h"]
