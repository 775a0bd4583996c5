"""Batched table writes: one write per key per batch instead of one per event.

A Faust table write is the expensive part of a stateful agent (about 2,400 writes/s per
worker). Agents here take events in batches, fold them per key in plain Python, and write
each key once. A table write is stored in, and changelogged to, the partition of Faust's
*current event*; inside a batch that would be the last event's partition for every key, so
`in_partition_of(event)` (agents/faust_internals.py) makes the event of that key current
for the write.
"""

from __future__ import annotations

from agents.faust_internals import in_partition_of

__all__ = ["in_partition_of", "BATCH_SIZE", "BATCH_WITHIN"]

BATCH_SIZE = 2000  # events per batch at most
BATCH_WITHIN = 0.05  # seconds: the most a batch waits to fill, i.e. the added latency

