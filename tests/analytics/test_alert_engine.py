"""Alerts: rules, cooldown, and a webhook that retries, gives up, and never blocks the feed."""

import asyncio
import socket
import time

import pytest
from aiohttp import web

from engine.alerts import (
    AlertEngine,
    AlertError,
    CascadeRule,
    GradeChangeRule,
    ProximityRule,
    WebhookSender,
    parse_rules,
)
from engine.model.views import Zone


def zone(side, lo, hi, usd, grade="high"):
    return Zone(side, lo, hi, 0.5 * (lo + hi), usd, grade, None, 95.0, 0.0, (usd,))


BELOW = zone("long", 97.0, 98.0, 20e6)  # 2% below 100
SMALL = zone("long", 98.5, 99.0, 1e6)
ABOVE = zone("short", 105.0, 106.0, 50e6)


def test_proximity_fires_within_the_distance_for_big_zones_only():
    eng = AlertEngine([ProximityRule(within_pct=2.5, min_usd=5e6)], symbol="BTC")
    fired = eng.feed(100.0, [BELOW, SMALL, ABOVE], now=0)
    assert [a["zone"]["price_high"] for a in fired] == [98.0]
    a = fired[0]
    assert a["rule"] == "proximity" and a["symbol"] == "BTC" and a["distance_pct"] == pytest.approx(2.0)
    assert "2.00% from a high long zone below" in a["message"]
    assert eng.feed(106.5, [BELOW, SMALL, ABOVE], now=10_000)[0]["zone"]["side"] == "short"


def test_cooldown_suppresses_repeats_until_it_expires():
    eng = AlertEngine([ProximityRule(within_pct=2.5, min_usd=5e6)], cooldown_s=600)
    assert len(eng.feed(100.0, [BELOW], now=0)) == 1
    assert eng.feed(99.9, [BELOW], now=300) == []  # same zone (tracked by overlap), inside the cooldown
    moved = zone("long", 97.1, 98.1, 21e6)  # the zone drifted a little: still the same zone
    assert eng.feed(99.9, [moved], now=599) == []
    assert len(eng.feed(99.9, [moved], now=600)) == 1
    assert len(eng.history) == 2


def test_a_rule_can_have_its_own_cooldown():
    eng = AlertEngine([ProximityRule(within_pct=2.5, cooldown_s=0)], cooldown_s=10_000)
    assert len(eng.feed(100.0, [BELOW], now=0)) == 1
    assert len(eng.feed(100.0, [BELOW], now=1)) == 1


def test_grade_change_is_reported_once_with_both_grades():
    eng = AlertEngine([GradeChangeRule()])
    assert eng.feed(100.0, [zone("long", 97.0, 98.0, 1e6, "low")], now=0) == []
    assert eng.feed(100.0, [zone("long", 97.0, 98.0, 1e6, "low")], now=60) == []
    fired = eng.feed(100.0, [zone("long", 97.0, 98.2, 9e6, "high")], now=120)
    assert len(fired) == 1 and fired[0]["previous_grade"] == "low" and fired[0]["grade"] == "high"
    assert "upgraded low -> high" in fired[0]["message"]
    assert eng.feed(100.0, [zone("long", 97.0, 98.2, 9e6, "high")], now=180) == []
    ups = AlertEngine([GradeChangeRule(upgrades_only=True)])
    ups.feed(100.0, [zone("long", 97.0, 98.0, 9e6, "high")], now=0)
    assert ups.feed(100.0, [zone("long", 97.0, 98.0, 1e6, "low")], now=60) == []


def test_cascade_risk_above_a_level():
    eng = AlertEngine([CascadeRule(min_usd=50e6)])
    calm = {"down": {"total_usd": 10e6, "move_pct": -0.5, "end_price": 99.5}, "up": {"total_usd": 0, "move_pct": 0}}
    hot = {"down": {"total_usd": 80e6, "move_pct": -3.2, "end_price": 96.8}, "up": {"total_usd": 0, "move_pct": 0}}
    assert eng.feed(100.0, [], cascade=calm, now=0) == []
    fired = eng.feed(100.0, [], cascade=hot, now=1)
    assert [a["direction"] for a in fired] == ["down"] and fired[0]["move_pct"] == pytest.approx(3.2)
    by_move = AlertEngine([CascadeRule(min_move_pct=3.0)])
    assert len(by_move.feed(100.0, [], cascade=hot, now=0)) == 1


def test_rules_from_plain_dicts_and_bad_rules():
    rules = parse_rules([{"type": "proximity", "within_pct": 1, "min_usd": 5e6}, {"type": "grade_change"},
                         {"type": "cascade", "min_usd": 1e8}])
    assert [r.name for r in rules] == ["proximity", "grade_change", "cascade"]
    for bad in ([{"type": "moon"}], [{"type": "proximity", "within_pct": 0}], [{"type": "cascade"}],
                [{"type": "proximity", "within_pct": 1, "colour": "red"}]):
        with pytest.raises(AlertError):
            parse_rules(bad)
    with pytest.raises(AlertError):
        WebhookSender("ftp://example")


# ---- webhook --------------------------------------------------------------------------------------
async def _server(aiohttp_server, statuses):
    received = []

    async def hook(request):
        received.append(await request.json())
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    return server, received


async def test_webhook_retries_a_500_then_delivers(aiohttp_server):
    server, received = await _server(aiohttp_server, [500])
    sender = WebhookSender(str(server.make_url("/hook")), backoff_s=0.01)
    await sender.start()
    eng = AlertEngine([ProximityRule(within_pct=2.5)], symbol="BTC", webhook=sender)
    fired = eng.feed(100.0, [BELOW], now=0)
    assert await sender.drain(5.0)
    await sender.close()
    assert sender.stats.sent == 1 and sender.stats.attempts == 2 and sender.stats.failed == 0
    assert len(received) == 2 and received[0] == received[1]
    assert received[1]["message"] == fired[0]["message"]


async def test_webhook_does_not_retry_a_client_error(aiohttp_server):
    server, received = await _server(aiohttp_server, [404])
    sender = WebhookSender(str(server.make_url("/hook")), backoff_s=0.01)
    await sender.start()
    sender.submit({"rule": "x"})
    assert await sender.drain(5.0)
    await sender.close()
    assert sender.stats.failed == 1 and sender.stats.attempts == 1 and sender.stats.last_error == "HTTP 404"


def _dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_a_dead_webhook_gives_up_and_never_slows_the_feed():
    sender = WebhookSender(f"http://127.0.0.1:{_dead_port()}/hook", retries=2, backoff_s=0.05, timeout_s=1.0)
    await sender.start()
    eng = AlertEngine([ProximityRule(within_pct=2.5, cooldown_s=0)], webhook=sender)
    t0 = time.perf_counter()
    for i in range(50):
        assert len(eng.feed(100.0, [BELOW], now=i)) == 1  # the feed keeps producing alerts
    assert time.perf_counter() - t0 < 0.5  # feeding never waited on the network
    await asyncio.sleep(0.3)
    await sender.close()
    assert sender.stats.sent == 0 and sender.stats.failed >= 1
    assert sender.stats.attempts >= 3 and "Connect" in sender.stats.last_error
    assert len(eng.history) == 50


async def test_the_queue_is_bounded_and_drops_the_oldest():
    sender = WebhookSender("http://127.0.0.1:9/hook", max_queue=2)
    for i in range(5):
        sender.submit({"n": i})
    assert sender.stats.dropped == 3 and [a["n"] for a in sender.queue] == [3, 4]
    await sender.close()
