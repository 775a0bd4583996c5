"""The ingest shards' Faust wiring: membership through the control topic, and `ws.command`.

- `ingest-shards` reads `<app id>-ingest-shards` (checkpoints and subscription sets, read
  by a shard's new owner directly: app/shards.py) and hands each record to the handler set
  with `on_control` (the ingest service's: a shard's new subscription set, applied by the
  worker that owns it). Subscribing is the point: Faust's group then assigns the control
  partitions like any source topic's, and the ingest service runs the shards of the
  partitions this worker owns.
- `ws-commands` reads `ws.command` (keyed by the exchange: one worker reads an exchange's
  commands, in order) and hands each record to the handler set with `on_command`, the
  ingest service's `apply_command`, which routes it to the shards concerned through the
  control topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agents.application import app
from agents.topics import command_topic, ingest_shards_topic

__all__ = ["ingest_shards", "ws_commands", "on_command", "on_control"]

_handler: Callable[[str | None, bytes], Awaitable[None]] | None = None
_control: Callable[[str | None, bytes, int, int, Any], Awaitable[None]] | None = None


def on_command(handler: Callable[[str | None, bytes], Awaitable[None]]) -> None:
    global _handler
    _handler = handler


def on_control(handler: Callable[[str | None, bytes, int, int, Any], Awaitable[None]]) -> None:
    global _control
    _control = handler


@app.agent(ingest_shards_topic, name="ingest-shards")
async def ingest_shards(stream: Any) -> None:
    async for event in stream.events():
        if _control is not None:
            message = event.message
            key = event.key.decode() if isinstance(event.key, bytes) else event.key
            value = event.value if isinstance(event.value, bytes) else str(event.value).encode()
            await _control(key, value, message.partition, message.offset, message.headers)


@app.agent(command_topic, name="ws-commands")
async def ws_commands(stream: Any) -> None:
    async for event in stream.events():
        if _handler is not None:
            key = event.key.decode() if isinstance(event.key, bytes) else event.key
            value = event.value if isinstance(event.value, bytes) else str(event.value).encode()
            await _handler(key, value)
