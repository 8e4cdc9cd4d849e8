"""A flaky exchange: rate limits, 5xx, timeouts, truncated and malformed bodies. The download recovers
with nothing lost and nothing doubled; errors that retrying cannot fix end it at once, in one line."""

from __future__ import annotations

import numpy as np
import pytest
from fake_exchange import HTML, MALFORMED, TRUNCATE, VENUES, Fault, now_s

from engine.feeds.base import FeedError, UnknownSymbol
from engine.feeds.retry import ExchangeRejected, ExchangeUnavailable


def same_bars(a, b) -> None:
    assert len(a) == len(b)
    for col in ("time", "open", "high", "low", "close", "volume", "oi_usd", "funding_rate"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=col)


@pytest.mark.parametrize("venue", VENUES)
async def test_history_survives_every_temporary_fault_with_nothing_lost_or_doubled(venue, fake, make_feed):
    since = now_s(fake) - 86_400
    clean = await make_feed(venue).history("BTC", since=since)
    fake.requests.clear()
    faults = [Fault.http(429), Fault.http(503), Fault.timeout(), TRUNCATE, MALFORMED, HTML, Fault.http(502)]
    if venue == "binanceusdm":
        faults.append(Fault.http(418))  # Binance's IP ban warning
    fake.inject(f"{venue}:klines", *faults)
    fake.inject(f"{venue}:oi", Fault.http(429), TRUNCATE)
    fake.inject(f"{venue}:funding", Fault.http(503), MALFORMED)
    feed = make_feed(venue, max_retries=len(faults) + 1)
    bars = await feed.history("BTC", since=since)
    same_bars(bars, clean)
    assert np.all(np.diff(bars.time) == 60)
    assert feed.retries == len(faults) + 4
    assert not any(fake.faults.values()), "every injected fault was met"
    assert feed.gaps == []


@pytest.mark.parametrize("venue", VENUES)
async def test_markets_load_recovers_from_a_maintenance_blip(venue, fake, make_feed):
    fake.inject(f"{venue}:markets", Fault.http(503), Fault.timeout())
    feed = make_feed(venue)
    assert [m.coin for m in await feed.markets()] == ["BTC", "ETH", "OLD"]


@pytest.mark.parametrize("venue", VENUES)
async def test_a_persistent_outage_ends_with_one_line_after_the_allowed_retries(venue, fake, make_feed):
    feed = make_feed(venue, max_retries=3)
    await feed.markets()
    fake.inject(f"{venue}:klines", *[Fault.http(503)] * 10)
    with pytest.raises(ExchangeUnavailable) as info:
        await feed.history("BTC", since=now_s(fake) - 600)
    assert "\n" not in str(info.value) and str(info.value).startswith(venue)
    assert len(fake.calls(venue, "klines")) == 4  # the first try + 3 retries, then stop


@pytest.mark.parametrize(("venue", "error"), [("binanceusdm", UnknownSymbol), ("okx", UnknownSymbol),
                                              ("bybit", ExchangeRejected)])
async def test_a_symbol_the_venue_refuses_fails_fast_without_retrying(venue, error, fake, make_feed):
    """OLD is listed in the markets but delisted on the server: the venue answers with its own code."""
    feed = make_feed(venue, max_retries=5)
    with pytest.raises(error) as info:
        await feed.history("OLD", since=now_s(fake) - 600)
    assert isinstance(info.value, FeedError)
    assert "\n" not in str(info.value)
    assert len(fake.calls(venue, "klines")) == 1


async def test_rate_limiting_is_on_unless_turned_off(fake, make_feed):
    feed = make_feed("bybit", rate_limit=True)
    await feed.markets()
    assert feed._client.enableRateLimit is True
    assert make_feed("bybit")._rate_limit is False  # the tests turn it off for speed
