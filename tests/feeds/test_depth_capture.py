"""Rebuilding Binance's order book from a raw capture, the way Binance documents it: the real capture in
../shared/data (a REST snapshot that arrived after the stream had started) and small hand-made captures
for the rules (diffs already in the snapshot dropped, diffs that post-date it applied even when they
arrived first, a broken diff chain never papered over)."""

from __future__ import annotations

import bisect
import gzip
import json
from pathlib import Path

import pytest

from engine.depth_capture import CaptureGap, book_samples

ROOT = Path(__file__).resolve().parents[2]
DEPTH = ROOT.parent / "shared" / "data" / "binance_usdm_btcusdt_depth_trades_2024-08-08.gz"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.name} not found in ../shared/data")
    return path


def _raw(path: Path) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """The capture read plainly: (snapshot, diffs received before it, diffs after it, book tickers)."""
    snap, early, late, tickers = None, [], [], []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            msg = json.loads(line.partition(" ")[2])
            if "lastUpdateId" in msg:
                snap = msg
                continue
            data = msg.get("data", {})
            if data.get("e") == "depthUpdate":
                (early if snap is None else late).append(data)
            elif data.get("e") == "bookTicker":
                tickers.append(data)
    assert snap is not None
    return snap, early, late, tickers


@pytest.fixture(scope="module")
def real() -> tuple[list, tuple]:
    path = need(DEPTH)
    return book_samples(path), _raw(path)


def test_the_first_book_includes_the_diffs_that_arrived_before_the_snapshot_but_postdate_it(real):
    samples, (snap, early, late, _) = real
    last_id = snap["lastUpdateId"]
    ahead = [d for d in early if d["u"] >= last_id]  # the stream ran ahead of the REST snapshot
    assert len(ahead) == 2 and ahead[0]["U"] <= last_id + 1 <= ahead[0]["u"]  # the first straddles it
    first = samples[0]
    before_sample = [d for d in late if d["E"] <= first.time_ms]
    touched_later = {(side, float(p)) for d in before_sample for side in "ba" for p, _ in d[side]}
    expected: dict[tuple[str, float], float] = {}
    for d in ahead:
        for side in "ba":
            for p, q in d[side]:
                expected[side, float(p)] = float(q)
    book = {"b": dict(map(tuple, first.bids.tolist())), "a": dict(map(tuple, first.asks.tolist()))}
    snapshot = {"b": {float(p): float(q) for p, q in snap["bids"]}, "a": {float(p): float(q) for p, q in snap["asks"]}}
    checked = changed = 0
    for (side, price), qty in expected.items():
        if (side, price) in touched_later:
            continue
        outer = first.bids[-1, 0] if side == "b" else first.asks[-1, 0]
        if (side == "b" and price < outer) or (side == "a" and price > outer):
            continue  # beyond the levels a sample keeps
        checked += 1
        assert book[side].get(price, 0.0) == qty, (side, price)  # 0 = the diff removed the level
        changed += snapshot[side].get(price, 0.0) != qty
    # the issue counted 32 levels (≈ $1.72M within 1% of mid) that were wrong when these diffs were dropped
    assert checked >= 30 and changed >= 30
    mid = first.mid
    usd = sum(p * q for p, q in first.bids.tolist() if p >= mid * 0.99) + sum(
        p * q for p, q in first.asks.tolist() if p <= mid * 1.01)
    assert usd == pytest.approx(48.26e6, rel=0.001)


def test_every_rebuilt_book_agrees_with_the_exchanges_own_best_bid_and_ask(real):
    """bookTicker is an independent stream on the same update-id sequence: at the book's last update id
    the best levels and their sizes must be the ones it last announced."""
    samples, (_, _, _, tickers) = real
    ids = [int(t["u"]) for t in tickers]
    assert len(samples) == 35
    for s in samples:
        t = tickers[bisect.bisect_right(ids, s.update_id) - 1]
        assert (s.bids[0, 0], s.bids[0, 1], s.asks[0, 0], s.asks[0, 1]) == (
            float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"])), s.time_ms


# ---- the rules on small hand-made captures -------------------------------------------------------------
def _diff(first: int, last: int, prev: int, t: int, bids=(), asks=()) -> str:
    data = {"e": "depthUpdate", "E": t, "T": t, "s": "BTCUSDT", "U": first, "u": last, "pu": prev,
            "b": [[str(p), str(q)] for p, q in bids], "a": [[str(p), str(q)] for p, q in asks]}
    return json.dumps({"stream": "btcusdt@depth@0ms", "data": data})


def _snapshot(last_id: int, t: int) -> str:
    return json.dumps({"lastUpdateId": last_id, "E": t, "T": t, "bids": [["100.0", "1"], ["99.0", "2"]],
                       "asks": [["101.0", "1"], ["102.0", "2"]]})


def _capture(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "capture.gz"
    with gzip.open(p, "wt") as fh:
        for i, line in enumerate(lines):
            fh.write(f"{1_000 + i} {line}\n")
    return p


def test_diffs_in_the_snapshot_are_dropped_and_later_ones_applied_whenever_they_arrived(tmp_path):
    path = _capture(tmp_path, [
        _diff(1, 5, 0, 1_000, bids=[(100.0, 9)]),  # u < lastUpdateId 8: already in the snapshot
        _diff(6, 10, 5, 1_100, bids=[(99.0, 3)]),  # straddles 8: applied
        _diff(11, 12, 10, 1_200, asks=[(101.0, 0)]),  # post-dates the snapshot: applied (101 removed)
        _snapshot(8, 1_150),
        _diff(13, 14, 12, 1_300, asks=[(101.5, 4)]),
    ])
    [s] = book_samples(path, every_s=60)
    assert s.bids.tolist() == [[100.0, 1.0], [99.0, 3.0]]
    assert s.asks.tolist() == [[101.5, 4.0], [102.0, 2.0]]
    assert s.update_id == 14 and s.time_ms == 1_300


def test_a_hole_between_the_snapshot_and_the_diffs_is_refused(tmp_path):
    path = _capture(tmp_path, [_snapshot(8, 1_000), _diff(12, 14, 11, 1_100, bids=[(99.0, 3)])])
    with pytest.raises(CaptureGap, match="does not continue"):
        book_samples(path)


def test_a_broken_diff_chain_ends_the_replay_at_the_break(tmp_path):
    path = _capture(tmp_path, [
        _snapshot(8, 1_000),
        _diff(8, 10, 7, 1_000, bids=[(99.0, 3)]),
        _diff(11, 12, 10, 2_000, bids=[(99.0, 4)]),
        _diff(20, 22, 19, 3_000, bids=[(99.0, 5)]),  # 13..19 lost: the book is unknown from here
        _diff(23, 24, 22, 4_000, bids=[(99.0, 6)]),
    ])
    samples = book_samples(path, every_s=1)
    assert [s.update_id for s in samples] == [10, 12]
    assert samples[-1].bids.tolist() == [[100.0, 1.0], [99.0, 4.0]]
