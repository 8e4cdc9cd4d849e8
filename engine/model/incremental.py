"""The incremental engine: the level book kept up to date one closed bar at a time.

It holds outstanding USD per (piece, side, tier, level) and, for each new bar, clears the levels the bar
reached, ages the rest (OI drops, decay) and adds the bar's new cohorts — the same arithmetic as the batch
estimate, so both give the same book (a property test holds them to it).
"""

from __future__ import annotations

import numpy as np

from .bars import Bars
from .cohorts import LevelGrid, SeedCarry, build_cohorts, seed_exposure
from .estimate import Estimate, LevelBook, Realised, piece_shares, reach_arrays
from .ladder import ModelParams
from .margin import LONG, SHORT

_GROW = 512  # extra levels allocated on each side when the book must widen


class IncrementalEngine:
    def __init__(self, params: ModelParams, timeframe: int) -> None:
        self.params = params
        self.timeframe = timeframe
        self.grid = LevelGrid.for_resolution(params.resolution)
        self.tiers = params.ladder.labels
        self.shares = piece_shares(params.wick_clear)
        self.rates = params.decay_rates()
        self.carry = SeedCarry()
        self.kmin = 0
        self.state: np.ndarray = np.zeros((len(self.shares), 2, len(self.tiers), 0))
        self.last_close: float | None = None
        self.last_close_time: int | None = None
        self.bars_seen = 0
        self._times: list[np.ndarray] = []
        self._long: list[np.ndarray] = []
        self._short: list[np.ndarray] = []

    @classmethod
    def from_estimate(cls, est: Estimate) -> IncrementalEngine:
        """Start from a batch estimate's final book, as if every bar had been appended one by one
        (the live service loads history this way in one vectorised pass)."""
        eng = cls(est.params, est.bars.timeframe)
        n = len(est.bars)
        c = est.cohorts
        pieces = len(eng.shares)
        alive = (c.birth < n) & (est.death >= n)
        if alive.any():
            lv = c.level[alive]
            eng.kmin = int(lv.min()) - _GROW
            k = int(lv.max()) + _GROW - eng.kmin + 1
            piece = est.piece.astype(np.int64)
            t = len(eng.tiers)
            value = c.usd[alive] * np.exp(est.F[c.tier[alive], n - 1] - est.F[c.tier[alive], c.birth[alive]])
            flat = ((piece[alive] * 2 + c.side[alive]) * t + c.tier[alive]) * k + (lv - eng.kmin)
            eng.state = np.bincount(flat, weights=value, minlength=pieces * 2 * t * k).reshape(pieces, 2, t, k)
        eng.carry = SeedCarry(**vars(est.seed_carry))
        eng.bars_seen = n
        eng.last_close = float(est.bars.close[-1])
        eng.last_close_time = int(est.bars.close_time[-1])
        r = est.realised
        eng._times, eng._long, eng._short = [r.time], [r.long_usd], [r.short_usd]
        return eng

    # ---- feeding ----------------------------------------------------------------------------------
    def append(self, bars: Bars) -> Realised:
        """Add closed bars (one or more, after the ones already seen). Returns their estimated realised
        liquidations."""
        if self.last_close_time is not None and len(bars) and bars.time[0] < self.last_close_time:
            raise ValueError("bars must come after the last closed bar")
        out_long = np.zeros(len(bars))
        out_short = np.zeros(len(bars))
        for j in range(len(bars)):
            one = bars.slice(j, j + 1)
            out_long[j], out_short[j] = self._step(one, self.state, self.carry, commit=True)
        self._times.append(bars.time.copy())
        self._long.append(out_long)
        self._short.append(out_short)
        return Realised(bars.time.copy(), out_long, out_short)

    def preview(self, forming: Bars) -> LevelBook:
        """The book as it would be if the forming bar closed now (nothing is committed)."""
        state = self.state.copy()
        carry = SeedCarry(**vars(self.carry))
        kmin_before = self.kmin
        self._step(forming, state, carry, commit=False)
        book = self._book(self._preview_state, float(forming.close[0]), int(forming.close_time[0]))
        self.kmin = kmin_before
        return book

    def _step(self, bar: Bars, state: np.ndarray, carry: SeedCarry, commit: bool) -> tuple[float, float]:
        seeds = seed_exposure(bar, self.params, carry)
        cohorts = build_cohorts(bar, self.params, seeds, self.grid)
        if len(cohorts):
            state = self._ensure_levels(state, int(cohorts.level.min()), int(cohorts.level.max()), commit)
        realised = [0.0, 0.0]
        reaches = reach_arrays(bar, self.grid, self.params.wick_clear)
        k = state.shape[3]
        if self.bars_seen > 0 or not commit:
            for p, (long_reach, short_reach) in enumerate(reaches):
                lo = int(long_reach[0]) - self.kmin  # long levels >= lo are reached
                if lo < k:
                    sl = state[p, LONG, :, max(lo, 0) :]
                    realised[LONG] += float(sl.sum())
                    sl[...] = 0.0
                hi = -int(short_reach[0]) - self.kmin  # short levels <= hi are reached
                if hi >= 0:
                    sl = state[p, SHORT, :, : hi + 1]
                    realised[SHORT] += float(sl.sum())
                    sl[...] = 0.0
            if self.last_close_time is not None:
                dt = float(bar.close_time[0] - self.last_close_time)
                factor = np.exp(float(seeds.log_shrink[0]) - self.rates * dt)
                if np.any(factor != 1.0):
                    state *= factor[None, None, :, None]
        for p, share in enumerate(self.shares):
            np.add.at(state[p], (cohorts.side, cohorts.tier, cohorts.level - self.kmin), cohorts.usd * share)
        if commit:
            self.state = state
            self.carry = carry
            self.bars_seen += 1
            self.last_close = float(bar.close[0])
            self.last_close_time = int(bar.close_time[0])
        else:
            self._preview_state = state
        return realised[LONG], realised[SHORT]

    def _ensure_levels(self, state: np.ndarray, lo: int, hi: int, commit: bool) -> np.ndarray:
        k = state.shape[3]
        if k and lo >= self.kmin and hi < self.kmin + k:
            return state
        new_min = min(lo, self.kmin if k else lo) - _GROW
        new_max = max(hi, self.kmin + k - 1 if k else hi) + _GROW
        grown = np.zeros(state.shape[:3] + (new_max - new_min + 1,))
        if k:
            grown[..., self.kmin - new_min : self.kmin - new_min + k] = state
        self.kmin = new_min
        return grown

    # ---- reading ----------------------------------------------------------------------------------
    def book(self) -> LevelBook:
        return self._book(self.state, self.last_close or 0.0, self.last_close_time or 0)

    def _book(self, state: np.ndarray, price: float, time: int) -> LevelBook:
        return LevelBook(self.grid, self.kmin, state.sum(axis=0), price, time, self.tiers)

    @property
    def realised(self) -> Realised:
        if not self._times:
            return Realised(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        return Realised(np.concatenate(self._times), np.concatenate(self._long), np.concatenate(self._short))

    @property
    def seed_mode(self) -> str:
        return self.carry.mode()
