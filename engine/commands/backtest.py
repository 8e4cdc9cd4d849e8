"""``liqheat backtest``: score the estimate against recorded liquidations, with baselines beside it.

    liqheat backtest --bars candles.csv.gz --venue okx --coin BTC --contract-size 0.01 \\
                     --liquidations okx_liquidations.csv.gz --horizon-hours 4
    liqheat backtest --feed demo --days 14        # the simulated market: its events, and its true book
    liqheat backtest --store history.sqlite --market all --jobs 4   # every recorded market, 4 at a time

Prints, over the bars the recording covers: rank correlation per bar (estimated vs recorded realised
liquidations) and the share of recorded USD in the model's top-decile bars, the same for a no-levels
baseline; then the zone protocol (precision of the top 10% predicted price buckets over the next H hours,
lift over random with a Wilson lower bound, and the nearest-buckets baseline). ``--calibrate FILE`` also
fits ladder weights and a seed scale to the recording (engine.model.calibrate) and writes a ladder JSON
that ``--ladder FILE`` reads anywhere. Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.feeds.base import FeedError
from engine.ladderfile import load_ladder
from engine.model import (
    Bars,
    BarsError,
    LadderError,
    ModelParams,
    estimate,
    timeframe_name,
    timeframe_seconds,
)
from engine.model.calibrate import CalibrationError, calibrate
from engine.model.margin import REPORTS_BANKRUPTCY_PRICE, liquidation_from_bankruptcy
from engine.model.scoring import (
    Events,
    ScoringError,
    actual_per_bar,
    aggregate_bars,
    baseline_realised,
    covered_bars,
    score_bars,
    truth_agreement,
    zone_protocol,
)

HELP = "score the estimate against recorded liquidations (rank correlation, top-decile share, zone precision and lift)"


# The simulated market's default clock for backtests: a fixed date, so the figures reproduce.
DEMO_NOW = 1_772_323_200  # 2026-03-01 00:00 UTC


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bars", metavar="FILE", help="candles (CSV/CSV.gz/Parquet/JSON)")
    p.add_argument("--liquidations", metavar="FILE",
                   help="recorded liquidation events (timestamp_ms, side/liquidated_side, price, notional_usd)")
    p.add_argument("--feed", choices=["demo"], help="instead of files: the simulated market's bars and events")
    p.add_argument("--symbol", default="BTC/USDT:USDT", help="--feed demo: which simulated market")
    p.add_argument("--days", type=float, default=14.0, help="--feed demo: days of simulated history (14)")
    p.add_argument("--seed", type=int, default=7, help="--feed demo: the simulation's seed (7)")
    p.add_argument("--now", type=float, default=DEMO_NOW, help="--feed demo: simulated end time, UNIX s")
    p.add_argument("--score-timeframe", default="1h",
                   help="per-bar figures on bars of this length (finer bars are summed up; default 1h)")
    p.add_argument("--venue", help="pick one venue from a multi-venue candle file")
    p.add_argument("--coin", help="pick one coin from multi-coin files (either file); also picks the margin table")
    p.add_argument("--horizon-hours", type=float, default=4.0, metavar="H", help="zone protocol horizon (default 4)")
    p.add_argument("--ladder", default="default", help="preset name, JSON, or a ladder JSON file")
    p.add_argument("--timeframe", help="resample the candles to this timeframe first (e.g. 4h)")
    p.add_argument("--exchange", help="whose margin tiers to use (default: --venue, else binance)")
    p.add_argument("--contract-size", type=float, default=1.0, metavar="X",
                   help="multiply the volume column by X (OKX candles count contracts: BTC 0.01, ETH 0.1)")
    p.add_argument("--bucket-pct", type=float, default=0.25, help="zone protocol price bucket width in %% (0.25)")
    p.add_argument("--span-pct", type=float, default=10.0, help="zone protocol buckets cover price ±this %% (10)")
    p.add_argument("--min-events", type=int, default=10, help="skip windows with fewer events (10)")
    p.add_argument("--calibrate", metavar="OUT.json", help="also fit ladder weights + seed scale; write the ladder here")
    p.add_argument("--shrink", type=float, default=0.0, help="calibration: pull toward the starting ladder (0 = pure NNLS)")
    p.add_argument("--train-until", metavar="DAY",
                   help="--calibrate: fit on bars before this UTC day ('YYYY-MM-DD' or 'YYYY-MM-DD HH:MM') only and score the days from it (default: the "
                        "Monday nearest two thirds into the recording)")
    p.add_argument("--event-venue", choices=["binance", "bybit", "okx"],
                   help="venue that printed the events: Bybit and OKX print bankruptcy prices, moved one maintenance "
                        "margin nearer the entry before scoring (default: --exchange/--venue, else the file name)")
    p.add_argument("--store", metavar="DB",
                   help="instead of files: bars and liquidations recorded in a liqheat store (SQLite file or postgresql://...)")
    p.add_argument("--market", metavar="EXCHANGE:SYMBOL",
                   help="--store: which market, several comma-separated, or 'all' (every market with bars and events)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="several markets (--store) or --suite sets: score N at a time in separate processes (default 1); "
                        "the report is the same, in the same order")
    p.add_argument("--suite", action="store_true",
                   help="the accuracy suite: every real set in --data-dir and the simulated market, in and out of sample")
    p.add_argument("--data-dir", metavar="DIR", help="--suite: where the shared data files are (default ../shared/data)")
    p.add_argument("--sets", help="--suite: comma-separated subset (bybit-15m,binance-5m,okx-1h,simulated)")
    p.add_argument("--write-readme", metavar="README.md", help="--suite: write the table between the README's markers")
    p.add_argument("--write-fitted", metavar="FILE.py",
                   help="--suite: write the fitted presets and headline figures module (engine/model/fitted.py)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")


def _fail(msg: str) -> int:
    print(f"liqheat backtest: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _events(liqs: list[Any]) -> Events:
    return Events.from_arrays(
        np.array([e.time_ms for e in liqs], dtype=np.float64) / 1000.0,
        np.array([e.side for e in liqs]),
        np.array([e.price for e in liqs]),
        np.array([e.usd for e in liqs]),
    )


def load_demo(args: argparse.Namespace) -> tuple[Bars, Events, dict[str, Any]]:
    """The simulated market: 1m bars, every simulated liquidation, and what its traders really hold."""
    from engine.feeds.demo import DemoFeed

    feed = DemoFeed(seed=args.seed, history_days=args.days, now=args.now)
    bars = feed.history_now(args.symbol)
    liqs = feed.liquidations(args.symbol, until_ms=int(bars.close_time[-1]) * 1000)
    if not liqs:
        raise ScoringError(f"the simulated {args.symbol} had no liquidations in {args.days:g} days")
    truth = feed.ground_truth(args.symbol)
    return bars, _events(liqs), {"prices": truth.prices, "usd": truth.long_usd + truth.short_usd, "time": truth.time}


def load_stored(args: argparse.Namespace) -> tuple[Bars, Events]:
    """One market of a store: its finest bars and its recorded events (already at liquidation prices:
    the recorder moves Bybit/OKX bankruptcy prints when it stores them)."""
    from engine.store import StoreError, parse_market_key
    from engine.stores import open_store

    if args.bars or args.liquidations or args.feed:
        raise ScoringError("--store replaces --bars/--liquidations/--feed: give one source")
    try:
        exchange, symbol = parse_market_key(args.market)
        with open_store(args.store, create=False) as store:
            bars = store.read_bars(args.market)
            liqs = store.read_liquidations(args.market)
    except StoreError as exc:
        raise ScoringError(str(exc)) from exc
    if not liqs:
        raise ScoringError(f"{args.market}: no liquidation events stored")
    args.exchange = args.exchange or exchange
    args.coin = args.coin or symbol.split("/")[0].split(":")[0].split("-")[0]
    args.event_prices = "as stored (liquidation prices)"
    return bars, _events(liqs)


def load_inputs(args: argparse.Namespace) -> tuple[Bars, Events]:
    from engine.formats import BadFile, read_bars_file, read_liquidation_columns

    if args.store:
        return load_stored(args)
    if not args.bars or not args.liquidations:
        raise ScoringError("give --bars FILE and --liquidations FILE (or --feed demo)")
    try:
        bars = read_bars_file(args.bars, venue=args.venue, coin=args.coin)
    except BadFile as exc:
        # --coin picks the coin in multi-coin files; a single-market candle file has no coin column
        if args.coin is None or "no coin column" not in str(exc):
            raise
        bars = read_bars_file(args.bars, venue=args.venue)
    if args.contract_size != 1.0:
        if not (args.contract_size > 0 and math.isfinite(args.contract_size)):
            raise BarsError("--contract-size must be a positive number")
        scaled = {
            k: None if getattr(bars, k) is None else getattr(bars, k) * args.contract_size
            for k in ("volume", "taker_buy_volume", "taker_sell_volume")
        }
        bars = bars.with_columns(**scaled)
    if args.timeframe:
        bars = bars.resample(timeframe_seconds(args.timeframe))
    liqs = read_liquidation_columns(args.liquidations, coin=args.coin)  # columns: no object per event
    if not len(liqs):
        raise ScoringError(f"{args.liquidations}: no liquidation events")
    events = Events.from_arrays(liqs.time_ms / 1000.0, liqs.long, liqs.price, liqs.usd)
    venue = event_venue(args)
    if venue is not None and REPORTS_BANKRUPTCY_PRICE.get(venue, False):
        day = datetime.fromtimestamp(events.span[0], UTC).strftime("%Y-%m-%d")
        moved = liquidation_from_bankruptcy(events.price, np.where(events.long, 0, 1), venue, args.coin or "BTC", day)
        events = Events(events.time, events.long, moved, events.usd)
        args.event_prices = f"{venue} bankruptcy prices moved one maintenance margin nearer the entry"
    else:
        args.event_prices = f"as printed ({venue or 'venue unknown'})"
    return bars, events


def event_venue(args: argparse.Namespace) -> str | None:
    """Who printed the events: --event-venue, else --exchange/--venue, else a venue named in the file name."""
    for v in (args.event_venue, args.exchange, args.venue):
        if v:
            return str(v).lower()
    name = Path(args.liquidations).name.lower()
    return next((v for v in ("bybit", "okx", "binance") if v in name), None)


def run_backtest(
    bars: Bars, events: Events, params: ModelParams, args: argparse.Namespace, truth: dict[str, Any] | None = None
) -> dict[str, Any]:
    start, end = events.span
    if end <= bars.time[0] or start >= bars.close_time[-1]:
        raise ScoringError(
            f"the liquidations ({_iso(start)} → {_iso(end)}) do not overlap the bars "
            f"({_iso(float(bars.time[0]))} → {_iso(float(bars.close_time[-1]))})"
        )
    est = estimate(bars, params)
    # UTC days inside the recording with no event at all are gaps in the recording (the Bybit 2024 file
    # misses five weeks), not quiet days: scoring them as zero-liquidation hours would flatter whatever
    # predicts little there.
    days_with = np.unique(events.time.astype(np.int64) // 86_400)
    mask = covered_bars(bars, start, end) & np.isin(bars.time // 86_400, days_with)
    gap_days = int((end // 86_400 - start // 86_400 + 1) - len(days_with))
    actual = actual_per_bar(bars, events)
    r = est.realised
    predicted = np.stack([r.long_usd, r.short_usd])
    baseline = baseline_realised(bars)
    score_tf = max(timeframe_seconds(args.score_timeframe), bars.timeframe)
    if score_tf != bars.timeframe:
        stimes, predicted, smask = aggregate_bars(bars.time, predicted, score_tf, start, end)
        smask &= np.isin(stimes // 86_400, days_with)
        _, baseline, _ = aggregate_bars(bars.time, baseline, score_tf, start, end)
        _, actual_s, _ = aggregate_bars(bars.time, actual, score_tf, start, end)
    else:
        actual_s, smask = actual, mask
    model = score_bars(predicted, actual_s, smask)
    base = score_bars(baseline, actual_s, smask)
    zones = {
        rank: zone_protocol(
            est, events, args.horizon_hours, 3600, args.bucket_pct, args.span_pct, 0.1, args.min_events,
            (start, end), rank,
        ).to_dict()
        for rank in ("usd", "risk")
    }
    out: dict[str, Any] = {
        "bars": {
            "count": len(bars),
            "timeframe": timeframe_name(bars.timeframe),
            "from": int(bars.time[0]),
            "to": int(bars.close_time[-1]),
            "seed_mode": est.seed_mode,
        },
        "recorded": {
            "events": len(events),
            "usd": float(events.usd.sum()),
            "long_usd": float(events.usd[events.long].sum()),
            "from": start,
            "to": end,
            "bars_covered": int(smask.sum()),
            "gap_days": gap_days,
            "score_timeframe": timeframe_name(score_tf),
            "prices": getattr(args, "event_prices", "as printed"),
        },
        "model": params.describe(),
        "per_bar": {"model": model.to_dict(), "no_levels_baseline": base.to_dict(),
                    "estimated_over_recorded": float(predicted[:, smask].sum()) / max(float(actual_s[:, smask].sum()), 1e-300)},
        "zones": zones,
    }
    if truth is not None:
        book = est.book()
        agree = truth_agreement(
            book.prices(), book.usd.sum(axis=(0, 1)), truth["prices"], truth["usd"], book.price,
            args.bucket_pct, args.span_pct,
        )
        out["truth"] = {**agree.to_dict(), "time": truth["time"]}
    if args.calibrate:
        out["calibration"], out["_calibration_json"] = calibrate_out_of_sample(bars, events, actual, mask, params, args)
    return out


def training_cut(args: argparse.Namespace, start: float, end: float) -> int:
    """The first scored second: --train-until, else the Monday 00:00 UTC nearest 2/3 into the recording
    (recordings shorter than three weeks: the hour nearest 2/3 into it)."""
    if args.train_until:
        for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"):
            try:
                return int(datetime.strptime(args.train_until, fmt).replace(tzinfo=UTC).timestamp())
            except ValueError:
                continue
        raise ScoringError(f"--train-until {args.train_until!r}: use YYYY-MM-DD or 'YYYY-MM-DD HH:MM' (UTC)")
    t = start + (end - start) * 2 / 3
    if end - start < 21 * 86_400:
        return int(round(t / 3600) * 3600)
    monday = 4 * 86_400  # 1970-01-05 was a Monday
    week = 7 * 86_400
    return int(round((t - monday) / week) * week + monday)


def calibrate_out_of_sample(
    bars: Bars, events: Events, actual: np.ndarray, mask: np.ndarray, params: ModelParams, args: argparse.Namespace
) -> tuple[dict[str, Any], str]:
    """Fit on the bars before the cut only; score the fitted ladder and the starting one after it."""
    start, end = events.span
    cut = training_cut(args, start, end)
    train = mask & (bars.close_time <= cut)
    test = mask & (bars.time >= cut)
    if train.sum() < 2 or test.sum() < 3:
        raise ScoringError(f"training cut {_iso(cut)} leaves too few bars on one side ({int(train.sum())} to fit, "
                           f"{int(test.sum())} to score)")
    cal = calibrate(bars, actual, params, train, shrink=args.shrink, name=Path(args.calibrate).stem)
    fitted = _with_ladder(params, cal.ladder)
    test_events = events_between(events, cut, end)
    scores: dict[str, Any] = {}
    for label, p in (("starting", params), ("fitted", fitted)):
        est = estimate(bars, p)
        r = est.realised
        per_bar = score_bars(np.stack([r.long_usd, r.short_usd]), actual, test)
        try:
            z = zone_protocol(est, test_events, args.horizon_hours, 3600, args.bucket_pct, args.span_pct, 0.1,
                              args.min_events, (float(cut), end), "usd")
            zone = {"precision": z.precision, "lift": z.lift, "random": z.random, "nearest": z.nearest_precision}
        except ScoringError:
            zone = None
        scores[label] = {"per_bar": per_bar.to_dict(), "zones": zone}
    doc = json.loads(cal.to_json())
    doc["fit"]["trained_until"] = _iso(cut)
    body = json.dumps(doc, indent=2)
    return {**doc, "trained_until": cut, "out_of_sample": scores, "file": args.calibrate}, body


def events_between(events: Events, a: float, b: float) -> Events:
    sel = (events.time >= a) & (events.time <= b)
    return Events(events.time[sel], events.long[sel], events.price[sel], events.usd[sel])


def _with_ladder(params: ModelParams, ladder: Any) -> ModelParams:
    from dataclasses import replace

    return replace(params, ladder=ladder)


def _pct(x: float) -> str:
    return "  n/a" if x != x else f"{x * 100:5.1f}%"


def _num(x: float) -> str:
    return " n/a" if x != x else f"{x:+.2f}"


def render(rep: dict[str, Any]) -> str:
    b, rec, m = rep["bars"], rep["recorded"], rep["model"]
    pm, pb = rep["per_bar"]["model"], rep["per_bar"]["no_levels_baseline"]
    z, zr = rep["zones"]["usd"], rep["zones"]["risk"]
    ladder = ", ".join(f"{t['leverage']:g}x {t['weight']:.0%}" for t in m["tiers"])
    lines = [
        "liqheat backtest — the model's ESTIMATE scored against recorded liquidations",
        f"bars      {b['count']:,} x {b['timeframe']}  {_iso(b['from'])} → {_iso(b['to'])} UTC  seed mode: {b['seed_mode']}",
        f"model     ladder {m['ladder']} ({ladder}); margin {m['margin_table']}",
        f"recorded  {rec['events']:,} events, ${rec['usd']:,.0f} ({rec['long_usd'] / rec['usd']:.0%} longs)  "
        f"{_iso(rec['from'])} → {_iso(rec['to'])} UTC; {rec['bars_covered']} {rec['score_timeframe']} bars fully covered",
        f"          event prices: {rec.get('prices', 'as printed')}"
        + (f"; {rec['gap_days']} days without any event skipped as recording gaps" if rec.get("gap_days") else ""),
        "",
        f"when — per {rec['score_timeframe']} bar (n = {pm['bars']}, {pm['active']} with liquidations)",
        f"  {'':36} {'model':>7} {'no-levels baseline':>19} {'random':>8}",
        f"  {'rank correlation, bar':36} {_num(pm['rank_corr']):>7} {_num(pb['rank_corr']):>19} {'0':>8}",
        f"  {'rank correlation, bar x side':36} {_num(pm['rank_corr_sides']):>7} {_num(pb['rank_corr_sides']):>19} {'0':>8}",
        f"  {'recorded USD in top-decile bars':36} {_pct(pm['top_decile_share']):>7} "
        f"{_pct(pb['top_decile_share']):>19} {_pct(pm['random_share']):>8}",
        f"  estimated realised USD / recorded: {rep['per_bar']['estimated_over_recorded']:.2f}x (recorded is a lower "
        "bound where the feed was throttled)",
        "",
        f"where — zone protocol: top 10% of {z['bucket_pct']:g}% price buckets (±{z['span_pct']:g}%), "
        f"next {z['horizon_hours']:g}h, hourly",
        f"  windows scored {z['windows']} (excluded as too thin: {z['windows_excluded']}), "
        f"events {z['events']:,}, effective n {z['effective_events']:.0f}",
        f"  model, ranked by book USD        precision {_pct(z['precision'])}  lift {z['lift']:5.2f}x  "
        f"(95% lower bound {_pct(z['wilson_low'])} → lift ≥ {z['lift_low']:.2f}x)",
        f"  model, USD x touch probability   precision {_pct(zr['precision'])}  lift {zr['lift']:5.2f}x  "
        f"(95% lower bound {_pct(zr['wilson_low'])} → lift ≥ {zr['lift_low']:.2f}x)",
        f"  random buckets                   precision {_pct(z['random'])}  lift  1.00x",
        f"  nearest buckets to the price     precision {_pct(z['nearest_precision'])}  lift {z['nearest_lift']:5.2f}x",
    ]
    if "truth" in rep:
        t = rep["truth"]
        lines += [
            "",
            f"vs the simulated traders' TRUE book at {_iso(t['time'])} ({t['buckets']} non-empty buckets):",
            f"  rank correlation per bucket {_num(t['rank_corr'])}; true USD in the top-decile estimated buckets "
            f"{_pct(t['top_decile_share'])} (random {_pct(t['random_share'])}); "
            f"estimated ${t['estimated_usd']:,.0f} vs true ${t['true_usd']:,.0f} in range",
        ]
    if "calibration" in rep:
        c = rep["calibration"]
        fit = ", ".join(f"{lev:g}x {w:.0%}" for lev, w in zip(c["leverage"], c["weights"], strict=True))
        lines += [
            "",
            f"calibration on bars before {_iso(c['trained_until'])} UTC only ({c['fit']['rows']} bar x side rows, NNLS): "
            f"{fit}; seed scale {c['seed_scale']:.3g}"
            + (f" (volume_proxy_fraction {c['volume_proxy_fraction']:.3g})" if c["volume_proxy_fraction"] else ""),
            (f"  tiers the recording never saw liquidated keep their starting share: {', '.join(c['fit']['unidentified'])}"
             if c["fit"]["unidentified"] else "  every tier was seen liquidated in the training bars"),
            f"  R² on the training bars {c['fit']['r2']:.3f} (starting ladder, best scale: {c['fit']['r2_prior']:.3f})",
            f"  OUT OF SAMPLE (from {_iso(c['trained_until'])}):  {'':10} {'rank corr':>9} {'top decile':>10} {'map as drawn':>13}",
        ]
        for label in ("starting", "fitted"):
            o = c["out_of_sample"][label]
            zp = "n/a" if o["zones"] is None else f"{o['zones']['precision'] * 100:.1f}% ({o['zones']['lift']:.2f}x)"
            lines.append(f"    {label + ' ladder':<40} {_num(o['per_bar']['rank_corr']):>9} "
                         f"{_pct(o['per_bar']['top_decile_share']):>10} {zp:>13}")
        lines.append(f"  written to {c['file']} (use --ladder {c['file']})")
    lines += ["", "Estimates, not facts: figures cover only the recorded window; few bars make wide error bars."]
    return "\n".join(lines)


def run_suite_command(args: argparse.Namespace) -> int:
    from engine.accuracy import DEFAULT_DATA_DIR, SuiteError, render, run_suite, write_fitted, write_readme

    try:
        which = tuple(x.strip() for x in args.sets.split(",")) if args.sets else None
        if args.jobs < 1:
            raise SuiteError("--jobs must be at least 1")
        rep = run_suite(Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR, which, jobs=args.jobs)
    except (SuiteError, FeedError, BarsError, ScoringError, ValueError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(rep.to_dict(), default=_jsonable))
    else:
        print(render(rep))
    try:
        if args.write_readme:
            write_readme(rep, Path(args.write_readme))
        if args.write_fitted:
            write_fitted(rep, Path(args.write_fitted))
    except (SuiteError, OSError) as exc:
        return _fail(str(exc))
    return 0


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def report(args: argparse.Namespace) -> dict[str, Any]:
    """The backtest of one input (files, the simulated market or one stored market); the scoring errors
    are raised, one line each."""
    ladder = load_ladder(args.ladder)
    truth = None
    if args.feed == "demo" and not args.store:
        bars, events, truth = load_demo(args)
        args.coin = args.coin or args.symbol.split("/")[0]
    else:
        bars, events = load_inputs(args)
    coin = args.coin or "BTC"
    params = ModelParams(ladder=ladder, exchange=args.exchange or args.venue or "binance", coin=coin)
    if args.horizon_hours <= 0 or args.bucket_pct <= 0 or args.span_pct <= 0 or args.min_events < 1:
        raise ScoringError("--horizon-hours, --bucket-pct, --span-pct and --min-events must be positive")
    return run_backtest(bars, events, params, args, truth)


ERRORS = (FeedError, BarsError, LadderError, ScoringError, CalibrationError, ValueError)


def run(args: argparse.Namespace) -> int:
    if args.suite:
        return run_suite_command(args)
    if args.jobs < 1:
        return _fail("--jobs must be at least 1")
    if args.store and not args.market:
        return _fail("--store needs --market EXCHANGE:SYMBOL, several comma-separated, or all")
    if args.store and ("," in args.market or args.market == "all"):
        return run_many(args)
    try:
        rep = report(args)
    except ERRORS as exc:
        return _fail(str(exc))
    cal_json = rep.pop("_calibration_json", None)
    if cal_json is not None:
        try:
            Path(args.calibrate).write_text(cal_json + "\n", encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.calibrate}: {exc.strerror or exc}")
    if args.json:
        print(json.dumps(rep, default=float))
    else:
        print(render(rep))
    return 0


def backtest_one_market(args: argparse.Namespace) -> tuple[str, dict[str, Any] | None, str]:
    """One market of a many-market backtest (in a pool process under --jobs): (market, report, error)."""
    try:
        return args.market, report(args), ""
    except ERRORS as exc:
        return args.market, None, " ".join(str(exc).split())


def run_many(args: argparse.Namespace) -> int:
    """Markets are independent: scored side by side (``--jobs``) and printed in the order asked ('all':
    the store's order); a market that fails is one line on stderr and sets the status, the others print."""
    from engine.batch import side_by_side
    from engine.store import StoreError
    from engine.stores import open_store

    if args.calibrate:
        return _fail("--calibrate writes one ladder: give one --market")
    if args.market == "all":
        try:
            with open_store(args.store, create=False) as store:
                wanted = [m.key for m in store.markets() if m.bars and m.liquidations]
        except StoreError as exc:
            return _fail(str(exc))
        if not wanted:
            return _fail(f"{args.store} holds no market with both bars and liquidations")
    else:
        wanted = list(dict.fromkeys(m.strip() for m in args.market.split(",") if m.strip()))
    jobs = []
    for market in wanted:
        one = argparse.Namespace(**vars(args))
        one.market = market
        jobs.append(one)
    worst = 0
    docs: dict[str, Any] = {}
    for market, rep, error in side_by_side(backtest_one_market, jobs, args.jobs):
        if rep is None:
            worst = max(worst, _fail(f"{market}: {error}"))
            continue
        if args.json:
            docs[market] = rep
        else:
            print(f"== {market}\n{render(rep)}\n", flush=True)
    if args.json:
        print(json.dumps(docs, default=float))
    return worst
