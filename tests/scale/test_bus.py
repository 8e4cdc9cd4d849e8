"""Market ownership and log entry numbering (engine/bus.py): pure functions, checked on many markets."""

from __future__ import annotations

import pytest

from engine import bus

MARKETS = [f"binanceusdm:C{i}/USDT:USDT" for i in range(900)]


def test_every_market_has_exactly_one_owner_and_the_shards_are_balanced():
    owners = [bus.shard_of(m, 4) for m in MARKETS]
    counts = [owners.count(j) for j in range(4)]
    assert sum(counts) == 900 and min(counts) > 180 and max(counts) < 270, counts  # 225 each, give or take
    assert owners == [bus.shard_of(m, 4) for m in MARKETS]  # stable across calls (and processes: no salt)


def test_adding_a_shard_moves_only_the_markets_the_new_shard_takes():
    before = {m: bus.shard_of(m, 4) for m in MARKETS}
    after = {m: bus.shard_of(m, 5) for m in MARKETS}
    moved = [m for m in MARKETS if before[m] != after[m]]
    assert all(after[m] == 4 for m in moved)  # nobody else's markets move
    assert 120 < len(moved) < 240  # about a fifth


@pytest.mark.parametrize(("text", "want"), [("0/1", (0, 1)), ("3/4", (3, 4))])
def test_shard_flags(text, want):
    assert bus.parse_shard(text) == want


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard_flags_are_one_line(text):
    with pytest.raises(bus.BusError, match="--shard"):
        bus.parse_shard(text)


def test_entry_ids_order_by_owner_epoch_then_sequence():
    ids = [bus.entry_id(1_700_000_000_000, 9), bus.entry_id(1_700_000_000_000, 10), bus.entry_id(1_700_000_005_000, 1)]
    assert [bus.split_id(i) for i in ids] == sorted(bus.split_id(i) for i in ids)
    assert bus.split_id(b"1700000005000-1") == (1_700_000_005_000, 1)
    assert bus.view_key({"b": 1, "a": "x"}) == bus.view_key({"a": "x", "b": 1})
