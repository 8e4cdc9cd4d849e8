"""Scoring: rank correlation, top-decile share, Wilson bound, and the zone protocol on planted events."""

import math

import numpy as np
import pytest
from analytics_data import BYBIT_15M, BYBIT_LIQ, need

from engine.model.scoring import (
    Events,
    ScoringError,
    actual_per_bar,
    aggregate_bars,
    baseline_realised,
    covered_bars,
    effective_n,
    rank_correlation,
    score_bars,
    top_share,
    truth_agreement,
    wilson_lower,
    zone_protocol,
)
from engine.model.views import price_edges


def test_rank_correlation_handles_ties_and_direction():
    x = np.arange(10.0)
    assert rank_correlation(x, x**3) == pytest.approx(1.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)
    # hand-worked with average ranks: x ranks 1,2,3,4; y = (1,1,2,3) ranks 1.5,1.5,3,4
    assert rank_correlation([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(0.9486832980505138)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_top_share_and_wilson():
    pred = np.array([5.0, 1.0, 9.0, 0.0, 3.0, 2.0, 8.0, 7.0, 6.0, 4.0])
    actual = np.array([0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 25.0, 0.0, 0.0, 25.0])
    assert top_share(pred, actual) == pytest.approx(0.5)  # top 1 of 10 = index 2
    assert top_share(pred, actual, 0.2) == pytest.approx(0.75)
    assert wilson_lower(0.5, 100) == pytest.approx(0.4038, abs=1e-4)
    assert wilson_lower(0.0, 50) == 0.0
    assert effective_n(np.ones(10)) == pytest.approx(10)
    assert effective_n(np.r_[100.0, np.ones(10)]) < 2


def test_per_bar_sums_events_into_their_bars_and_scores_only_covered_bars(synth_bars):
    bars = synth_bars.slice(0, 100)
    t0 = float(bars.time[10])
    ev = Events.from_arrays(np.array([t0 + 5, t0 + 30, t0 + 61, 1.0]), np.array(["long", "short", "long", "long"]),
                            np.ones(4), np.array([1.0, 2.0, 4.0, 8.0]))
    a = actual_per_bar(bars, ev)
    assert a[0, 10] == 1.0 and a[1, 10] == 2.0 and a[0, 11] == 4.0 and a.sum() == 7.0  # t=1s is before the bars
    mask = covered_bars(bars, t0 + 5, t0 + 200)
    assert mask[11] and mask[12] and not mask[10]  # bar 10 starts before the recording: partly covered
    with pytest.raises(ScoringError):
        score_bars(a, a, mask & (np.arange(100) < 13))
    s = score_bars(a + 1e-9 * np.arange(100), a, covered_bars(bars, t0, t0 + 3600))
    assert s.bars == 60 and s.rank_corr > 0.2 and s.random_share == pytest.approx(6 / 60)


def test_no_levels_baseline_is_adverse_move_times_open_interest(synth_bars):
    b = baseline_realised(synth_bars)
    oi_prev = np.r_[synth_bars.oi_usd[0], synth_bars.oi_usd[:-1]]
    assert b[0] == pytest.approx((synth_bars.open - synth_bars.low) / synth_bars.open * oi_prev)
    assert b[1] == pytest.approx((synth_bars.high - synth_bars.open) / synth_bars.open * oi_prev)
    no_oi = synth_bars.with_columns(oi_usd=None)
    assert baseline_realised(no_oi)[0][5] > 0


def planted_events(est, hours, in_top=True, per_hour=20, bucket_pct=0.25, span_pct=10.0):
    """Events inside the top-ranked (or empty) buckets of the book at each hour, in the next hour."""
    rows = []
    nb = int(round(2 * math.log1p(span_pct / 100) / math.log1p(bucket_pct / 100)))
    for t in hours:
        n = int(np.searchsorted(est.bars.close_time, t, side="right"))
        book = est.book(n)
        edges = price_edges(book.price / (1 + span_pct / 100), book.price * (1 + span_pct / 100), nb, log=True)
        lo, sh = book.binned(edges)
        pred = lo.sum(axis=1) + sh.sum(axis=1)
        picks = np.argsort(-pred)[: math.ceil(0.1 * nb)] if in_top else np.flatnonzero(pred == 0)[:5]
        for i in range(per_hour):
            b = picks[i % len(picks)]
            price = math.sqrt(edges[b] * edges[b + 1])
            rows.append((t + 60 + i * 150, "long", price, 1000.0 + i))  # inside the hour after t
    rows.sort()
    return Events.from_arrays(*(np.array(c) for c in zip(*rows, strict=True)))


def test_zone_protocol_scores_planted_events_exactly(synth_est):
    hours = np.arange(int(synth_est.bars.close_time[3000]) // 3600 * 3600, int(synth_est.bars.close_time[-1]) - 7200, 3600)[:20]
    good = planted_events(synth_est, hours, in_top=True)
    s = zone_protocol(synth_est, good, horizon_hours=1.0, coverage=(float(hours[0]), float(hours[-1] + 3600)))
    assert s.windows == len(hours) and s.windows_excluded == 0
    assert s.precision == pytest.approx(1.0)
    assert s.random == pytest.approx(8 / 76, rel=0.05)  # 8 of the 76 buckets, all events in range
    assert s.lift == pytest.approx(1 / s.random) and s.lift_low <= s.lift
    bad = planted_events(synth_est, hours, in_top=False)
    s2 = zone_protocol(synth_est, bad, horizon_hours=1.0, coverage=(float(hours[0]), float(hours[-1] + 3600)))
    assert s2.precision == 0.0 and s2.wilson_low == 0.0


def test_zone_protocol_excludes_thin_windows_and_refuses_when_nothing_is_left(synth_est):
    hours = np.arange(int(synth_est.bars.close_time[3000]) // 3600 * 3600, int(synth_est.bars.close_time[-1]) - 7200, 3600)[:6]
    ev = planted_events(synth_est, hours, per_hour=5)
    cov = (float(hours[0]), float(hours[-1] + 3600))
    with pytest.raises(ScoringError, match="too thin"):
        zone_protocol(synth_est, ev, horizon_hours=1.0, min_events=10, coverage=cov)
    s = zone_protocol(synth_est, ev, horizon_hours=1.0, min_events=5, coverage=cov)
    assert s.windows == 6
    risk = zone_protocol(synth_est, ev, horizon_hours=1.0, min_events=5, coverage=cov, rank="risk")
    assert risk.rank == "risk" and 0.0 <= risk.precision <= 1.0


def test_aggregate_bars_sums_into_aligned_buckets_and_marks_coverage():
    times = np.arange(0, 3 * 3600, 60)
    vals = np.ones((2, len(times)))
    t, v, cov = aggregate_bars(times, vals, 3600, start=0, end=2.5 * 3600)
    assert t.tolist() == [0, 3600, 7200] and v[0].tolist() == [60, 60, 60]
    assert cov.tolist() == [True, True, False]


def test_truth_agreement_is_perfect_for_the_same_book_and_poor_for_a_mirror():
    rng = np.random.default_rng(2)
    prices = 100 * np.exp(rng.uniform(-0.09, 0.09, 400))
    usd = rng.lognormal(12, 1.5, 400)
    same = truth_agreement(prices, usd, prices, usd, 100.0)
    assert same.rank_corr == pytest.approx(1.0) and same.top_decile_share > 0.3
    assert same.estimated_usd == pytest.approx(same.true_usd)
    mirrored = truth_agreement(prices, usd, 10_000 / prices, usd[::-1], 100.0)
    assert mirrored.rank_corr < 0.5
    with pytest.raises(ScoringError):
        truth_agreement(prices[:1], usd[:1], prices[:1], usd[:1], 100.0)


@pytest.mark.parametrize("rank", ["usd", "risk"])
def test_zone_protocol_equals_scoring_one_window_at_a_time(rank):
    """The whole-array zone protocol gives the very figures the per-window loop gave (to the last bit):
    on the real Bybit 2024 events and 15m candles, every window and the pooled precision, lift and bound."""
    from benchmarks.reference import zone_protocol_one_by_one
    from engine.formats import read_bars_file, read_liquidation_columns
    from engine.model import ModelParams, estimate

    bars = read_bars_file(need(BYBIT_15M))
    liqs = read_liquidation_columns(need(BYBIT_LIQ))
    events = Events.from_arrays(liqs.time_ms / 1000.0, liqs.long, liqs.price, liqs.usd)
    est = estimate(bars, ModelParams(exchange="bybit"))
    got = zone_protocol(est, events, 4.0, rank=rank).to_dict()
    want = zone_protocol_one_by_one(est, events, 4.0, rank=rank).to_dict()
    assert got["windows"] > 1000 and got["per_window"] == want["per_window"]
    assert got == want
