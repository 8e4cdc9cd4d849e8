"""Where the analytics tests find the real data (../shared/data, relative to the repo root)."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CANDLES = DATA / "candles_1h_binance_bybit_okx_2025-03_2026-03.csv.gz"
OKX_LIQ = DATA / "okx_liquidations_2026-03-04.csv.gz"
BYBIT_15M = DATA / "bybit_btcusdt_15m_2024-01_06.csv.gz"
BYBIT_LIQ = DATA / "bybit_btcusdt_liquidations_2024-02_06.csv.gz"
DEPTH = DATA / "binance_usdm_btcusdt_depth_trades_2024-08-08.gz"


def need(path: Path) -> Path:
    """The file, or skip the test when the shared data is not on this machine."""
    if not path.exists():
        pytest.skip(f"shared data file {path.name} is not present")
    return path
