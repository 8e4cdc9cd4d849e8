"""Shared fixtures for the analytics tests: the real data in ../shared/data and small seeded markets."""

from pathlib import Path

import pytest

from engine.model import ModelParams, estimate
from engine.model.synthetic import synthetic_bars

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CANDLES = DATA / "candles_1h_binance_bybit_okx_2025-03_2026-03.csv.gz"
OKX_LIQ = DATA / "okx_liquidations_2026-03-04.csv.gz"
DEPTH = DATA / "binance_usdm_btcusdt_depth_trades_2024-08-08.gz"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data file {path.name} is not present")
    return path


@pytest.fixture(scope="session")
def synth_bars():
    return synthetic_bars(6000, seed=11)


@pytest.fixture(scope="session")
def synth_est(synth_bars):
    return estimate(synth_bars, ModelParams())
