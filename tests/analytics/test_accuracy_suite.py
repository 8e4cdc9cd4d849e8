"""The accuracy suite on real data: its fast paths equal the model's own, the walk-forward never fits on the
weeks it scores, and out of sample the chosen map beats random on held-out Bybit weeks."""

from dataclasses import replace

import numpy as np
import pytest
from analytics_data import DATA, need

from engine.accuracy import (
    FIT_HORIZON,
    DataSet,
    choose,
    load_sets,
    prepare,
    score_set,
    walk_forward,
)
from engine.cli import main
from engine.model import ModelParams, estimate
from engine.model.accuracy import t_sf, touch_matrix, window_books
from engine.model.scoring import Events
from engine.model.touch import realised_volatility, student_t_sf, touch_probability

BYBIT_LIQ = DATA / "bybit_btcusdt_liquidations_2024-02_06.csv.gz"
CUT = 1_709_856_000  # 2024-03-08 00:00 UTC: 3.5 weeks of events (2024-02-12 → 03-08)


@pytest.fixture(scope="module")
def bybit_slice():
    need(BYBIT_LIQ)
    ds = load_sets(DATA, ("bybit-15m",))[0]
    n = int(np.searchsorted(ds.bars.time, CUT))
    keep = ds.events.time < CUT
    ev = ds.events
    return DataSet(ds.key, ds.label, ds.bars.slice(0, n), Events(ev.time[keep], ev.long[keep], ev.price[keep], ev.usd[keep]),
                   ds.exchange, True)


@pytest.fixture(scope="module")
def prepared(bybit_slice):
    return prepare(bybit_slice)


def test_window_books_equal_the_estimates_book_at_every_window(bybit_slice):
    est = estimate(bybit_slice.bars, ModelParams(exchange="bybit"))
    times = np.arange(CUT - 10 * 86_400, CUT, 3600 * 7, dtype=np.int64)
    wb = window_books(est, times)
    assert wb.usd.shape == (5, len(times), 2, 76)
    for j in range(len(times)):
        longs, shorts = est.book(int(wb.closed[j])).binned(wb.edges[j])
        np.testing.assert_allclose(wb.usd[:, j, 0], longs.T, rtol=1e-7, atol=1e-3)
        np.testing.assert_allclose(wb.usd[:, j, 1], shorts.T, rtol=1e-7, atol=1e-3)


def test_touch_matrix_equals_the_touch_model_per_window(bybit_slice):
    est = estimate(bybit_slice.bars, ModelParams(exchange="bybit"))
    wb = window_books(est, np.array([CUT - 20 * 86_400, CUT - 3 * 86_400 - 900], dtype=np.int64))
    tm = touch_matrix(bybit_slice.bars, wb, 4.0)
    for j in range(2):
        vol = realised_volatility(bybit_slice.bars.slice(0, int(wb.closed[j])))
        e, p = wb.edges[j], float(wb.price[j])
        near = np.where(e[1:] < p, e[1:], np.where(e[:-1] > p, e[:-1], p))
        np.testing.assert_allclose(tm[j], touch_probability(p, near, vol, 4.0), atol=1e-12)
    t = np.linspace(-4, 25, 60)
    for nu in (4.3, 9.0, 80.0):
        np.testing.assert_allclose(t_sf(t, np.full_like(t, nu)), student_t_sf(t, nu), atol=1e-13)


def test_walk_forward_fits_only_on_windows_that_ended_before_the_week_scored(prepared, monkeypatch):
    import engine.accuracy as acc

    seen = []
    real_choose = acc.choose

    def spy(pp, train):
        seen.append(train.copy())
        return real_choose(pp, train)

    monkeypatch.setattr(acc, "choose", spy)
    picks, scored = walk_forward(prepared)
    assert len(picks) >= 2 and scored.any()
    h = int(FIT_HORIZON * 3600)
    for (wk, _), train in zip(sorted(picks.items()), seen, strict=True):
        week_start = wk * 7 * 86_400 + 4 * 86_400
        assert train.any()
        assert int((prepared.times[train] + h).max()) <= week_start  # every fitted window ended before it
        assert not (train & (prepared.week == wk)).any()


def test_scrambling_the_scored_weeks_does_not_change_what_was_fitted_for_them(prepared):
    picks, _ = walk_forward(prepared)
    last = max(picks)
    truth = prepared.truth[FIT_HORIZON]
    later = prepared.times + int(FIT_HORIZON * 3600) > last * 7 * 86_400 + 4 * 86_400
    rng = np.random.default_rng(3)
    scrambled = truth.usd.copy()
    scrambled[later] = rng.permutation(scrambled[later], axis=1)
    pp2 = replace(prepared, truth={**prepared.truth, FIT_HORIZON: replace(truth, usd=scrambled)}, _gram={})
    picks2, _ = walk_forward(pp2)
    assert picks2[last] == picks[last]
    # while fitting on everything (in sample) does see the scrambled week
    assert choose(pp2, pp2.valid[FIT_HORIZON]).weights != pytest.approx(choose(prepared, prepared.valid[FIT_HORIZON]).weights)


def test_out_of_sample_the_chosen_map_beats_random_and_the_shuffled_map(prepared):
    res = score_set(prepared, reps=60)
    rows = {r["metric"]: r for r in res.rows}
    drawn = rows["where 4h: map as drawn (precision@10%)"]
    assert drawn["out"] / drawn["random"] > 1.5  # held-out weeks; the field's default ladder sits below random
    assert drawn["default"] < drawn["random"]
    cond = rows["where, given touch 1h (rank corr)"]
    assert cond["out"] > cond["random"] > 0  # above the shuffled map's 99th percentile
    lo, hi = cond["out_ci"]
    assert lo <= cond["out"] <= hi
    when = rows["when, per hour: rank corr"]
    assert when["out"] > 0.5 and when["no_levels"] > 0.5


def test_suite_command_writes_the_readme_table_between_its_markers(tmp_path, capsys):
    need(DATA / "okx_liquidations_2026-03-04.csv.gz")
    readme = tmp_path / "README.md"
    from engine.accuracy import README_BEGIN, README_END

    readme.write_text(f"intro\n{README_BEGIN}\nold\n{README_END}\nrest\n")
    assert main(["backtest", "--suite", "--sets", "okx-1h", "--write-readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "| okx-1h | where 4h: map as drawn (precision@10%) |" in out
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "| okx-1h | when, per hour: rank corr |" in text


def test_suite_refuses_a_missing_data_dir_in_one_line(tmp_path, capsys):
    assert main(["backtest", "--suite", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err
    assert main(["backtest", "--suite", "--sets", "bybit-15m,moon"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown set 'moon'" in err


def test_the_fitted_preset_names_its_data_and_its_out_of_sample_figure():
    from engine.model import LADDERS

    near = LADDERS["near"]
    d = ModelParams(ladder=near).describe()
    assert "Bybit BTCUSDT liquidations 2024-02-12" in d["fitted_on"]
    assert "out of sample" in d["accuracy"] and "random" in d["accuracy"]
    assert d["volume_proxy_fraction"] == near.volume_proxy_fraction < 0.1  # the fitted seed scale is applied
    default = ModelParams().describe()
    assert default["fitted_on"].startswith("not fitted") and "out of sample" in default["accuracy"]


def test_backtest_on_the_bybit_set_skips_recording_gaps_and_the_fitted_scale_matches(capsys):
    need(BYBIT_LIQ)
    bars = DATA / "bybit_btcusdt_15m_2024-01_06.csv.gz"
    assert main(["backtest", "--bars", str(bars), "--liquidations", str(BYBIT_LIQ), "--exchange", "bybit",
                 "--ladder", "near", "--json"]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["recorded"]["gap_days"] == 40 and rep["recorded"]["bars_covered"] == 1709
    assert "bankruptcy prices moved" in rep["recorded"]["prices"]
    assert 0.5 < rep["per_bar"]["estimated_over_recorded"] < 2.0  # the default ladder's 0.1 fraction: ~140x
    assert rep["zones"]["usd"]["lift"] > 2.0  # the map as drawn (the default ladder: ~0.35x)
