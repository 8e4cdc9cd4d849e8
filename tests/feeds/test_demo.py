"""The built-in simulated market: a month of plausible minute bars at start, live ticks that carry straight
on from them, liquidations that come with the moves that caused them, and a ground truth the engine's
estimate can be scored against."""

from __future__ import annotations

import numpy as np
import pytest

from engine.feeds.base import BarUpdate, Feed, FeedError, Health, HealthChange, Liquidation, UnknownSymbol
from engine.feeds.demo import DemoFeed
from engine.model import ModelParams, estimate, price_edges

BTC = "BTC/USDT:USDT"
# Noon UTC (+30 s): minutes later the same day the simulation still starts at the same midnight.
NOW = 1_780_000_000 // 86_400 * 86_400 + 43_200 + 30
COLUMNS = ("time", "open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "oi_usd", "funding_rate")


@pytest.fixture(scope="module")
def btc_month() -> tuple[DemoFeed, object]:
    feed = DemoFeed(seed=7, now=NOW)
    return feed, feed.history_now(BTC)


def per_minute_liquidations(feed: DemoFeed, bars) -> tuple[np.ndarray, np.ndarray]:
    """USD liquidated per bar, (longs, shorts)."""
    liqs = feed.liquidations(BTC, since_ms=int(bars.time[0]) * 1000, until_ms=int(bars.close_time[-1]) * 1000)
    row = np.searchsorted(bars.time, np.array([q.time_ms // 1000 for q in liqs]), side="right") - 1
    usd = np.array([q.usd for q in liqs])
    is_long = np.array([q.side == "long" for q in liqs])
    n = len(bars)
    return (
        np.bincount(row[is_long], weights=usd[is_long], minlength=n),
        np.bincount(row[~is_long], weights=usd[~is_long], minlength=n),
    )


async def collect(feed: DemoFeed, symbol: str, closed_bars: int, with_forming: bool = False) -> list:
    """Stream events until ``closed_bars`` bars have closed (forming updates dropped unless asked)."""
    out: list = []
    closed = 0
    async for event in feed.stream(symbol):
        if isinstance(event, BarUpdate) and not event.closed and not with_forming:
            continue
        out.append(event)
        if isinstance(event, BarUpdate) and event.closed:
            closed += 1
            if closed >= closed_bars:
                break
    return out


def same_bars(a, b) -> bool:
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in COLUMNS)


# ---- a month at start -------------------------------------------------------------------------------
def test_a_month_of_valid_minute_bars_ending_now(btc_month):
    feed, bars = btc_month
    bars.validate()
    assert len(bars) >= 30 * 1440
    assert np.all(np.diff(bars.time) == 60)
    assert int(bars.close_time[-1]) == feed.history_end == NOW // 60 * 60
    for c in COLUMNS[5:]:
        assert np.isfinite(getattr(bars, c)).all(), c
    assert (bars.oi_usd > 0).all()
    np.testing.assert_allclose(bars.volume, bars.taker_buy_volume + bars.taker_sell_volume)
    # BTC stays in a plausible band around its 90,000 start over the month
    assert 0.6 * 90_000 < bars.low.min() and bars.high.max() < 1.5 * 90_000
    assert 0.02 < np.median(bars.volume * bars.close) * 1440 / 15e9 < 5  # daily turnover of the order of $15B
    assert 2e9 < np.median(bars.oi_usd) < 2e10
    # funding: Binance-like, mostly the 0.01% interest rate, moving away from it when traders crowd one side
    assert np.all(np.abs(bars.funding_rate) <= 0.0075)
    assert np.median(bars.funding_rate) == pytest.approx(0.0001)
    assert bars.funding_rate.min() < 0.0001 or bars.funding_rate.max() > 0.0001


async def test_markets_list_btc_eth_sol_first_and_enough_for_a_benchmark():
    markets = await DemoFeed(now=NOW).markets()
    assert [m.symbol for m in markets[:3]] == [BTC, "ETH/USDT:USDT", "SOL/USDT:USDT"]
    assert len(markets) >= 10
    assert all(m.exchange == "demo" and m.linear for m in markets)
    assert isinstance(DemoFeed(now=NOW), Feed)


@pytest.mark.parametrize(("symbol", "level"), [(BTC, 90_000), ("ETH/USDT:USDT", 3_000), ("SOL/USDT:USDT", 150)])
def test_prices_start_at_the_stated_levels(symbol, level):
    bars = DemoFeed(now=NOW, history_days=1).history_now(symbol)
    assert bars.open[0] == pytest.approx(level, rel=1e-3)
    assert 0.8 * level < bars.close[-1] < 1.25 * level


# ---- liquidations and cascades ----------------------------------------------------------------------
def test_liquidation_events_say_which_side_was_closed_and_for_how_much(btc_month):
    feed, bars = btc_month
    liqs = feed.liquidations(BTC)
    assert len(liqs) > 1000
    assert {q.side for q in liqs} == {"long", "short"}
    assert all(isinstance(q, Liquidation) and q.exchange == "demo" and q.symbol == BTC for q in liqs[:50])
    usd = np.array([q.usd for q in liqs])
    base = np.array([q.base for q in liqs])
    price = np.array([q.price for q in liqs])
    np.testing.assert_allclose(usd, base * price, rtol=1e-5)
    times = np.array([q.time_ms for q in liqs])
    assert np.all(np.diff(times) >= 0)


def test_liquidations_cluster_in_sharp_adverse_moves(btc_month):
    """A bar with big long liquidations is a falling bar (forced sells push the price further down:
    a cascade), a bar with big short liquidations a rising one."""
    feed, bars = btc_month
    longs, shorts = per_minute_liquidations(feed, bars)
    move = np.log(bars.close / bars.open)
    typical = np.median(np.abs(move))
    for usd, sign in ((longs, -1.0), (shorts, 1.0)):
        top = np.argsort(usd)[-20:]
        assert usd[top].min() > 1e6
        assert np.mean(np.sign(move[top]) == sign) >= 0.8
        assert sign * np.median(move[top]) > 5 * typical
    # the minute with the most longs liquidated has one of the month's deepest drops below its open
    drop = np.log(bars.low / bars.open)
    worst = int(np.argmax(longs))
    assert drop[worst] <= np.quantile(drop, 0.001)
    print(f"\nbiggest long cascade: ${longs[worst] / 1e6:.0f}M in one minute, low {drop[worst]:.2%} below its open")


# ---- reproducible -----------------------------------------------------------------------------------
def test_same_seed_gives_the_same_market_and_another_seed_does_not():
    a = DemoFeed(seed=3, now=NOW, history_days=2)
    b = DemoFeed(seed=3, now=NOW, history_days=2)
    c = DemoFeed(seed=4, now=NOW, history_days=2)
    assert same_bars(a.history_now(BTC), b.history_now(BTC))
    assert a.liquidations(BTC) == b.liquidations(BTC)
    np.testing.assert_array_equal(a.ground_truth(BTC).long_usd, b.ground_truth(BTC).long_usd)
    assert not np.array_equal(a.history_now(BTC).close, c.history_now(BTC).close)


async def test_same_seed_gives_the_same_stream():
    events = []
    for _ in range(2):
        feed = DemoFeed(seed=3, now=NOW, history_days=1, speed=6000)
        await feed.history(BTC)
        events.append(await collect(feed, BTC, closed_bars=40))
        await feed.close()
    first, second = events
    assert len(first) == len(second) > 40
    for x, y in zip(first, second, strict=True):
        assert type(x) is type(y)
        if isinstance(x, BarUpdate):
            assert x.closed == y.closed and same_bars(x.bar, y.bar)
        else:
            assert x == y


# ---- live ticks carry on from history ---------------------------------------------------------------
async def test_stream_continues_history_without_gap_or_duplicate():
    feed = DemoFeed(seed=5, now=NOW, history_days=1, speed=3000)
    history = await feed.history(BTC)
    events = await collect(feed, BTC, closed_bars=30, with_forming=True)
    await feed.close()
    assert isinstance(events[0], HealthChange) and events[0].state is Health.DEMO
    closed = [e.bar for e in events if isinstance(e, BarUpdate) and e.closed]
    times = np.array([int(b.time[0]) for b in closed])
    assert times[0] == int(history.time[-1]) + 60
    assert np.all(np.diff(times) == 60)
    for bar in closed:
        bar.validate()
    liq_ms = [e.time_ms for e in events if isinstance(e, Liquidation)]
    assert all(t >= feed.history_end * 1000 for t in liq_ms)
    assert liq_ms == sorted(liq_ms)
    # a forming update always belongs to the minute that closes next
    next_close = int(history.time[-1]) + 60
    for e in events[1:]:
        if isinstance(e, BarUpdate):
            assert int(e.bar.time[0]) == next_close
            if e.closed:
                next_close += 60


async def test_live_minutes_equal_the_same_minutes_generated_in_bulk():
    """Ticking live continues the very process the backfill ran: the bars and liquidations streamed
    after 'now' are the ones a feed started 30 minutes later has in its history."""
    live = DemoFeed(seed=11, now=NOW, history_days=1, speed=6000)
    await live.history(BTC)
    events = await collect(live, BTC, closed_bars=30)
    await live.close()
    streamed = [e.bar for e in events if isinstance(e, BarUpdate)]
    later = DemoFeed(seed=11, now=NOW + 30 * 60, history_days=1)
    bulk = later.history_now(BTC)
    assert bulk.time[0] == live.history_start
    for bar, j in zip(streamed, range(len(bulk) - 30, len(bulk)), strict=True):
        assert same_bars(bar, bulk.slice(j, j + 1))
    streamed_liqs = [e for e in events if isinstance(e, Liquidation)]
    assert streamed_liqs == later.liquidations(BTC, since_ms=live.history_end * 1000)


async def test_forming_bar_grows_through_the_minute():
    feed = DemoFeed(seed=2, now=NOW - 25, history_days=1, speed=20)  # 5 s into a minute, 1 s per tick
    await feed.history(BTC)
    forming = []
    async for event in feed.stream(BTC):
        if isinstance(event, BarUpdate):
            if event.closed:
                break
            forming.append(event.bar)
            if len(forming) >= 8:
                break
    await feed.close()
    assert len(forming) >= 5
    assert len({int(b.time[0]) for b in forming}) == 1
    highs, lows, vols = (np.array([getattr(b, c)[0] for b in forming]) for c in ("high", "low", "volume"))
    assert np.all(np.diff(highs) >= 0) and np.all(np.diff(lows) <= 0) and np.all(np.diff(vols) >= 0)
    for bar in forming:
        bar.validate()


def test_speed_multiplies_simulated_time():
    wall = [100.0]
    feed = DemoFeed(now=NOW, speed=60, history_days=1, clock=lambda: wall[0])
    assert feed.now() == NOW
    wall[0] += 10.0  # ten wall seconds are ten simulated minutes at 60x
    assert feed.now() == NOW + 600


async def test_close_ends_the_stream():
    feed = DemoFeed(now=NOW, history_days=1, speed=60)
    await feed.history(BTC)
    stream = feed.stream(BTC)
    assert isinstance(await stream.__anext__(), HealthChange)
    await feed.close()
    rest = [e async for e in stream]
    assert len(rest) <= 3  # what the tick in progress had ready, then the end


# ---- unknown symbols and bad options ----------------------------------------------------------------
async def test_unknown_symbol_says_which_are_valid_in_one_line():
    feed = DemoFeed(now=NOW, symbols=(BTC, "ETH/USDT:USDT"), history_days=1)
    for attempt in (lambda: feed.stream("DOGE/USDT:USDT"), lambda: feed.ground_truth("FOO")):
        with pytest.raises(UnknownSymbol) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message and BTC in message and "ETH/USDT:USDT" in message
    with pytest.raises(UnknownSymbol):
        await feed.history("XYZ/USDT:USDT")
    assert [m.symbol for m in await feed.markets()] == [BTC, "ETH/USDT:USDT"]
    with pytest.raises(UnknownSymbol, match="SOL/USDT:USDT"):
        DemoFeed(symbols=("NOPE",))


@pytest.mark.parametrize("options", [{"speed": 0}, {"speed": -1.0}, {"history_days": 0}, {"seed": -1}])
def test_bad_options_are_refused(options):
    with pytest.raises(FeedError):
        DemoFeed(**options)


# ---- the engine against the truth -------------------------------------------------------------------
def test_engine_estimate_lines_up_with_the_ground_truth(btc_month):
    """The engine sees only bars (OI, taker volumes); the simulation knows every position. Over +-20% of
    the price, the estimated book should track where the real liquidation notional sits far better than
    the same profile shuffled across prices, and its densest bins should hold more of the real notional
    than bins picked at random."""
    feed, bars = btc_month
    truth = feed.ground_truth(BTC)
    assert truth.time == int(bars.close_time[-1]) and truth.price == pytest.approx(bars.close[-1], rel=1e-5)
    book = estimate(bars, ModelParams(coin="BTC")).book()
    edges = price_edges(truth.price * 0.8, truth.price * 1.2, 80)
    est_long, est_short = (x.sum(axis=1) for x in book.binned(edges))
    true_long, true_short = truth.binned(edges)
    below = 0.5 * (edges[1:] + edges[:-1]) < truth.price
    est = np.where(below, est_long, est_short)  # the side that can be hit from here
    true = np.where(below, true_long, true_short)
    corr = float(np.corrcoef(est, true)[0, 1])
    rng = np.random.default_rng(0)
    shuffled = np.array([np.corrcoef(rng.permutation(est), true)[0, 1] for _ in range(1000)])
    top = np.argsort(est)[-len(est) // 10 :]
    share = float(true[top].sum() / true.sum())
    print(
        f"\nestimate vs truth (BTC, 30 days, +-20%, 80 bins): correlation {corr:.2f} "
        f"(shuffled: 99th percentile {np.quantile(shuffled, 0.99):.2f}); "
        f"top 10% of bins hold {share:.0%} of true notional (random: 10%)"
    )
    assert corr > np.quantile(shuffled, 0.99)
    assert corr > 0.3
    assert share > 0.11


def test_ground_truth_is_the_book_on_both_sides_of_the_price(btc_month):
    feed, _ = btc_month
    truth = feed.ground_truth(BTC)
    longs, shorts = truth.total()
    assert longs > 1e8 and shorts > 1e8
    # longs are liquidated below the price, shorts above (funding may nudge a level across briefly)
    assert truth.long_usd[truth.prices > truth.price * 1.001].sum() < 0.01 * longs
    assert truth.short_usd[truth.prices < truth.price * 0.999].sum() < 0.01 * shorts
    np.testing.assert_allclose(truth.long_by_tier.sum(axis=0), truth.long_usd)
    assert truth.tiers[-1] == "100x"
    lo, hi = truth.binned(np.array([truth.prices[0], truth.price, truth.prices[-1] * 1.01]))
    assert lo.sum() == pytest.approx(longs) and hi.sum() == pytest.approx(shorts)


async def test_ground_truth_follows_the_live_stream():
    feed = DemoFeed(seed=7, now=NOW, history_days=1, speed=6000)
    before = feed.ground_truth(BTC)
    assert before.time == feed.history_end
    await collect(feed, BTC, closed_bars=5)
    await feed.close()
    after = feed.ground_truth(BTC)
    assert after.time >= before.time + 5 * 60
