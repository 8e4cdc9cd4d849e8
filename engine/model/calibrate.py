"""Calibration: fit ladder weights and a seed scale to recorded realised liquidations.

Why a linear fit works. For fixed seeds (OI changes or the volume proxy), sides, entries and per-tier
decay, the model's estimated realised liquidations are *linear in the ladder weights*: each tier's cohorts
are born, age and die independently of the other tiers. So with ``R_t`` = the realised series the model
gives when all exposure sits at tier ``t`` (a one-tier ladder, weight 1),

    actual[j, side] ≈ sum_t c_t * R_t[j, side],   c_t >= 0,

over the bars ``j`` the recorded liquidations cover, long and short rows stacked. Non-negative least
squares gives ``c``; the ladder weights are ``c / sum(c)`` and the seed scale is ``sum(c)`` — how much of
the model's seeded USD shows up as real liquidations (< 1: fewer positions are leveraged, or the recorded
stream is a sample, as Binance's one-per-second feed is). In volume-proxy mode the fitted proxy fraction is
``volume_proxy_fraction * seed_scale``.

A tier the model never liquidates over the fitted bars (5x in a quiet week) carries no information: its
regressor is all zeros. Such tiers keep their starting share of the ladder and are listed as
``unidentified``; the others share the rest in proportion to their fitted coefficients.

Optionally (``shrink`` > 0) the fit is pulled toward the starting ladder by extra rows
``sqrt(shrink) * (c_t - s0 * w_t)`` (``s0``: the best single scale for the starting ladder), still an NNLS
problem; with few bars that keeps a tier from being dropped on noise alone.

NNLS is Lawson–Hanson's active-set method (Solving Least Squares Problems, 1974, ch. 23), from
scipy.optimize.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np

from .bars import Bars
from .estimate import estimate
from .ladder import Ladder, ModelParams


class CalibrationError(ValueError):
    """Nothing to fit, or a fit that says nothing (one line)."""


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> tuple[np.ndarray, float]:
    """min ||a x - b|| subject to x >= 0. Returns (x, residual norm). scipy.optimize.nnls (Lawson–Hanson),
    on column-scaled ``a``: scaling does not change the solution set (x >= 0 is scale-invariant) and keeps
    badly scaled tiers (USD regressors spanning orders of magnitude) well conditioned."""
    from scipy.optimize import nnls as scipy_nnls

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.shape
    if b.shape != (m,):
        raise CalibrationError("nnls: b must have one value per row of a")
    norms = np.linalg.norm(a, axis=0)
    scale = np.where(norms > 0, norms, 1.0)
    try:
        x, _ = scipy_nnls(a / scale, b, maxiter=max_iter or 50 * max(n, 1))
    except RuntimeError:
        raise CalibrationError("nnls did not converge") from None
    x = x / scale
    return x, float(np.linalg.norm(a @ x - b))


def one_tier_ladder(ladder: Ladder, i: int) -> Ladder:
    lev = ladder.leverage[i]
    return Ladder(f"{lev:g}x", (lev,), (1.0,), (ladder.half_lives()[i],))


def tier_regressors(bars: Bars, params: ModelParams) -> np.ndarray:
    """(T, 2, n): estimated realised USD per tier (all exposure at that tier), side and bar."""
    out = []
    for i in range(len(params.ladder.leverage)):
        r = estimate(bars, replace(params, ladder=one_tier_ladder(params.ladder, i))).realised
        out.append(np.stack([r.long_usd, r.short_usd]))
    return np.array(out)


@dataclass(frozen=True)
class Calibration:
    ladder: Ladder  # fitted weights
    seed_scale: float
    coefficients: tuple[float, ...]  # raw c_t
    prior: Ladder
    rows: int  # bar x side rows fitted
    r2: float  # of the fit (1 - SSE/SST on the fitted rows)
    r2_prior: float  # of the starting ladder with its best single scale
    volume_proxy_fraction: float | None  # fitted proxy fraction (volume/hybrid seed modes)
    unidentified: tuple[str, ...] = ()  # tiers the recording cannot inform (kept at their starting share)

    def to_json(self) -> str:
        """A ladder JSON engine.model.ladder.parse_ladder reads (extra keys are ignored there)."""
        return json.dumps(
            {
                "name": self.ladder.name,
                "leverage": list(self.ladder.leverage),
                "weights": [round(w, 6) for w in self.ladder.weights],
                "half_life_hours": None if self.ladder.half_life_hours is None else list(self.ladder.half_life_hours),
                "seed_scale": self.seed_scale,
                "volume_proxy_fraction": self.volume_proxy_fraction,
                "fit": {
                    "method": "nnls (scipy, Lawson-Hanson) on per-tier estimated realised liquidations",
                    "prior": self.prior.name,
                    "rows": self.rows,
                    "r2": self.r2,
                    "r2_prior": self.r2_prior,
                    "unidentified": list(self.unidentified),
                },
            },
            indent=2,
        )


def calibrate(
    bars: Bars,
    actual: np.ndarray,
    params: ModelParams,
    mask: np.ndarray | None = None,
    shrink: float = 0.0,
    name: str = "calibrated",
) -> Calibration:
    """Fit ``params.ladder``'s weights and a seed scale. ``actual``: (2, n) recorded long/short USD per
    bar; ``mask``: bars the recording covers (default all)."""
    n = len(bars)
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != (2, n):
        raise CalibrationError(f"actual must be (2, {n}) long/short USD per bar")
    mask = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.sum() < 2:
        raise CalibrationError("need at least two bars with recorded liquidations to fit")
    reg = tier_regressors(bars, params)  # (T, 2, n)
    t = reg.shape[0]
    a = reg[:, :, mask].reshape(t, -1).T  # rows: side x bar
    b = actual[:, mask].reshape(-1)
    if not np.any(b > 0):
        raise CalibrationError("the recorded liquidations are all zero over the fitted bars")
    if not np.any(a > 0):
        raise CalibrationError("the model liquidates nothing over the fitted bars: nothing to weigh")
    prior_w = np.asarray(params.ladder.weights)
    seen = np.linalg.norm(a, axis=0) > 0
    prior_pred = a @ prior_w
    s0 = float(prior_pred @ b / (prior_pred @ prior_pred)) if prior_pred @ prior_pred > 0 else 0.0
    a_seen = a[:, seen]
    if shrink > 0:
        # Extra rows in units of the data: sqrt(shrink) * ||b|| per unit weight deviation.
        k = math.sqrt(shrink) * float(np.linalg.norm(b)) / max(s0, 1e-300)
        m = int(seen.sum())
        a_fit = np.vstack([a_seen, k * np.eye(m)])
        b_fit = np.r_[b, k * s0 * prior_w[seen]]
    else:
        a_fit, b_fit = a_seen, b
    c_seen, _ = nnls(a_fit, b_fit)
    fitted = float(c_seen.sum())
    if fitted <= 0:
        raise CalibrationError("the fit gives every tier zero weight: the model's timing does not match at all")
    # unidentified tiers keep their starting share; the seen ones split the rest by their coefficients
    rest = 1.0 - float(prior_w[~seen].sum())
    if rest <= 0:
        raise CalibrationError("only tiers the model never liquidated carry weight: nothing to fit")
    weights = np.where(seen, 0.0, prior_w)
    weights[seen] = rest * c_seen / fitted
    total = fitted / rest  # seed scale: sum(c) over the ladder's full weight
    c = total * weights
    sst = float(((b - b.mean()) ** 2).sum())

    def r2(pred: np.ndarray) -> float:
        return 1.0 - float(((b - pred) ** 2).sum()) / sst if sst > 0 else 0.0

    ladder = Ladder(name, params.ladder.leverage, tuple(float(x) for x in weights), params.ladder.half_lives())
    proxy = params.proxy_fraction * total if params.seed_mode != "oi" else None
    unseen = tuple(lab for lab, ok in zip(params.ladder.labels, seen, strict=True) if not ok)
    return Calibration(
        ladder, total, tuple(float(x) for x in c), params.ladder, int(len(b)), r2(a @ c), r2(s0 * prior_pred), proxy,
        unseen,
    )
