"""Display binning of the level book: each 0.05% level is spread over the bins its cell overlaps, so bins
that do not hold a whole number of levels show no stripes, and no USD is lost or invented."""

import math

import numpy as np

from engine.model import price_edges
from engine.model.views import bin_levels, level_shares

STEP = math.log1p(0.0005)


def smooth_book(price: float = 60_000.0) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(round(math.log(price * 0.9) / STEP), round(math.log(price * 1.1) / STEP) + 1)
    return np.exp(k * STEP), np.full(len(k), 1e6)  # the same USD at every level: a flat book


def test_a_flat_book_bins_flat_whatever_the_bin_width():
    prices, usd = smooth_book()
    n = len(prices)
    zeros = np.zeros(n, dtype=np.int64)
    for bins in (150, 333, 400, 700):  # 0.13%, 0.06%, 0.05%, 0.03% bins: none a whole number of levels
        edges = price_edges(56_000, 64_000, bins)
        centre = bin_levels(prices, usd, zeros, zeros, edges, 1)[0][:, 0]
        spread = bin_levels(prices, usd, zeros, zeros, edges, 1, step=STEP)[0][:, 0]
        # USD per unit of log price, which a flat book keeps constant across bins
        width = np.diff(np.log(edges))
        flat = spread[1:-1] / width[1:-1]
        assert flat.max() / flat.min() < 1.01, bins
        if bins != 150:
            lumpy = centre[1:-1] / width[1:-1]
            assert lumpy.max() / max(lumpy.min(), 1) > 1.5  # the old binning striped (or left gaps)
        inside = (prices * math.exp(-STEP / 2) >= edges[0]) & (prices * math.exp(STEP / 2) <= edges[-1])
        # nothing lost inside the edges, nothing invented: only the two edge levels may lose a part
        assert usd[inside].sum() <= spread.sum() <= usd[inside].sum() + 2e6 + 1e-6


def test_shares_of_a_level_sum_to_one_inside_the_edges():
    edges = price_edges(100.0, 110.0, 37)
    centres = np.log(np.linspace(100.5, 109.5, 500))
    bins, shares = level_shares(edges, centres, STEP)
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert np.all((bins >= 0) == (shares > 0))
