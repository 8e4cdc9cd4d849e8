"""View builders: engine service → JSON-ready dicts. Synchronous numpy work, run in the view pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.service import MarketService, price_edges, timeframe_seconds

from .encoding import candles_payload, encode_columns, heatmap_payload, map_payload, realised_payload
from .params import tier_name


@dataclass(frozen=True)
class ViewSpec:
    """What a chart shows for one market: the heatmap's shape and, once fixed, its price range."""

    market: str
    timeframe: str
    tier: int | None
    bins: int
    columns: int
    price_low: float | None = None
    price_high: float | None = None
    log: bool = False

    @property
    def tf(self) -> int:
        return timeframe_seconds(self.timeframe)


def map_span(price: float, low: float, high: float) -> float:
    """The liquidation-map span that covers the heatmap's price range around the price."""
    span = max(high / price - 1.0, 1.0 - low / price, 0.01)
    return float(min(span, 0.9))


def heatmap_view(svc: MarketService, spec: ViewSpec, since: int | None = None, until: int | None = None,
                 encoding: str = "sqrt-u8", keep: bool = True) -> dict[str, Any]:
    """``keep=False`` for batch-sized grids: the engine computes them without caching (see
    MarketService.heatmap); the serialised answer is still cached and shared."""
    hm = svc.heatmap(spec.timeframe, tier=spec.tier, bins=spec.bins, price_low=spec.price_low,
                     price_high=spec.price_high, log=spec.log, since=since, until=until, columns=spec.columns,
                     spread=True, keep=keep)
    out = heatmap_payload(hm, spec.tf, tier_name(spec.tier, svc.params.ladder.labels), encoding)
    # "recent" while the rest of the history is backfilling: a long range is not the whole story yet
    out.update({"symbol": svc.market.key, "timeframe": spec.timeframe, "log": spec.log, "estimate": True,
                "history": svc.history_info()})
    return out


def snapshot_body(svc: MarketService, spec: ViewSpec, keep: bool = True) -> dict[str, Any]:
    """Everything a chart needs for one view, consistent with itself (one moment)."""
    candles = svc.candles(spec.timeframe, limit=spec.columns)
    heat = heatmap_view(svc, spec, keep=keep)
    lo, hi = heat["edges"][0], heat["edges"][-1]
    price = svc.last_price
    lmap = svc.liquidation_map(bins=spec.bins, span=map_span(price, lo, hi), log=spec.log, spread=True)
    since = int(candles.time[0]) if len(candles) else None
    return {
        "symbol": svc.market.key,
        "timeframe": spec.timeframe,
        "tier": tier_name(spec.tier, svc.params.ladder.labels),
        "bins": spec.bins,
        "columns": spec.columns,
        "price": price,
        "candles": candles_payload(candles),
        "heatmap": heat,
        "map": map_payload(lmap),
        "zones": svc.analytics.zone_rows(),
        "realised": realised_payload(svc.realised(spec.timeframe, since=since)),
        "model": svc.model_info(),
        "health": svc.health_info(),
    }


def last_candles(svc: MarketService, timeframe: str, since: int) -> list[dict[str, Any]]:
    """Candles of ``timeframe`` opening at or after ``since`` (the forming one last), as `bar` deltas."""
    bars = svc.candles(timeframe, limit=3)
    out = []
    for i in range(len(bars)):
        t = int(bars.time[i])
        if t < since:
            continue
        vol = None if bars.volume is None else float(np.nan_to_num(bars.volume[i]))
        out.append({"time": t, "open": float(bars.open[i]), "high": float(bars.high[i]), "low": float(bars.low[i]),
                    "close": float(bars.close[i]), "volume": vol,
                    "closed": i < len(bars) - 1})
    return out


def last_columns(svc: MarketService, spec: ViewSpec, since: int) -> list[dict[str, Any]]:
    """The newest heatmap columns (candle open time >= ``since``), each with its own USD scale."""
    hm = svc.heatmap(spec.timeframe, tier=spec.tier, bins=spec.bins, price_low=spec.price_low,
                     price_high=spec.price_high, log=spec.log, columns=2, spread=True)
    longs, shorts = hm.total(None)
    out = []
    for c in range(len(hm.times)):
        t = int(hm.times[c]) - spec.tf
        if t < since:
            continue
        col = {"time": t}
        col.update(encode_columns(longs[c : c + 1], shorts[c : c + 1]))
        del col["encoding"]
        out.append(col)
    return out


def live_column(svc: MarketService, spec: ViewSpec, time: int) -> dict[str, Any]:
    """The forming candle's column: the live book on the view's bins — the same arithmetic the service
    uses for the last column of its heatmap, without rebuilding the closed ones."""
    assert spec.price_low is not None and spec.price_high is not None
    edges = price_edges(spec.price_low, spec.price_high, spec.bins, spec.log)
    longs, shorts = svc.live_book().binned(edges, spread=True)  # (bins, tiers), as the heatmap's columns
    if spec.tier is not None:
        longs, shorts = longs[:, spec.tier], shorts[:, spec.tier]
    else:
        longs, shorts = longs.sum(axis=1), shorts.sum(axis=1)
    col: dict[str, Any] = {"time": time}
    col.update(encode_columns(longs[None, :], shorts[None, :]))
    del col["encoding"]
    return col


def realised_since(svc: MarketService, timeframe: str, since: int) -> list[dict[str, Any]]:
    r = svc.realised(timeframe, since=since)
    return [{"time": int(t), "long_usd": round(float(lo), 2), "short_usd": round(float(sh), 2)}
            for t, lo, sh in zip(r.time, r.long_usd, r.short_usd, strict=True)]
