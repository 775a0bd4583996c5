"""How an exchange's markets become shards, and where each shard's control partition is."""

from __future__ import annotations

import pytest

from app.commands import Command
from app.shards import placed, shard_exchange, shard_name, shard_partition, split, stride
from config.exchanges import EXCHANGES, SHARD_MARKETS
from config.settings import load_settings

MARKETS = {f"C{i:02d}-KRW": {"trades", "book"} for i in range(10)}


def command(op: str, *symbols: str, channels: tuple[str, ...] = ("trades",)) -> Command:
    return Command(op, "upbit", symbols, channels, "id")


def test_the_seed_is_split_in_sorted_order_cap_markets_a_shard() -> None:
    shards = split("upbit", MARKETS, 4)
    assert list(shards) == ["upbit", "upbit#1", "upbit#2"]
    assert [sorted(s) for s in shards.values()] == [
        ["C00-KRW", "C01-KRW", "C02-KRW", "C03-KRW"], ["C04-KRW", "C05-KRW", "C06-KRW",
                                                       "C07-KRW"], ["C08-KRW", "C09-KRW"]]
    assert split("upbit", MARKETS, None) == {"upbit": MARKETS}
    assert split("upbit", {}, 4) == {"upbit": {}}  # every exchange has its first shard


def test_a_subscribed_market_goes_to_the_first_shard_with_room_and_nothing_moves() -> None:
    shards = split("upbit", MARKETS, 4)
    freed = placed(shards, command("unsubscribe", "C01-KRW", channels=("trades", "book")), 4)
    assert "C01-KRW" not in freed["upbit"] and len(freed["upbit"]) == 3
    refilled = placed(freed, command("subscribe", "NEW-KRW"), 4)
    assert refilled["upbit"]["NEW-KRW"] == {"trades"}  # the first shard had room again
    assert {n: set(s) - {"NEW-KRW"} for n, s in refilled.items()} == \
        {n: set(s) for n, s in freed.items()}  # no other market moved
    more = placed(shards, command("subscribe", "X1-KRW", "X2-KRW", "X3-KRW"), 4)
    assert sorted(more["upbit#2"]) == ["C08-KRW", "C09-KRW", "X1-KRW", "X2-KRW"]
    assert sorted(more["upbit#3"]) == ["X3-KRW"]  # every shard full: a new one
    added = placed(shards, command("subscribe", "C05-KRW", channels=("ticker",)), 4)
    assert added["upbit#1"]["C05-KRW"] == {"trades", "book", "ticker"}  # stays in its shard


def test_unsubscribing_a_channel_keeps_the_market_and_an_empty_shard_stays() -> None:
    shards = split("upbit", {"A-KRW": {"trades", "book"}, "B-KRW": {"trades"}}, 1)
    one = placed(shards, command("unsubscribe", "A-KRW", channels=("book",)), 1)
    assert one["upbit"] == {"A-KRW": {"trades"}}
    gone = placed(shards, command("unsubscribe", "B-KRW"), 1)
    assert gone["upbit#1"] == {}
    assert placed(gone, command("subscribe", "C-KRW"), 1)["upbit#1"] == {"C-KRW": {"trades"}}


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 11, 16, 32, 64])
def test_shards_take_distinct_partitions_until_there_are_more_shards_than_partitions(
        partitions: int) -> None:
    names = [shard_name(exchange, n) for n in range(6) for exchange in EXCHANGES]
    taken = [shard_partition(name, partitions) for name in names]
    assert all(0 <= p < partitions for p in taken)
    first = taken[:partitions]
    assert len(set(first)) == len(first)  # the first `partitions` shards: one each


def test_consecutive_shards_lie_far_apart_so_any_block_of_partitions_holds_its_share() -> None:
    assert stride(16) == 9 and stride(4) == 3 and stride(1) == 1
    base = sorted(shard_partition(exchange, 16) for exchange in EXCHANGES)
    assert sum(p < 8 for p in base) in (5, 6)  # a worker keeping 0-7 or 8-15 has half


def test_shard_names() -> None:
    assert shard_name("binance", 0) == "binance" and shard_name("binance", 2) == "binance#2"
    assert shard_exchange("binance#2") == ("binance", 2)
    assert shard_exchange("binance") == ("binance", 0)


def test_shard_markets_setting_per_venue_or_for_all() -> None:
    default = load_settings({})
    assert default.shard_markets_for("binance") == SHARD_MARKETS["binance"] == 341
    assert default.shard_markets_for("bitfinex") == 8
    assert default.shard_markets_for("upbit") is None
    assert load_settings({"KCS_SHARD_MARKETS": "5"}).shard_markets_for("upbit") == 5
    mixed = load_settings({"KCS_SHARD_MARKETS": "upbit=2, binance=300"})
    assert mixed.shard_markets_for("upbit") == 2 and mixed.shard_markets_for("binance") == 300
    assert mixed.shard_markets_for("bitfinex") == 8
    assert default.ingest_partitions == 16
    with pytest.raises(ValueError, match="KCS_SHARD_MARKETS"):
        load_settings({"KCS_SHARD_MARKETS": "0"})
