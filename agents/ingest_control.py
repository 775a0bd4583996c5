"""Membership in the ingest shards: an agent over the control topic `<app id>-ingest-shards`.

It does nothing with the records (checkpoints and subscription sets, read by a shard's new
owner directly: see app/shards.py). Subscribing is the point: Faust's group then assigns the
control partitions like any source topic's, and the ingest service runs the shards of the
partitions this worker owns (`app.ingest.IngestService.on_partitions_assigned`).
"""

from __future__ import annotations

from typing import Any

from agents.application import app
from agents.topics import ingest_shards_topic

__all__ = ["ingest_shards"]


@app.agent(ingest_shards_topic, name="ingest-shards")
async def ingest_shards(stream: Any) -> None:
    async for _event in stream.events():
        pass
