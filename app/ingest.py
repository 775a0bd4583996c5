"""The ingest service: runs the exchange connectors of this worker and their Kafka producer.

Started with the Faust worker. Connectors produce through their own aiokafka producer rather
than Faust's: ingest wants large batches and a short linger, while Faust's producer (tables'
changelogs) may be tuned for a broker's quirks (see `app/__init__.py`). Records are keyed
`exchange:BASE-QUOTE` and partitioned by Kafka's default partitioner, exactly as the tables'
keys are, so the worker that owns a market's table partition also owns its source partition.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import aiokafka
import faust
from aiokafka.partitioner import DefaultPartitioner, murmur2
from mode import Service

from config.settings import Settings
from app.subscriptions import load_subscriptions
from exchanges import CONNECTORS, EXCHANGES
from exchanges.publisher import Publisher
from exchanges.replay import ReplayServer, load_recordings
from exchanges.session import Session
from records import DLQ_TOPIC, ERROR_TOPIC, book_topic, ticker_topic, trade_topic

__all__ = ["IngestService", "bootstrap_servers", "new_producer", "market_data_topics"]

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Fewer, shorter collector pauses, in every worker.

    Every frame, and every record the agents fold, allocates a few short-lived objects; with
    the default gen-0 threshold (700) the collector runs every few hundred of them. Its
    pauses were the p99 of frame-to-ack latency (bench/ingest.py: p99 4.9 -> 2.5 ms at 10,000
    msg/s) and a sixth of the feature agents' time (bench/features.py: 19,400 -> 23,300-24,500
    trades/s). Objects alive at start-up (modules, the app) are frozen out of its scans.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def market_data_topics() -> list[str]:
    """Every topic ingest produces to, for every exchange (created before Faust starts)."""
    names = [DLQ_TOPIC, ERROR_TOPIC]
    for exchange in EXCHANGES:
        names += [trade_topic(exchange), book_topic(exchange), ticker_topic(exchange)]
    return names


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://h1:9092;h2:9092` -> `h1:9092,h2:9092`."""
    hosts = []
    for part in broker_url.split(";"):
        part = part.strip()
        hosts.append(part.split("://", 1)[1] if "://" in part else part)
    return ",".join(h.rstrip("/") for h in hosts if h)


class CachedPartitioner(DefaultPartitioner):
    """Kafka's default partitioner (murmur2 of the key), computed once per key.

    Market-data keys are few (one per market) and aiokafka's murmur2 is pure Python, so
    hashing every message cost more than parsing it. Same result as the default, so topics
    stay partitioned exactly as any Kafka client (and Faust's table routing) expects.
    """

    def __init__(self) -> None:
        self.cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],  # type: ignore[override]
                 available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner.__call__(key, all_partitions, available)
        count = len(all_partitions)
        partition = self.cache.get((key, count))
        if partition is None:
            partition = self.cache[(key, count)] = all_partitions[
                (murmur2(key) & 0x7FFFFFFF) % count]
        return partition


def new_producer(settings: Settings, broker_url: str,
                 client: str = "ingest") -> aiokafka.AIOKafkaProducer:
    return aiokafka.AIOKafkaProducer(
        partitioner=CachedPartitioner(),
        bootstrap_servers=bootstrap_servers(broker_url),
        client_id=f"{settings.app_id}-{client}",
        acks=settings.producer_acks if settings.producer_acks == "all" else int(
            settings.producer_acks),
        linger_ms=settings.producer_linger_ms,
        max_batch_size=settings.producer_batch_bytes,
        request_timeout_ms=30000,
    )


class IngestService(Service):
    def __init__(self, app: faust.App, settings: Settings, broker_url: str,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.broker_url = broker_url
        self.sessions: list[Session] = []
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self.replay_server: ReplayServer | None = None

    async def on_start(self) -> None:
        settings = self.settings
        recordings = None
        replay_base = ""
        if settings.replay_server:
            # a replay server already running (`python -m exchanges.replay serve`)
            replay_base = settings.replay.rstrip("/")
            log.info("replaying from the replay server at %s", replay_base)
        elif settings.replay:
            recordings = load_recordings(settings.replay)
            self.replay_server = ReplayServer(recordings, speed=settings.replay_speed)
            await self.replay_server.start()
            replay_base = self.replay_server.base_url
            log.warning("replaying %s (%s) at speed %s from %s", settings.replay,
                        ", ".join(sorted(recordings)), settings.replay_speed or "max",
                        replay_base)
        subscriptions = load_subscriptions(settings, recordings)
        chosen = {name: subs for name, subs in subscriptions.items() if settings.ingests(name)}
        for name in sorted(set(chosen) - set(CONNECTORS)):
            log.warning("no connector for exchange %r yet: its subscriptions are ignored", name)
            del chosen[name]
        if not chosen:
            log.info("this worker ingests no exchange (KCS_INGEST=%s)", settings.ingest)
            return
        self.producer = await self._start_producer()
        for name, subs in sorted(chosen.items()):
            connector = CONNECTORS[name](subs, Publisher(name, self.producer), settings)
            session = Session(connector, settings, replay_base)
            await session.start()
            self.sessions.append(session)
            log.warning("ingesting %s: %d symbols", name, len(subs))

    async def _start_producer(self) -> aiokafka.AIOKafkaProducer:
        delay = 1.0
        while True:
            producer = new_producer(self.settings, self.broker_url)
            try:
                await producer.start()
                return producer
            except Exception as exc:  # aiokafka raises several types for "cannot connect"
                await producer.stop()
                log.error("Kafka at %s is not reachable (%s); retrying in %.0f s",
                          self.broker_url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, 30.0)

    async def on_stop(self) -> None:
        for session in self.sessions:
            await session.stop()
        if self.producer is not None:
            await self.producer.flush()
            await self.producer.stop()
        if self.replay_server is not None:
            await self.replay_server.stop()
