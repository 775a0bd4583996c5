"""The producer of the derived topics (`market-state`, `features`, `candles.<interval>`,
`signals`): one plain aiokafka producer per worker, batching with a short linger.

Faust's own producer carries the tables' changelogs, and on the embedded broker it must send
one record per batch (see `agents/application.py`), which caps it at a few thousand records
per second for the whole worker. Derived records need no such care, so they do not queue behind the
changelogs. Agents send a batch's records, then `await flush(futures)` before writing their
tables: a record is delivered before the state that says it was sent, so a crash in between
sends it again (at least once) instead of never.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import aiokafka

from records.codec import JSON, Codec

__all__ = ["configure", "send", "flush", "stop", "codec"]

# Every value the agents send or read goes through this codec: JSON, or after the schema
# registry preflight (app/main.py, before any agent starts) Avro on the Avro topics.
codec: Codec = JSON

_producer: aiokafka.AIOKafkaProducer | None = None
_new_producer: Callable[[], aiokafka.AIOKafkaProducer] | None = None
_lock = asyncio.Lock()


def configure(new_producer: Callable[[], aiokafka.AIOKafkaProducer]) -> None:
    """How to build the producer (the app layer gives the ingest producer's settings: acks,
    linger, partitioner, and the broker the worker uses)."""
    global _new_producer
    _new_producer = new_producer


async def _start() -> aiokafka.AIOKafkaProducer:
    global _producer
    async with _lock:
        if _producer is None:
            if _new_producer is None:
                raise RuntimeError("agents.output.configure() was not called")
            producer = _new_producer()
            await producer.start()
            _producer = producer
    return _producer


async def stop() -> None:
    global _producer
    producer, _producer = _producer, None
    if producer is not None:
        await producer.stop()


async def send(topic: str, key: bytes, value: bytes, partition: int | None = None,
               headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
    """Queue one record (to the key's partition, unless `partition` is given); returns its
    delivery future."""
    producer = _producer or await _start()
    return await producer.send(topic, value, key=key, partition=partition, headers=headers)


async def flush(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Wait until every queued record of `futures` is delivered."""
    await asyncio.gather(*futures)
