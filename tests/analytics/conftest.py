"""Fixtures for the analytics tests: small seeded markets (real data paths live in analytics_data.py)."""

import pytest

from engine.model import ModelParams, estimate
from engine.model.synthetic import synthetic_bars


@pytest.fixture(scope="session")
def synth_bars():
    return synthetic_bars(6000, seed=11)


@pytest.fixture(scope="session")
def synth_est(synth_bars):
    return estimate(synth_bars, ModelParams())
