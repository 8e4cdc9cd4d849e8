"""Analytics cost on a live-sized book: what each "when, not just where" figure adds to one update.

A month of 1-minute synthetic bars is estimated once (the service keeps that book); then every analytic
runs against it the way a face would call it. Each figure is the median of several runs, shown next to
the estimate's own cost and as a share of a 1-second live update budget.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from engine.alerts import AlertEngine, CascadeRule, GradeChangeRule, ProximityRule
from engine.model import ModelParams, estimate
from engine.model.cascade import cascade_risk
from engine.model.confluence import ZoneTracker, confluence, lookback_zones, zone_table
from engine.model.risk import Position, position_risk
from engine.model.synthetic import synthetic_bars
from engine.model.touch import realised_volatility, risk_weighted_map, zone_touch
from engine.snapshot import render_snapshot, snapshot_bytes

UPDATE_BUDGET_S = 1.0


def _median(fn: Callable[[], object], repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def _through_the_service(bars: object) -> list[tuple[str, float]]:
    """What a face pays per live update for the engine's ranked zones (engine/analytics.py) next to the
    plain graded zones: touch, identity, hysteresis order (confluence cached; its refresh listed apart)."""
    import asyncio

    from engine.feeds.base import Market
    from engine.service import MarketService

    class Feed:
        exchange, timeframe = "bench", 60

        async def history(self, symbol: str, since: int | None = None) -> object:
            return bars

    svc = MarketService(Feed(), Market("bench", "BTC/USDT:USDT", "BTC"), ModelParams(), history_days=0)  # type: ignore[arg-type]
    asyncio.run(svc.load())
    an = svc.analytics
    an.zones()  # warm: volatility, confluence

    def plain() -> object:
        svc._live_version += 1  # a new live update: nothing cached
        return svc.zones()

    def ranked() -> object:
        svc._live_version += 1
        return an.zones(refresh_confluence=False)

    def confluence_refresh() -> object:
        an._confluence.clear()
        return an._lookback_frames(200, 0.25)

    return [
        ("service: graded zones per live update", _median(plain)),
        ("service: ranked zones per live update", _median(ranked)),
        ("service: confluence refresh (every 5 min)", _median(confluence_refresh, 3)),
    ]


def main() -> None:
    bars = synthetic_bars(30 * 1440, seed=1)
    params = ModelParams()
    t_est = _median(lambda: estimate(bars, params), repeat=3)
    est = estimate(bars, params)
    lmap = est.liquidation_map()
    zones = est.zones()
    vol = realised_volatility(bars)
    tracker = ZoneTracker()
    alerts = AlertEngine([ProximityRule(1.0, 1e6), GradeChangeRule(), CascadeRule(min_usd=1e8)])
    summary = cascade_risk(lmap, zones)
    pos = Position("long", lmap.price, 25.0, 10_000.0)
    snap = render_snapshot(est, "BTC", 3600)
    rows: list[tuple[str, float]] = [
        ("realised volatility (72h of 1m)", _median(lambda: realised_volatility(bars))),
        (f"touch probability, {len(zones)} zones x 3 horizons", _median(lambda: zone_touch(zones, lmap.price, vol))),
        ("risk-weighted map, 200 bins, 1 horizon", _median(lambda: risk_weighted_map(lmap, vol, 4.0))),
        ("cascade, both directions", _median(lambda: cascade_risk(lmap, zones))),
        ("position risk (with cascade + touch)", _median(lambda: position_risk(pos, lmap.price, zones, lmap, vol=vol))),
        ("confluence: 1h/4h/1d lookback estimates", _median(lambda: confluence(lookback_zones(bars, params)), 3)),
        ("zone tracker update", _median(lambda: tracker.update(zones, 0))),
        ("zone table (all attributes)", _median(lambda: zone_table(zones, zone_touch(zones, lmap.price, vol)))),
        ("alert engine feed (3 rules)", _median(lambda: alerts.feed(lmap.price, zones, summary, now=0))),
        ("snapshot render 1200x720", _median(lambda: render_snapshot(est, "BTC", 3600), 3)),
        ("PNG encode 1200x720 (matplotlib Agg)", _median(lambda: snapshot_bytes(snap, "png", "BTC"), 3)),
        ("SVG write 1200x720", _median(lambda: snapshot_bytes(snap, "svg", "BTC"), 3)),
    ]
    rows += _through_the_service(bars)
    print(f"book: {len(bars):,} bars of 1m (30 days); batch estimate {t_est * 1000:.0f} ms (for scale)")
    print(f"{'analytic':44} {'median ms':>10} {'x estimate':>11} {'of 1 s update':>14}")
    for name, sec in rows:
        print(f"{name:44} {sec * 1000:10.2f} {sec / t_est:11.3f} {sec / UPDATE_BUDGET_S:14.2%}")


if __name__ == "__main__":
    main()
