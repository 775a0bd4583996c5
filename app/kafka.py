"""Faust's aiokafka transport with one change: the consumer's fetch wait is a setting.

Faust hard-codes `fetch_max_wait_ms=1500` for worker consumers. Brokers that hold every fetch
for the full wait (Tansu does, even with data ready) then add seconds of latency, and even on
Apache Kafka a quiet topic delays its neighbours. `install(wait_ms)` makes the `kafka://`
scheme use this transport; everything else is Faust's own driver.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["install", "Transport", "wait_until_reachable", "ensure_topics"]

log = logging.getLogger(__name__)

_fetch_max_wait_ms = 500


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts its fetcher, which happens after this returns.
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def install(fetch_max_wait_ms: int) -> None:
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = fetch_max_wait_ms
    drivers.TRANSPORTS.aliases["kafka"] = f"{__name__}:Transport"
    drivers.TRANSPORTS.aliases["aiokafka"] = f"{__name__}:Transport"


async def wait_until_reachable(broker_url: str, bootstrap: str) -> None:
    """Block until the cluster answers a metadata request, saying so while it does not.

    Faust gives up on the first failed bootstrap; a market-data worker started before its
    cluster (or during an outage) should wait for it instead.
    """
    delay = 1.0
    while True:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await client.bootstrap()
            return
        except Exception as exc:  # aiokafka raises several types for "cannot connect"
            log.error("Kafka at %s is not reachable (%s); retrying in %.0f s",
                      broker_url, exc, delay)
        finally:
            await client.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2.0, 30.0)


async def ensure_topics(bootstrap: str, names: list[str], partitions: int,
                        replication_factor: int, timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet, then wait until every partition has a leader.

    An existing topic is left as it is (its partition count is the cluster's business).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            log.info("creating %d topics (%d partitions each)", len(missing), partitions)
            try:
                await admin.create_topics([NewTopic(n, partitions, replication_factor)
                                           for n in missing])
            except TopicAlreadyExistsError:
                pass  # another worker created them first
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            described = await admin.describe_topics(names)
            leaderless = [t["topic"] for t in described if t["error_code"] or any(
                p["leader"] < 0 for p in t["partitions"]) or not t["partitions"]]
            if not leaderless:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topics without a leader after {timeout} s: {leaderless}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
