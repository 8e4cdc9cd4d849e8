"""The recorder: resume, backfill, gap marking, clean stop — and a real process killed with SIGKILL while
writing a real SQLite file, then restarted."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from recorder_fakes import SYMBOLS, ClockedFeed

from engine.feeds.base import Market, UnknownSymbol
from engine.recorder import Recorder, record, resolve_symbol
from engine.store import Store

FAKES = Path(__file__).with_name("recorder_fakes.py")
REPO = Path(__file__).resolve().parents[2]
BTC, ETH = SYMBOLS
KEY = {s: f"fake:{s}" for s in SYMBOLS}


async def until(pred, limit=15.0, what="condition"):
    """Poll instead of sleeping a guessed time."""
    deadline = asyncio.get_running_loop().time() + limit
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until(pred, timeout=30.0, what="condition", proc=None, log=None):
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"recorder exited ({proc.returncode}) while waiting for {what}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {_tail(log)}")
        time.sleep(0.01)


def _tail(log):
    return "" if log is None or not Path(log).exists() else Path(log).read_text()[-2000:]


class Running:
    """A Recorder on a task, stopped the way SIGTERM stops it (cancel -> flush -> return)."""

    def __init__(self, feed, store, symbols=SYMBOLS, **kw):
        self.lines: list[str] = []
        kw.setdefault("flush_seconds", 0.02)
        kw.setdefault("status_seconds", 3600)
        kw.setdefault("retry_seconds", 0.01)
        self.rec = Recorder(feed, store, list(symbols), log=self.lines.append, **kw)
        self.task = asyncio.ensure_future(self.rec.run())

    def progress(self, symbol):
        return self.rec.progress.get(KEY[symbol])

    async def stop(self):
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _check_bars_equal_source(store, feed, symbol, n):
    got = store.read_bars(KEY[symbol])
    src = feed.source(symbol).slice(0, n)
    np.testing.assert_array_equal(got.time, src.time)
    for name in ("open", "high", "low", "close", "volume", "taker_buy_volume", "oi_usd"):
        np.testing.assert_array_equal(getattr(got, name), getattr(src, name), err_msg=name)


def _liqs(feed, symbol, indices):
    return [e for i in indices for e in feed.liquidations(symbol, i)]


async def _record_first(db, stop_at=160, warmup=100, **feed_kw):
    """A first recording: history up to `warmup`, then the stream up to `stop_at` bars."""
    feed = ClockedFeed(speed=60 * 400, warmup=warmup, stop_at=warmup, **feed_kw)
    store = Store(db)
    run = Running(feed, store)
    await until(lambda: all((p := run.progress(s)) and p.health == "live" for s in SYMBOLS), what="streams live")
    feed.stop_at = stop_at
    last = int(feed.source(BTC).time[stop_at - 1])
    await until(lambda: all(store.last_time(KEY[s]) == last for s in SYMBOLS), what="bars stored")
    await run.stop()
    return feed, store


# ---- in process -----------------------------------------------------------------------------------------
async def test_a_first_start_stores_the_history_then_the_streamed_bars_and_liquidations(tmp_path):
    feed, store = await _record_first(tmp_path / "r.sqlite")
    with store:
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed, s, 160)
            assert store.read_liquidations(KEY[s]) == sorted(_liqs(feed, s, range(100, 160)), key=lambda e: (e.time_ms, e.side, e.price))
        assert store.gaps() == []  # nothing was missed
        assert sorted(feed.history_calls) == [(BTC, None, None), (ETH, None, None)]


async def test_a_first_start_asking_for_more_than_the_feed_keeps_begins_where_its_history_does(tmp_path):
    feed = ClockedFeed(speed=60 * 400, warmup=100, stop_at=100, retention=40)
    t = feed.source(BTC).time
    with Store(tmp_path / "r.sqlite") as store:
        run = Running(feed, store, since=int(t[0]) - 86_400 + 7)  # a day before, not on a minute
        await until(lambda: all(store.last_time(KEY[s]) == int(t[99]) for s in SYMBOLS), what="history")
        await run.stop()
        assert sorted(feed.history_calls) == [(BTC, int(t[0]) - 86_400 + 60, None), (ETH, int(t[0]) - 86_400 + 60, None)]
        assert store.read_bars(KEY[BTC]).time.tolist() == t[60:100].tolist()
        assert store.gaps() == []  # a recording starts somewhere; that is not a hole


async def test_a_restart_resumes_from_the_last_bar_backfills_the_hole_and_marks_lost_liquidations(tmp_path):
    db = tmp_path / "r.sqlite"
    feed, store = await _record_first(db)
    store.close()
    t = feed.source(BTC).time
    # the recorder was away for 140 bars
    feed2 = ClockedFeed(speed=60 * 400, warmup=300, stop_at=300)
    with Store(db) as store:
        run = Running(feed2, store)
        await until(lambda: all(store.last_time(KEY[s]) == int(t[299]) for s in SYMBOLS), what="backfill")
        await run.stop()
        assert sorted(c for c in feed2.history_calls) == [(BTC, int(t[160]), None), (ETH, int(t[160]), None)]
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed2, s, 300)  # contiguous, each bar once, values intact
            assert store.count_bars(KEY[s]) == 300
            (gap,) = store.gaps(KEY[s])
            assert (gap.kind, gap.start, gap.end) == ("liquidations", int(t[160]), int(t[300]))
            assert "not backfillable" in gap.reason


async def test_history_too_short_to_fill_the_hole_leaves_a_marked_bar_gap(tmp_path):
    db = tmp_path / "r.sqlite"
    feed, store = await _record_first(db)
    store.close()
    t = feed.source(BTC).time
    feed2 = ClockedFeed(speed=60 * 400, warmup=300, stop_at=300, retention=50)  # keeps 50 bars only
    with Store(db) as store:
        run = Running(feed2, store)
        await until(lambda: all(store.last_time(KEY[s]) == int(t[299]) for s in SYMBOLS), what="backfill")
        await run.stop()
        for s in SYMBOLS:
            got = store.read_bars(KEY[s])
            assert got.time.tolist() == t[:160].tolist() + t[250:300].tolist()
            bar_gaps = store.gaps(KEY[s], kind="bars")
            assert [(g.start, g.end) for g in bar_gaps] == [(int(t[160]), int(t[250]))]
            assert "does not reach back" in bar_gaps[0].reason


async def test_bars_the_stream_drops_are_fetched_and_their_liquidations_marked_lost(tmp_path):
    db = tmp_path / "r.sqlite"
    feed, store = await _record_first(db, drop=range(120, 125))
    t = feed.source(BTC).time
    with store:
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed, s, 160)
            (gap,) = store.gaps(KEY[s])
            assert (gap.kind, gap.start, gap.end) == ("liquidations", int(t[120]), int(t[126]))
            kept = {e.time_ms // 60_000 * 60 for e in store.read_liquidations(KEY[s])}
            assert not kept & set(t[120:125].tolist())


async def test_a_broken_stream_is_retried_and_the_break_is_backfilled(tmp_path):
    feed, store = await _record_first(tmp_path / "r.sqlite", fail_at=130)
    t = feed.source(BTC).time
    with store:
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed, s, 160)
            (gap,) = store.gaps(KEY[s])
            assert gap.kind == "liquidations" and gap.start == int(t[130])
            assert "feed error: fake connection reset" in gap.reason


async def test_a_stop_writes_everything_still_queued(tmp_path):
    feed = ClockedFeed(speed=60 * 400, warmup=100, stop_at=100)
    with Store(tmp_path / "r.sqlite") as store:
        # batches far larger than the run and no timed flush: nothing is written until the stop
        run = Running(feed, store, flush_seconds=3600, batch_rows=1_000_000)
        await until(lambda: all((p := run.progress(s)) and p.health == "live" for s in SYMBOLS), what="live")
        feed.stop_at = 130
        await until(lambda: all(run.progress(s).bars == 130 for s in SYMBOLS), what="bars queued")
        assert store.count_bars(KEY[BTC]) == 0
        await run.stop()
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed, s, 130)
            assert store.count_liquidations(KEY[s]) == 2 * 30


async def test_a_stop_in_the_middle_of_a_long_backfill_still_writes_all_of_it(tmp_path):
    feed = ClockedFeed(speed=60 * 400, warmup=20_000, stop_at=20_000, n=20_000)
    with Store(tmp_path / "r.sqlite") as store:
        run = Running(feed, store, batch_rows=100)  # 400 small transactions to go
        await until(lambda: all((p := run.progress(s)) and p.bars == 20_000 for s in SYMBOLS), what="queued")
        assert store.count_bars(KEY[BTC]) + store.count_bars(KEY[ETH]) < 40_000  # still writing
        await run.stop()
        for s in SYMBOLS:
            _check_bars_equal_source(store, feed, s, 20_000)


async def test_an_unknown_symbol_fails_at_once_without_writing(tmp_path):
    lines: list[str] = []
    with Store(tmp_path / "r.sqlite") as store:
        code = await asyncio.wait_for(record(ClockedFeed(), store, ["DOGE"], log=lines.append), 10)
        assert code == 1
        assert store.markets() == []
    assert len(lines) == 1 and "DOGE" in lines[0]


@pytest.mark.parametrize(
    ("typed", "symbol"),
    [("BTC/USDT:USDT", "BTC/USDT:USDT"), ("btcusdt", "BTC/USDT:USDT"), ("eth", "ETH/USDT:USDT"),
     ("ETH/USDT", "ETH/USDT:USDT")],
)
def test_symbols_resolve_the_way_traders_type_them(typed, symbol):
    markets = [Market("x", "BTC/USDT:USDT", "BTC"), Market("x", "ETH/USDT:USDT", "ETH"), Market("x", "BTC/USDC:USDC", "BTC")]
    assert resolve_symbol(markets, typed) == symbol
    with pytest.raises(UnknownSymbol, match="several"):
        resolve_symbol(markets, "BTC")
    with pytest.raises(UnknownSymbol, match="unknown symbol 'XRP'"):
        resolve_symbol(markets, "XRP")


# ---- real processes -------------------------------------------------------------------------------------
def _ro(db):
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def _snapshot(db):
    con = _ro(db)
    try:
        bars = set(con.execute("SELECT * FROM candles_named").fetchall())
        liqs = set(con.execute("SELECT * FROM liquidations_named").fetchall())
    finally:
        con.close()
    return bars, liqs


def _count(db, symbol):
    if not Path(db).exists():
        return 0
    con = _ro(db)
    try:
        return con.execute("SELECT count(*) FROM candles_named WHERE symbol = ?", (symbol,)).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


def _last(db, symbol):
    con = _ro(db)
    try:
        return con.execute("SELECT max(time) FROM candles_named WHERE symbol = ?", (symbol,)).fetchone()[0]
    finally:
        con.close()


def _integrity(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _start(db, epoch, log):
    cmd = [sys.executable, str(FAKES), "--db", str(db), "--epoch", repr(epoch), "--speed", "6000",
           "--batch", "50", "--flush", "0.02"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(log, "ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)


def test_kill_9_while_writing_loses_nothing_committed_and_a_restart_fills_the_hole(tmp_path):
    db, log = tmp_path / "rec.sqlite", tmp_path / "recorder.log"
    epoch = time.time()
    feed = ClockedFeed(epoch=epoch)  # the same market the subprocess records, to check values against
    resumed_from: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    proc = _start(db, epoch, log)
    try:
        for round_ in range(2):
            # bars arrive at 100 a second per market, written in 20 ms batches: the kill lands mid-write
            target = {s: _count(db, s) + 150 for s in SYMBOLS}
            wait_until(
                lambda target=target: all(_count(db, s) >= target[s] for s in SYMBOLS),
                what=f"rows (round {round_})", proc=proc, log=log,
            )
            bars_before, liqs_before = _snapshot(db)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            assert _integrity(db) == "ok"
            bars_after, liqs_after = _snapshot(db)
            assert bars_before <= bars_after and liqs_before <= liqs_after, "committed rows were lost"
            for s in SYMBOLS:
                resumed_from[s].append(_last(db, s) + 60)
            proc = _start(db, epoch, log)
        # let the restarted recorder backfill and stream a while, then stop it the polite way
        goal = {s: resumed_from[s][-1] + 60 * 300 for s in SYMBOLS}
        wait_until(lambda: all((_last(db, s) or 0) >= goal[s] for s in SYMBOLS), what="resumed recording", proc=proc, log=log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, _tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert _integrity(db) == "ok"
    with Store(db) as store:
        print(f"\nresumed after kill -9 at {resumed_from}; gaps: {store.gaps()}")
        for s in SYMBOLS:
            got = store.read_bars(KEY[s])
            n = len(got)
            # one row per minute from the first bar on: the holes left by both kills were backfilled
            assert np.all(np.diff(got.time) == 60), "bars are not contiguous"
            _check_bars_equal_source(store, feed, s, n)
            assert store.gaps(KEY[s], kind="bars") == []
            # each restart resumed right after the last stored bar: that is where lost liquidations begin
            liq_gaps = [g.start for g in store.gaps(KEY[s], kind="liquidations") if "not running" in g.reason]
            assert liq_gaps == resumed_from[s]
            # every stored liquidation is one the market produced, stored once
            liqs = store.read_liquidations(KEY[s])
            source = set(_liqs(feed, s, range(n)))
            assert liqs and set(liqs) <= source and len(set(liqs)) == len(liqs)


@pytest.mark.skipif(importlib.util.find_spec("engine.feeds.demo") is None, reason="engine.feeds.demo not written yet")
def test_the_record_command_on_the_demo_market_survives_kill_9(tmp_path):
    db, log = tmp_path / "demo.sqlite", tmp_path / "record.log"
    cmd = [sys.executable, "-m", "engine.cli", "record", "--exchange", "demo", "--symbols", "BTC/USDT:USDT,eth",
           "--since", "2h", "--db", str(db), "--speed", "600", "--flush", "0.05", "--status-every", "1"]

    def start():
        with open(log, "ab") as err:
            return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)

    def counts():
        if not db.exists():
            return {}
        con = _ro(db)
        try:
            return dict(con.execute("SELECT symbol, count(*) FROM candles_named GROUP BY symbol").fetchall())
        except sqlite3.OperationalError:
            return {}
        finally:
            con.close()

    proc = start()
    try:
        wait_until(lambda: counts() and min(counts().values()) > 0, timeout=60, what="demo bars", proc=proc, log=log)
        first = counts()
        wait_until(lambda: all(counts()[s] > first[s] + 3 for s in first), timeout=60, what="streamed bars", proc=proc, log=log)
        before, _ = _snapshot(db)
        proc.kill()
        proc.wait(timeout=10)
        assert _integrity(db) == "ok"
        after, _ = _snapshot(db)
        assert before <= after
        proc = start()
        mid = counts()
        wait_until(lambda: all(counts()[s] > mid[s] + 3 for s in mid), timeout=60, what="bars after restart", proc=proc, log=log)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, _tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Store(db) as store:
        for m in store.markets():
            bars = store.read_bars(m.key)
            holes = store.gaps(m.key, kind="bars")
            covered = np.diff(bars.time) == 60
            # either contiguous, or every jump is a recorded gap
            for i in np.flatnonzero(~covered):
                assert any(g.start == int(bars.time[i]) + 60 for g in holes), f"unmarked hole in {m.key}"
