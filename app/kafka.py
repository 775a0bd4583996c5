"""The worker's start-up helpers: wait for Kafka (`wait_until_reachable`) and create topics
before Faust starts (`ensure_topics`). Faust's consumer and transport changes are in
agents/faust_internals.py.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError

__all__ = ["wait_until_reachable", "ensure_topics"]

log = logging.getLogger(__name__)


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
                        replication_factor: int, timeout: float = 30.0,
                        partitions_of: dict[str, int] | None = None) -> dict[str, int]:
    """Create the topics that do not exist yet (`partitions` each, or `partitions_of[name]`),
    then wait until every partition has a leader; the partition count of each topic.

    An existing topic is left as it is (its partition count is the cluster's business).
    """
    counts = partitions_of or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            log.info("creating %d topics (%d partitions each)", len(missing), partitions)
            try:
                await admin.create_topics([NewTopic(n, counts.get(n, partitions),
                                                    replication_factor) for n in missing])
            except TopicAlreadyExistsError:
                pass  # another worker created them first
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            described = await admin.describe_topics(names)
            leaderless = [t["topic"] for t in described if t["error_code"] or any(
                p["leader"] < 0 for p in t["partitions"]) or not t["partitions"]]
            if not leaderless:
                return {t["topic"]: len(t["partitions"]) for t in described}
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topics without a leader after {timeout} s: {leaderless}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


