"""The estimation model: pure numpy, no IO (tests/test_purity.py enforces it)."""

from .bars import TIMEFRAMES, Bars, BarsError, bucket_start, timeframe_name, timeframe_seconds
from .estimate import Estimate, LevelBook, Realised, daily_volume_usd, estimate
from .incremental import IncrementalEngine
from .ladder import LADDERS, Ladder, LadderError, ModelParams, parse_ladder
from .margin import TIER_TABLES, liquidation_price, tier_table
from .views import Heatmap, LiquidationMap, ViewError, Zone, find_zones, price_edges

__all__ = [
    "TIMEFRAMES", "Bars", "BarsError", "bucket_start", "timeframe_name", "timeframe_seconds", "Estimate", "LevelBook",
    "Realised", "daily_volume_usd", "estimate", "IncrementalEngine", "LADDERS", "Ladder", "LadderError",
    "ModelParams", "parse_ladder", "TIER_TABLES", "liquidation_price", "tier_table", "Heatmap",
    "LiquidationMap", "ViewError", "Zone", "find_zones", "price_edges",
]
