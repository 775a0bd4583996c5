"""Membership in the ingest shards: an agent over the control topic `<app id>-ingest-shards`.

It does nothing with the records (checkpoints and subscription sets, read by a shard's new
owner directly: see app/shards.py). Subscribing is the point: Faust's group then assigns the
control partitions like any source topic's, and the ingest service runs the shards of the
partitions this worker owns (`app.ingest.IngestService.on_partitions_assigned`).
"""

from __future__ import annotations

from typing import Any

from app import app, settings
from app.shards import control_topic

__all__ = ["ingest_control_topic", "ingest_shards"]

ingest_control_topic = app.topic(control_topic(settings.app_id), partitions=settings.partitions,
                                 key_serializer="raw", value_serializer="raw")


@app.agent(ingest_control_topic, name="ingest-shards")
async def ingest_shards(stream: Any) -> None:
    async for _event in stream.events():
        pass
