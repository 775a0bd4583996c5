"""The loop that feeds a history sink (the Parquet archive, the warm store) from Kafka: its
own consumer group, so it never holds up the feature agents' consumer, and offsets
committed only once the sink says a partition's records are durable.

A sink has `add(topic, partition, offset, value)`, `due()` and `pending()` (partitions to
flush), `flush(topic, partition) -> next offset | None` (blocking: run in a thread),
`drop(topic, partition)`, `waiting(topic, partition)` (records buffered) and
`resume(topic, partition) -> offset | None` (where the sink's own storage says to
continue; None: the committed offset).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import aiokafka
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from exchanges.metrics import metrics

__all__ = ["Sink", "SinkConsumer"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    def add(self, topic: str, partition: int, offset: int, value: bytes) -> None: ...
    def due(self) -> list[tuple[str, int]]: ...
    def pending(self) -> list[tuple[str, int]]: ...
    def flush(self, topic: str, partition: int) -> int | None: ...
    def drop(self, topic: str, partition: int) -> None: ...
    def waiting(self, topic: str, partition: int) -> int: ...
    def resume(self, topic: str, partition: int) -> int | None: ...


class _Rebalance(aiokafka.ConsumerRebalanceListener):
    def __init__(self, owner: SinkConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.owner.flush([(tp.topic, tp.partition) for tp in revoked], forget=True)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for tp in assigned:
            offset = await asyncio.to_thread(self.owner.sink.resume, tp.topic, tp.partition)
            if offset is not None:
                log.info("%s: %s[%d] resumes at offset %d (from its files)",
                         self.owner.sink.name, tp.topic, tp.partition, offset)
                self.owner.consumer.seek(tp, offset)


class SinkConsumer:
    """Reads `pattern` (a regex of topic names) in consumer group `group` into `sink`.

    A flush that fails (a store that is down) is retried with a backoff doubling up to 30 s,
    counted in `kcs_history_write_errors_total{sink}` and logged with the records waiting;
    meanwhile the consumer pauses the partition, so what waits is bounded by one roll and the
    rest stays in Kafka. The consumer keeps polling, so it stays in its group.
    """

    def __init__(self, sink: Sink, bootstrap: str, group: str, pattern: str,
                 fetch_max_wait_ms: int = 100, max_records: int = 5000) -> None:
        self.sink = sink
        self.bootstrap = bootstrap
        self.group = group
        self.pattern = pattern
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_records = max_records
        self.consumer: aiokafka.AIOKafkaConsumer = None  # type: ignore[assignment]  (run())
        self._stopping = False
        self._backoff = 0.0
        self._retry_at = 0.0

    async def run(self) -> None:
        """Consume until `stop()`; the last buffers are flushed and committed on the way out."""
        # Made here: aiokafka binds its consumer to the running loop.
        self.consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=self.fetch_max_wait_ms,
            client_id=f"kcs-{self.sink.name}", metadata_max_age_ms=5000)
        await self.consumer.start()
        self.consumer.subscribe(pattern=self.pattern, listener=_Rebalance(self))
        try:
            while not self._stopping:
                batch = await self.consumer.getmany(timeout_ms=200,
                                                    max_records=self.max_records)
                for tp, messages in batch.items():
                    add = self.sink.add
                    for message in messages:
                        add(tp.topic, tp.partition, message.offset, message.value)
                if time.monotonic() >= self._retry_at:
                    await self.flush(self.sink.due())
            await self.flush(self.sink.pending())
        finally:
            await self.consumer.stop()

    def stop(self) -> None:
        self._stopping = True

    async def flush(self, partitions: list[tuple[str, int]], forget: bool = False) -> None:
        """Flush `partitions` and commit what is durable. With `forget` (a revocation), a
        partition that cannot be flushed is dropped, to be read again by its next owner."""
        offsets: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            records = self.sink.waiting(topic, partition)
            try:
                offset = await asyncio.to_thread(self.sink.flush, topic, partition)
            except Exception as exc:  # noqa: BLE001  (any store failure: retried, reported)
                metrics.inc("kcs_history_write_errors_total", sink=self.sink.name)
                if forget:
                    log.warning("%s: %s[%d] not flushed before revocation (%s); its next "
                                "owner reads it again", self.sink.name, topic, partition, exc)
                    self.sink.drop(topic, partition)
                    continue
                self._backoff = min(30.0, max(0.5, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                if tp in self.consumer.assignment():
                    self.consumer.pause(tp)
                log.warning("%s: writing %s[%d] failed (%s); %d records waiting, retry in "
                            "%.1f s", self.sink.name, topic, partition, exc,
                            self.sink.waiting(topic, partition), self._backoff)
                break
            self._backoff = 0.0
            if records:
                metrics.inc("kcs_history_records_total", records, sink=self.sink.name)
            if tp in self.consumer.paused():
                self.consumer.resume(tp)
            if offset is not None:
                offsets[tp] = offset
        if offsets:
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, Any]) -> None:
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The records are durable in the sink; a new owner resumes from the sink or
            # re-reads a few records the sink deduplicates.
            log.warning("%s: commit of %s failed (%s)", self.sink.name, offsets, exc)
