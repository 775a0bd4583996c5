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
from aiokafka.client import AIOKafkaClient
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["install", "Transport", "wait_until_reachable"]

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
