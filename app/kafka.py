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
from faust.transport.consumer import CONSUMER_FETCHING
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


class _Rest:
    """The rest of a coroutine whose first step already ran and is waiting on `pending`.

    Awaiting it inside a task delegates exactly as `yield from` would: the pending future
    goes up to the task, results and exceptions come back down to the coroutine."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Any:
        coro, value = self.coro, self.pending
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # thrown into us: pass it to the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class Consumer(faust_aiokafka.Consumer):
    # Counts seeks (started and finished), so the message loop can tell a batch fetched
    # before a seek from one fetched after it.
    _seeks = 0

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        self._seeks += 1
        try:
            await super().perform_seek()
        finally:
            self._seeks += 1

    async def seek(self, partition: Any, offset: int) -> None:
        self._seeks += 1
        try:
            await super().seek(partition, offset)
        finally:
            self._seeks += 1

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        """Faust's message loop with one change: a message is delivered eagerly.

        Faust delivers each message with `wait_first(callback(message), suspend_flow.wait())`,
        two tasks per message, so that a delivery blocked on a full stream buffer can be
        abandoned when a rebalance suspends the flow. Most deliveries never block: here the
        callback's first step runs in place, and only one that blocks is finished under that
        same `wait_first`.

        And one fix: after a rebalance, Faust's recovery resumes the stream partitions and
        then seeks them back to their committed offsets, resetting the read offsets. Faust's
        loop goes on delivering the batch it fetched before the seek and moves the read
        offsets past the committed ones again; every re-fetched record below them is then
        dropped without a word (seen after a kill -9 and restart: 5,555 trades never folded).
        Here a batch fetched before a seek is abandoned, and no read offset is moved across a
        seek. (faust-streaming 0.15.3's loop otherwise, line for line.)
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                seeks = self._seeks
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        if self._seeks != seeks:
                            break  # fetched before a seek: re-fetched from the new position
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            delivery = callback(message)
                            try:
                                pending = delivery.send(None)
                            except StopIteration:
                                pass  # delivered without waiting: the common case
                            else:
                                await self.wait_first(_Rest(delivery, pending),
                                                      self.suspend_flow.wait())
                            if self._seeks != seeks:
                                break  # do not move a read offset that a seek just reset
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


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
