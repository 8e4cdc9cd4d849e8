"""Exchange feeds: what a history download costs through the real ccxt client, and the pure parts' speed.

Measured in this run against the loopback fake exchange (tests/feeds/fake_exchange.py), which answers in
Binance, Bybit and OKX JSON — no internet. Each table shows the figures side by side with their ratio.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "feeds"))

from fake_exchange import FakeClock, FakeExchange, floor_minute, okx_liquidation_orders  # noqa: E402

from engine.feeds.exchange import ExchangeFeed  # noqa: E402
from engine.feeds.normalise import liquidation_rows, to_liquidation  # noqa: E402
from engine.feeds.retry import Backoff  # noqa: E402


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=REPO).stdout) for _ in range(3)]
    return min(runs)


async def _download(fake: FakeExchange, venue: str, days: float, **kw: object) -> tuple[float, int, int]:
    fake.requests.clear()
    feed = ExchangeFeed(venue, route_through=fake.base, clock=FakeClock(fake), backoff=Backoff(0.001, 0.01),
                        **kw)  # type: ignore[arg-type]
    await feed.markets()
    t = time.perf_counter()
    bars = await feed.history("BTC", since=fake.now_ms // 1000 - int(days * 86_400))
    took = time.perf_counter() - t
    await feed.close()
    return took, len(bars), len([r for r in fake.requests if r.route != "markets"])


async def _downloads() -> None:
    fake = await FakeExchange(floor_minute(time.time() * 1000) + 5_000, days=31, future_hours=0.1).start()
    try:
        print("30 days of 1-minute BTC bars + OI + funding, loopback, rate limiter OFF")
        print(f"{'venue':<12} {'bars':>7} {'requests':>9} {'seconds':>8} {'bars/s':>9}")
        for venue in ("binanceusdm", "bybit", "okx"):
            took, n, req = await _download(fake, venue, 30, rate_limit=False)
            print(f"{venue:<12} {n:>7} {req:>9} {took:>8.2f} {n / took:>9.0f}")
        print()
        print("concurrency with 20 ms of latency per request (binanceusdm, 30 days, limiter off)")
        fake.latency_s = 0.020
        one, n, _ = await _download(fake, "binanceusdm", 30, rate_limit=False, concurrency=1)
        four, _, _ = await _download(fake, "binanceusdm", 30, rate_limit=False, concurrency=4)
        print(f"{'1 in flight':<14} {one:>6.2f} s   {'4 in flight':<12} {four:>6.2f} s   ratio {one / four:.1f}x")
        fake.latency_s = 0.0
        print()
        print("7 days with ccxt's rate limiter ON (what a real download is paced at)")
        print(f"{'venue':<12} {'requests':>9} {'seconds':>8} {'s/request':>10}")
        for venue in ("binanceusdm", "bybit", "okx"):
            took, _, req = await _download(fake, venue, 7, rate_limit=True)
            print(f"{venue:<12} {req:>9} {took:>8.2f} {took / req:>10.3f}")
    finally:
        await fake.close()


def _normalise() -> None:
    t0 = 1_772_624_144_000
    details = [("sell" if i % 3 else "buy", "net", 1 + i % 50, 60_000 + i, t0 + i) for i in range(50)]
    frame = okx_liquidation_orders({"BTC-USDT-SWAP": details, "ETH-USDT-SWAP": details[:10]})
    n = 2000
    t = time.perf_counter()
    count = 0
    for _ in range(n):
        for raw in liquidation_rows("okx", frame):
            if raw.market_id == "BTC-USDT-SWAP" and to_liquidation("okx", raw, "BTC/USDT:USDT", 0.01):
                count += 1
    took = time.perf_counter() - t
    rows = n * 60
    print(f"OKX liquidation frames (60 details each): {rows / took:,.0f} rows/s read, "
          f"{count / took:,.0f} liquidations/s kept  (Binance's stream peaks near 1 per symbol per second)")


def main() -> None:
    base = _import_seconds("engine.feeds.exchange")
    ccxt = _import_seconds("ccxt.pro")
    print(f"import engine.feeds.exchange {base * 1000:6.0f} ms   import ccxt.pro {ccxt * 1000:6.0f} ms   "
          f"ratio {ccxt / max(base, 1e-9):.0f}x  (ccxt loads in a worker thread on first use)")
    print()
    asyncio.run(_downloads())
    print()
    _normalise()


if __name__ == "__main__":
    main()
