"""How views travel as JSON: the compact heatmap encoding and plain conversions of engine objects.

Heatmap grids are sent as ``sqrt-u8``: one byte per cell, ``usd = max_usd * (level / 255) ** 2``. A
2000 x 400 grid is 800 kB of bytes (1.07 MB base64) instead of ~10 MB of JSON floats, and the absolute
USD scale travels with it so a client can always label colours in dollars.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from engine.service import Bars, Heatmap, LiquidationMap, Realised

ENCODING = "sqrt-u8"


def json_number(x: float | None) -> float | None:
    """A number JSON can carry: NaN and infinities become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def sqrt_u8(grid: np.ndarray, max_usd: float) -> bytes:
    """Quantise USD to 0..255 on a square-root scale against ``max_usd`` (bytes, row-major)."""
    if max_usd <= 0 or grid.size == 0:
        return bytes(grid.size)
    level = np.sqrt(np.clip(grid, 0.0, None) / max_usd) * 255.0
    # round half up, and keep any non-zero cell visible (level >= 1) so a small cluster never vanishes
    q = np.floor(level + 0.5)
    q[(grid > 0) & (q < 1)] = 1
    return np.clip(q, 0, 255).astype(np.uint8).tobytes()


def decode_sqrt_u8(data: bytes, max_usd: float, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse (for tests and Python clients): USD per cell."""
    level = np.frombuffer(data, dtype=np.uint8).astype(np.float64).reshape(shape)
    return max_usd * (level / 255.0) ** 2


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_columns(long_usd: np.ndarray, short_usd: np.ndarray) -> dict[str, Any]:
    """(C, B) long and short grids → the shared-scale compact payload (one ``max_usd`` for both sides,
    so colours compare across sides)."""
    max_usd = float(max(long_usd.max(initial=0.0), short_usd.max(initial=0.0)))
    return {
        "encoding": ENCODING,
        "max_usd": max_usd,
        "long": b64(sqrt_u8(long_usd, max_usd)),
        "short": b64(sqrt_u8(short_usd, max_usd)),
    }


def heatmap_payload(hm: Heatmap, timeframe: int, tier: str, encoding: str = ENCODING) -> dict[str, Any]:
    """``times`` are candle *open* times (the service's columns are at candle close) so a chart can key
    columns by its bars."""
    longs, shorts = hm.total(None)  # the service already sliced the requested tier
    times = (np.asarray(hm.times, dtype=np.int64) - timeframe).tolist()
    out: dict[str, Any] = {
        "times": times,
        "edges": [float(x) for x in hm.edges],
        "tiers": list(hm.tiers),
        "tier": tier,
        "columns": len(times),
        "bins": len(hm.edges) - 1,
    }
    if encoding == "json":
        out.update(
            {
                "encoding": "json",
                "max_usd": float(max(longs.max(initial=0.0), shorts.max(initial=0.0))),
                "long": np.round(longs, 2).tolist(),
                "short": np.round(shorts, 2).tolist(),
            }
        )
    else:
        out.update(encode_columns(longs, shorts))
    return out


def candles_payload(bars: Bars) -> dict[str, Any]:
    vol = bars.volume if bars.volume is not None else np.zeros(len(bars))
    return {
        "t": bars.time.tolist(),
        "o": bars.open.tolist(),
        "h": bars.high.tolist(),
        "l": bars.low.tolist(),
        "c": bars.close.tolist(),
        "v": np.nan_to_num(vol).tolist(),
    }


def map_payload(lmap: LiquidationMap) -> dict[str, Any]:
    long_below, short_above = lmap.cumulative()
    return {
        "price": float(lmap.price),
        "edges": [float(x) for x in lmap.edges],
        "tiers": list(lmap.tiers),
        "long": np.round(lmap.long_usd.sum(axis=1), 2).tolist(),
        "short": np.round(lmap.short_usd.sum(axis=1), 2).tolist(),
        # per tier, then per bin: long_tiers[t][b]
        "long_tiers": np.round(lmap.long_usd.T, 2).tolist(),
        "short_tiers": np.round(lmap.short_usd.T, 2).tolist(),
        "long_below": np.round(long_below, 2).tolist(),
        "short_above": np.round(short_above, 2).tolist(),
    }


def realised_payload(r: Realised) -> dict[str, Any]:
    return {
        "t": np.asarray(r.time, dtype=np.int64).tolist(),
        "long_usd": np.round(r.long_usd, 2).tolist(),
        "short_usd": np.round(r.short_usd, 2).tolist(),
        "estimate": True,
    }
