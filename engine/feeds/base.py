"""What every feed (demo market, exchanges through ccxt, recorded files) hands the rest of liqheat.

Feeds normalise at the boundary: base-timeframe ``Bars`` (1m by default, OI in USD, volumes in base
coin), liquidation events with the *position* side that was liquidated, and a data-health state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from engine.model import Bars


class Health(StrEnum):
    LIVE = "live"  # data flowing from a real venue
    DELAYED = "delayed"  # flowing, but behind (slow polls, rate limits)
    RECONNECTING = "reconnecting"  # connection lost, retrying
    STALE = "stale"  # nothing new for too long; showing the last known state
    DEMO = "demo"  # the built-in simulated market
    REPLAY = "replay"  # recorded data played back from a file


class FeedError(Exception):
    """A feed problem worth one line to the user (unknown symbol, exchange down, bad file)."""


class UnknownSymbol(FeedError):
    pass


@dataclass(frozen=True)
class Market:
    exchange: str  # "demo", "binanceusdm", "bybit", "okx", "file"
    symbol: str  # unified, e.g. "BTC/USDT:USDT"
    coin: str  # base coin, e.g. "BTC"
    contract_size: float = 1.0  # base coin per contract
    tick: float = 0.1
    linear: bool = True

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


@dataclass(frozen=True)
class Liquidation:
    """One liquidation: ``side`` is the position that was force-closed (long = a long was liquidated).

    ``price`` is where the liquidation happened — what the map overlay and scoring use. Binance prints the
    liquidation order's average fill (``price_kind`` "fill"); Bybit and OKX print the *bankruptcy* price,
    about one maintenance margin beyond it (``price_kind`` "bankruptcy"), so there ``price`` is estimated
    from it (engine.model.margin.liquidation_from_bankruptcy) and ``reported_price`` keeps what the venue
    sent. ``usd`` is base × the reported price (the notional the venue published)."""

    time_ms: int
    exchange: str
    symbol: str
    side: str  # "long" | "short"
    price: float
    base: float  # size in base coin
    usd: float
    reported_price: float | None = None  # what the venue printed; None = the same as ``price``
    price_kind: str = "fill"  # what the venue printed: "fill" | "bankruptcy"

    @property
    def reported(self) -> float:
        return self.price if self.reported_price is None else self.reported_price

    def to_dict(self) -> dict[str, float | int | str]:
        """The event as the API and the live protocol send it."""
        return {"time_ms": self.time_ms, "side": self.side, "price": self.price,
                "reported_price": self.reported, "price_kind": self.price_kind, "base": self.base,
                "usd": self.usd}


@dataclass(frozen=True)
class BarUpdate:
    """The newest base bar: ``closed`` is False while it is still forming."""

    bar: Bars  # one bar
    closed: bool


@dataclass(frozen=True)
class HealthChange:
    state: Health
    reason: str = ""


FeedEvent = BarUpdate | Liquidation | HealthChange


@runtime_checkable
class Feed(Protocol):
    exchange: str
    timeframe: int  # base bar length in seconds (60)

    async def markets(self) -> list[Market]: ...

    async def history(self, symbol: str, since: int | None = None, until: int | None = None) -> Bars:
        """Closed base bars in [since, until) (UNIX seconds; None = as far as the feed has / now)."""
        ...

    def stream(self, symbol: str) -> AsyncIterator[FeedEvent]:
        """Live events for one symbol, forever (until cancelled). Starts after the last history bar."""
        ...

    async def close(self) -> None: ...
