"""A Bybit liquidation as the exchange feed hands it over (bankruptcy price printed, liquidation price
estimated) reaches the REST list and the live WebSocket with both prices and what each one is."""

from __future__ import annotations

import json

import pytest
from test_ws import recv_until, subscribed

from engine.feeds.normalise import liquidation_rows, to_liquidation

# a real Bybit v5 allLiquidation row (2026-10-09): a long, bankrupt at 82,396.9
FRAME = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1791565601482,
         "data": [{"T": 1791565600992, "s": "BTCUSDT", "S": "Buy", "v": "0.006", "p": "82396.90"}]}


def _push_bybit_event(feed) -> None:
    [raw] = liquidation_rows("bybit", FRAME)
    liq = to_liquidation("bybit", raw, "BTC/USDT:USDT", 1.0)
    feed.queues["BTC/USDT:USDT"].put_nowait(liq)


async def test_rest_and_websocket_events_carry_the_estimated_and_the_reported_price(client, feed, hub, wait_for):
    ws, _ = await subscribed(client)
    _push_bybit_event(feed)
    feed.push_liquidation(usd=50_000.0)  # a fill-priced event (Binance-style) next to it
    msgs = await recv_until(ws, lambda m: m["type"] == "liquidation" and m["price_kind"] == "fill")
    live = [m for m in msgs if m["type"] == "liquidation"]
    await ws.close()
    body = await (await client.get("/api/v1/liquidations?symbol=BTC")).json()
    for events in (live, body["events"]):
        bankrupt, fill = events
        assert bankrupt["price_kind"] == "bankruptcy" and bankrupt["reported_price"] == 82_396.9
        assert bankrupt["price"] == pytest.approx(82_396.9 * 1.005)  # one maintenance margin (0.5%) higher
        assert bankrupt["usd"] == pytest.approx(0.006 * 82_396.9)
        assert fill["price_kind"] == "fill" and fill["reported_price"] == fill["price"]
    json.dumps(body)  # plain JSON numbers and strings


async def test_data_health_names_the_open_interest_field(client, feed):
    """An exchange feed says which venue field its OI comes from; the market info's health shows it."""
    source = {"history": "open-interest openInterest ÷ 2 (base, both sides) × close",
              "live": "tickers singleOpenInterestValue (USD)", "counts": "one side"}
    feed.oi_source = lambda symbol: source
    body = await (await client.get("/api/v1/market?symbol=BTC")).json()
    assert body["health"]["oi_source"] == source
    health = await (await client.get("/api/v1/health")).json()
    assert all(m["oi_source"] == source for m in health["markets"])
