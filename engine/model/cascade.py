"""Cascade simulation: if price reaches a liquidation cluster, do the forced market orders carry it into
the next one?

Order-book model. The USD resting within a fraction ``x`` of mid on one side is a power law,

    depth(x) = usd_at_ref * (x / ref_fraction) ** beta,

so selling ``V`` USD at market moves price by ``x = ref_fraction * (V / usd_at_ref) ** (1 / beta)``.
Liquidations are market orders against a book that does not refill during the cascade (a cascade runs
in seconds; replenishment is what ``depth_multiplier`` stands for if you want it).

Default constants (``BINANCE_BTCUSDT_2024_08_08``) come from the real Binance USDⓈ-M BTCUSDT capture in
../shared/data (binance_usdm_btcusdt_depth_trades_2024-08-08.gz, 23:54:15 → 23:59:59 UTC, mid ≈ 61,750):
the book was rebuilt from its 1000-level REST snapshot plus every ``depth@0ms`` diff
(engine/depth_capture.py), sampled every 10 s (35 books); at offsets 0.02/0.05/0.1/0.15/0.2% the median
cumulative USD per side was taken, bids and asks averaged (one 6-minute capture has one-off walls on one
side — asks had a ~$25M wall at +0.15%), and log(depth) regressed on log(offset)
(:func:`calibrate_depth_curve`). Result: $11.1M within 0.1% of mid, exponent 1.58 ($44.6M within
0.24%). Selling $10M at market then moves price 0.093%, $100M 0.40%, $1B 1.7%. The capture covers only
±0.24% of mid, so beyond that the curve is an extrapolation ($143M within 0.5%, $427M within 1%) — one
venue, one night in 2024: scale it (``DepthModel.scaled``) for other venues, coins or years, or fit a live
book with :func:`depth_from_book`. tests/analytics/test_cascade_model.py re-derives the constants from
the capture.

Invariant: a cascade never moves price against its direction (down cascades only lower it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .views import LiquidationMap, Zone

# Offsets (fractions of mid) at which a book's cumulative depth is measured for the fit. The smallest
# is kept above the spread/top-of-book noise, the largest inside what a 1000-level snapshot covers.
CALIBRATION_OFFSETS = np.array([0.0002, 0.0005, 0.001, 0.0015, 0.002])
REF_FRACTION = 0.001  # depth is quoted "within 0.1% of mid"


class CascadeError(ValueError):
    """Bad cascade inputs (one line for the user)."""


@dataclass(frozen=True)
class DepthCurve:
    """USD resting on one side within ``x`` of mid: ``usd_at_ref * (x / ref_fraction) ** beta``."""

    usd_at_ref: float
    beta: float
    ref_fraction: float = REF_FRACTION
    source: str = ""

    def __post_init__(self) -> None:
        if not (self.usd_at_ref > 0 and np.isfinite(self.usd_at_ref)):
            raise CascadeError("depth at the reference offset must be a positive USD amount")
        if not (0.2 <= self.beta <= 5.0):
            raise CascadeError(f"depth exponent {self.beta} is outside the plausible 0.2..5")

    def usd_within(self, x: np.ndarray | float) -> np.ndarray:
        x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
        return self.usd_at_ref * (x / self.ref_fraction) ** self.beta

    def move_for(self, usd: np.ndarray | float) -> np.ndarray:
        """Fractional price move that selling (or buying) ``usd`` at market causes."""
        usd = np.maximum(np.asarray(usd, dtype=np.float64), 0.0)
        return self.ref_fraction * (usd / self.usd_at_ref) ** (1.0 / self.beta)

    def scaled(self, factor: float) -> DepthCurve:
        """The same shape with ``factor`` times the USD (another venue, several venues, a thinner coin)."""
        if factor <= 0:
            raise CascadeError("depth scale factor must be positive")
        return DepthCurve(self.usd_at_ref * factor, self.beta, self.ref_fraction, f"{self.source} x{factor:g}")


@dataclass(frozen=True)
class DepthModel:
    bid: DepthCurve  # absorbs sells: long liquidations, downward cascades
    ask: DepthCurve  # absorbs buys: short liquidations, upward cascades

    def scaled(self, factor: float) -> DepthModel:
        return DepthModel(self.bid.scaled(factor), self.ask.scaled(factor))

    def describe(self) -> dict[str, object]:
        return {
            side: {"usd_within_0.1pct": round(c.usd_within(0.001).item(), 2), "beta": round(c.beta, 4), "source": c.source}
            for side, c in (("bid", self.bid), ("ask", self.ask))
        }


def cumulative_depth(levels: np.ndarray, mid: float, side: str, offsets: np.ndarray) -> np.ndarray:
    """USD resting within each offset of ``mid`` on one side of a book. ``levels``: (N, 2) price, base qty."""
    levels = np.asarray(levels, dtype=np.float64).reshape(-1, 2)
    price, qty = levels[:, 0], levels[:, 1]
    dist = (mid - price) / mid if side == "bid" else (price - mid) / mid
    usd = price * qty
    order = np.argsort(dist)
    cum = np.r_[0.0, np.cumsum(usd[order])]
    # a level exactly at an offset counts as within it (a hair of slack for float rounding)
    return cum[np.searchsorted(dist[order], np.asarray(offsets) * (1 + 1e-9) + 1e-15, side="right")]


def fit_power_law(offsets: np.ndarray, usd: np.ndarray, ref_fraction: float = REF_FRACTION) -> tuple[float, float]:
    """Least squares of log(usd) on log(offset / ref): returns (usd_at_ref, beta)."""
    offsets = np.asarray(offsets, dtype=np.float64)
    usd = np.asarray(usd, dtype=np.float64)
    ok = (offsets > 0) & (usd > 0)
    if ok.sum() < 2:
        raise CascadeError("need depth at two or more offsets to fit a curve")
    beta, log_a = np.polyfit(np.log(offsets[ok] / ref_fraction), np.log(usd[ok]), 1)
    return float(np.exp(log_a)), float(beta)


def calibrate_depth_curve(
    books: list[tuple[np.ndarray, np.ndarray]],
    offsets: np.ndarray = CALIBRATION_OFFSETS,
    source: str = "",
) -> DepthCurve:
    """One symmetric curve from several book samples ``(bids, asks)``: median cumulative USD per offset
    and side over the samples, the two sides averaged, then a power-law fit."""
    if not books:
        raise CascadeError("no order-book samples to calibrate on")
    bid_rows, ask_rows = [], []
    for bids, asks in books:
        mid = 0.5 * (float(bids[0][0]) + float(asks[0][0]))
        bid_rows.append(cumulative_depth(bids, mid, "bid", offsets))
        ask_rows.append(cumulative_depth(asks, mid, "ask", offsets))
    profile = 0.5 * (np.median(bid_rows, axis=0) + np.median(ask_rows, axis=0))
    usd_at_ref, beta = fit_power_law(offsets, profile)
    return DepthCurve(usd_at_ref, beta, REF_FRACTION, source)


def depth_from_book(bids: np.ndarray, asks: np.ndarray, offsets: np.ndarray = CALIBRATION_OFFSETS) -> DepthModel:
    """A per-side model from one live book (when a feed has depth); sides fitted separately."""
    bids = np.asarray(bids, dtype=np.float64).reshape(-1, 2)
    asks = np.asarray(asks, dtype=np.float64).reshape(-1, 2)
    if len(bids) == 0 or len(asks) == 0:
        raise CascadeError("the order book has an empty side")
    mid = 0.5 * (bids[0, 0] + asks[0, 0])
    curves = []
    for name, levels in (("bid", bids), ("ask", asks)):
        a, b = fit_power_law(offsets, cumulative_depth(levels, mid, name, offsets))
        curves.append(DepthCurve(a, float(np.clip(b, 0.2, 5.0)), REF_FRACTION, f"live book {name}"))
    return DepthModel(curves[0], curves[1])


# Recorded result of calibrate_depth_curve on the shared Binance capture (see the module docstring);
# tests/analytics/test_cascade_model.py recomputes it from the file and checks these numbers.
BINANCE_BTCUSDT_2024_08_08 = DepthCurve(
    usd_at_ref=11_150_000.0,
    beta=1.583,
    source="Binance USDⓈ-M BTCUSDT book 2024-08-08 23:54-24:00 UTC, median of 35 samples",
)
DEFAULT_DEPTH = DepthModel(BINANCE_BTCUSDT_2024_08_08, BINANCE_BTCUSDT_2024_08_08)


# ---- the cascade ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CascadeStep:
    """One wave: price went from ``price_from`` to ``price_to`` and liquidated ``usd`` on the way."""

    price_from: float
    price_to: float
    usd: float
    trigger: bool = False  # the first wave is the move that set it off, not forced selling

    def to_dict(self) -> dict[str, object]:
        return {"price_from": self.price_from, "price_to": self.price_to, "usd": self.usd, "trigger": self.trigger}


@dataclass(frozen=True)
class Cascade:
    direction: str  # "down" (longs liquidated) or "up" (shorts liquidated)
    start_price: float  # price now
    trigger_price: float  # where the cascade was set off (the nearest cluster, or a shock)
    end_price: float
    total_usd: float  # liquidated from the start price to the end price (trigger move included)
    forced_usd: float  # liquidated by the cascade itself, beyond the trigger
    steps: tuple[CascadeStep, ...]
    zones_reached: tuple[Zone, ...] = field(default=())

    @property
    def move_pct(self) -> float:
        """Signed % from the start price to the end price."""
        return (self.end_price / self.start_price - 1.0) * 100.0

    @property
    def extension_pct(self) -> float:
        """How far the forced selling/buying carried price beyond the trigger, in % (>= 0)."""
        return abs(self.end_price / self.trigger_price - 1.0) * 100.0

    def to_dict(self) -> dict[str, object]:
        return {
            "direction": self.direction,
            "start_price": self.start_price,
            "trigger_price": self.trigger_price,
            "end_price": self.end_price,
            "move_pct": self.move_pct,
            "extension_pct": self.extension_pct,
            "total_usd": self.total_usd,
            "forced_usd": self.forced_usd,
            "clusters": len(self.zones_reached),
            "steps": [s.to_dict() for s in self.steps],
            "zones_reached": [
                {"price_low": z.price_low, "price_high": z.price_high, "usd": z.usd, "grade": z.grade}
                for z in self.zones_reached
            ],
        }


def simulate_cascade(
    prices: np.ndarray,
    usd: np.ndarray,
    start_price: float,
    direction: str,
    depth: DepthCurve,
    trigger_price: float | None = None,
    impact_share: float = 1.0,
    zones: list[Zone] | None = None,
    max_move: float = 0.5,
) -> Cascade:
    """Run one cascade over liquidation levels ``prices`` / ``usd`` (longs for "down", shorts for "up").

    Price first moves from ``start_price`` to ``trigger_price`` (default: no move); every level passed is
    liquidated. Their notional, times ``impact_share`` (the part that reaches the book as market orders),
    moves price from the trigger by ``depth.move_for``; that reaches more levels, whose notional adds to
    the total, and so on until a wave reaches no new level. The total only grows, so price only moves one
    way, and the loop ends after at most one wave per level. ``max_move`` caps the run (fraction).
    """
    if direction not in ("down", "up"):
        raise CascadeError(f"direction {direction!r}: use down or up")
    if not (start_price > 0 and np.isfinite(start_price)):
        raise CascadeError("start price must be positive")
    if not (0.0 <= impact_share <= 1.0):
        raise CascadeError("impact_share must be in [0, 1]")
    sign = -1.0 if direction == "down" else 1.0
    trigger = start_price if trigger_price is None else float(trigger_price)
    if sign * (trigger - start_price) < 0:
        raise CascadeError(f"a {direction} cascade's trigger must not lie {'above' if sign < 0 else 'below'} the price")
    prices = np.asarray(prices, dtype=np.float64)
    usd = np.asarray(usd, dtype=np.float64)
    if prices.shape != usd.shape:
        raise CascadeError("prices and usd must have the same length")
    # Levels on the cascade's side of the start price, ordered by distance along its path.
    along = sign * (prices - start_price)  # >= 0 for levels the cascade can reach
    keep = (usd > 0) & np.isfinite(prices) & (along >= 0)
    dist, u = along[keep], usd[keep]
    order = np.argsort(dist, kind="stable")
    dist, u = dist[order], u[order]
    cum = np.cumsum(u)
    limit = start_price * (1.0 + sign * max_move)

    def reached(price: float) -> int:
        """How many levels a move from the start to ``price`` liquidates."""
        return int(np.searchsorted(dist, sign * (price - start_price) + 1e-12 * start_price, side="right"))

    n_hit = reached(trigger)
    steps = [CascadeStep(start_price, trigger, _total_upto(cum, n_hit), trigger=True)]
    trigger_usd = steps[0].usd
    price = trigger
    while True:
        total = _total_upto(cum, n_hit)
        target = trigger * (1.0 + sign * float(depth.move_for(total * impact_share)))
        if sign * (target - limit) > 0:
            target = limit
        if sign * (target - price) <= 0:  # the book absorbed it: no further move
            break
        n_new = reached(target)
        steps.append(CascadeStep(price, target, _total_upto(cum, n_new) - total))
        price = target
        grew = n_new > n_hit
        n_hit = n_new
        if not grew or target == limit:  # the last wave reached no new level: price stops here
            break
    total = _total_upto(cum, n_hit)
    end = price
    hit_zones: tuple[Zone, ...] = ()
    if zones:
        lo, hi = min(start_price, end), max(start_price, end)
        side = "long" if sign < 0 else "short"
        hit_zones = tuple(
            sorted(
                (z for z in zones if z.side == side and z.price_high >= lo and z.price_low <= hi),
                key=lambda z: sign * z.peak_price,  # in the order the cascade meets them
            )
        )
    return Cascade(
        direction,
        float(start_price),
        float(trigger),
        float(end),
        total,
        total - trigger_usd,
        tuple(s for s in steps if s.trigger or s.price_from != s.price_to),
        hit_zones,
    )


def _total_upto(cum: np.ndarray, n: int) -> float:
    return float(cum[n - 1]) if n else 0.0


def nearest_cluster_price(zones: list[Zone], price: float, side: str, min_grade: str = "elevated") -> float | None:
    """The near edge of the closest zone of at least ``min_grade`` on one side (None if there is none)."""
    order = ("low", "elevated", "high")
    ok = [z for z in zones if z.side == side and order.index(z.grade) >= order.index(min_grade)]
    if side == "long":
        cands = [min(z.price_high, price) for z in ok if z.price_low <= price]
        return max(cands) if cands else None
    cands = [max(z.price_low, price) for z in ok if z.price_high >= price]
    return min(cands) if cands else None


@dataclass(frozen=True)
class CascadeSummary:
    down: Cascade
    up: Cascade
    depth: DepthModel

    def to_dict(self) -> dict[str, object]:
        return {"down": self.down.to_dict(), "up": self.up.to_dict(), "depth": self.depth.describe()}


def cascade_risk(
    lmap: LiquidationMap,
    zones: list[Zone] | None = None,
    depth: DepthModel = DEFAULT_DEPTH,
    trigger: str | float = "nearest",
    min_grade: str = "elevated",
    impact_share: float = 1.0,
) -> CascadeSummary:
    """Both directions from the map's current price.

    ``trigger``: "nearest" sets each cascade off at the near edge of the closest zone of at least
    ``min_grade`` on its side (the question "if price gets there, how far does it run?"; no such zone →
    no trigger move); "none" starts at the price; a number is a shock in % applied to both directions.
    """
    price = lmap.price
    longs, shorts = lmap.long_usd.sum(axis=1), lmap.short_usd.sum(axis=1)
    # A bin is reached when price reaches its near edge (upper edge for longs, lower for shorts): the
    # first positions in it are liquidated there, and a trigger at a zone's edge then starts inside it.
    upper, lower = lmap.edges[1:], lmap.edges[:-1]
    zones = zones or []
    out = []
    for direction, side, prof, curve, level in (
        ("down", "long", longs, depth.bid, upper),
        ("up", "short", shorts, depth.ask, lower),
    ):
        if trigger == "nearest":
            t = nearest_cluster_price(zones, price, side, min_grade)
        elif trigger == "none":
            t = None
        else:
            shock = float(trigger) / 100.0
            t = price * (1.0 - shock if direction == "down" else 1.0 + shock)
        out.append(simulate_cascade(level, prof, price, direction, curve, t, impact_share, zones))
    return CascadeSummary(out[0], out[1], depth)
