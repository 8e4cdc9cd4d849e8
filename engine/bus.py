"""The bus between workers and replicas: Redis Streams, in the pattern of Centrifugo's Redis engine.

- Per market a Stream ``liqheat:log:<market>`` is the replay log of the views workers compute. Each entry is
  one wire event of server/PROTOCOL.md for one view: ``v`` (view key), ``t`` (type), ``s`` (the view's
  sequence number), ``b`` (the JSON body), ``r`` (snapshot reason). Entry IDs are explicit,
  ``<epoch_ms>-<n>`` with ``epoch_ms`` the owner's start: a restarted owner is visible as a new epoch.
  ``MAXLEN ~`` trims it: the log is never unbounded; a reader that fell behind it sees a sequence gap and
  asks for a snapshot (the protocol's resync).
- ``liqheat:owners`` maps each market to the worker that owns it; ``liqheat:worker:<id>`` holds that
  worker's metadata (markets, epoch, HTTP address, heartbeat) and expires when the heartbeats stop.
- ``liqheat:demand:<market>`` lists the views replicas need (view key -> subscribe fields, until when):
  the owner computes exactly those, once, however many replicas and clients watch them.
- Requests to a worker go on the pub/sub channel ``liqheat:req:<worker id>``; answers on
  ``liqheat:reply:<replica id>``. A lost request is retried by the replica.

Ownership is a static shard of the market list (``--shard i/n``) by rendezvous hashing: adding a shard moves
only the markets the new shard wins. This module is transport only: it never imports the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

PREFIX = "liqheat"
OWNERS = f"{PREFIX}:owners"
# Entries kept per market log (approximately: MAXLEN ~ trims whole macro-nodes). A view delta is ~1 KB,
# a snapshot up to ~200 KB; 2,000 entries hold minutes of a busy market's views.
LOG_MAXLEN = 2000
# A worker's metadata lives this long without a heartbeat (seconds); heartbeats come every HEARTBEAT_S.
WORKER_TTL_S = 6
HEARTBEAT_S = 1.0
# Replicas renew the views they need this often; a view not renewed for DEMAND_TTL_S is dropped.
DEMAND_RENEW_S = 5.0
DEMAND_TTL_S = 20.0


class BusError(Exception):
    """The bus cannot be used as asked (one line)."""


def log_key(market: str) -> str:
    return f"{PREFIX}:log:{market}"


def demand_key(market: str) -> str:
    return f"{PREFIX}:demand:{market}"


def worker_key(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def request_channel(worker_id: str) -> str:
    return f"{PREFIX}:req:{worker_id}"


def reply_channel(replica_id: str) -> str:
    return f"{PREFIX}:reply:{replica_id}"


def parse_shard(text: str) -> tuple[int, int]:
    """``"0/4"`` -> (0, 4): this process is shard 0 of 4."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise BusError(f"--shard must be I/N, e.g. 0/4 (got {text!r})") from None
    if n < 1 or not 0 <= i < n:
        raise BusError(f"--shard {text}: need 0 <= I < N")
    return i, n


def _score(market: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}:{market}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(market: str, n: int) -> int:
    """Rendezvous (highest random weight) hashing: the shard with the highest score owns the market."""
    return max(range(n), key=lambda j: _score(market, j))


def view_key(fields: dict[str, Any]) -> str:
    """A canonical name for a view's subscribe fields (same fields, same key, on every replica)."""
    return json.dumps({k: fields[k] for k in sorted(fields)}, separators=(",", ":"), sort_keys=True)


def entry_id(epoch_ms: int, n: int) -> str:
    return f"{epoch_ms}-{n}"


def split_id(entry: str | bytes) -> tuple[int, int]:
    text = entry.decode() if isinstance(entry, bytes) else entry
    ms, _, n = text.partition("-")
    return int(ms), int(n)


async def messages(redis: Any, channel: str) -> AsyncIterator[Any]:
    """The messages of a pub/sub channel as they come; the subscription ends with the caller's loop."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    try:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                yield msg["data"]
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def keep_going(job: Callable[[], Awaitable[None]], log: logging.Logger,
                     failed: Callable[[], None] | None = None) -> None:
    """Run ``job`` (a reader or listener of the bus) again whenever it ends or fails: after a Redis restart
    it subscribes or reads again from where it was. A failure is one log line, and ``failed()`` if given."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away or restarting: try again shortly
            if failed is not None:
                failed()
            lines = str(exc).strip().splitlines()
            log.warning("bus: %s", lines[0][:300] if lines else type(exc).__name__)
            await asyncio.sleep(0.5)
