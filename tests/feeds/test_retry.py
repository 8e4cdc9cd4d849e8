"""Which errors are retried, how long the feed waits, and what the user reads when it gives up."""

from __future__ import annotations

import asyncio
import random

import ccxt as cx
import pytest

from engine.feeds.base import FeedError, UnknownSymbol
from engine.feeds.retry import (
    AuthenticationRequired,
    Backoff,
    ConnectionLost,
    ExchangeRejected,
    ExchangeUnavailable,
    MalformedResponse,
    RateLimited,
    RequestTimedOut,
    RetryPolicy,
    as_feed_error,
    is_temporary,
    one_line,
    retry,
)

# (ccxt exception, our class, retried?) — the order in CCXT_ERROR_MAP decides the subtle rows
TABLE = [
    (cx.BadSymbol, UnknownSymbol, False),
    (cx.BadRequest, ExchangeRejected, False),
    (cx.ArgumentsRequired, ExchangeRejected, False),
    (cx.NotSupported, ExchangeRejected, False),
    (cx.ExchangeError, ExchangeRejected, False),
    (cx.AuthenticationError, AuthenticationRequired, False),
    (cx.PermissionDenied, AuthenticationRequired, False),
    (cx.RateLimitExceeded, RateLimited, True),
    (cx.DDoSProtection, RateLimited, True),  # Binance 429/418
    (cx.RequestTimeout, RequestTimedOut, True),
    (cx.ExchangeNotAvailable, ExchangeUnavailable, True),
    (cx.OnMaintenance, ExchangeUnavailable, True),
    (cx.NetworkError, ConnectionLost, True),
    (cx.OperationFailed, ExchangeUnavailable, True),  # Binance 503 raises this bare
    (cx.BadResponse, MalformedResponse, True),
    (cx.NullResponse, MalformedResponse, True),
]


@pytest.mark.parametrize(("ccxt_cls", "ours", "temporary"), TABLE, ids=[t[0].__name__ for t in TABLE])
def test_every_ccxt_error_becomes_ours_and_only_temporary_ones_retry(ccxt_cls, ours, temporary):
    err = as_feed_error(ccxt_cls("binanceusdm GET https://fapi.binance.com/x?symbol=BTCUSDT 503\nbody"))
    assert type(err) is ours
    assert isinstance(err, FeedError)
    assert is_temporary(err) is temporary
    assert is_temporary(ccxt_cls("x")) is temporary


def test_messages_are_one_short_line_without_query_strings():
    raw = ('binanceusdm GET https://fapi.binance.com/fapi/v1/klines?symbol=BTCUSDT&interval=1m 503 '
           'Service Unavailable\n<html>\n' + "x" * 500)
    text = str(as_feed_error(cx.OperationFailed(raw), "binanceusdm klines"))
    assert "\n" not in text
    assert len(text) <= 200
    assert "symbol=BTCUSDT" not in text and "fapi/v1/klines" in text
    assert one_line("a\n  b\tc") == "a b c"


def test_plain_network_errors_count_as_temporary():
    assert is_temporary(ConnectionResetError("reset"))
    assert isinstance(as_feed_error(TimeoutError()), ConnectionLost)
    assert not is_temporary(ValueError("bug"))


def test_backoff_grows_exponentially_up_to_the_cap():
    b = Backoff(base=0.5, cap=8.0, factor=2.0)
    assert [b.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_full_jitter_spreads_waits_over_the_whole_range():
    b = Backoff(base=1.0, cap=30.0)
    rng = random.Random(3)
    waits = [b.delay(3, rng) for _ in range(2000)]  # ceiling 8 s
    assert min(waits) >= 0.0 and max(waits) <= 8.0
    assert min(waits) < 0.5 and max(waits) > 7.5  # full jitter, not ±10 % around the ceiling
    assert 3.5 < sum(waits) / len(waits) < 4.5


async def test_retry_recovers_from_temporary_errors_with_growing_waits():
    calls, slept = 0, []

    async def flaky():
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise [cx.RateLimitExceeded, cx.RequestTimeout, cx.OperationFailed][calls - 1]("boom")
        return "ok"

    async def sleep(s):
        slept.append(s)

    policy = RetryPolicy(max_retries=5, backoff=Backoff(base=1.0, cap=100.0))
    seen = []
    out = await retry(flaky, policy=policy, rng=random.Random(1), sleep=sleep,
                      on_retry=lambda e, n, w: seen.append((type(e), n)))
    assert out == "ok" and calls == 4
    assert [n for _, n in seen] == [1, 2, 3]
    assert [t for t, _ in seen] == [RateLimited, RequestTimedOut, ExchangeUnavailable]
    assert all(0 <= s <= 2 ** i for i, s in enumerate(slept))


async def test_retry_gives_up_after_max_retries_with_our_error():
    calls = 0

    async def down():
        nonlocal calls
        calls += 1
        raise cx.ExchangeNotAvailable("okx GET https://www.okx.com/api/v5/x?instId=BTC 503 down")

    async def sleep(s):
        return None

    with pytest.raises(ExchangeUnavailable, match="^okx candles: okx GET .*503 down$"):
        await retry(down, policy=RetryPolicy(max_retries=2), context="okx candles", sleep=sleep)
    assert calls == 3


async def test_permanent_errors_fail_at_once():
    calls = 0

    async def bad():
        nonlocal calls
        calls += 1
        raise cx.BadSymbol('binanceusdm {"code":-1121,"msg":"Invalid symbol."}')

    with pytest.raises(UnknownSymbol) as info:
        await retry(bad, policy=RetryPolicy(max_retries=5), sleep=lambda s: asyncio.sleep(0))
    assert calls == 1
    assert "Invalid symbol" in str(info.value) and "\n" not in str(info.value)


async def test_cancellation_is_never_swallowed():
    async def slow():
        await asyncio.sleep(10)

    task = asyncio.ensure_future(retry(slow, policy=RetryPolicy()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
