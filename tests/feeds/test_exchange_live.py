"""Against the real exchanges over the internet. Opt-in only: LIQHEAT_LIVE=1 pytest -m live tests/feeds."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from engine.feeds.base import BarUpdate, UnknownSymbol
from engine.feeds.exchange import ExchangeFeed

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.environ.get("LIQHEAT_LIVE") != "1", reason="talks to real exchanges; set LIQHEAT_LIVE=1"),
]

VENUES = ("binanceusdm", "bybit", "okx")


@pytest.fixture
async def feed(request):
    f = ExchangeFeed(request.param)
    yield f
    await f.close()


@pytest.mark.parametrize("feed", VENUES, indirect=True)
async def test_two_hours_of_btc_with_open_interest_and_funding(feed):
    markets = await feed.markets()
    assert markets[0].symbol == "BTC/USDT:USDT"
    now = int(time.time())
    bars = await feed.history("BTC", since=now - 2 * 3600)
    bars.validate()
    assert 110 <= len(bars) <= 120
    assert np.all(np.diff(bars.time) == 60)
    assert bars.time[-1] + 60 <= now
    assert np.isfinite(bars.oi_usd[-30:]).all() and (bars.oi_usd[-30:] > 1e8).all()
    assert np.isfinite(bars.funding_rate).all()
    assert (feed.exchange == "binanceusdm") == bars.has_taker


@pytest.mark.parametrize("feed", VENUES, indirect=True)
async def test_a_live_candle_arrives(feed):
    async def first_bar():
        async for ev in feed.stream("BTC"):
            if isinstance(ev, BarUpdate):
                return ev

    ev = await asyncio.wait_for(first_bar(), 60)
    assert ev.bar.close[0] > 0


@pytest.mark.parametrize("feed", VENUES, indirect=True)
async def test_unknown_symbol_is_one_line(feed):
    with pytest.raises(UnknownSymbol):
        await feed.history("NOSUCHCOIN")
