"""One simulated perpetual-futures market: traders open leveraged positions, pay funding, close by choice
and are liquidated when price reaches their liquidation price; forced orders push the price further, so
liquidations cascade. Bars, open interest, funding, taker volumes and liquidation events all come out of
this one process.

Speed: the exchange steps one minute at a time in plain Python scalars (about two microseconds a
minute). Numpy work happens only where it pays: drawing a day of flow at once (demo_flow.py), sweeping
the cohort book (demo_traders.py) in the minutes whose price reaches it, adding new positions to the book
in batches just before a sweep reads them, and settling bars at each funding time or when asked.

Reproducibility: the random draws are keyed by day, the minute loop is the same code in a bulk backfill
and when ticking live, and every batched step (adding cohorts, settling bars) gives the same numbers
whatever the batch size. So minutes ticked live one by one equal the same minutes generated in bulk.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from engine.model import Bars
from engine.model.cohorts import LevelGrid

from .demo_flow import (
    ENTRIES,
    LEVERAGE_SPREAD,
    MINUTES_PER_DAY,
    SPECULATIVE_TURNOVER,
    DayFlow,
    FlowCarry,
    day_flow,
)
from .demo_markets import SimulatedSymbol, TraderMix
from .demo_traders import LONG, SHORT, GroundTruth, PositionBook

GRID_STEP = LevelGrid.for_resolution(0.0005).step  # the book's price grid: 0.05%, like the engine's
EPS = 1e-9
FAR = 10**9  # a level bound meaning "nothing there"

# Price impact of forced orders: a share stays (someone had to sell), the rest is liquidity that refills
# over a few minutes (the wick after a cascade).
PERMANENT_IMPACT = 0.6
RELAX = 1.0 - 0.5 ** (1.0 / 8.0)  # transient impact half-life: 8 minutes
MAX_SWEEP_MOVE = 0.08  # the exchange pauses a sweep after an 8% forced move (the next minute carries on)
# Impact is linear in forced USD for small sweeps and grows like its square root for big ones (dip buyers
# and market makers step in): Q USD of forced orders move the price by c * (sqrt(1 + 2Q / (c * depth)) - 1).
# Q counts the forced orders of the last minutes too (fading like the transient impact), so a squeeze that
# runs over many minutes meets ever deeper liquidity instead of restarting every minute.
IMPACT_BEND = 0.01
REVERSION = 1.0 / (20 * MINUTES_PER_DAY)  # the price drifts back towards its catalogue level over weeks

# Momentum, funding and the long/short mood of new traders.
MOMENTUM_WEIGHT = 1.0 / 60.0  # EMA of 1-minute returns over about an hour
FUNDING_MINUTES = 480  # settles every 8 hours, at 00:00, 08:00 and 16:00 UTC
INTEREST = 0.0001  # Binance's interest component per interval
FUNDING_CLAMP = 0.0005  # rate = premium + clamp(interest - premium, +-0.05%)
FUNDING_CAP = 0.0075
PREMIUM_IMBALANCE = 0.003  # a book 10% net long trades ~0.03% above the index
PREMIUM_MOMENTUM = 0.0012
PREMIUM_NOISE = 0.0002
SHARE_MOMENTUM = 0.12  # traders chase: after a rally, more new positions are longs
SHARE_FUNDING = 100.0  # ... unless funding makes longs expensive
SHARE_NOISE = 0.06
CROWD_WEIGHT = 1.0 / FUNDING_MINUTES  # memory of the new positions' tilt: one funding interval
FUNDING_CLOSE = 25.0  # share of the paying side that closes at a settlement, per unit of rate
MIN_EVENT_USD = 100.0  # smaller forced closes still count, but are not reported one by one


@dataclass
class _Records:
    """What the minute loop writes for one day (block-local minute index), read by the batched steps."""

    open: list[float] = field(default_factory=list)  # log prices
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)  # the minute's base log price (after relaxation)
    share: list[float] = field(default_factory=list)  # long share of new positions
    rate: list[float] = field(default_factory=list)  # funding rate in force
    impacts: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # (tick, log move) of sweeps
    adjusted: list[int] = field(default_factory=list)  # minutes whose entries a sweep moved, ascending
    entry_adjust: dict[int, np.ndarray] = field(default_factory=dict)  # (E,) log move of those entries
    liquidated: list[int] = field(default_factory=list)  # minutes with forced closes, ascending
    liq_stored: dict[int, np.ndarray] = field(default_factory=dict)  # (2, T) stored units force-closed
    liq_base: dict[int, list[float]] = field(default_factory=dict)  # [long, short] base coin force-closed

    def adjusted_in(self, a: int, b: int) -> list[int]:
        return _between(self.adjusted, a, b)

    def liquidated_in(self, a: int, b: int) -> list[int]:
        return _between(self.liquidated, a, b)


def _between(sorted_minutes: list[int], a: int, b: int) -> list[int]:
    return sorted_minutes[bisect.bisect_left(sorted_minutes, a) : bisect.bisect_left(sorted_minutes, b)]


class _BarLog:
    """Settled 1m bars, appended in order, in growable numpy columns."""

    COLUMNS = ("time", "open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate")

    def __init__(self) -> None:
        self.n = 0
        self.cols = {c: np.zeros(4096, dtype=np.int64 if c == "time" else np.float64) for c in self.COLUMNS}

    def append(self, **cols: np.ndarray) -> None:
        m = len(cols["time"])
        if self.n + m > len(self.cols["time"]):
            cap = max(2 * len(self.cols["time"]), self.n + m)
            for c, arr in self.cols.items():
                grown = np.zeros(cap, dtype=arr.dtype)
                grown[: self.n] = arr[: self.n]
                self.cols[c] = grown
        for c in self.COLUMNS:
            self.cols[c][self.n : self.n + m] = cols[c]
        self.n += m

    def bars(self, a: int, b: int) -> Bars:
        a, b = max(a, 0), min(b, self.n)
        b = max(a, b)
        return Bars(timeframe=60, **{c: self.cols[c][a:b].copy() for c in self.COLUMNS})


def _decimals(tick: float) -> int:
    return max(0, -math.floor(math.log10(tick) + 1e-9))


class SimulatedExchange:
    """One symbol. Minutes are absolute (UNIX seconds // 60); ``start`` must be a UTC midnight."""

    def __init__(self, spec: SimulatedSymbol, sym_id: int, seed: int, start: int) -> None:
        if start % 86_400:
            raise ValueError("the simulation starts at a UTC midnight")
        self.spec = spec
        self.sym_id = sym_id
        self.seed = seed
        self.mix = TraderMix.for_coin(spec.coin)
        self.tiers = len(self.mix.leverage)
        self.start_minute = start // 60
        self.minute = self.start_minute  # next minute to simulate
        self._settlement_done = self.start_minute
        self.inv_step = 1.0 / GRID_STEP
        self.decimals = _decimals(spec.tick)
        sigma_base = spec.daily_vol / math.sqrt(MINUTES_PER_DAY)
        self.momentum_scale = 1.0 / (sigma_base * math.sqrt(MOMENTUM_WEIGHT / (2.0 - MOMENTUM_WEIGHT)))
        self.close_fraction = 1.0 - np.exp(-self.mix.close_rate * 60.0)  # (T,) closed by choice per minute

        # market state (log prices)
        self.anchor = math.log(spec.price)
        self.x = self.anchor  # last close
        self.trans = 0.0  # transient impact still in the price
        self.forced = [0.0, 0.0]  # recent forced USD pushing down (long liquidations) / up (short ones)
        self.shift = 0.0  # funding's cumulative move of every liquidation price
        self.ema = 0.0
        self.premium_sum, self.premium_n = 0.0, 0
        self.rate = INTEREST
        self.imbalance = 0.0  # (longs - shorts) / (longs + shorts) of speculators, at the last settlement
        self.crowd = 0.0  # the same tilt in recent new positions (EMA of 2 * long share - 1)
        self._survival: np.ndarray | None = None  # closes by choice, cached within one forced minute

        # traders
        center = int(round(self.anchor * self.inv_step))
        self.book = PositionBook(GRID_STEP, center, int(1.2 * self.inv_step), self.mix.close_rate, float(start))
        self._open_prior_positions(start)
        span_long, span_short = self.book.occupied(LONG), self.book.occupied(SHORT)
        # Bounds of the occupied levels: the minute loop compares the price with them to know, without
        # touching the book, that nothing can be liquidated this minute.
        self.hi_long = span_long[1] if span_long else -FAR
        self.lo_short = span_short[0] if span_short else FAR
        # the same bounds for positions opened but not yet added to the book
        self.pending_hi_long, self.pending_lo_short = -FAR, FAR
        self.tot_stored = self.book.stored_totals()  # (2, T) after the last settled minute
        self.tot_real = self.tot_stored.copy()
        self._refresh_imbalance()

        # the current day's flow and records; yesterday's are kept for the live reveal
        self.carry = FlowCarry.initial(seed, sym_id, start // 86_400)
        self.prev: tuple[DayFlow, _Records] | None = None
        self._load_day(start // 86_400)

        self.log = _BarLog()
        self.liq_time: list[int] = []  # ms
        self.liq_side: list[int] = []
        self.liq_price: list[float] = []
        self.liq_base: list[float] = []
        self.liq_usd: list[float] = []

    # ---- setup --------------------------------------------------------------------------------------
    def _open_prior_positions(self, start: int) -> None:
        """Positions opened before the simulation starts, as if the market had been trading for weeks:
        each tier's steady-state stock, entered around the start price (wider for older positions),
        minus those whose liquidation price the start price has already passed."""
        rng = np.random.default_rng([self.seed, 5, self.sym_id, start // 86_400])
        per_side_per_day = SPECULATIVE_TURNOVER * self.spec.oi_usd / 2.0
        n = 400
        for tier in range(self.tiers):
            life_days = 1.0 / float(self.mix.close_rate[tier]) / 86_400.0
            stock_usd = per_side_per_day * float(self.mix.share[tier]) * life_days
            for side in (LONG, SHORT):
                age = np.minimum(rng.exponential(life_days, n), 30.0)
                entry = self.anchor + self.spec.daily_vol * np.sqrt(age) * rng.standard_normal(n)
                lev = np.clip(self.mix.leverage[tier] * np.exp(LEVERAGE_SPREAD / 2 * rng.standard_normal((n, 1))), 1.5, 125.0)
                long_off, short_off = self.mix.liquidation_offsets(np.repeat(lev, self.tiers, axis=1))
                liq = entry + (long_off if side == LONG else short_off)[:, tier]
                alive = liq < self.anchor if side == LONG else liq > self.anchor
                level = np.floor(liq[alive] * self.inv_step + 0.5).astype(np.int64)
                base = stock_usd / n / np.exp(entry[alive])
                k = len(level)
                self.book.add(np.full(k, side), np.full(k, tier), level, base)

    def _load_day(self, day: int) -> None:
        self.flow = f = day_flow(self.spec, self.mix, self.seed, self.sym_id, day, self.carry)
        self.rec = _Records()
        self.flushed = 0  # block-local minutes whose new positions are in the book
        self.derived = 0  # block-local minutes whose bars are settled
        # Everything about the day's new positions that does not depend on where the price goes:
        # liquidation levels relative to the minute's base price, and the stored units opened per tier and
        # entry for a base price of 1 (coin, times each tier's share, grown by the closes the book's
        # survival factor will apply by the end of the minute; the book rebased at midnight).
        # (+0.5: levels are rounded by flooring)
        self._birth_levels = self.inv_step * np.stack(
            [f.entry_move[:, None, :] + f.long_offset[:, :, None], f.entry_move[:, None, :] + f.short_offset[:, :, None]],
            axis=1,
        ) + 0.5  # (M, 2, T, E) in levels
        self._birth_levels_min = float(self._birth_levels.min())
        self._birth_levels_max = float(self._birth_levels.max())
        coin = f.open_usd[:, None] / ENTRIES * np.exp(-f.entry_move)  # (M, E)
        elapsed = (np.arange(MINUTES_PER_DAY) + 1) * 60.0 + (day * 86_400 - self.book.t_ref)
        grow = np.exp(self.mix.close_rate[None, :] * elapsed[:, None])  # (M, T)
        self._day_survival = np.exp(-self.mix.close_rate[None, None, :] * (elapsed[:, None, None] - 60.0))  # at each minute's start
        self._birth_units = coin[:, None, :] * (self.mix.share[None, :] * grow)[:, :, None]  # (M, T, E)
        self._birth_units_sum = self._birth_units.sum(axis=2)  # (M, T)
        self._birth_coin = coin
        self._birth_coin_sum = coin.sum(axis=1)
        self._funding_closes_changed()
        # plain lists: the minute loop reads one value at a time, which numpy does slowly
        self._low = f.low.tolist()
        self._high = f.high.tolist()
        self._close = f.close.tolist()
        self._top_long = f.top_long.tolist()
        self._bottom_short = f.bottom_short.tolist()
        self._low_tick = f.low_tick.tolist()
        self._high_tick = f.high_tick.tolist()
        self._long_reach = f.long_offset.max(axis=1).tolist()
        self._short_reach = f.short_offset.min(axis=1).tolist()
        self._share_noise = f.share_noise.tolist()
        self._premium_noise = f.premium_noise.tolist()

    # ---- running ------------------------------------------------------------------------------------
    def advance(self, to_minute: int) -> None:
        """Simulate every minute before ``to_minute``."""
        while self.minute < to_minute:
            m = self.minute
            if m % FUNDING_MINUTES == 0 and m != self._settlement_done:
                self._funding_time(m)
                self._settlement_done = m
            self._run(m, min(to_minute, (m // FUNDING_MINUTES + 1) * FUNDING_MINUTES))

    def _funding_time(self, m: int) -> None:
        """Every 8 hours (midnight included): settle the books, start a new day, pay funding."""
        self.settle()
        if m % MINUTES_PER_DAY == 0:
            self._next_day(m)
        self._settle_funding()
        self._refresh_imbalance()

    def _next_day(self, m: int) -> None:
        factor = self.book.rebase(m * 60.0)
        self.tot_stored = self.tot_stored * factor
        self.prev = (self.flow, self.rec)
        self._load_day(m // MINUTES_PER_DAY)

    def _settle_funding(self) -> None:
        """Payers hand margin to receivers: both sides' liquidation prices move with the rate (up when
        longs pay), approximately by rate * price; some of the paying side gives up and closes."""
        self.shift += self.rate
        payer = LONG if self.rate > 0 else SHORT
        self.book.close_share(payer, min(0.25, FUNDING_CLOSE * abs(self.rate)))
        self._funding_closes_changed()
        self.premium_sum, self.premium_n = 0.0, 0

    def _funding_closes_changed(self) -> None:
        """The book's funding-driven closes changed (a settlement, or a new day folded them in)."""
        self._keep = np.exp(self.book.extra)  # (2, T) share left by funding-driven closes

    def _refresh_imbalance(self) -> None:
        longs, shorts = float(self.tot_real[LONG].sum()), float(self.tot_real[SHORT].sum())
        self.imbalance = (longs - shorts) / (longs + shorts) if longs + shorts > 0 else 0.0

    def _run(self, m0: int, m1: int) -> None:
        """The minute loop, for minutes inside one funding interval. Scalars only, unless price
        reaches the book. (Hot loop: state and constants live in locals, clamps are comparisons.)"""
        day0 = self.flow.day * MINUTES_PER_DAY
        low, high, close_move = self._low, self._high, self._close
        top_long, bottom_short = self._top_long, self._bottom_short
        share_noise, premium_noise = self._share_noise, self._premium_noise
        rec = self.rec
        put_open, put_high, put_low, put_close = rec.open.append, rec.high.append, rec.low.append, rec.close.append
        put_base, put_share, put_rate = rec.base.append, rec.share.append, rec.rate.append
        inv, anchor, shift = self.inv_step, self.anchor, self.shift
        relax_rate, reversion, eps = RELAX, REVERSION, EPS
        momentum_weight, momentum_scale, crowd_weight = MOMENTUM_WEIGHT, 0.5 * self.momentum_scale, CROWD_WEIGHT
        floor, ceil, tanh = math.floor, math.ceil, math.tanh
        x, ema, rate, crowd, trans = self.x, self.ema, self.rate, self.crowd, self.trans
        premium_sum, premium_n, imbalance = self.premium_sum, self.premium_n, self.imbalance
        hi_long, lo_short = self.hi_long, self.lo_short
        pending_hi, pending_lo = self.pending_hi_long, self.pending_lo_short
        forced = self.forced
        for i in range(m0 - day0, m1 - day0):
            relax = trans * relax_rate
            trans -= relax
            if forced[0] or forced[1]:
                forced[0] -= forced[0] * relax_rate
                forced[1] -= forced[1] * relax_rate
            xb = x - relax + reversion * (anchor - x)
            lo = xb + low[i]
            hi = xb + high[i]
            if (lo - shift) * inv - eps <= hi_long or (hi - shift) * inv + eps >= lo_short:
                self.trans, self.hi_long, self.lo_short = trans, hi_long, lo_short
                self.pending_hi_long, self.pending_lo_short = pending_hi, pending_lo
                close, lo, hi, top, bottom = self._forced_minute(i, xb)
                trans, hi_long, lo_short = self.trans, self.hi_long, self.lo_short
                pending_hi, pending_lo = self.pending_hi_long, self.pending_lo_short
            else:
                close = xb + close_move[i]
                top = xb + top_long[i]
                bottom = xb + bottom_short[i]
            # the minute's new positions sit down to / up to these levels (bounds, not exact)
            k = floor((top - shift) * inv) + 1
            if k > hi_long:
                hi_long = k
            if k > pending_hi:
                pending_hi = k
            k = ceil((bottom - shift) * inv) - 1
            if k < lo_short:
                lo_short = k
            if k < pending_lo:
                pending_lo = k

            ema += momentum_weight * ((close - x) - ema)
            trend = tanh(ema * momentum_scale)
            tilt = 0.5 * (imbalance + crowd)  # how one-sided the speculators are
            premium_sum += PREMIUM_IMBALANCE * tilt + PREMIUM_MOMENTUM * trend + PREMIUM_NOISE * premium_noise[i]
            premium_n += 1
            avg = premium_sum / premium_n
            # Binance's rule: premium + clamp(interest - premium, +-0.05%), capped
            gap = INTEREST - avg
            rate = avg + (FUNDING_CLAMP if gap > FUNDING_CLAMP else -FUNDING_CLAMP if gap < -FUNDING_CLAMP else gap)
            rate = FUNDING_CAP if rate > FUNDING_CAP else -FUNDING_CAP if rate < -FUNDING_CAP else rate
            share = 0.5 + SHARE_MOMENTUM * trend - SHARE_FUNDING * (rate - INTEREST) + SHARE_NOISE * share_noise[i]
            share = 0.85 if share > 0.85 else 0.15 if share < 0.15 else share
            crowd += crowd_weight * ((2.0 * share - 1.0) - crowd)

            put_open(x)
            put_high(hi if hi > x else x)
            put_low(lo if lo < x else x)
            put_close(close)
            put_base(xb)
            put_share(share)
            put_rate(rate)
            x = close
        self.x, self.ema, self.rate, self.crowd, self.trans = x, ema, rate, crowd, trans
        self.premium_sum, self.premium_n = premium_sum, premium_n
        self.hi_long, self.lo_short = hi_long, lo_short
        self.pending_hi_long, self.pending_lo_short = pending_hi, pending_lo
        self.minute = m1

    # ---- the liquidation engine ---------------------------------------------------------------------
    def _forced_minute(self, i: int, xb: float) -> tuple[float, float, float, float, float]:
        """A minute whose price reaches the book. Each side is swept once, at the tick of the minute's
        extreme on that side (the earlier extreme first); the sweep's forced orders move the rest of
        the minute, which can reach more levels (a cascade) and changes the other extreme."""
        f = self.flow
        path = xb + f.path[i]
        t0 = (f.day * MINUTES_PER_DAY + i) * 60
        depth = float(f.depth[i])
        inv = self.inv_step
        impacts: list[tuple[int, float]] = []
        swept = [False, False]
        self._survival = None
        jl, jh = self._low_tick[i], self._high_tick[i]
        while True:
            long_hit = not swept[LONG] and (float(path[jl]) - self.shift) * inv - EPS <= self.hi_long
            short_hit = not swept[SHORT] and (float(path[jh]) - self.shift) * inv + EPS >= self.lo_short
            if long_hit and (not short_hit or jl <= jh):
                side, j = LONG, jl
            elif short_hit:
                side, j = SHORT, jh
            else:
                break
            swept[side] = True
            move = self._sweep(side, float(path[j]), t0, j, depth, i)
            if move != 0.0:
                path[j:] += move
                impacts.append((j, move))
                self.trans += (1.0 - PERMANENT_IMPACT) * move
                # the swept extreme stays the extreme (everything after it moved with it); the other
                # side's extreme may now be elsewhere
                if side == LONG:
                    jh = int(path.argmax())
                else:
                    jl = int(path.argmin())
        if impacts:
            self.rec.impacts[i] = impacts
            entries = path[f.entry_tick[i]]
            self.rec.adjusted.append(i)
            self.rec.entry_adjust[i] = entries - (xb + f.entry_move[i])
            moved = entries.tolist()
            top = max(moved) + self._long_reach[i]
            bottom = min(moved) + self._short_reach[i]
        else:
            top = xb + self._top_long[i]
            bottom = xb + self._bottom_short[i]
        return float(path[-1]), float(path[jl]), float(path[jh]), top, bottom

    def _sweep(self, side: int, p: float, t0: int, tick: int, depth: float, i: int) -> float:
        """Liquidate every ``side`` level the price ``p`` has reached; forced orders move the price by
        their USD over the book depth, which may reach further levels. Returns the log move."""
        move = 0.0
        events = 0
        direction = -1.0 if side == LONG else 1.0  # forced sells of longs push down, buys of shorts up
        c, depth_c = IMPACT_BEND, IMPACT_BEND * depth
        already = c * math.sqrt(1.0 + 2.0 * self.forced[side] / depth_c)
        while abs(move) < MAX_SWEEP_MOVE:
            lvl = (p + move - self.shift) * self.inv_step
            if side == LONG:
                k = math.ceil(lvl - EPS)
                if k > self.hi_long:
                    break
                k_from, k_to = k, self.hi_long
                self.hi_long = k - 1
                pending = k <= self.pending_hi_long
            else:
                k = math.floor(lvl + EPS)
                if k < self.lo_short:
                    break
                k_from, k_to = self.lo_short, k
                self.lo_short = k + 1
                pending = k >= self.pending_lo_short
            if pending:  # positions opened in the last minutes may sit on these levels
                self._flush(i)
            if self._survival is None:  # closes by choice so far, as of the minute's start
                self._survival = self._day_survival[i] * self._keep
            taken = self.book.take(side, k_from, k_to, self._survival[side], math.exp(self.shift))
            if taken is None:
                continue
            if i not in self.rec.liq_stored:
                self.rec.liquidated.append(i)
                self.rec.liq_stored[i] = np.zeros((2, self.tiers))
                self.rec.liq_base[i] = [0.0, 0.0]
            self.rec.liq_stored[i][side] += taken.stored
            self.rec.liq_base[i][side] += sum(taken.base)
            # one reported liquidation per leverage tier swept (different traders' orders)
            for base, usd in zip(taken.base, taken.usd, strict=True):
                if usd >= MIN_EVENT_USD:
                    self.liq_time.append((t0 + tick) * 1000 + min(10 * events, 990))
                    self.liq_side.append(side)
                    self.liq_price.append(round(usd / base, self.decimals))
                    self.liq_base.append(base)
                    self.liq_usd.append(usd)
                    events += 1
            self.forced[side] += sum(taken.usd)
            move = direction * (c * math.sqrt(1.0 + 2.0 * self.forced[side] / depth_c) - already)
        return move

    # ---- batched steps: new positions into the book, then settled bars ------------------------------
    def _birth_scale(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Per minute in [a, b): exp(-base price) times each side's share (n, 2), and the base prices.
        (Small arrays, called often: written with ufuncs into one buffer, no stacking.)"""
        xb = np.array(self.rec.base[a:b])
        scale = np.exp(-xb)
        per_side = np.empty((b - a, 2))
        np.multiply(scale, self.rec.share[a:b], out=per_side[:, LONG])
        np.subtract(scale, per_side[:, LONG], out=per_side[:, SHORT])
        return per_side, xb

    def _flush(self, upto: int) -> None:
        """Put the new positions of block minutes [flushed, upto) into the book."""
        a = self.flushed
        if upto <= a:
            return
        per_side, xb = self._birth_scale(a, upto)
        # new positions are stored divided by the survival the book applies (funding closes so far)
        scale = per_side[:, :, None] / self._keep[None, :, :]  # (n, 2, T)
        units = self._birth_units[a:upto, None, :, :] * scale[..., None]  # (n, 2, T, E)
        levels = self._birth_levels[a:upto] + ((xb - self.shift) * self.inv_step)[:, None, None, None]
        for i in self.rec.adjusted_in(a, upto):  # entries that a sweep had moved
            adjust = self.rec.entry_adjust[i]
            levels[i - a] += adjust * self.inv_step
            units[i - a] *= np.exp(-adjust)
        # where these can land, without scanning them: the day's offsets around the minutes' base prices,
        # widened by the most two sweeps can move an entry
        base = self.rec.base[a:upto]
        margin = 2 * MAX_SWEEP_MOVE * self.inv_step + 2
        lo = math.floor((min(base) - self.shift) * self.inv_step + self._birth_levels_min - margin)
        hi = math.ceil((max(base) - self.shift) * self.inv_step + self._birth_levels_max + margin)
        self.book.add_pattern(np.floor(levels, out=levels).astype(np.int64), units, lo, hi)
        self.flushed = upto
        self.pending_hi_long, self.pending_lo_short = -FAR, FAR

    def settle(self) -> None:
        """Bring the book and the settled bars up to the last simulated minute."""
        self._derive(self.minute - self.flow.day * MINUTES_PER_DAY)

    def _derive(self, upto: int) -> None:
        """Settle the bars of block minutes [derived, upto): open interest from the positions outstanding,
        volumes from what traders opened, closed and were forced out of, plus background turnover."""
        self._flush(upto)
        a = self.derived
        if upto <= a:
            return
        f, rec = self.flow, self.rec
        n, T = upto - a, self.tiers
        per_side, _ = self._birth_scale(a, upto)
        births = self._birth_units_sum[a:upto, None, :] * per_side[:, :, None]  # (n, 2, T) units at birth
        coin = self._birth_coin_sum[a:upto].copy()
        for i in rec.adjusted_in(a, upto):
            moved = np.exp(-rec.entry_adjust[i])
            births[i - a] = (self._birth_units[i] * moved[None, :]).sum(axis=1)[None, :] * per_side[i - a][:, None]
            coin[i - a] = float(self._birth_coin[i] @ moved)
        births /= self._keep[None, :, :]  # stored units (see _funding_closes_changed)
        liq_stored = np.zeros((n, 2, T))
        liq_base = np.zeros((n, 2))
        for i in rec.liquidated_in(a, upto):
            liq_stored[i - a] = rec.liq_stored[i]
            liq_base[i - a] = rec.liq_base[i]
        stored = np.cumsum(np.concatenate([self.tot_stored[None], births - liq_stored]), axis=0)[1:]
        t_end = ((f.day * MINUTES_PER_DAY + np.arange(a, upto) + 1) * 60).astype(np.float64)
        tot = stored * np.exp(self.book.log_survival_at(t_end))  # (n, 2, T) base coin outstanding
        before = np.concatenate([self.tot_real[None], tot[:-1]])
        closed = (before * self.close_fraction[None, None, :]).sum(axis=2)  # (n, 2) closed by choice
        self.tot_stored, self.tot_real = stored[-1].copy(), tot[-1].copy()

        log_open, log_close = np.array(rec.open[a:upto]), np.array(rec.close[a:upto])
        close_px = np.exp(log_close)
        speculators = 0.5 * (tot[:, LONG].sum(axis=1) + tot[:, SHORT].sum(axis=1))
        oi_usd = (f.hedged_base[a:upto] + speculators) * close_px
        churn = f.churn_usd[a:upto] / close_px
        # background takers lean with the minute's move (buyers lift offers in an up-minute)
        lean = np.tanh((log_close - log_open) / f.sigma[a:upto])
        buy_share = np.clip(0.5 + 0.3 * lean + 0.04 * f.churn_tilt[a:upto], 0.05, 0.95)
        # taker buys: new longs, shorts closing, shorts liquidated; taker sells the mirror image
        buy = churn * buy_share + coin * per_side[:, LONG] + closed[:, SHORT] + liq_base[:, SHORT]
        sell = churn * (1.0 - buy_share) + coin * per_side[:, SHORT] + closed[:, LONG] + liq_base[:, LONG]
        self.log.append(
            time=(f.day * MINUTES_PER_DAY + np.arange(a, upto)) * 60,
            open=self.round_price(np.exp(log_open)),
            high=self.round_price(np.exp(np.array(rec.high[a:upto]))),
            low=self.round_price(np.exp(np.array(rec.low[a:upto]))),
            close=self.round_price(close_px),
            volume=buy + sell,
            taker_buy_volume=buy,
            taker_sell_volume=sell,
            oi_usd=oi_usd,
            funding_rate=np.round(rec.rate[a:upto], 8),  # published to 8 decimals, as exchanges do
        )
        self.derived = upto

    def round_price(self, price: np.ndarray) -> np.ndarray:
        """To the symbol's tick (as the exchange prints prices)."""
        return np.round(np.round(price / self.spec.tick) * self.spec.tick, self.decimals)

    # ---- reading ------------------------------------------------------------------------------------
    @property
    def settled_until(self) -> int:
        """UNIX seconds up to which bars are settled (exclusive)."""
        return (self.start_minute + self.log.n) * 60

    def bars(self, since: int, until: int) -> Bars:
        """Settled bars whose open time is in [since, until)."""
        first = self.start_minute * 60
        return self.log.bars(-(-(since - first) // 60), -(-(until - first) // 60))

    def minute_path(self, minute: int) -> np.ndarray:
        """The 60 log prices (one per second) of a simulated minute of today or yesterday."""
        day = minute // MINUTES_PER_DAY
        if day == self.flow.day:
            f, rec = self.flow, self.rec
        elif self.prev is not None and day == self.prev[0].day:
            f, rec = self.prev
        else:
            raise ValueError("only today's and yesterday's minutes keep their ticks")
        i = minute - day * MINUTES_PER_DAY
        path = rec.base[i] + f.path[i]
        for j, move in rec.impacts.get(i, []):
            path[j:] += move
        return path

    def liquidation_index(self, time_ms: int) -> int:
        """Index of the first liquidation at or after ``time_ms``."""
        return bisect.bisect_left(self.liq_time, time_ms)

    def ground_truth(self) -> GroundTruth:
        self.settle()
        return self.book.truth(
            self.spec.symbol, self.minute * 60, math.exp(self.x), self.shift, self.mix.labels, self.mix.leverage
        )
