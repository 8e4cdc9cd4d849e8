"""The simulated traders' open positions, aggregated into cohorts, and the ground truth read from them.

A cohort is all the base coin that would be liquidated at one price level, for one side and leverage
tier. Levels sit on a log grid (level k is the price exp(k * step)) in *booked* coordinates: funding moves
every liquidation price after the position was opened, so the exchange keeps one running ``shift`` and
the real liquidation price of level k is exp(k * step + shift).

Positions also close by choice, continuously, at a rate per tier. Touching every level every minute would
cost the whole book each minute, so the book stores amounts divided by the tier's survival since
``t_ref``: real base = stored units * exp(log_survival(t)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LONG, SHORT = 0, 1
_GROW = 1024  # levels added on each side when a cohort lands outside the book


@dataclass(frozen=True)
class GroundTruth:
    """What is really outstanding on the simulated exchange at ``time``: USD that would be force-closed
    if price reached each level (base coin * liquidation price), longs below the price and shorts above.
    This is what the engine estimates; tests and the backtest score the estimate against it."""

    symbol: str
    time: int  # UNIX seconds: the state after the bar that closed at this time
    price: float  # last close
    prices: np.ndarray  # (K,) ascending liquidation prices on a 0.05% log grid
    long_usd: np.ndarray  # (K,)
    short_usd: np.ndarray  # (K,)
    long_by_tier: np.ndarray  # (T, K)
    short_by_tier: np.ndarray  # (T, K)
    tiers: tuple[str, ...]
    leverage: np.ndarray  # (T,) leverage of each tier (traders spread around it)

    def binned(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(long, short) USD per price bin; levels outside the edges are dropped."""
        b = np.searchsorted(edges, self.prices, side="right") - 1
        ok = (b >= 0) & (b < len(edges) - 1)
        n = len(edges) - 1
        return (
            np.bincount(b[ok], weights=self.long_usd[ok], minlength=n),
            np.bincount(b[ok], weights=self.short_usd[ok], minlength=n),
        )

    def total(self) -> tuple[float, float]:
        return float(self.long_usd.sum()), float(self.short_usd.sum())


@dataclass(frozen=True)
class Taken:
    """What one sweep force-closed, per tier."""

    stored: np.ndarray  # (T,) stored units (for open-interest bookkeeping)
    base: list[float]  # base coin
    usd: list[float]  # USD at the liquidation prices


class PositionBook:
    """Stored units per (side, level, tier); levels are contiguous so a sweep reads one block."""

    def __init__(self, step: float, center_level: int, half_width: int, close_rate: np.ndarray, t_ref: float) -> None:
        self.step = step
        self.tiers = len(close_rate)
        self.close_rate = close_rate.astype(np.float64)
        self.kmin = center_level - half_width
        self.units = np.zeros((2, 2 * half_width + 1, self.tiers))
        self.extra = np.zeros((2, self.tiers))  # log share left after funding-driven closes since t_ref
        self.t_ref = float(t_ref)
        self._refresh_prices()

    def _refresh_prices(self) -> None:
        k = self.units.shape[1]
        self.level_price = np.exp((self.kmin + np.arange(k)) * self.step)
        self._ones = np.ones(k)
        # flat index of (side, level kmin, tier), shaped to add (minute, side, tier, entry) blocks
        side_tier = np.arange(2)[:, None] * (k * self.tiers) + np.arange(self.tiers)[None, :]
        self._row_start = (side_tier - self.kmin * self.tiers)[None, :, :, None]

    @property
    def kmax(self) -> int:
        return self.kmin + self.units.shape[1] - 1

    # ---- survival ----------------------------------------------------------------------------------
    def log_survival(self, t: float) -> np.ndarray:
        """(2, T) log of the share of positions (open at t_ref) still open at ``t``."""
        return self.extra - self.close_rate[None, :] * (t - self.t_ref)

    def log_survival_at(self, times: np.ndarray) -> np.ndarray:
        """(n, 2, T) for many times at once."""
        return self.extra[None, :, :] - self.close_rate[None, None, :] * (times - self.t_ref)[:, None, None]

    def close_share(self, side: int, fraction: float) -> None:
        """A share of one side closes at once (funding got expensive)."""
        self.extra[side] += np.log1p(-fraction)

    def rebase(self, t: float) -> np.ndarray:
        """Fold the survival into the stored units (keeps exp() of the survival near 1 over long runs).
        Returns the factor applied per (side, tier) so callers can rebase their own stored totals."""
        factor = np.exp(self.log_survival(t))
        self.units *= factor[:, None, :]
        self.extra[:] = 0.0
        self.t_ref = float(t)
        return factor

    # ---- opening and force-closing -----------------------------------------------------------------
    def add(self, side: np.ndarray, tier: np.ndarray, level: np.ndarray, stored: np.ndarray) -> None:
        """Add cohorts (stored units), in the order given: the same additions in the same order give
        the same book however they are batched."""
        if len(level) == 0:
            return
        self._ensure(int(level.min()), int(level.max()))
        k = self.units.shape[1]
        flat = (side.astype(np.int64) * k + (level - self.kmin)) * self.tiers + tier
        np.add.at(self.units.reshape(-1), flat, stored)

    def add_pattern(self, levels: np.ndarray, stored: np.ndarray, lo: int, hi: int) -> None:
        """Add cohorts shaped (n, 2, T, E): minute, side, tier, entry (in that order of addition).
        ``lo``..``hi`` bounds the levels (the caller knows them without scanning)."""
        self._ensure(lo, hi)
        np.add.at(self.units.reshape(-1), (levels * self.tiers + self._row_start).ravel(), stored.ravel())

    def _ensure(self, lo: int, hi: int) -> None:
        if lo >= self.kmin and hi <= self.kmax:
            return
        new_min = min(lo - _GROW, self.kmin)
        new_max = max(hi + _GROW, self.kmax)
        grown = np.zeros((2, new_max - new_min + 1, self.tiers))
        grown[:, self.kmin - new_min : self.kmin - new_min + self.units.shape[1]] = self.units
        self.units, self.kmin = grown, new_min
        self._refresh_prices()

    def take(self, side: int, k_from: int, k_to: int, survival: np.ndarray, price_factor: float) -> Taken | None:
        """Force-close every cohort of ``side`` on levels k_from..k_to (inclusive). ``survival`` is
        exp(log_survival) of the side's tiers now; ``price_factor`` turns booked prices into real ones.
        None if nothing was there."""
        a = max(k_from, self.kmin) - self.kmin
        b = min(k_to, self.kmax) - self.kmin + 1
        if b <= a:
            return None
        # (a sweep touches a few levels: ndarray.dot has the least per-call overhead for such sizes)
        block = self.units[side, a:b]  # (levels, T)
        stored = self._ones[: b - a].dot(block)
        base = stored * survival
        if not base.any():
            return None
        usd = self.level_price[a:b].dot(block) * survival * price_factor
        block.fill(0.0)
        return Taken(stored, base.tolist(), usd.tolist())

    def occupied(self, side: int) -> tuple[int, int] | None:
        """Lowest and highest level holding anything on one side."""
        nz = np.flatnonzero(self.units[side].sum(axis=1) > 0)
        if len(nz) == 0:
            return None
        return self.kmin + int(nz[0]), self.kmin + int(nz[-1])

    def stored_totals(self) -> np.ndarray:
        """(2, T) stored units per side and tier."""
        return self.units.sum(axis=1)

    # ---- reading -----------------------------------------------------------------------------------
    def truth(self, symbol: str, time: int, price: float, shift: float, labels: tuple[str, ...], leverage: np.ndarray) -> GroundTruth:
        survival = np.exp(self.log_survival(time))  # (2, T)
        prices = self.level_price * float(np.exp(shift))
        usd = self.units * survival[:, None, :] * prices[None, :, None]  # (2, K, T)
        return GroundTruth(
            symbol=symbol,
            time=int(time),
            price=float(price),
            prices=prices,
            long_usd=usd[LONG].sum(axis=1),
            short_usd=usd[SHORT].sum(axis=1),
            long_by_tier=np.ascontiguousarray(usd[LONG].T),
            short_by_tier=np.ascontiguousarray(usd[SHORT].T),
            tiers=labels,
            leverage=leverage.copy(),
        )
