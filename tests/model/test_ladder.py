"""Leverage ladders: presets, custom JSON, the errors a user sees, and the parameters the views show."""

import json
import math

import pytest

from engine.model import LADDERS, Ladder, LadderError, ModelParams, parse_ladder
from engine.model.ladder import default_half_life_hours


def test_presets_are_normalised_and_labelled():
    for name, ladder in LADDERS.items():
        assert ladder.name == name
        assert sum(ladder.weights) == pytest.approx(1.0)
        assert list(ladder.leverage) == sorted(ladder.leverage)
    assert LADDERS["default"].describe() == "5x 15%, 10x 30%, 25x 25%, 50x 20%, 100x 10%"
    assert LADDERS["coinglass"].labels == ("10x", "25x", "50x", "100x")


def test_custom_ladders_from_json():
    short = parse_ladder('{"10x": 2, "5": 1, "50X": 1}')
    assert short.leverage == (5.0, 10.0, 50.0) and short.weights == pytest.approx((0.25, 0.5, 0.25))
    full = parse_ladder(
        json.dumps({"name": "mine", "leverage": [3, 20], "weights": [3, 1], "half_life_hours": [100, 0]})
    )
    assert full.name == "mine" and full.weights == (0.75, 0.25) and full.half_lives() == (100.0, 0.0)
    assert parse_ladder(full.to_json()) == full
    assert parse_ladder(" high ") is LADDERS["high"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("degen", "unknown ladder 'degen'; presets: default, high, swing, coinglass"),
        ("{not json", "ladder JSON does not parse"),
        ("[1, 2]", "unknown ladder"),
        ('{"leverage": [5, 10], "weights": [1]}', "needs as many weights as leverage tiers"),
        ('{"5": -1, "10": 1}', "weights must be non-negative"),
        ('{"500": 1}', "leverage must be between 1x and 200x"),
        ('{"5": 0, "10": 0}', "not all zero"),
        ('{"leverage": [5, 5], "weights": [1, 1]}', "a leverage appears twice"),
        ('{"five": 1}', "ladder JSON is not a ladder"),
    ],
)
def test_bad_ladders_say_why_in_one_line(spec, message):
    with pytest.raises(LadderError) as err:
        parse_ladder(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_half_lives_follow_the_field_presets():
    # peer C's per-tier half-lives: 100x 12h, 50x 1d, 25x ~3d, 10x 10d, 5x 30d, 3x 60d
    assert default_half_life_hours(100) == pytest.approx(12.0)
    assert default_half_life_hours(50) == pytest.approx(24.0)
    assert default_half_life_hours(3) == pytest.approx(1440.0)
    assert default_half_life_hours(200) == pytest.approx(12.0)  # clamped at the ends
    between = default_half_life_hours(math.sqrt(50 * 100))  # halfway in log-leverage
    assert between == pytest.approx(math.sqrt(12.0 * 24.0))


def test_model_params_refuse_nonsense():
    for kw in (
        dict(seed_mode="magic"),
        dict(contract="quanto"),
        dict(wick_clear=0.0),
        dict(side_tilt=1.5),
        dict(resolution=0.5),
        dict(entry_anchors=(0.5,), entry_weights=(0.5, 0.5)),
        dict(entry_anchors=(1.5,), entry_weights=(1.0,)),
        dict(volume_proxy_fraction=0.0),
    ):
        with pytest.raises(LadderError):
            ModelParams(**kw)


def test_decay_rates_per_tier():
    p = ModelParams(ladder=Ladder("t", (10, 100), (1, 1), (24.0, 0.0)))
    rates = p.decay_rates()
    assert rates[0] == pytest.approx(math.log(2) / 86_400) and rates[1] == 0.0
    assert not ModelParams(decay=False).decay_rates().any()


def test_describe_shows_every_assumption():
    d = ModelParams().describe()
    assert d["ladder"] == "default" and len(d["tiers"]) == 5
    assert d["tiers"][4] == {"leverage": 100.0, "weight": 0.1, "mmr": 0.004, "half_life_hours": 12.0}
    assert d["margin_table"] == "binance BTC 2024-10-01"
    for key in ("contract", "entry_anchors", "side_tilt", "seed_mode", "wick_clear", "resolution", "liquidation_formula"):
        assert key in d
    json.dumps(d)  # the faces send it as JSON
