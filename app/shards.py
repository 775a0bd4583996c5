"""Ingest shards and what Kafka says about them: which partition owns a shard, its latest
checkpoint and subscription set, and the last trade published per market.

A shard is a unit of ingest owned by exactly one worker: today one per exchange, named after
it. Its owner is the worker that Faust's group assigns the shard's partition of the control
topic `<app id>-ingest-shards` (`agents.topics.INGEST_SHARDS`, read by the agent in
agents/ingest_control.py). The partition is the one
Kafka's default partitioner gives the shard's name as a key, so a `ws.command` keyed by the
exchange lands on a partition owned by the same worker (the topics are co-partitioned).

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
from typing import Any

import aiokafka
import orjson
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from exchanges.outbox import fold_trade

__all__ = ["shard_partition", "read_partitions", "latest_by_key",
           "learn_last_trades", "subscriptions_key"]

log = logging.getLogger(__name__)


def subscriptions_key(shard: str) -> str:
    return f"{shard}:subscriptions"


def shard_partition(shard: str, partitions: int) -> int:
    """Kafka's default partitioner for the key `shard` (as aiokafka and Java clients do)."""
    return (murmur2(shard.encode()) & 0x7FFFFFFF) % partitions


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
    latest: dict[str, Any] = {}
    records, _ = await read_partitions(bootstrap, topic, {partition: 0})
    for record in records:
        if record.key is None:
            continue
        try:
            latest[record.key.decode()] = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            log.warning("%s[%d]@%d: not JSON, ignored", topic, partition, record.offset)
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
