"""The server's settings: typed, immutable, one documented field each (built by ``server.cli`` or tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Timeframes the chart offers (the engine also knows 1m; the API accepts it too).
CHART_TIMEFRAMES = ("5m", "15m", "1h", "4h", "1d", "1w")
API_TIMEFRAMES = ("1m",) + CHART_TIMEFRAMES


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Origins (scheme://host[:port]) allowed to open the WebSocket and to read the REST API from another
    # page (CORS). The server's own origin is always allowed; "*" allows any.
    allow_origins: tuple[str, ...] = ()
    # Seconds between `heartbeat` messages on the WebSocket (WebSocket-level pings use the same period).
    heartbeat_s: float = 10.0
    # Messages a WebSocket connection may have waiting before its subscriptions are dropped and resynced.
    queue_size: int = 256
    # Subscriptions one WebSocket connection may hold.
    max_subscriptions: int = 8
    # Minimum seconds between two liquidation-map updates pushed to a subscription.
    map_interval_s: float = 1.0
    # Minimum seconds between two recomputations of the live heatmap column for one view.
    column_interval_s: float = 0.25
    # The portfolio exposure limit /api/v1/risk uses when the request gives none (config file [risk]).
    risk_limit: float = 0.10
    # Threads for numpy work (views), so the event loop never blocks on it.
    workers: int = 4
    # While a market's views are recomputed after a change, REST callers may get the previous answer if
    # it is at most this many seconds old (stale-while-revalidate; 0 = always wait for the new one).
    # The WebSocket is the live path; this keeps REST latency flat when a feed ticks several times a second.
    max_stale_s: float = 1.0
    # Cached view responses kept per market (LRU).
    cache_entries: int = 256
    # Default heatmap size for the page and the API.
    default_bins: int = 200
    default_columns: int = 300
    extra: dict[str, str] = field(default_factory=dict)  # free-form labels shown in /api/v1/health

    def origin_allowed(self, origin: str, own_host: str) -> bool:
        """Same host as the server (any scheme) or listed. ``own_host`` is the request's Host header."""
        if "*" in self.allow_origins:
            return True
        origin = origin.rstrip("/")
        if origin in (o.rstrip("/") for o in self.allow_origins):
            return True
        host = origin.split("://", 1)[-1]
        return bool(own_host) and host.lower() == own_host.lower()
