"""A small seeded synthetic market for tests and benchmarks (the full simulated exchange, with traders
and real liquidations, lives in engine/feeds/demo). Pure numpy, reproducible from the seed."""

from __future__ import annotations

import numpy as np

from .bars import Bars


def synthetic_bars(
    n: int,
    seed: int = 0,
    timeframe: int = 60,
    start: int = 1_700_000_000,
    price: float = 60_000.0,
    vol_per_bar: float = 0.0006,
    with_oi: bool = True,
    with_taker: bool = True,
) -> Bars:
    """``n`` bars of a random walk with volatility clustering and fat tails, volume that rises with
    volatility, and open interest that drifts with a mean-reverting component."""
    rng = np.random.default_rng(seed)
    start = start // timeframe * timeframe
    # volatility clustering: log-vol follows an AR(1)
    shocks = rng.standard_normal(n)
    logv = np.zeros(n)
    phi = 0.98
    eps = rng.standard_normal(n) * 0.15
    for_ar = np.empty(n)
    # AR(1) without a Python loop over bars: a linear filter by cumulative sums in powers of phi is
    # unstable for long n, so use a short exact recursion in blocks of vectorised updates.
    acc = 0.0
    block = 4096
    powers = phi ** np.arange(block)
    for s in range(0, n, block):
        e = eps[s : s + block]
        m = len(e)
        # y_t = phi^t * acc + sum_{i<=t} phi^(t-i) e_i, via convolution within the block
        conv = np.convolve(e, powers[:m])[:m]
        for_ar[s : s + m] = powers[:m] * phi * acc + conv
        acc = for_ar[s + m - 1]
    logv = for_ar
    sigma = vol_per_bar * np.exp(logv - logv.mean())
    # Student-t-like fat tails
    tails = rng.standard_t(4, n) / np.sqrt(2.0)
    ret = sigma * np.where(np.abs(shocks) > 2.2, tails * 1.5, shocks)
    close = price * np.exp(np.cumsum(ret))
    open_ = np.r_[price, close[:-1]]
    wick = np.abs(rng.standard_normal((2, n))) * sigma * 0.6
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = (50.0 + 4000.0 * np.abs(ret) / vol_per_bar * rng.uniform(0.5, 1.5, n)) * (timeframe / 60)
    cols: dict[str, np.ndarray | None] = {}
    if with_taker:
        buy_share = np.clip(0.5 + 0.35 * np.tanh(ret / vol_per_bar) + rng.normal(0, 0.05, n), 0.02, 0.98)
        cols["taker_buy_volume"] = volume * buy_share
        cols["taker_sell_volume"] = volume * (1 - buy_share)
    if with_oi:
        d_oi = rng.normal(0.0, 1.0, n) * volume * close * 0.02 + 2e3 * (timeframe / 60)
        oi = 2e9 + np.cumsum(d_oi)
        oi = np.maximum(oi, 1e8)
        cols["oi_usd"] = oi
    cols["funding_rate"] = np.full(n, 1e-4)
    return Bars.from_columns(
        timeframe,
        time=start + timeframe * np.arange(n, dtype=np.int64),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        **cols,  # type: ignore[arg-type]
    )
