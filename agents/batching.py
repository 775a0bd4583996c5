"""Batched table writes: one write per key per batch instead of one per event.

A Faust table write is the expensive part of a stateful agent (about 2,400 writes/s per
worker). Agents here take events in batches, fold them per key in plain Python, and write
each key once. A table write is stored in, and changelogged to, the partition of Faust's
*current event*; inside a batch that would be the last event's partition for every key, so
`in_partition_of(event)` (agents/faust_internals.py) makes the event of that key current
for the write.
"""

from __future__ import annotations

import time
from collections.abc import Callable


from agents.application import app
from agents.faust_internals import in_partition_of
from records.control import BatchPerformance

__all__ = ["in_partition_of", "BATCH_SIZE", "BATCH_WITHIN", "batch_observers",
           "report_batch"]

# agent name -> called with the seconds each batch took; the app layer plugs its metric in
# (app/monitoring.py), so agents know nothing of Prometheus.
batch_observers: dict[str, Callable[[float], None]] = {}

BATCH_SIZE = 2000  # events per batch at most
BATCH_WITHIN = 0.05  # seconds: the most a batch waits to fill, i.e. the added latency


async def report_batch(agent: str, records: int, keys: int, started: float,
                       oldest: float) -> None:
    """One `monitoring.batch.performance` record: the batch's size, how long it took (from
    its arrival to its tables written, `started` being `time.monotonic()` then), and how old
    its oldest record (`oldest`: epoch seconds) was by then. Not awaited for delivery."""
    from agents import output, topics

    duration = time.monotonic() - started
    observer = batch_observers.get(agent)
    if observer is not None:
        observer(duration)
    now = time.time()
    await output.send(topics.BATCH_PERFORMANCE, agent.encode(), output.codec.encode(
        topics.BATCH_PERFORMANCE, BatchPerformance(
            agent, records, keys, duration, records / duration if duration > 0 else None,
            now - oldest if oldest != float("inf") else None, str(app.conf.canonical_url),
            now)))
