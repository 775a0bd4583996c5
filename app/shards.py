"""Ingest shards and what Kafka says about them: which partition owns a shard, how an
exchange's markets are split into shards, its latest checkpoint and subscription set, and
the last trade published per market.

A shard is a unit of ingest owned by exactly one worker: an exchange's markets, split where
the venue caps what one connection carries (`KCS_SHARD_MARKETS`, config/exchanges.py) into
`binance`, `binance#1`, `binance#2`... each with its own connection(s). Its owner is the
worker that Faust's group assigns the shard's partition of the control topic
`<app id>-ingest-shards` (`agents.topics.INGEST_SHARDS`, `KCS_INGEST_PARTITIONS` partitions,
read by the agent in agents/ingest_control.py). Shards are numbered (every exchange's first
shard, then every second shard...) and the n-th takes partition `n * stride % partitions`,
the stride coprime with the count and near its golden section: no two shards share a
partition while there are fewer shards than partitions, and consecutive shards lie far apart,
so whichever block of partitions a worker keeps in a rebalance holds its share of them.

Markets stay in their shard: the seed (`KCS_SUBSCRIPTIONS`) is split in sorted order, and
once a command has changed an exchange's shards its split is kept in Kafka (the directory
`<exchange>:shards` on the first shard's partition); a subscribed market goes to the first
shard with room, or a new one (`placed`), and never moves another.

The control partition of a shard holds, keyed by `<shard>` and `<shard>:subscriptions`:
- checkpoints `{"offsets": {partition: next offset}, "last": {symbol: [id, ts, ids]}}`
  written by the owner every few seconds: the last trade Kafka acknowledged per market, and
  the offsets of the trade topic up to which that is complete;
- the shard's subscription set `{symbol: [channels]}` after every applied `ws.command`.
The latest record of each key is the one that counts (the topic is compacted on a real
Kafka; the embedded broker keeps everything, and the reader keeps the last).

A new owner reads both, then the trade topic from the checkpoint's offsets up to the fetch
high-water mark (correct on every broker, unlike ListOffsets on Tansu): the last trade
published per market, exactly, whoever published it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import aiokafka
import orjson
from aiokafka.structs import TopicPartition

from app.commands import Command, applied
from config.exchanges import EXCHANGES
from exchanges.base import Subscriptions
from exchanges.outbox import fold_trade

__all__ = ["shard_partition", "read_partitions", "latest_by_key", "learn_last_trades",
           "subscriptions_key", "directory_key", "shard_name", "shard_exchange", "split",
           "placed", "stride", "latest_records", "Directory"]

log = logging.getLogger(__name__)
GOLDEN = (5 ** 0.5 - 1) / 2

# An exchange's shards: shard name -> its markets and their channels.
Directory = dict[str, Subscriptions]


def subscriptions_key(shard: str) -> str:
    return f"{shard}:subscriptions"


def directory_key(exchange: str) -> str:
    return f"{exchange}:shards"


def shard_name(exchange: str, number: int) -> str:
    return exchange if number == 0 else f"{exchange}#{number}"


def shard_exchange(shard: str) -> tuple[str, int]:
    """`binance#2` -> ("binance", 2); `binance` -> ("binance", 0)."""
    exchange, _, number = shard.partition("#")
    return exchange, int(number or 0)


def stride(partitions: int) -> int:
    """The integer coprime with `partitions` nearest to its golden section (1 for 1 or 2)."""
    target = partitions * GOLDEN
    return min((s for s in range(1, max(partitions, 2)) if math.gcd(s, partitions) == 1),
               key=lambda s: (abs(s - target), s))


def shard_partition(shard: str, partitions: int) -> int:
    """The control partition of a shard: the n-th shard (every exchange's first shard in
    EXCHANGES order, then every second shard...) at `n * stride % partitions`."""
    exchange, number = shard_exchange(shard)
    return (number * len(EXCHANGES) + EXCHANGES.index(exchange)) * stride(partitions) \
        % partitions


def split(exchange: str, subscriptions: Subscriptions, cap: int | None) -> Directory:
    """The seed split: markets in sorted order, `cap` a shard (None: one shard)."""
    markets = sorted(subscriptions)
    size = cap or max(len(markets), 1)
    shards: Directory = {shard_name(exchange, 0): {}}
    for number, start in enumerate(range(0, len(markets), size)):
        shards[shard_name(exchange, number)] = {m: set(subscriptions[m])
                                                for m in markets[start:start + size]}
    return shards


def placed(directory: Directory, command: Command, cap: int | None) -> Directory:
    """The exchange's shards after the command: a market already in a shard stays there; a
    new one goes to the first shard (by number) with fewer than `cap` markets, else to a new
    shard. Nothing else moves. A shard left empty stays (with no connection)."""
    result = {name: {m: set(c) for m, c in subs.items()} for name, subs in directory.items()}
    where = {market: name for name, subs in result.items() for market in subs}
    exchange = command.exchange
    order = sorted(result, key=lambda name: shard_exchange(name)[1]) or [shard_name(exchange, 0)]
    for market in command.symbols:
        name = where.get(market)
        if name is None and command.op == "subscribe":
            name = next((n for n in order if cap is None or len(result.get(n, {})) < cap),
                        None)
            if name is None:
                name = shard_name(exchange, max(shard_exchange(n)[1] for n in order) + 1)
                order.append(name)
            where[market] = name
        if name is None:
            continue  # unsubscribing a market no shard has
        one = Command(command.op, exchange, (market,), command.channels, command.id)
        result[name] = applied(result.get(name, {}), one)
    return result


async def read_partitions(bootstrap: str, topic: str, starts: dict[int, int | None],
                          timeout: float = 60.0) -> tuple[list[Any], dict[int, int]]:
    """Every record of the given partitions from `starts[p]` (None: ListOffsets' end, which
    Tansu answers short) up to the fetch high-water mark at the time of reading, which every
    broker answers right; and the offset each partition was read to."""
    if not starts:
        return [], {}
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         group_id=None, fetch_max_wait_ms=100,
                                         request_timeout_ms=15000)
    await consumer.start()
    records: list[Any] = []
    ends: dict[int, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in starts]
        consumer.assign(tps)
        for tp in tps:
            start = starts[tp.partition]
            if start is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, start)
        pending = set(tps)
        async with asyncio.timeout(timeout):
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=300)
                for part in batch.values():
                    records.extend(part)
                for tp in list(pending):
                    highwater = consumer.highwater(tp)
                    position = await consumer.position(tp)
                    if highwater is not None and position >= highwater:
                        ends[tp.partition] = position
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return records, ends


async def latest_by_key(bootstrap: str, topic: str, partition: int) -> dict[str, Any]:
    """The latest JSON value of every key of one partition of the control topic."""
    return {k: v[0] for k, v in (await latest_records(bootstrap, topic, [partition])).items()}


async def latest_records(bootstrap: str, topic: str, partitions: list[int]
                         ) -> dict[str, tuple[Any, int, int]]:
    """The latest JSON value of every key of these partitions of the control topic, with its
    partition and offset. A key found on several partitions (the topic's partition count was
    changed) counts by its latest record's timestamp."""
    latest: dict[str, tuple[Any, int, int]] = {}
    stamps: dict[str, int] = {}
    records, _ = await read_partitions(bootstrap, topic, {p: 0 for p in partitions})
    for record in records:
        if record.key is None:
            continue
        key = record.key.decode()
        if key in stamps and latest[key][1] != record.partition and \
                stamps[key] > record.timestamp:
            continue
        try:
            latest[key] = (orjson.loads(record.value), record.partition, record.offset)
            stamps[key] = record.timestamp
        except orjson.JSONDecodeError:
            log.warning("%s[%d]@%d: not JSON, ignored", topic, record.partition, record.offset)
    return latest


async def learn_last_trades(bootstrap: str, trade_topic: str, partitions: int,
                            checkpoint: dict[str, Any] | None, symbols: set[str] | None = None
                            ) -> dict[str, Any]:
    """The shard's checkpoint brought up to date: per market `[last trade id, its ts, ids at
    that ts]` of what the trade topic holds, and the offsets read to. With no checkpoint this
    app never ran the shard: what the topic holds is someone else's (another app id), so it
    starts at the topic's end."""
    last: dict[str, list[Any]] = {}
    starts: dict[int, int | None] = {p: None for p in range(partitions)}
    if checkpoint:
        last = {s: [str(v[0]), float(v[1]), [str(i) for i in v[2]]]
                for s, v in checkpoint.get("last", {}).items()}
        starts.update({int(p): int(o) for p, o in checkpoint.get("offsets", {}).items()})
    records, ends = await read_partitions(bootstrap, trade_topic, starts)
    if checkpoint:
        for record in records:
            try:
                trade = orjson.loads(record.value)
                symbol = trade["symbol"]
                trade_id, ts = str(trade["trade_id"]), float(trade["ts_event"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if symbols is None or symbol in symbols:
                fold_trade(last, symbol, trade_id, ts)
    return {"offsets": {str(p): o for p, o in ends.items()}, "last": last}
