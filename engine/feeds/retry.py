"""Which exchange errors are worth another try, and how long to wait before it.

Pure: no ccxt import (ccxt errors are recognised by their class names, so this module and its tests load
in milliseconds), no clock, no network. The exchange feed maps every ccxt exception to one of the
``FeedError`` subclasses below *in a fixed order* (most specific first), so callers only ever see ours.

Temporary (retried with exponential backoff and full jitter): rate limits, timeouts, 5xx and maintenance,
dropped connections, truncated or malformed bodies. Permanent (fail at once with one line): unknown
symbol, bad request, authentication, anything the exchange rejected on purpose.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.feeds.base import FeedError, UnknownSymbol

T = TypeVar("T")


# ---- our error classes ---------------------------------------------------------------------------------
class TemporaryFeedError(FeedError):
    """The exchange or the network hiccuped; the same request may well succeed a moment later."""


class RateLimited(TemporaryFeedError):
    """HTTP 429/418 or the exchange's own rate-limit code."""


class RequestTimedOut(TemporaryFeedError):
    pass


class ExchangeUnavailable(TemporaryFeedError):
    """5xx, maintenance, connection refused."""


class ConnectionLost(TemporaryFeedError):
    """A network error or a dropped websocket."""


class MalformedResponse(TemporaryFeedError):
    """A body that is not the JSON the exchange documents (truncated, HTML error page, garbage)."""


class ExchangeRejected(FeedError):
    """The exchange refused the request itself (bad parameter, unsupported call); retrying will not help."""


class AuthenticationRequired(FeedError):
    """The endpoint needs an API key, or the key was refused."""


# ccxt class name -> ours, checked in this order against the exception's MRO. Order matters: BadSymbol is a
# BadRequest is an ExchangeError; RateLimitExceeded and ExchangeNotAvailable are NetworkErrors are
# OperationFailed. Binance answers HTTP 503 with a plain OperationFailed, so that catch-all stays temporary.
CCXT_ERROR_MAP: tuple[tuple[str, type[FeedError]], ...] = (
    ("BadSymbol", UnknownSymbol),
    ("AuthenticationError", AuthenticationRequired),  # incl. PermissionDenied, AccountSuspended
    ("RateLimitExceeded", RateLimited),
    ("DDoSProtection", RateLimited),
    ("RequestTimeout", RequestTimedOut),
    ("ExchangeNotAvailable", ExchangeUnavailable),  # incl. OnMaintenance
    ("NetworkError", ConnectionLost),
    ("BadResponse", MalformedResponse),  # incl. NullResponse
    ("OperationFailed", ExchangeUnavailable),
    ("BadRequest", ExchangeRejected),
    ("NotSupported", ExchangeRejected),
    ("ExchangeError", ExchangeRejected),
    ("BaseError", FeedError),
)

_MAX_REASON = 160
_URL = re.compile(r"https?://\S+|wss?://\S+")


def one_line(text: str, limit: int = _MAX_REASON) -> str:
    """ccxt messages carry the whole URL and response body, sometimes over several lines: keep one short line."""
    text = _URL.sub(lambda m: m.group(0).split("?")[0], text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def feed_error_class(exc: BaseException) -> type[FeedError] | None:
    """Our class for a ccxt exception (None when ``exc`` is not from ccxt or us)."""
    if isinstance(exc, FeedError):
        return type(exc)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "BaseError" not in names:
        return None
    for name, ours in CCXT_ERROR_MAP:
        if name in names:
            return ours
    return FeedError


def as_feed_error(exc: BaseException, context: str = "") -> FeedError:
    """Wrap ``exc`` in our class with a one-line message; FeedErrors pass through unchanged."""
    if isinstance(exc, FeedError):
        return exc
    cls = feed_error_class(exc)
    if cls is None:
        cls = ConnectionLost if isinstance(exc, (OSError, TimeoutError)) else FeedError
    reason = one_line(str(exc)) or type(exc).__name__
    return cls(f"{context}: {reason}" if context else reason)


def is_temporary(exc: BaseException) -> bool:
    cls = feed_error_class(exc)
    if cls is None:
        return isinstance(exc, (OSError, TimeoutError))
    return issubclass(cls, TemporaryFeedError)


# ---- backoff ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with *full jitter*: attempt n waits uniform(0, min(cap, base·factor^n)) seconds.

    Full jitter spreads clients that failed together (an exchange outage) so they do not come back in
    lock-step and trip the rate limit again."""

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * self.factor ** max(attempt, 0))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff: Backoff = Backoff()


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    context: str = "",
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_retry: Callable[[FeedError, int, float], None] | None = None,
) -> T:
    """Run ``call``; on a temporary error wait and try again, up to ``policy.max_retries`` more times.

    Raises our FeedError (one line) — temporary ones after the last attempt, permanent ones at once."""
    rng = rng or random.Random()  # noqa: S311 — jitter, not security
    attempt = 0
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = as_feed_error(exc, context)
            if not is_temporary(err) or attempt >= policy.max_retries:
                if err is exc:
                    raise
                raise err from exc
            wait = policy.backoff.delay(attempt, rng)
            if on_retry is not None:
                on_retry(err, attempt + 1, wait)
            attempt += 1
            await sleep(wait)
