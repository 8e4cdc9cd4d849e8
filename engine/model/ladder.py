"""Leverage ladders (how new exposure splits over leverage tiers) and the model's parameters.

Every ladder is an assumption nobody can measure directly; the presets are the ones seen in the field
(notes/liquidation-math.md) and can be replaced by a custom or calibrated one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .fitted import FITTED_LADDERS, HEADLINE, SUITE
from .margin import LONG, MM_BASIS, SHORT, Bracket, canonical_exchange, liquidation_factor, tier_table


class LadderError(ValueError):
    """A ladder that cannot be used (one line for the user)."""


# Half-lives (hours) by leverage, from the field's per-tier decay presets: high leverage is short-lived.
_HALF_LIFE_POINTS = ((3.0, 1440.0), (5.0, 720.0), (10.0, 240.0), (25.0, 72.0), (50.0, 24.0), (100.0, 12.0))


def default_half_life_hours(leverage: float) -> float:
    """Interpolate the half-life table in log-leverage (clamped at the ends)."""
    xs = np.log([p[0] for p in _HALF_LIFE_POINTS])
    ys = np.log([p[1] for p in _HALF_LIFE_POINTS])
    return float(np.exp(np.interp(math.log(leverage), xs, ys)))


@dataclass(frozen=True)
class Ladder:
    name: str
    leverage: tuple[float, ...]
    weights: tuple[float, ...]
    half_life_hours: tuple[float, ...] | None = None  # None: defaults by leverage; 0 = no decay
    fitted_on: str = ""  # the recorded data a fitted preset was chosen on ("" = an assumption from the field)
    volume_proxy_fraction: float | None = None  # a fitted preset's own seed fraction (None: ModelParams')

    def __post_init__(self) -> None:
        if not self.leverage or len(self.leverage) != len(self.weights):
            raise LadderError(f"ladder {self.name!r}: needs as many weights as leverage tiers")
        if any(not (1.0 <= lev <= 200.0) for lev in self.leverage):
            raise LadderError(f"ladder {self.name!r}: leverage must be between 1x and 200x")
        if any((not math.isfinite(w)) or w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise LadderError(f"ladder {self.name!r}: weights must be non-negative and not all zero")
        if len(set(self.leverage)) != len(self.leverage):
            raise LadderError(f"ladder {self.name!r}: a leverage appears twice")
        total = sum(self.weights)
        object.__setattr__(self, "weights", tuple(float(w) / total for w in self.weights))
        object.__setattr__(self, "leverage", tuple(float(x) for x in self.leverage))
        if self.half_life_hours is not None and len(self.half_life_hours) != len(self.leverage):
            raise LadderError(f"ladder {self.name!r}: needs one half-life per tier")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f"{lev:g}x" for lev in self.leverage)

    def half_lives(self) -> tuple[float, ...]:
        if self.half_life_hours is not None:
            return self.half_life_hours
        return tuple(default_half_life_hours(lev) for lev in self.leverage)

    def describe(self) -> str:
        return ", ".join(f"{lab} {w:.0%}" for lab, w in zip(self.labels, self.weights, strict=True))

    def to_json(self) -> str:
        return json.dumps(asdict(self))


LADDERS: dict[str, Ladder] = {
    # The field's most common split (5/10/25/50/100x).
    "default": Ladder("default", (5, 10, 25, 50, 100), (0.15, 0.30, 0.25, 0.20, 0.10)),
    # Scalpers and degens: most exposure at 25x and above.
    "high": Ladder("high", (25, 50, 100, 125), (0.20, 0.35, 0.30, 0.15)),
    # Swing traders: low leverage, long-lived positions.
    "swing": Ladder("swing", (3, 5, 10, 25), (0.25, 0.35, 0.30, 0.10)),
    # CoinGlass-style legend tiers.
    "coinglass": Ladder("coinglass", (10, 25, 50, 100), (0.35, 0.30, 0.20, 0.15)),
}


def _fitted_presets() -> None:
    """Presets chosen by the accuracy suite on recorded liquidations (engine/model/fitted.py, generated)."""
    for name, d in FITTED_LADDERS.items():
        LADDERS[name] = Ladder(
            name,
            tuple(float(x) for x in d["leverage"]),  # type: ignore[attr-defined]
            tuple(float(x) for x in d["weights"]),  # type: ignore[attr-defined]
            tuple(float(x) for x in d["half_life_hours"]),  # type: ignore[attr-defined]
            str(d["fitted_on"]),
            None if d.get("volume_proxy_fraction") is None else float(d["volume_proxy_fraction"]),  # type: ignore[arg-type]
        )


_fitted_presets()


def parse_ladder(spec: str | Ladder) -> Ladder:
    """A preset name, or JSON: {"5": 0.2, "10": 0.3, ...} or
    {"name": "mine", "leverage": [5, 10], "weights": [1, 2], "half_life_hours": [720, 240]}."""
    if isinstance(spec, Ladder):
        return spec
    spec = spec.strip()
    if spec in LADDERS:
        return LADDERS[spec]
    if not spec.startswith("{"):
        raise LadderError(f"unknown ladder {spec!r}; presets: {', '.join(LADDERS)} (or give JSON)")
    try:
        obj = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise LadderError(f"ladder JSON does not parse: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise LadderError("ladder JSON must be an object")
    try:
        if "leverage" in obj:
            return Ladder(
                str(obj.get("name", "custom")),
                tuple(float(x) for x in obj["leverage"]),
                tuple(float(x) for x in obj["weights"]),
                None if obj.get("half_life_hours") is None else tuple(float(x) for x in obj["half_life_hours"]),
                str(obj.get("fitted_on") or ""),
                None if obj.get("volume_proxy_fraction") is None else float(obj["volume_proxy_fraction"]),
            )
        pairs = sorted((float(k.rstrip("xX")), float(v)) for k, v in obj.items())
    except (KeyError, TypeError, ValueError) as exc:
        raise LadderError(f"ladder JSON is not a ladder: {exc}") from None
    return Ladder("custom", tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


@dataclass(frozen=True)
class ModelParams:
    """Everything the estimate depends on. Shown in every face, so a reader can check the assumptions."""

    ladder: Ladder = field(default_factory=lambda: LADDERS["default"])
    exchange: str = "binance"  # whose maintenance-margin tiers to use
    coin: str = "BTC"
    contract: str = "linear"  # linear (USDT) or inverse (coin-margined)
    typical_position_usd: float = 10_000.0  # position size used to pick a margin bracket
    # Entries spread inside each bar: fractions of the bar's low->high range, with weights.
    entry_anchors: tuple[float, ...] = (0.2, 0.5, 0.8)
    entry_weights: tuple[float, ...] = (0.25, 0.5, 0.25)
    side_tilt: float = 0.5  # how far taker imbalance (or candle direction) shifts exposure between sides
    seed_mode: str = "auto"  # auto | oi | volume
    volume_proxy_fraction: float = 0.1  # new leveraged exposure per USD traded, when OI is unknown
    decay: bool = True  # per-tier half-life decay (ladder half-lives)
    shrink_on_oi_drop: bool = True  # falling OI closes positions proportionally
    wick_clear: float = 1.0  # share of a level cleared when only a wick reaches it (1 = all)
    resolution: float = 0.0005  # price grid step of the level book (0.05%, log-spaced)

    def __post_init__(self) -> None:
        if self.seed_mode not in ("auto", "oi", "volume"):
            raise LadderError(f"seed mode {self.seed_mode!r}: use auto, oi or volume")
        if self.contract not in ("linear", "inverse"):
            raise LadderError(f"contract {self.contract!r}: use linear or inverse")
        if not (0.0 < self.wick_clear <= 1.0):
            raise LadderError("wick_clear must be in (0, 1]")
        if not (0.0 <= self.side_tilt <= 1.0):
            raise LadderError("side_tilt must be in [0, 1]")
        if not (1e-5 <= self.resolution <= 0.05):
            raise LadderError("resolution must be between 0.001% and 5%")
        if len(self.entry_anchors) != len(self.entry_weights) or not self.entry_anchors:
            raise LadderError("entry anchors and weights must pair up")
        if any(not (0.0 <= a <= 1.0) for a in self.entry_anchors):
            raise LadderError("entry anchors are fractions of the bar range, in [0, 1]")
        if self.volume_proxy_fraction <= 0 or self.typical_position_usd <= 0:
            raise LadderError("volume_proxy_fraction and typical_position_usd must be positive")

    @property
    def proxy_fraction(self) -> float:
        """The seed fraction in use: the ladder's fitted one when it carries one, else this field's."""
        fitted = self.ladder.volume_proxy_fraction
        return float(fitted) if fitted is not None and fitted > 0 else self.volume_proxy_fraction

    # ---- derived, per tier ----
    def brackets(self) -> tuple[Bracket, ...]:
        """The margin bracket each tier's typical position sits in."""
        table = tier_table(self.exchange, self.coin)
        return tuple(table.bracket_for(lev, self.typical_position_usd) for lev in self.ladder.leverage)

    def mmr(self) -> np.ndarray:
        return np.array([b.mmr for b in self.brackets()])

    def liquidation_factors(self) -> np.ndarray:
        """(2, T): liquidation price / entry per side and tier, by the exchange's published isolated
        formula with each tier's bracket (maintenance rate and amount at the typical position size)."""
        br = self.brackets()
        lev = np.asarray(self.ladder.leverage, dtype=np.float64)
        mmr = np.array([b.mmr for b in br])
        cum_rate = np.array([b.cum for b in br]) / self.typical_position_usd
        return np.stack(
            [liquidation_factor(lev, mmr, side, self.contract, self.exchange, cum_rate) for side in (LONG, SHORT)]
        )

    def decay_rates(self) -> np.ndarray:
        """Per-tier decay rate per second (0 when decay is off)."""
        if not self.decay:
            return np.zeros(len(self.ladder.leverage))
        hl = np.array(self.ladder.half_lives(), dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.where(hl > 0, math.log(2.0) / (hl * 3600.0), 0.0)

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for the UIs and file headers."""
        table = tier_table(self.exchange, self.coin)
        return {
            "ladder": self.ladder.name,
            "fitted_on": self.ladder.fitted_on or "not fitted: an assumption from the field",
            "accuracy": HEADLINE.get(self.ladder.name, "not measured for this ladder"),
            "accuracy_suite": SUITE,
            "tiers": [
                {"leverage": lev, "weight": round(w, 4), "mmr": float(m), "half_life_hours": round(h, 1) if self.decay else None}
                for lev, w, m, h in zip(
                    self.ladder.leverage, self.ladder.weights, self.mmr(), self.ladder.half_lives(), strict=True
                )
            ],
            "margin_table": f"{table.exchange} {table.symbol} {table.effective}",
            "liquidation_formula": f"{canonical_exchange(self.exchange)} isolated, {self.contract}, maintenance margin on the "
            + ("entry value" if MM_BASIS[canonical_exchange(self.exchange)] == "entry" else "value at the liquidation price"),
            "contract": self.contract,
            "entry_anchors": list(self.entry_anchors),
            "entry_weights": list(self.entry_weights),
            "side_tilt": self.side_tilt,
            "seed_mode": self.seed_mode,
            "volume_proxy_fraction": self.proxy_fraction,
            "decay": self.decay,
            "shrink_on_oi_drop": self.shrink_on_oi_drop,
            "wick_clear": self.wick_clear,
            "resolution": self.resolution,
        }
