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
    # ---- limits under abuse (server/limits.py, server/budget.py; documented in server/PROTOCOL.md) ----
    # One memory budget in bytes for caches, send queues and work in flight (`--memory-budget`).
    memory_budget: int = 1024**3
    # WebSocket connections open at once (`--max-clients`); past it the upgrade gets 503 + Retry-After.
    max_clients: int = 1000
    # WebSocket connections one peer address may hold (`--max-clients-per-ip`); past it the upgrade gets
    # 429 + Retry-After. Behind a reverse proxy every client has the proxy's address: raise it there.
    max_clients_per_ip: int = 100
    # Bytes one WebSocket connection may have waiting to be sent (a snapshot must fit: ~4 MB at most).
    ws_queue_bytes: int = 16 * 1024 * 1024
    # Subscribe/unsubscribe/resync per connection: this many a second on average, bursts of ws_churn_burst.
    ws_churn_rate: float = 2.0
    ws_churn_burst: int = 12
    # Messages of any kind per connection: this many a second on average, bursts of ws_msg_burst.
    ws_msg_rate: float = 50.0
    ws_msg_burst: int = 200
    # Seconds a client has to send a whole request's headers (slowloris) — also how long an idle
    # keep-alive connection stays open — and to send a body the server did not ask for.
    request_timeout_s: float = 10.0
    # Batch-sized requests (server.limits.HEAVY_CELLS): threads, requests admitted at once, per client.
    heavy_workers: int = 1
    heavy_waiting: int = 8
    heavy_per_client: int = 2
    # Share of the time the heavy lane may compute (it pauses after each job in proportion), so batch
    # work leaves the interpreter to the live pages.
    heavy_duty: float = 0.5
    # Other REST work: requests admitted at once, and per client.
    light_waiting: int = 256
    light_per_client: int = 64
    # Seconds a cached answer, view or snapshot may go unused before it is dropped (memory returns to
    # the system after a burst instead of staying at the budget).
    cache_idle_s: float = 60.0
    # After batch-sized work stops (no heavy request for burst_quiet_s), entries unused for burst_idle_s
    # go at once: an attack's big answers do not stay a full cache_idle_s after it.
    burst_quiet_s: float = 5.0
    burst_idle_s: float = 10.0
    # Seconds between two of those checks (and cache prunes).
    prune_every_s: float = 5.0
    # Host header values accepted when the server listens on loopback only (besides localhost,
    # 127.0.0.1 and [::1]): a DNS-rebinding page reaches a loopback server under its own name.
    allow_hosts: tuple[str, ...] = ()
    # A cluster worker's internal REST address: its requests come from replicas, which name the client in
    # the X-Liqheat-Client header; work is counted per that client (never set on a public address).
    trust_client_header: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # free-form labels shown in /api/v1/health

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    def host_allowed(self, host_header: str) -> bool:
        """The Host header names this server (loopback) or one of ``allow_hosts``; any when not loopback."""
        if not self.loopback or "*" in self.allow_hosts:
            return True
        host = host_header.strip().lower()
        if host.startswith("["):  # [::1]:8000
            name = host[: host.find("]") + 1] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if name in ("localhost", "127.0.0.1", "[::1]", "::1"):
            return True
        if name.startswith("127.") and name.replace(".", "").isdigit():
            return True
        return name in (h.lower() for h in self.allow_hosts)

    def origin_allowed(self, origin: str, own_host: str) -> bool:
        """Same host as the server (any scheme) or listed. ``own_host`` is the request's Host header."""
        if "*" in self.allow_origins:
            return True
        origin = origin.rstrip("/")
        if origin in (o.rstrip("/") for o in self.allow_origins):
            return True
        host = origin.split("://", 1)[-1]
        return bool(own_host) and host.lower() == own_host.lower()
