"""One exchange REST budget for every worker behind the same egress IP, kept in Redis.

An exchange limits REST weight per IP, not per process: ccxt's own limiter only paces its own instance, so
two ``liqheat worker`` processes on one host would together ask for twice what the venue allows and earn
HTTP 429s (then 418 bans, on Binance). Before each REST request the feed's ccxt client takes the request's
weight (ccxt's cost units: Binance's request weight) from a token bucket in Redis keyed by exchange and
egress id. The bucket refills at ``rate`` units a second and holds at most ``burst``; a request that finds
it short reserves its tokens anyway and waits until they exist, so waiting workers go in turn instead of
polling. Taking tokens is one Lua script, so two workers can never both spend the same tokens.

When the venue still answers 429/418 (another program on the IP, or a budget set too high), every worker
on that egress pauses together: the first to see it sets a pause key for the ``Retry-After`` the venue
sent, else 1 s doubling per 429 in a row (at most a minute), and the bucket answers "wait" until it expires.

Waiting is bounded: a request that would wait longer than ``max_wait_s`` fails with ``RateLimited`` (a
temporary error, retried with backoff by the feed). If Redis is unreachable the feed goes on with ccxt's
own per-process limiter, and says so in the log once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from engine.feeds.retry import RateLimited

log = logging.getLogger("liqheat.rest_budget")

KEY_PREFIX = "liqheat:rest"
PAUSE_CAP_S = 60.0

# KEYS: bucket hash, pause key. ARGV: rate (units/ms), burst, cost, max wait (ms).
# Returns {granted (0/1), wait ms}: granted with a wait = reserved, sleep then go; not granted = paused
# (wait = the pause left) or the wait would exceed the bound (wait = what it would have been).
TAKE = """
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return {0, pause} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate, burst, cost, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate) - cost
local wait = 0
if tokens < 0 then wait = math.ceil(-tokens / rate) end
if wait > max_wait then return {0, wait} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst + cost) / rate) + 60000)
return {1, wait}
"""

# KEYS: pause key. ARGV: pause (ms). Only ever lengthens a pause another worker set.
PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


class RestBudget:
    """The shared REST budget of one exchange behind one egress id (see the module docstring).

    ``rate`` None: the venue's own ccxt rate (1000 / ``rateLimit`` units a second, what one ccxt instance
    allows itself), filled in by the feed when its client is made."""

    def __init__(self, redis: Any, exchange: str, egress: str, rate: float | None = None, *,
                 burst_s: float = 1.0, max_wait_s: float = 30.0) -> None:
        self.redis = redis
        self.exchange = exchange
        self.egress = egress
        self.rate = rate
        self.burst_s = burst_s
        self.max_wait_s = max_wait_s
        self.key = f"{KEY_PREFIX}:{exchange}:{egress}"
        self.pause_key = self.key + ":pause"
        self.waited_s = 0.0  # health figures: time spent waiting for the budget, and pauses seen/set
        self.paused = 0
        self.limited = 0  # 429/418 answers this worker got
        self._streak = 0
        self._redis_down = False
        self._take: Any = None
        self._pause: Any = None

    def use_default_rate(self, rate: float) -> None:
        if self.rate is None:
            self.rate = rate

    async def acquire(self, cost: float) -> None:
        """Wait until ``cost`` units may be spent (or raise RateLimited past ``max_wait_s``)."""
        rate = self.rate or 1.0
        cost = max(float(cost), 0.0)
        burst = max(rate * self.burst_s, cost)
        waited = 0.0
        while True:
            try:
                if self._take is None:
                    self._take = self.redis.register_script(TAKE)
                granted, wait_ms = await self._take(keys=[self.key, self.pause_key],
                                                    args=[rate / 1000.0, burst, cost, self.max_wait_s * 1000])
            except Exception as exc:  # noqa: BLE001 - Redis away: ccxt's own limiter still paces this process
                if not self._redis_down:
                    log.warning("%s: shared REST budget unavailable (%s); pacing this worker alone", self.exchange, exc)
                self._redis_down = True
                return
            self._redis_down = False
            wait = int(wait_ms) / 1000.0
            if granted:
                if wait > 0:
                    self.waited_s += wait
                    await asyncio.sleep(wait)
                    # a 429 while this request waited its turn: its tokens are spent, but it waits out
                    # the pause too rather than be the next request the venue counts against us
                    pause = await self._pause_left()
                    if pause > 0:
                        self.paused += 1
                        self.waited_s += pause
                        await asyncio.sleep(min(pause, self.max_wait_s))
                return
            if waited + wait > self.max_wait_s:
                raise RateLimited(f"{self.exchange}: the shared REST budget of {self.egress} is exhausted "
                                  f"(would wait {waited + wait:.0f} s)")
            self.paused += 1  # a 429 pause another worker (or this one) set: wait it out, then ask again
            waited += wait
            self.waited_s += wait
            await asyncio.sleep(wait)

    async def _pause_left(self) -> float:
        try:
            return max(0, int(await self.redis.pttl(self.pause_key))) / 1000.0
        except Exception:  # noqa: BLE001 - Redis away: no shared pause to honour
            return 0.0

    async def rate_limited(self, retry_after: str | None) -> None:
        """The venue answered 429/418: pause every worker on this egress."""
        self.limited += 1
        self._streak += 1
        try:
            pause = float(retry_after) if retry_after else 0.0
        except ValueError:
            pause = 0.0
        if not (pause > 0 and math.isfinite(pause)):
            pause = 2.0 ** (self._streak - 1)
        pause = min(pause, PAUSE_CAP_S)
        try:
            if self._pause is None:
                self._pause = self.redis.register_script(PAUSE)
            await self._pause(keys=[self.pause_key], args=[int(pause * 1000)])
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: cannot share a rate-limit pause (%s)", self.exchange, exc)

    def succeeded(self) -> None:
        self._streak = 0

    def stats(self) -> dict[str, Any]:
        return {"exchange": self.exchange, "egress": self.egress, "rate": self.rate, "waited_s": round(self.waited_s, 3),
                "paused": self.paused, "rate_limited": self.limited, "shared": not self._redis_down}
