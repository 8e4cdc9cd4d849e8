"""One coin across exchanges: Bars from several venues combined into one market, with a per-venue breakdown.

- Time axis: the union of the venues' bars (a venue missing a bar simply contributes nothing to it).
- Volumes (and open interest) add up across venues.
- Prices: volume-weighted across the venues that have the bar (equal weights when none traded), or taken
  from a reference venue where it has the bar. The same weights are used for open, high, low and close,
  so every combined candle still contains its open and close.
- Taker buy/sell: only Binance publishes them; the known venues' buy share is applied to the combined
  volume (the imbalance signal is kept, its size follows the whole market).
- Open interest: each venue keeps its history for a different length (Binance 30 days, OKX 5 days). A
  venue whose OI starts later would look like a burst of new positions when it joins the sum, so by
  default (``oi_gaps="hold"``) each venue's OI is held flat outside the stretch it reported: the changes
  are real, the level before its history is its first known value. ``oi_gaps="strict"`` leaves the sum
  NaN wherever any OI venue is unknown (the model then falls back to its volume proxy there).
- Funding: OI-weighted mean of the venues' rates in force (volume-weighted where OI is unknown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.feeds.base import Feed, FeedError
from engine.model import Bars, BarsError


@dataclass(frozen=True)
class VenueShare:
    """One venue's part of the combined market, on the combined time axis."""

    present: np.ndarray  # bool: the venue has this bar
    volume: np.ndarray  # base coin (0 where absent)
    volume_share: np.ndarray  # of the combined volume (NaN where nothing traded)
    close: np.ndarray  # NaN where absent
    oi_usd: np.ndarray  # as added to the sum (held flat outside the reported stretch); NaN if never known
    oi_reported: np.ndarray  # bool: the venue itself reported OI for this bar


@dataclass(frozen=True)
class Combined:
    bars: Bars
    breakdown: dict[str, VenueShare]
    price_source: str  # "volume-weighted" or the reference venue
    oi_venues: tuple[str, ...]  # venues whose OI is in the sum
    skipped: dict[str, str] = field(default_factory=dict)  # venue -> why it is not in (history_across)


def _on_axis(axis: np.ndarray, b: Bars, arr: np.ndarray | None, fill: float = np.nan) -> np.ndarray:
    out = np.full(len(axis), fill)
    if arr is not None:
        out[np.searchsorted(axis, b.time)] = arr
    return out


def _held(values: np.ndarray) -> np.ndarray:
    """Forward-fill finite values, then back-fill before the first one (flat extension both ways)."""
    ok = np.isfinite(values)
    if not ok.any():
        return values
    idx = np.where(ok, np.arange(len(values)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.flatnonzero(ok)[0])
    idx[idx < 0] = first
    return values[idx]


def combine(per_venue: Mapping[str, Bars], *, price: str = "volume-weighted", oi_gaps: str = "hold") -> Combined:
    """Combine one coin's bars from several venues (same timeframe). ``price`` is "volume-weighted" or a
    venue name from ``per_venue``; ``oi_gaps`` is "hold" or "strict" (see the module docstring)."""
    venues = {v: b for v, b in per_venue.items() if len(b)}
    if not venues:
        raise BarsError("no venue has any bars to combine")
    if price != "volume-weighted" and price not in venues:
        raise BarsError(f"reference venue {price!r} has no bars; use one of {', '.join(venues)}")
    if oi_gaps not in ("hold", "strict"):
        raise BarsError(f"oi_gaps must be 'hold' or 'strict', not {oi_gaps!r}")
    tfs = {b.timeframe for b in venues.values()}
    if len(tfs) != 1:
        raise BarsError("cannot combine bars of different timeframes")
    tf = tfs.pop()
    axis = np.unique(np.concatenate([b.time for b in venues.values()]))
    n = len(axis)

    present = {v: _on_axis(axis, b, np.ones(len(b)), 0.0) > 0 for v, b in venues.items()}
    vol = {v: np.nan_to_num(_on_axis(axis, b, b.volume, 0.0)) for v, b in venues.items()}
    total_vol = sum(vol.values(), np.zeros(n))

    # one set of weights for all four prices keeps every candle consistent
    weight = {v: np.where(present[v], vol[v], 0.0) for v in venues}
    wsum = sum(weight.values(), np.zeros(n))
    count = sum((p.astype(float) for p in present.values()), np.zeros(n))
    for v in venues:
        weight[v] = np.where(wsum > 0, weight[v], present[v].astype(float))
    wsum = np.where(wsum > 0, wsum, count)
    cols: dict[str, np.ndarray] = {}
    for name in ("open", "high", "low", "close"):
        acc = np.zeros(n)
        for v, b in venues.items():
            acc += weight[v] * np.nan_to_num(_on_axis(axis, b, getattr(b, name)))
        cols[name] = acc / wsum
    if price != "volume-weighted":
        ref = venues[price]
        has = present[price]
        for name in ("open", "high", "low", "close"):
            cols[name] = np.where(has, _on_axis(axis, ref, getattr(ref, name)), cols[name])

    taker_buy = taker_sell = None
    takers = [v for v, b in venues.items() if b.has_taker]
    if takers:
        buy = sum((np.nan_to_num(_on_axis(axis, venues[v], venues[v].taker_buy_volume)) for v in takers),
                  np.zeros(n))
        known = sum((np.where(np.isfinite(_on_axis(axis, venues[v], venues[v].taker_buy_volume)), vol[v], 0.0)
                     for v in takers), np.zeros(n))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(known > 0, buy / known, np.nan)
        taker_buy = total_vol * share
        taker_sell = total_vol - taker_buy

    oi_venues = tuple(v for v, b in venues.items() if b.has_oi)
    oi_used: dict[str, np.ndarray] = {}
    oi_reported: dict[str, np.ndarray] = {}
    oi_total = None
    if oi_venues:
        oi_total = np.zeros(n)
        for v in oi_venues:
            raw = _on_axis(axis, venues[v], venues[v].oi_usd)
            oi_reported[v] = np.isfinite(raw)
            oi_used[v] = _held(raw) if oi_gaps == "hold" else raw
            oi_total = oi_total + oi_used[v]

    rates = [(v, _on_axis(axis, b, b.funding_rate)) for v, b in venues.items() if b.funding_rate is not None]
    funding = None
    if rates:
        num = np.zeros(n)
        den = np.zeros(n)
        for v, r in rates:
            w = oi_used.get(v, np.full(n, np.nan))
            w = np.where(np.isfinite(w), w, vol[v])
            ok = np.isfinite(r) & (w > 0)
            num += np.where(ok, r * w, 0.0)
            den += np.where(ok, w, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            funding = np.where(den > 0, num / den, np.nan)

    bars = Bars(timeframe=tf, time=axis, volume=total_vol, taker_buy_volume=taker_buy,
                taker_sell_volume=taker_sell, oi_usd=oi_total, funding_rate=funding, **cols)
    with np.errstate(invalid="ignore", divide="ignore"):
        breakdown = {
            v: VenueShare(
                present=present[v], volume=vol[v],
                volume_share=np.where(total_vol > 0, vol[v] / total_vol, np.nan),
                close=_on_axis(axis, b, b.close),
                oi_usd=oi_used.get(v, np.full(n, np.nan)),
                oi_reported=oi_reported.get(v, np.zeros(n, bool)))
            for v, b in venues.items()
        }
    source = "volume-weighted" if price == "volume-weighted" else price
    return Combined(bars=bars, breakdown=breakdown, price_source=source, oi_venues=oi_venues)


async def history_across(feeds: Sequence[Feed], coin: str, since: int | None = None, until: int | None = None,
                         *, price: str = "volume-weighted", oi_gaps: str = "hold") -> Combined:
    """Fetch one coin's history from every feed at once and combine it. A venue that does not list the
    coin (or fails) is left out and named in ``Combined.skipped`` with its one-line reason."""
    async def one(feed: Feed) -> Bars | FeedError:
        try:
            return await feed.history(coin, since, until)
        except FeedError as err:
            return err

    results = await asyncio.gather(*(one(f) for f in feeds))
    got: dict[str, Bars] = {}
    skipped: dict[str, str] = {}
    for feed, res in zip(feeds, results, strict=True):
        if isinstance(res, FeedError):
            skipped[feed.exchange] = str(res)
        else:
            got[feed.exchange] = res
    if not any(len(b) for b in got.values()):
        reasons = "; ".join(f"{v}: {r}" for v, r in skipped.items()) or "no bars in range"
        raise FeedError(f"no venue has {coin} history ({reasons})")
    use_price = price if price == "volume-weighted" or price in got else "volume-weighted"
    combined = combine(got, price=use_price, oi_gaps=oi_gaps)
    return Combined(combined.bars, combined.breakdown, combined.price_source, combined.oi_venues, skipped)
