"""``liqheat backtest`` end to end on the real OKX recording, plus its one-line refusals."""

import json

import pytest
from analytics_data import CANDLES, OKX_LIQ, need

from engine.cli import main
from engine.ladderfile import load_ladder


def okx_args(*extra):
    return ["backtest", "--bars", str(need(CANDLES)), "--venue", "okx", "--coin", "BTC", "--contract-size", "0.01",
            "--liquidations", str(need(OKX_LIQ)), "--exchange", "okx", *extra]


def test_backtest_on_real_okx_liquidations_prints_every_figure(capsys):
    assert main(okx_args("--horizon-hours", "4")) == 0
    out = capsys.readouterr().out
    for needle in ("rank correlation, bar", "top-decile bars", "no-levels baseline", "precision", "lift",
                   "95% lower bound", "nearest buckets", "12 1h bars fully covered", "ESTIMATE"):
        assert needle in out


def test_backtest_json_figures_are_consistent(capsys):
    assert main(okx_args("--horizon-hours", "1", "--json")) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["recorded"]["events"] == 1611 and rep["recorded"]["bars_covered"] == 12
    assert rep["bars"]["seed_mode"] == "volume"
    for side in ("model", "no_levels_baseline"):
        pb = rep["per_bar"][side]
        assert -1 <= pb["rank_corr"] <= 1 and 0 <= pb["top_decile_share"] <= 1
    for rank in ("usd", "risk"):
        z = rep["zones"][rank]
        assert z["windows"] + z["windows_excluded"] == 12  # 23:00 .. 10:00 UTC, each with a full hour after
        assert 0 <= z["wilson_low"] <= z["precision"] <= 1
        assert z["lift_low"] <= z["lift"]
        assert z["random"] == pytest.approx(0.105, abs=0.01)  # 8 of 76 buckets, nearly all events in range
    # the risk-weighted ranking is the analytic this module adds: it must beat random on real data
    assert rep["zones"]["risk"]["lift_low"] > 1.0


def test_calibrate_writes_a_ladder_the_next_run_reads(tmp_path, capsys):
    out = tmp_path / "okx_btc.json"
    assert main(okx_args("--calibrate", str(out))) == 0
    assert "written to" in capsys.readouterr().out
    ladder = load_ladder(str(out))
    assert ladder.name == "okx_btc" and abs(sum(ladder.weights) - 1) < 1e-6
    fit = json.loads(out.read_text())["fit"]
    assert fit["r2"] >= fit["r2_prior"] - 1e-9
    # fitted on the first two thirds only (8 of the 12 covered hours, long + short rows), scored on the rest
    assert fit["rows"] == 16 and fit["trained_until"] == "2026-03-05 07:00"
    assert main(okx_args("--ladder", str(out))) == 0


def test_calibrate_never_sees_the_scored_bars(capsys):
    assert main(okx_args("--calibrate", "/dev/null", "--train-until", "2026-03-05 02:00", "--json")) == 0
    c = json.loads(capsys.readouterr().out)["calibration"]
    assert c["trained_until"] == 1772676000  # 2026-03-05 02:00 UTC
    assert c["fit"]["rows"] == 6  # 23:00, 00:00, 01:00 lie before the cut: three bars, long and short rows
    for label in ("starting", "fitted"):
        assert c["out_of_sample"][label]["per_bar"]["bars"] == 9  # 02:00 .. 10:00, the hours after the cut


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bars", "/nonexistent.csv", "--liquidations", "/nonexistent2.csv"], "no such file"),
        (["--ladder", "moon"], "unknown ladder"),
        (["--horizon-hours", "0"], "must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    base = okx_args()
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("liqheat backtest:") and needle in err


def test_multi_coin_file_without_coin_and_non_overlapping_data_are_refused(tmp_path, capsys):
    assert main(["backtest", "--bars", str(need(CANDLES)), "--venue", "okx", "--liquidations", str(need(OKX_LIQ))]) == 2
    assert "several markets" in capsys.readouterr().err
    bars = tmp_path / "bars.csv"
    rows = ["timestamp_ms,open,high,low,close,volume"]
    rows += [f"{1_600_000_000_000 + i * 3_600_000},100,101,99,100.5,10" for i in range(50)]
    bars.write_text("\n".join(rows) + "\n")
    assert main(["backtest", "--bars", str(bars), "--coin", "BTC", "--liquidations", str(need(OKX_LIQ))]) == 2
    err = capsys.readouterr().err
    assert "do not overlap" in err and err.count("\n") == 1


def test_backtest_on_the_simulated_market_scores_events_and_the_true_book(capsys):
    assert main(["backtest", "--feed", "demo", "--days", "5", "--horizon-hours", "4", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bars"]["timeframe"] == "1m" and rep["recorded"]["score_timeframe"] == "1h"
    assert rep["recorded"]["events"] > 100 and rep["recorded"]["bars_covered"] >= 100
    t = rep["truth"]
    assert t["buckets"] >= 10 and -1 <= t["rank_corr"] <= 1 and 0 <= t["top_decile_share"] <= 1
    # the simulated traders are liquidated where price crosses their levels: the model must see "when"
    assert rep["per_bar"]["model"]["rank_corr"] > rep["per_bar"]["no_levels_baseline"]["rank_corr"]
    assert main(["backtest", "--feed", "demo", "--days", "5"]) == 0
    assert "TRUE book" in capsys.readouterr().out


def test_files_are_required_without_the_demo_feed(capsys):
    assert main(["backtest", "--liquidations", str(need(OKX_LIQ))]) == 2
    assert "give --bars FILE" in capsys.readouterr().err
