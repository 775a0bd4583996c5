"""The ingest shards' Faust wiring: membership through the control topic, and `ws.command`.

- `ingest-shards` reads `<app id>-ingest-shards` and does nothing with the records
  (checkpoints and subscription sets, read by a shard's new owner directly: app/shards.py).
  Subscribing is the point: Faust's group then assigns the control partitions like any
  source topic's, and the ingest service runs the shards of the partitions this worker owns.
- `ws-commands` reads `ws.command` (co-partitioned with the control topic, and keyed by the
  exchange as a shard is: the worker that reads a command is the one running its shard) and
  hands each record to `handle_command`, which the app sets to the ingest service's
  `apply_command`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agents.application import app
from agents.topics import command_topic, ingest_shards_topic

__all__ = ["ingest_shards", "ws_commands", "on_command"]

_handler: Callable[[str | None, bytes], Awaitable[None]] | None = None


def on_command(handler: Callable[[str | None, bytes], Awaitable[None]]) -> None:
    global _handler
    _handler = handler


@app.agent(ingest_shards_topic, name="ingest-shards")
async def ingest_shards(stream: Any) -> None:
    async for _event in stream.events():
        pass


@app.agent(command_topic, name="ws-commands")
async def ws_commands(stream: Any) -> None:
    async for event in stream.events():
        if _handler is not None:
            key = event.key.decode() if isinstance(event.key, bytes) else event.key
            value = event.value if isinstance(event.value, bytes) else str(event.value).encode()
            await _handler(key, value)
