"""Replay of history: archived trades, books and tickers of a time range published again to
the market-data topics of another cluster, so that a fresh app's feature agents run over
them exactly as they ran live.

Each market's records go back in their original order (their source partition and offset),
to the partition of the same key (Kafka's default partitioner, as ingest uses), and the
markets are interleaved by receive time (`ts_recv`). `speed` 0 publishes as fast as the
broker takes them; 1 keeps the recorded pace, 2 twice as fast. The market-data topic names
are the same for every app id, so replay into a separate cluster (or one that no live
ingest writes to); the derived topics and tables of the app reading them are its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import logging
import time
from collections.abc import Iterator
from typing import Any

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

import pyarrow.fs as pafs

from history.archive import open_filesystem
from history.reader import Time, default_root, read_table, seconds
from records import OrderBook, Ticker, Trade, book_topic, market_key, ticker_topic, trade_topic
from records.codec import JSON

__all__ = ["replay", "records_of_day"]

log = logging.getLogger(__name__)

KINDS = {"trades": (Trade, trade_topic), "books": (OrderBook, book_topic),
         "tickers": (Ticker, ticker_topic)}


def _record(kind: str, row: dict[str, Any]) -> Any:
    cls = KINDS[kind][0]
    if kind == "books":
        row["bids"] = [(lv["price"], lv["size"]) for lv in row["bids"]]
        row["asks"] = [(lv["price"], lv["size"]) for lv in row["asks"]]
    return cls(**{name: row[name] for name in cls.__slots__})


def records_of_day(root: str | None, day: dt.date, lo: float, hi: float, kinds: list[str],
                   exchanges: set[str] | None) -> Iterator[tuple[float, str, bytes, bytes]]:
    """(ts_recv, topic, key, value) of one UTC day's archived records in [lo, hi), each
    source partition's in offset order, interleaved by ts_recv."""
    start = max(lo, dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    end = min(hi, start + 86400.0 - (start % 86400.0))
    streams: dict[tuple[str, str, int], list[tuple[float, int, str, bytes, bytes]]] = {}
    for kind in kinds:
        for row in read_table(kind, None, None, start, end, root).to_pylist():
            if exchanges is not None and row["exchange"] not in exchanges:
                continue
            record = _record(kind, row)
            topic = KINDS[kind][1](record.exchange)
            streams.setdefault((kind, record.exchange, row["kafka_partition"]), []).append(
                (record.ts_recv, row["kafka_offset"], topic,
                 market_key(record.exchange, record.symbol), JSON.encode(topic, record)))
    ordered = [sorted(items, key=lambda item: item[1]) for items in streams.values()]
    for ts_recv, _, topic, key, value in heapq.merge(*ordered, key=lambda item: item[0]):
        yield ts_recv, topic, key, value


def archived_days(root: str | None, kinds: list[str], lo: float, hi: float) -> list[dt.date]:
    """The UTC days in [lo, hi) that have a `date=` directory in the archive."""
    fs, base = open_filesystem(root or default_root())
    first = dt.datetime.fromtimestamp(lo, dt.UTC).date().isoformat()
    last = dt.datetime.fromtimestamp(hi, dt.UTC).date().isoformat()
    days = set()
    for kind in kinds:
        selector = pafs.FileSelector(f"{base}/type={kind}", allow_not_found=True)
        for exchange in fs.get_file_info(selector):
            for info in fs.get_file_info(pafs.FileSelector(exchange.path)):
                day = info.base_name.partition("date=")[2]
                if info.type == pafs.FileType.Directory and first <= day <= last:
                    days.add(day)
    return [dt.date.fromisoformat(day) for day in sorted(days)]


async def _ensure_topics(bootstrap: str, names: set[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in sorted(names - existing)]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def replay(bootstrap: str, start: Time, end: Time, root: str | None = None,
                 kinds: list[str] | None = None, exchanges: set[str] | None = None,
                 speed: float = 0.0, partitions: int = 4) -> int:
    """Publish the archived records of [start, end) to `bootstrap`; returns how many."""
    kinds = kinds or list(KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"record type {kind!r}: use {', '.join(KINDS)}")
    lo, hi = seconds(start), seconds(end)
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                         linger_ms=5, client_id="kcs-history-replay")
    await producer.start()
    sent, created = 0, set()
    first_ts: float | None = None
    began = time.monotonic()
    try:
        for day in archived_days(root, kinds, lo, hi):
            pending = []
            for ts_recv, topic, key, value in records_of_day(root, day, lo, hi, kinds,
                                                             exchanges):
                if topic not in created:
                    await _ensure_topics(bootstrap, {topic}, partitions)
                    created.add(topic)
                if speed > 0:
                    first_ts = ts_recv if first_ts is None else first_ts
                    delay = began + (ts_recv - first_ts) / speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(await producer.send(topic, value, key=key))
                sent += 1
                if len(pending) >= 10000:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent
