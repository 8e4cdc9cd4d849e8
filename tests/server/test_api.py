"""The REST API against the real engine service: what a client reads must be the engine's numbers, every
bad parameter is a one-line 400, an unknown symbol a 404, and nothing answers 500."""

from __future__ import annotations

import asyncio
import base64
import gzip

import numpy as np
import pytest

from server.encoding import decode_sqrt_u8

BTC = "test:BTC/USDT:USDT"


def decode(payload: dict, side: str) -> np.ndarray:
    shape = (len(payload["times"]), len(payload["edges"]) - 1)
    return decode_sqrt_u8(base64.b64decode(payload[side]), payload["max_usd"], shape)


async def get_json(client, path: str, status: int = 200) -> dict:
    r = await client.get(path)
    assert r.status == status, (path, r.status, await r.text())
    assert r.content_type == "application/json"
    return await r.json()


async def test_symbols_lists_every_market_with_its_tiers(client):
    body = await get_json(client, "/api/v1/symbols")
    keys = [s["key"] for s in body["symbols"]]
    assert keys == [BTC, "test:ETH/USDT:USDT"]
    btc = body["symbols"][0]
    assert btc["tiers"] == ["5x", "10x", "25x", "50x", "100x"]
    assert btc["ticker"] == "TEST:BTCUSDT" and btc["price"] > 0
    assert "5m" in body["timeframes"] and "1w" in body["timeframes"]


async def test_any_spelling_of_a_symbol_finds_the_market(client):
    for name in ("BTC", "BTC/USDT:USDT", BTC, "TEST:BTCUSDT", "btcusdt"):
        body = await get_json(client, f"/api/v1/market?symbol={name}")
        assert body["key"] == BTC, name


async def test_candles_aggregate_one_minute_bars(client, hub):
    body = await get_json(client, "/api/v1/candles?symbol=BTC&timeframe=15m&limit=10")
    assert len(body["t"]) == 10 and np.all(np.diff(body["t"]) == 900)
    base = hub.get("BTC").bars
    t0 = body["t"][0]
    sel = (base.time >= t0) & (base.time < t0 + 900)
    assert body["h"][0] == pytest.approx(base.high[sel].max())
    assert body["l"][0] == pytest.approx(base.low[sel].min())
    assert body["o"][0] == pytest.approx(base.open[sel][0]) and body["c"][0] == pytest.approx(base.close[sel][-1])


async def test_candles_time_window(client):
    full = await get_json(client, "/api/v1/candles?symbol=BTC&timeframe=1h&limit=20000")
    t = full["t"]
    part = await get_json(client, f"/api/v1/candles?symbol=BTC&timeframe=1h&from={t[3]}&to={t[7]}")
    assert part["t"] == t[3:7]


async def test_heatmap_carries_the_engines_usd_at_candle_open_times(client, hub):
    svc = hub.get("BTC")
    body = await get_json(client, "/api/v1/heatmap?symbol=BTC&timeframe=5m&bins=120&columns=50")
    hm = svc.heatmap("5m", bins=120, columns=50)
    longs, shorts = hm.total()
    assert body["encoding"] == "sqrt-u8" and body["estimate"] is True
    assert body["times"] == (hm.times - 300).tolist()
    candles = await get_json(client, "/api/v1/candles?symbol=BTC&timeframe=5m&limit=50")
    assert body["times"] == candles["t"]  # one column per candle, keyed by the candle's open time
    assert body["max_usd"] == pytest.approx(max(longs.max(), shorts.max()))
    got_long, got_short = decode(body, "long"), decode(body, "short")
    # one byte per cell on a square-root scale: error at most about one level of 255
    tol = body["max_usd"] * 2.5 / 255
    assert np.max(np.abs(got_long - longs)) <= tol and np.max(np.abs(got_short - shorts)) <= tol
    assert (got_long > 0).sum() == (longs > 0).sum()  # a small non-zero cell never disappears


async def test_heatmap_json_encoding_and_tiers(client):
    q = "symbol=BTC&timeframe=15m&bins=40&columns=30&price_low=50000&price_high=80000"
    allt = await get_json(client, f"/api/v1/heatmap?{q}&encoding=json")
    assert len(allt["long"]) == 30 and len(allt["long"][0]) == 40
    assert allt["edges"][0] == pytest.approx(50000) and allt["edges"][-1] == pytest.approx(80000)
    total = np.array(allt["long"]) + np.array(allt["short"])
    by_tier = np.zeros_like(total)
    for tier in allt["tiers"]:
        one = await get_json(client, f"/api/v1/heatmap?{q}&encoding=json&tier={tier}")
        assert one["tier"] == tier
        by_tier += np.array(one["long"]) + np.array(one["short"])
    np.testing.assert_allclose(by_tier, total, rtol=1e-6, atol=0.05)
    by_index = await get_json(client, f"/api/v1/heatmap?{q}&encoding=json&tier=2")
    assert by_index["tier"] == "25x"


async def test_heatmap_cell_tier_mix_adds_up_to_the_cell(client):
    hm = await get_json(client, "/api/v1/heatmap?symbol=BTC&timeframe=1h&bins=30&columns=10&encoding=json")
    longs = np.array(hm["long"])
    c, b = np.unravel_index(np.argmax(longs), longs.shape)
    lo, hi = hm["edges"][b], hm["edges"][b + 1]
    cell = await get_json(
        client, f"/api/v1/heatmap/cell?symbol=BTC&timeframe=1h&time={hm['times'][c]}&price_low={lo}&price_high={hi}"
    )
    assert cell["time"] == hm["times"][c]
    assert sum(cell["long_usd"]) == pytest.approx(longs[c, b], rel=1e-6)
    assert len(cell["long_usd"]) == len(cell["tiers"]) == 5


async def test_map_zones_realised_model(client, hub):
    lmap = await get_json(client, "/api/v1/map?symbol=BTC&bins=100&span=0.2")
    assert len(lmap["edges"]) == 101 and len(lmap["long_tiers"]) == 5
    price = lmap["price"]
    centers = (np.array(lmap["edges"][1:]) + np.array(lmap["edges"][:-1])) / 2
    lb = np.array(lmap["long_below"])
    assert np.all(lb[centers > price] == 0)  # longs are liquidated below the price only
    assert np.all(np.diff(lb[centers <= price]) <= 1e-6)  # running outward (downwards) it only grows
    zones = await get_json(client, "/api/v1/zones?symbol=BTC")
    assert zones["zones"], "a synthetic market with rising OI has clusters"
    for z in zones["zones"]:
        assert z["grade"] in ("low", "elevated", "high")
        assert (z["side"] == "long") == (z["price_high"] <= price * 1.0001 or z["distance_pct"] <= 0)
    realised = await get_json(client, "/api/v1/realised?symbol=BTC&timeframe=1h")
    assert len(realised["t"]) == len(realised["long_usd"]) and realised["estimate"] is True
    model = await get_json(client, "/api/v1/model?symbol=BTC")
    assert model["estimate"] is True and [t["leverage"] for t in model["tiers"]] == [5, 10, 25, 50, 100]


async def test_feed_liquidations_are_listed(client, feed, hub, wait_for):
    feed.push_liquidation(usd=123_456.0)
    await wait_for(lambda: len(hub.get("BTC").liquidations()) == 1)
    body = await get_json(client, "/api/v1/liquidations?symbol=BTC")
    assert [e["usd"] for e in body["events"]] == [pytest.approx(123_456.0)]
    assert body["events"][0]["side"] == "long"


async def test_views_refresh_when_a_bar_closes(client, feed, hub, wait_for):
    """Views are cached, but a new bar invalidates them: the next heatmap has the new candle."""
    q = "/api/v1/heatmap?symbol=BTC&timeframe=1m&bins=50&columns=5"
    before = await get_json(client, q)
    again = await get_json(client, q)
    assert again == before
    bar = feed.push_close()
    await wait_for(lambda: int(hub.get("BTC").bars.time[-1]) == int(bar.time[0]))

    async def has_new() -> bool:
        body = await get_json(client, q)
        return body["times"][-1] > before["times"][-1]

    for _ in range(200):
        if await has_new():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the heatmap never showed the new bar")


BAD = [
    ("/api/v1/heatmap", 400, "missing parameter 'symbol'"),
    ("/api/v1/heatmap?symbol=BTC&timeframe=7m", 400, "timeframe must be one of"),
    ("/api/v1/heatmap?symbol=BTC&bins=5", 400, "bins must be between 10 and 1000"),
    ("/api/v1/heatmap?symbol=BTC&bins=abc", 400, "bins must be an integer"),
    ("/api/v1/heatmap?symbol=BTC&columns=2000&bins=1000", 400, "columns x bins must be at most"),
    ("/api/v1/heatmap?symbol=BTC&tier=33x", 400, "unknown tier"),
    ("/api/v1/heatmap?symbol=BTC&tier=9", 400, "tier index must be between 0 and 4"),
    ("/api/v1/heatmap?symbol=BTC&price_low=100", 400, "give both price_low and price_high"),
    ("/api/v1/heatmap?symbol=BTC&price_low=100&price_high=50", 400, "must be above price_low"),
    ("/api/v1/heatmap?symbol=BTC&price_low=-1&price_high=50", 400, "price_low must be above 0"),
    ("/api/v1/heatmap?symbol=BTC&price_low=nan&price_high=50", 400, "price_low must be above 0"),
    ("/api/v1/heatmap?symbol=BTC&log=maybe", 400, "log must be true or false"),
    ("/api/v1/heatmap?symbol=BTC&encoding=png", 400, "encoding must be one of"),
    ("/api/v1/heatmap?symbol=BTC&from=100&to=50", 400, "must be after from"),
    ("/api/v1/heatmap?symbol=BTC&from=10&to=20", 400, "no candles in that range"),
    ("/api/v1/heatmap?symbol=BTC&bogus=1", 400, "unknown parameter 'bogus'"),
    ("/api/v1/heatmap?symbol=BTC&bins=20&bins=30", 400, "given more than once"),
    ("/api/v1/heatmap?symbol=XYZ", 404, "unknown symbol 'XYZ'"),
    ("/api/v1/candles?symbol=BTC&limit=0", 400, "limit must be between 1 and 20000"),
    ("/api/v1/candles?symbol=", 400, "parameter 'symbol' is empty"),
    ("/api/v1/realised?symbol=BTC&timeframe=", 400, "parameter 'timeframe' is empty"),
    ("/api/v1/map?symbol=BTC&span=0", 400, "span must be at least 0.001"),
    ("/api/v1/map?symbol=BTC&span=2", 400, "span must be at least 0.001 and at most 0.9"),
    ("/api/v1/zones?symbol=NOPE", 404, "unknown symbol"),
    ("/api/v1/heatmap/cell?symbol=BTC&time=0&price_low=1&price_high=2", 400, "no candles in that range"),
    ("/api/v1/heatmap/cell?symbol=BTC&price_low=1&price_high=2", 400, "missing parameter 'time'"),
    ("/api/v1/liquidations?symbol=BTC&limit=99999", 400, "limit must be between 1 and 5000"),
    ("/api/v1/model?symbol=ETH&x=1", 400, "unknown parameter 'x'"),
    ("/api/v1/nothing-here", 404, "Not Found"),
]


@pytest.mark.parametrize(("path", "status", "fragment"), BAD)
async def test_bad_requests_get_one_line_json_errors(client, path, status, fragment):
    body = await get_json(client, path, status)
    assert set(body) == {"error"}
    assert fragment in body["error"] and "\n" not in body["error"]


async def test_reads_are_open_to_other_pages(client):
    r = await client.get("/api/v1/symbols", headers={"Origin": "https://elsewhere.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = await client.options("/api/v1/heatmap", headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"})
    assert r.status == 204 and "GET" in r.headers["Access-Control-Allow-Methods"]
    r = await client.get("/static/liqheat-overlay.js")
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "export function attachLiquidationHeatmap" in await r.text()


async def test_health_and_openapi(client):
    health = await get_json(client, "/api/v1/health")
    assert health["status"] == "ok" and {m["key"] for m in health["markets"]} == {BTC, "test:ETH/USDT:USDT"}
    doc = await get_json(client, "/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/heatmap", "/api/v1/candles", "/api/v1/map", "/api/v1/zones"} <= set(doc["paths"])


async def test_pages_are_served(client):
    for path, marker in (("/", "liqheat-overlay"), ("/example", "attachLiquidationHeatmap")):
        r = await client.get(path)
        assert r.status == 200
        html = await r.text()
        assert "lightweight-charts.standalone.production.js" in html
        assert marker in html or marker in (await (await client.get("/static/app.js")).text())


async def test_big_answers_are_gzipped_once_and_revalidate_with_etags(client):
    q = "/api/v1/heatmap?symbol=BTC&timeframe=5m&bins=200&columns=300"
    plain = await client.get(q, headers={"Accept-Encoding": "identity"})
    assert plain.headers.get("Content-Encoding") is None
    raw = await plain.read()
    zipped = await client.get(q, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    body = await zipped.read()
    assert len(body) < len(raw) / 2 and gzip.decompress(body) == raw
    etag = plain.headers["ETag"]
    again = await client.get(q, headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag


async def test_zones_carry_touch_probabilities_that_grow_with_the_horizon(client):
    body = await get_json(client, "/api/v1/zones?symbol=BTC")
    assert body["volatility"]["sigma_hour_pct"] > 0
    for z in body["zones"]:
        assert 0 <= z["touch_1h"] <= z["touch_4h"] <= z["touch_24h"] <= 1
        assert z["touch_probability"] == z["touch_24h"]
    near = min(body["zones"], key=lambda z: abs(z["distance_pct"]))
    far = max(body["zones"], key=lambda z: abs(z["distance_pct"]))
    assert near["touch_24h"] >= far["touch_24h"]


async def test_position_risk(client, hub):
    price = hub.get("BTC").last_price
    long = await get_json(client, f"/api/v1/risk?symbol=BTC&side=long&entry={price}&leverage=20&size=10000")
    assert long["liquidation_price"] < price and long["distance_pct"] < 0
    assert long["liquidation_price"] == pytest.approx(price * (1 - 1 / 20) / (1 - long["mmr"]), rel=1e-6)
    assert set(long["touch"]) == {"1h", "4h", "24h"} and long["grade"] in ("none", "low", "elevated", "high")
    short = await get_json(client, f"/api/v1/risk?symbol=BTC&side=short&entry={price}&leverage=50")
    assert short["liquidation_price"] > price
    # already past its liquidation price at the current price: a one-line 400, not a silly number
    bad = await get_json(client, f"/api/v1/risk?symbol=BTC&side=long&entry={price * 1.5}&leverage=50", 400)
    assert "already reached" in bad["error"]
    refused = await get_json(client, f"/api/v1/risk?symbol=BTC&entry={price}&leverage=125&size=900000000", 400)
    assert "allows at most" in refused["error"] or "bracket" in refused["error"]


async def test_cascade_and_alerts(client):
    casc = await get_json(client, "/api/v1/cascade?symbol=BTC")
    assert casc["down"]["end_price"] <= casc["price"] <= casc["up"]["end_price"]
    alerts = await get_json(client, "/api/v1/alerts?symbol=BTC")
    assert [r["type"] for r in alerts["rules"]] == ["proximity", "grade_change", "cascade"]
    assert alerts["rules"][0]["within_pct"] == 1.0 and alerts["rules"][0]["min_grade"] == "elevated"
    assert alerts["clock"] == "market" and alerts["webhook"] is None and isinstance(alerts["alerts"], list)


async def test_zones_are_ranked_by_fourth_root_usd_times_touch_with_raw_usd_still_shown(client):
    body = await get_json(client, "/api/v1/zones?symbol=BTC")
    zones = body["zones"]
    assert body["weight"] == "touch" and body["horizon_hours"] == 4.0 and len(zones) >= 3
    assert [z["rank"] for z in zones] == list(range(1, len(zones) + 1))
    for z in zones:
        assert z["score"] == pytest.approx(z["usd"] ** 0.25 * z["touch_4h"]) and z["usd"] > 0
        assert z["risk_usd_4h"] == pytest.approx(z["usd"] * z["touch_4h"])
        assert z["persistence_s"] >= 0 and isinstance(z["id"], int) and 0 <= z["confluence"] <= 3
    # a fresh order is the plain score order (hysteresis only holds places already taken)
    assert [z["score"] for z in zones] == sorted((z["score"] for z in zones), reverse=True)
    by_usd = (await get_json(client, "/api/v1/zones?symbol=BTC&weight=usd"))["zones"]
    assert [z["usd"] for z in by_usd] == sorted((z["usd"] for z in by_usd), reverse=True)
    assert {z["id"] for z in by_usd} == {z["id"] for z in zones}  # the same zones, the same identities
    await get_json(client, "/api/v1/zones?symbol=BTC&weight=heat", 400)


async def test_the_risk_weighted_map_is_the_map_times_touch_probability(client):
    plain = await get_json(client, "/api/v1/map?symbol=BTC&bins=100")
    weighted = await get_json(client, "/api/v1/map?symbol=BTC&bins=100&weight=touch&horizon=4")
    assert plain["weight"] == "usd" and weighted["weight"] == "touch" and weighted["horizon_hours"] == 4
    assert plain["edges"] == weighted["edges"]
    p, w = np.array(plain["long"] + plain["short"]), np.array(weighted["long"] + weighted["short"])
    assert np.all(w <= p + 0.01) and w.sum() < 0.9 * p.sum() and w.sum() > 0
    # the bins nearest the price keep most of their weight, the far ones lose most
    near = int(np.argmin(np.abs(np.array(plain["edges"][:-1]) - plain["price"])))
    assert weighted["long"][near] >= 0.5 * plain["long"][near]


async def test_sessions_and_the_funding_cycle(client, hub):
    body = await get_json(client, "/api/v1/sessions?symbol=BTC")
    names = [s["session"] for s in body["sessions"]]
    assert names == ["Asia", "Europe", "US"] and body["current_session"] in names
    realised = hub.get("BTC").realised("1h")
    total = float(realised.long_usd.sum() + realised.short_usd.sum())
    assert sum(s["usd"] for s in body["sessions"]) == pytest.approx(total, rel=1e-9)
    assert sum(s["share"] for s in body["sessions"]) == pytest.approx(1.0) if total else True
    hours = sum(s["hours_observed"] for s in body["sessions"])
    assert hours == pytest.approx((body["span"][1] - body["span"][0]) / 3600)
    cycle = body["funding_cycle"]
    assert cycle["interval_hours"] == 8.0 and cycle["hour"] == list(range(8)) and sum(cycle["slots"]) > 0
    assert 0 < body["funding"]["seconds_left"] <= 8 * 3600
    await get_json(client, "/api/v1/sessions?symbol=BTC&days=0", 400)


async def test_a_portfolio_shows_exposure_inside_clusters_against_the_limit(client, hub):
    import dataclasses
    import json
    from urllib.parse import quote

    svc = hub.get("BTC")
    price = svc.last_price
    # the scripted market has no traded volume to grade against: call its largest long zone "high"
    cluster = max((z for z in svc.zones(bins=400, span=0.5) if z.side == "long"), key=lambda z: z.usd)
    graded = svc.zones

    def zones(bins: int = 200, span: float = 0.25) -> list:
        return [dataclasses.replace(z, grade="high") if z.side == "long" and z.peak_price == cluster.peak_price else z
                for z in graded(bins=bins, span=span)]

    svc.zones = zones  # type: ignore[method-assign]
    # a long whose liquidation lands inside that cluster: solve entry from the liquidation formula
    single = await get_json(client, f"/api/v1/risk?symbol=BTC&side=long&entry={price}&leverage=20&size=1000")
    factor = single["liquidation_price"] / price
    entry_in = cluster.peak_price / factor
    positions = [{"side": "long", "entry": entry_in, "leverage": 20, "size": 1000},
                 {"symbol": "ETH", "side": "short", "entry": hub.get("ETH").last_price, "leverage": 2, "size": 9000}]
    q = quote(json.dumps(positions))
    body = await get_json(client, f"/api/v1/risk?symbol=BTC&positions={q}&limit=0.05")
    first, second = body["positions"]
    assert first["in_cluster"] and first["grade"] in ("elevated", "high")
    assert first["zone"]["price_low"] <= first["liquidation_price"] <= first["zone"]["price_high"]
    assert second["symbol"].endswith("ETH/USDT:USDT") and not second["in_cluster"]
    assert body["portfolio_usd"] == 10_000 and body["exposed_usd"] == 1000
    assert body["exposed_share"] == pytest.approx(0.1) and body["over_limit"] and body["limit_share"] == 0.05
    # a new position liquidated in the same cluster: the largest size that keeps the share at 20%
    new = quote(json.dumps({"side": "long", "entry": entry_in, "leverage": 20, "size": 5000}))
    body = await get_json(client, f"/api/v1/risk?symbol=BTC&positions={q}&limit=0.2&new={new}")
    s = body["suggestion"]
    assert s["in_cluster"] and s["max_usd"] == pytest.approx((0.2 * 10_000 - 1000) / 0.8)
    assert (1000 + s["max_usd"]) / (10_000 + s["max_usd"]) == pytest.approx(0.2)
    assert s["suggested_usd"] == pytest.approx(s["max_usd"] * (1 - s["cut_pct"] / 100))
    # one impossible position is reported in its row, the rest still answer
    bad = quote(json.dumps([{"side": "long", "entry": price * 1.5, "leverage": 50, "size": 100}, positions[1]]))
    body = await get_json(client, f"/api/v1/risk?symbol=BTC&positions={bad}")
    assert "already reached" in body["positions"][0]["error"] and body["positions"][1]["liquidation_price"] > 0
    for broken in ("not-json", quote('{"side": "long"}'), quote('[{"side": "sideways", "entry": 1, "leverage": 2}]'),
                   quote(json.dumps([positions[0]] * 21))):
        err = await get_json(client, f"/api/v1/risk?symbol=BTC&positions={broken}", 400)
        assert "\n" not in err["error"]


async def test_weekly_realised_and_hover_line_up_with_the_weekly_candles(client):
    """1w: weeks start on Monday everywhere — the realised pane's bars sit on the candles (they were a day
    off) and the hover lookup of a weekly candle answers (it was a 400)."""
    candles = await get_json(client, "/api/v1/candles?symbol=BTC&timeframe=1w")
    realised = await get_json(client, "/api/v1/realised?symbol=BTC&timeframe=1w")
    assert candles["t"] and set(realised["t"]) <= set(candles["t"]) and realised["t"]
    t = candles["t"][-1]
    price = candles["c"][-1]
    cell = await get_json(client, f"/api/v1/heatmap/cell?symbol=BTC&timeframe=1w&time={t}"
                                  f"&price_low={price * 0.9}&price_high={price * 1.1}")
    assert cell["time"] == t and cell["long_total"] + cell["short_total"] > 0
    # any time inside the week finds the same candle
    cell = await get_json(client, f"/api/v1/heatmap/cell?symbol=BTC&timeframe=1w&time={t + 3 * 86_400 + 17}"
                                  f"&price_low={price * 0.9}&price_high={price * 1.1}")
    assert cell["time"] == t
    heat = await get_json(client, "/api/v1/heatmap?symbol=BTC&timeframe=1w&encoding=json")
    assert heat["times"] == candles["t"][-len(heat["times"]):]
