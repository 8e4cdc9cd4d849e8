"""Bars: validation a user can act on, and resampling that matches aggregating candles by hand."""

from datetime import UTC, datetime

import numpy as np
import pytest

from engine.model import TIMEFRAMES, Bars, BarsError, timeframe_name, timeframe_seconds
from engine.model.synthetic import synthetic_bars


def _bars(**over):
    cols = dict(
        time=np.array([0, 60, 120]),
        open=np.array([10.0, 11.0, 12.0]),
        high=np.array([11.5, 12.5, 12.5]),
        low=np.array([9.5, 10.5, 11.0]),
        close=np.array([11.0, 12.0, 11.5]),
    )
    cols.update(over)
    return cols


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(time=np.array([0, 60, 60])), "duplicate timestamps at row 2"),
        (dict(time=np.array([0, 120, 60])), "unsorted timestamps at row 2"),
        (dict(close=np.array([11.0, np.nan, 11.5])), "close is missing or NaN at row 1"),
        (dict(low=np.array([9.5, 0.0, 11.0]), open=np.array([10.0, 11.0, 12.0])), "low must be positive"),
        (dict(high=np.array([11.5, 11.5, 12.5])), "high/low do not contain open/close at row 1"),
        (dict(volume=np.array([1.0, -2.0, 1.0])), "volume must not be negative"),
    ],
)
def test_bad_bars_are_refused_with_one_line(change, message):
    with pytest.raises(BarsError) as err:
        Bars.from_columns(60, **_bars(**change))
    text = str(err.value)
    assert message in text and "\n" not in text


def test_empty_and_ragged_inputs_are_refused():
    with pytest.raises(BarsError, match="empty"):
        Bars.from_columns(60, time=np.array([], dtype=np.int64), open=[], high=[], low=[], close=[])
    with pytest.raises(BarsError, match="column volume has 2 values for 3 bars"):
        Bars.from_columns(60, **_bars(volume=np.array([1.0, 2.0])))


def test_timeframe_names():
    assert timeframe_seconds("15m") == 900 and timeframe_seconds("1w") == 604_800
    assert timeframe_name(14_400) == "4h" and timeframe_name(7) == "7s"
    with pytest.raises(BarsError, match="unknown timeframe '2m'"):
        timeframe_seconds("2m")
    with pytest.raises(BarsError):
        timeframe_seconds(0)


def _naive_resample(b: Bars, tf: int) -> dict[int, dict[str, float]]:
    """Group 1m bars by hand: UTC-aligned buckets, weeks starting on Monday."""
    out: dict[int, dict[str, float]] = {}
    for i in range(len(b)):
        t = int(b.time[i])
        if tf == 604_800:
            d = datetime.fromtimestamp(t, UTC)
            monday = d.timestamp() - d.weekday() * 86_400 - (t % 86_400)
            key = int(monday)
        else:
            key = t - t % tf
        row = out.get(key)
        if row is None:
            out[key] = row = {"open": b.open[i], "high": b.high[i], "low": b.low[i], "volume": 0.0, "oi": np.nan}
        row["high"] = max(row["high"], b.high[i])
        row["low"] = min(row["low"], b.low[i])
        row["close"] = b.close[i]
        row["volume"] += b.volume[i]
        if np.isfinite(b.oi_usd[i]):
            row["oi"] = b.oi_usd[i]
    return out


@pytest.mark.parametrize("tf", ["5m", "15m", "1h", "4h", "1d", "1w"])
def test_resampling_matches_aggregating_by_hand(tf):
    b = synthetic_bars(3 * 7 * 1440 + 333, seed=3, start=1_700_000_000)
    oi = b.oi_usd.copy()
    oi[::7] = np.nan  # gaps: the bucket takes its last known value
    b = b.with_columns(oi_usd=oi)
    r = b.resample(tf)
    want = _naive_resample(b, TIMEFRAMES[tf])
    assert r.timeframe == TIMEFRAMES[tf]
    assert list(r.time) == sorted(want)
    for i, t in enumerate(r.time):
        w = want[int(t)]
        assert (r.open[i], r.high[i], r.low[i], r.close[i]) == (w["open"], w["high"], w["low"], w["close"])
        assert r.volume[i] == pytest.approx(w["volume"], rel=1e-12)
        assert r.oi_usd[i] == w["oi"] or (np.isnan(r.oi_usd[i]) and np.isnan(w["oi"]))
    r.validate()


def test_weeks_start_on_monday_utc():
    b = synthetic_bars(20 * 1440, seed=1, start=1_700_000_000)  # a Tuesday
    weeks = b.resample("1w")
    days = {datetime.fromtimestamp(int(t), UTC).strftime("%a %H:%M") for t in weeks.time}
    assert days == {"Mon 00:00"}
    assert weeks.time[0] <= b.time[0] < weeks.time[0] + 604_800


def test_resampling_refuses_what_is_not_a_whole_multiple():
    b = synthetic_bars(100, timeframe=300)
    with pytest.raises(BarsError, match="whole multiple"):
        b.resample("1m")
    assert b.resample("5m") is b


def test_upto_sees_only_closed_bars():
    b = synthetic_bars(10, timeframe=60, start=6_000)
    assert len(b.upto(6_000)) == 0  # the first bar closes at 6060
    assert len(b.upto(6_060)) == 1
    assert len(b.upto(6_119)) == 1
    assert len(b.upto(10**12)) == 10


def test_slice_and_concat_round_trip():
    b = synthetic_bars(50, seed=2)
    joined = b.slice(0, 20).concat(b.slice(20))
    for name in ("time", "open", "high", "low", "close", "volume", "oi_usd", "taker_buy_volume"):
        assert np.array_equal(getattr(joined, name), getattr(b, name))
    no_oi = b.slice(20).with_columns(oi_usd=None)
    mixed = b.slice(0, 20).concat(no_oi)
    assert np.isnan(mixed.oi_usd[20:]).all() and np.isfinite(mixed.oi_usd[:20]).all()
    with pytest.raises(BarsError, match="different timeframes"):
        b.concat(b.resample("5m"))


def test_bar_history_appends_without_copying_and_equals_concat():
    from engine.model.bars import BarHistory
    from engine.model.synthetic import synthetic_bars

    bars = synthetic_bars(3000, seed=5)
    start = bars.slice(0, 1000).with_columns(funding_rate=None)  # a column that arrives later
    hist = BarHistory(start, keep=1500)
    joined = start
    before = hist.bars
    buffers = set()
    for j in range(1000, 3000):
        one = bars.slice(j, j + 1)
        hist.append(one)
        joined = joined.concat(one)
        buffers.add(hist.bars.close.base.__array_interface__["data"][0] if hist.bars.close.base is not None else 0)
    want = joined.slice(len(joined) - len(hist.bars))
    assert 1500 <= len(hist.bars) <= 1650 and hist.bars.time[-1] == bars.time[-1]
    for name in ("time", "open", "high", "low", "close", "volume", "oi_usd", "funding_rate"):
        np.testing.assert_array_equal(getattr(hist.bars, name), getattr(want, name), err_msg=name)
    grown = BarHistory(start)
    grown.append(bars.slice(1000, 1001))  # this bar has a funding rate, the history had none
    assert np.isnan(grown.bars.funding_rate[:1000]).all() and grown.bars.funding_rate[1000] == bars.funding_rate[1000]
    assert len(buffers) <= 4  # 2,000 appends moved the history a handful of times, not on every bar
    assert len(before) == 1000 and before.time[-1] == bars.time[999]  # a view handed out earlier is intact

@pytest.mark.parametrize("tf", ["1m", "5m", "15m", "1h", "4h", "1d", "1w"])
def test_one_bucket_start_for_candles_scalars_and_arrays(tf):
    """bucket_start is the one rule: every bar's bucket is the open time of the candle resample gives it."""
    from engine.model import bucket_start

    b = synthetic_bars(3 * 7 * 1440 + 333, seed=3, start=1_700_000_000)
    r = b.resample(tf)
    buckets = bucket_start(b.time, tf)
    assert set(np.unique(buckets).tolist()) == set(r.time.tolist())
    for t in (int(b.time[0]), int(b.time[5000]), int(b.time[-1])):
        start = bucket_start(t, tf)
        assert isinstance(start, int) and start <= t < start + TIMEFRAMES[tf] and start in set(r.time.tolist())
    if tf == "1w":
        assert {datetime.fromtimestamp(int(t), UTC).strftime("%a %H:%M") for t in buckets} == {"Mon 00:00"}
