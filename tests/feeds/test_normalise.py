"""Units, sides and symbols per venue, with frames in each exchange's own format."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.feeds.base import UnknownSymbol
from engine.feeds.normalise import (
    CandleCloser,
    Candles,
    Closed,
    Forming,
    Missing,
    OISnapshot,
    binance_kline_rows,
    funding_to_bars,
    hold_last,
    liquidated_side,
    liquidation_rows,
    merge_candles,
    missing_minutes,
    oi_snapshot,
    parse_symbol,
    snapshots_to_bars,
    to_liquidation,
)

M = 60_000


@pytest.mark.parametrize(("typed", "unified"), [
    ("btc", "BTC/USDT:USDT"),
    ("BTC", "BTC/USDT:USDT"),
    (" ethusdt ", "ETH/USDT:USDT"),
    ("BTCUSDC", "BTC/USDC:USDC"),
    ("BTCPERP", "BTC/USDC:USDC"),  # Bybit's USDC perpetual id
    ("1000PEPEUSDT", "1000PEPE/USDT:USDT"),
    ("BTC-USDT-SWAP", "BTC/USDT:USDT"),  # OKX instrument id
    ("sol-usdt", "SOL/USDT:USDT"),
    ("BTC/USDT", "BTC/USDT:USDT"),
    ("BTC/USDT:USDT", "BTC/USDT:USDT"),
])
def test_whatever_a_trader_types_means_the_same_perpetual(typed, unified):
    assert parse_symbol(typed) == unified


@pytest.mark.parametrize("typed", ["", "  ", "BTC/", "BTC USDT", "BTC-USDT-SWAP-X", "$$$"])
def test_unreadable_symbols_fail_with_one_line(typed):
    with pytest.raises(UnknownSymbol) as info:
        parse_symbol(typed)
    assert "\n" not in str(info.value)


# venue, side as sent, position side (OKX), liquidated position — liquidation-math.md "Units and side semantics"
SIDES = [
    ("binanceusdm", "SELL", None, "long"),  # an order to sell closed a long
    ("binanceusdm", "BUY", None, "short"),
    ("okx", "sell", None, "long"),
    ("okx", "buy", None, "short"),
    ("okx", "buy", "net", "short"),  # one-way mode: posSide says nothing, the order side decides
    ("okx", "sell", "long", "long"),
    ("okx", "buy", "short", "short"),
    ("bybit", "Buy", None, "long"),  # allLiquidation reports the position side
    ("bybit", "Sell", None, "short"),
]


@pytest.mark.parametrize(("venue", "side", "pos", "liquidated"), SIDES)
def test_liquidated_side_per_venue(venue, side, pos, liquidated):
    assert liquidated_side(venue, side, pos) == liquidated


def test_unknown_side_is_refused_not_guessed():
    with pytest.raises(ValueError, match="unknown liquidation side"):
        liquidated_side("bybit", "Hold")


def test_binance_force_order_uses_filled_size_and_average_price():
    frame = {"e": "forceOrder", "E": 1698871323061, "o": {
        "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "1.437", "p": "34900.10",
        "ap": "34959.70", "X": "FILLED", "l": "0.437", "z": "1.437", "T": 1698871323059}}
    [raw] = liquidation_rows("binanceusdm", frame)
    liq = to_liquidation("binanceusdm", raw, "BTC/USDT:USDT", 1.0)
    assert liq is not None
    assert (liq.side, liq.time_ms, liq.price) == ("long", 1698871323059, 34959.70)
    assert liq.base == pytest.approx(1.437)  # z, not the last fill l
    assert liq.usd == pytest.approx(1.437 * 34959.70)


def test_bybit_frame_with_several_rows_yields_every_row():
    frame = {"topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": 1739502303204, "data": [
        {"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000", "p": "0.04499"},
        {"T": 1739502302950, "s": "ROSEUSDT", "S": "Buy", "v": "1500", "p": "0.04510"},
        {"T": 1739502302990, "s": "ROSEUSDT", "S": "Buy", "v": "700", "p": "0.04512"}]}
    liqs = [to_liquidation("bybit", r, "ROSE/USDT:USDT", 1.0) for r in liquidation_rows("bybit", frame)]
    assert [(x.side, x.base, x.time_ms) for x in liqs] == [
        ("short", 20000.0, 1739502302929), ("long", 1500.0, 1739502302950), ("long", 700.0, 1739502302990)]
    assert liqs[0].usd == pytest.approx(20000 * 0.04499)


def test_bybit_legacy_single_liquidation_frame():
    frame = {"topic": "liquidation.GALAUSDT", "type": "snapshot", "ts": 1673251091822, "data": {
        "price": "0.03803", "side": "Buy", "size": "1637", "symbol": "GALAUSDT", "updatedTime": 1673251091822}}
    [raw] = liquidation_rows("bybit", frame)
    assert (raw.market_id, raw.side, raw.size, raw.price) == ("GALAUSDT", "Buy", 1637.0, 0.03803)


def test_okx_frame_expands_every_detail_of_every_instrument_in_contracts():
    frame = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": [
        {"instId": "BTC-USDT-SWAP", "instFamily": "BTC-USDT", "instType": "SWAP", "uly": "BTC-USDT",
         "details": [
             {"bkLoss": "0", "bkPx": "67000.1", "ccy": "", "posSide": "long", "side": "sell", "sz": "25",
              "ts": "1772624144276"},
             {"bkLoss": "0", "bkPx": "67010.5", "ccy": "", "posSide": "short", "side": "buy", "sz": "3",
              "ts": "1772624144280"}]},
        {"instId": "ETH-USDT-SWAP", "instFamily": "ETH-USDT", "instType": "SWAP", "uly": "ETH-USDT",
         "details": [{"bkLoss": "0", "bkPx": "2500", "ccy": "", "posSide": "net", "side": "sell", "sz": "10",
                      "ts": "1772624144290"}]}]}
    rows = liquidation_rows("okx", frame)
    assert [r.market_id for r in rows] == ["BTC-USDT-SWAP", "BTC-USDT-SWAP", "ETH-USDT-SWAP"]
    btc = [to_liquidation("okx", r, "BTC/USDT:USDT", 0.01) for r in rows[:2]]
    assert [(x.side, x.base) for x in btc] == [("long", 0.25), ("short", 0.03)]  # 25 × 0.01 BTC
    assert btc[0].usd == pytest.approx(0.25 * 67000.1)
    eth = to_liquidation("okx", rows[2], "ETH/USDT:USDT", 0.1)
    assert (eth.side, eth.base, eth.usd) == ("long", 1.0, 2500.0)


def test_rows_without_price_or_size_are_dropped():
    frame = {"topic": "allLiquidation.X", "data": [{"T": 1, "s": "X", "S": "Buy", "v": "0", "p": "1"},
                                                   {"T": 2, "s": "X", "S": "Buy", "v": "1", "p": ""}]}
    assert [to_liquidation("bybit", r, "X/USDT:USDT", 1.0) for r in liquidation_rows("bybit", frame)] == [
        None, None]


# ccxt's parsed open-interest structures, as its parsers fill them for each venue
OI = [
    ("binanceusdm", {"timestamp": 1, "openInterestAmount": 75375.617, "openInterestValue": 3248828883.71},
     1.0, 3248828883.71, 75375.617),
    # Bybit's openInterest counts both sides: liqheat's one-side OI is half of it
    ("bybit", {"timestamp": 1, "openInterestAmount": 52000.5, "openInterestValue": None}, 1.0, np.nan, 26000.25),
    ("okx", {"timestamp": 1, "openInterestAmount": 2_000_000.0, "baseVolume": 20_000.0,
             "openInterestValue": 1.3e9}, 0.01, 1.3e9, 20_000.0),
    ("okx", {"timestamp": 1, "openInterestAmount": 2_000_000.0, "baseVolume": None,
             "openInterestValue": None}, 0.01, np.nan, 20_000.0),  # contracts × ctVal
]


@pytest.mark.parametrize(("venue", "parsed", "ct", "usd", "base"), OI, ids=["binance", "bybit", "okx", "okx-ct"])
def test_open_interest_units_per_venue(venue, parsed, ct, usd, base):
    snap = oi_snapshot(venue, parsed, ct)
    assert snap is not None
    np.testing.assert_allclose([snap.usd, snap.base], [usd, base])


def test_oi_snapshots_reach_bars_that_close_after_them_and_go_stale():
    bars = np.arange(0, 30 * M, M, dtype=np.int64)  # 30 one-minute bars from t=0
    close = np.full(30, 100.0)
    snaps = [OISnapshot(5 * M, 1000.0, np.nan), OISnapshot(10 * M, np.nan, 12.0)]  # second: base only
    oi = snapshots_to_bars(snaps, bars, close, M, max_age_ms=15 * M)
    assert np.isnan(oi[:4]).all()  # bar 4 closes at 5:00 — the first that may know the 5:00 snapshot
    assert (oi[4:9] == 1000.0).all()
    assert (oi[9:25] == 1200.0).all()  # 12 base × the close of the bar that ended at 10:00; 15 min old at 25:00
    assert np.isnan(oi[25:]).all()  # held at most 15 minutes


def test_funding_in_force_is_the_last_settled_rate():
    bars = np.arange(0, 10 * M, M, dtype=np.int64)
    rate = funding_to_bars([(3 * M, 0.0001), (7 * M, -0.0002)], bars, M)
    np.testing.assert_array_equal(np.isnan(rate[:2]), True)
    assert (rate[2:6] == 0.0001).all() and (rate[6:] == -0.0002).all()


def test_hold_last_ignores_nan_samples():
    out = hold_last(np.array([0, 10]), np.array([1.0, np.nan]), np.array([5, 15]), None)
    assert out.tolist() == [1.0, 1.0]


def test_binance_klines_keep_taker_buy_volume():
    rows = [[1591478520000, "0.025013", "0.025018", "0.025", "0.025", "22.19", 1591478579999, "0.55", 40,
             "10.929", "0.273", "0"]]
    c = binance_kline_rows(rows)
    assert c.time_ms.tolist() == [1591478520000]
    assert c.volume[0] == 22.19 and c.taker_buy[0] == 10.929


def _page(times, price=1.0):
    t = np.array(times, dtype=np.int64)
    f = np.full(len(t), price)
    return Candles(t, f, f, f, f, f)


def test_merge_drops_repeats_and_sorts_with_the_later_page_winning():
    merged = merge_candles([_page([2 * M, 3 * M], 1.0), _page([0, M, 2 * M], 2.0)], with_taker=False)
    assert merged.time_ms.tolist() == [0, M, 2 * M, 3 * M]
    assert merged.close.tolist() == [2.0, 2.0, 2.0, 1.0]


@given(st.lists(st.lists(st.integers(0, 200), max_size=40), max_size=8))
def test_merge_is_unique_and_sorted_whatever_the_pages(pages):
    merged = merge_candles([_page([m * M for m in p]) for p in pages], with_taker=False)
    expect = sorted({m * M for p in pages for m in p})
    assert merged.time_ms.tolist() == expect


def test_missing_minutes_reports_holes_and_edges():
    t = np.array([2, 3, 6], dtype=np.int64) * M
    assert missing_minutes(t, 0, 8 * M, M) == [(0, 2 * M), (4 * M, 6 * M), (7 * M, 8 * M)]
    assert missing_minutes(np.zeros(0, np.int64), 0, 2 * M, M) == [(0, 2 * M)]


def _c(t, close):
    return [t, close, close + 1, close - 1, close, 5.0]


def test_a_candle_closes_when_a_newer_one_starts():
    closer = CandleCloser(M)
    assert closer.update(_c(0, 10)) == [Forming(tuple(map(float, _c(0, 10))))]
    assert closer.update(_c(0, 11)) == [Forming(tuple(map(float, _c(0, 11))))]
    events = closer.update(_c(M, 12))
    assert events == [Closed(tuple(map(float, _c(0, 11)))), Forming(tuple(map(float, _c(M, 12))))]
    assert closer.update(_c(0, 99)) == []  # a replay of a closed bar is ignored


def test_a_skipped_bar_is_reported_missing_before_the_new_one():
    closer = CandleCloser(M, last_closed_ms=0)
    events = closer.update(_c(4 * M, 1))
    assert events[0] == Missing(M, 4 * M) and isinstance(events[1], Forming)
    closer.mark_closed(3 * M)
    assert closer.last_closed_ms == 3 * M and closer.forming is not None


def test_reset_forgets_the_partial_candle_after_a_reconnect():
    closer = CandleCloser(M, last_closed_ms=0)
    closer.update(_c(M, 1))
    closer.reset()
    assert closer.update(_c(3 * M, 2))[0] == Missing(M, 3 * M)  # bar 1 comes back over REST, not half-done


def test_raw_events_read_from_a_file_get_their_price_kind_settled_once():
    from engine.feeds.base import Liquidation
    from engine.feeds.normalise import with_estimated_price

    # an OKX row of ../shared/data/okx_liquidations_2026-03-04.csv.gz style: the bankruptcy price as printed
    raw = Liquidation(1_772_664_000_000, "okx", "BTC/USDT:USDT", "short", 70_000.0, 0.5, 35_000.0)
    settled = with_estimated_price(raw)
    assert (settled.price_kind, settled.reported_price, settled.usd) == ("bankruptcy", 70_000.0, 35_000.0)
    assert settled.price == pytest.approx(70_000.0 * (1 - 0.004))  # a short: one MMR (OKX BTC 0.4%) lower
    assert with_estimated_price(settled) == settled  # never moved twice
    fill = with_estimated_price(Liquidation(1_772_664_000_000, "binanceusdm", "BTC/USDT:USDT", "long", 70_000.0,
                                            0.5, 35_000.0))
    assert (fill.price, fill.reported, fill.price_kind) == (70_000.0, 70_000.0, "fill")
