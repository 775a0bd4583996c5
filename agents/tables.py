"""The agents' tables: changelog delivery awaited per batch, and raw `str` keys.

Delivered before committed. Faust commits a source offset once its events are acked, but a
table write reaches its changelog through the producer's buffer, which the commit does not
wait for: a worker killed in between comes back with the offset committed and the write
lost, and the event is never read again (seen in the kill -9 test: hundreds of trades
missing). `DeliveredTable` keeps the delivery future of every changelog record it sends, and
an agent awaits `changelogs_delivered()` at the end of each batch, before the batch's events
are acked.

Raw keys. Faust serializes a table's keys as JSON unless its key type says otherwise, and routes a
view to the worker owning the partition of the *serialized* key: `"upbit:BTC-KRW"` (with
quotes) hashes to another partition than the source topics' key `upbit:BTC-KRW`, so with two
workers a view would be proxied to a worker that does not hold the key. These tables
serialize `str` keys raw, the same bytes as the source topics' keys.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from app import app

__all__ = ["DeliveredTable", "RawKeyTable", "raw_key_table", "delivered_table",
           "changelogs_delivered"]

_tables: list[DeliveredTable] = []


class DeliveredTable(faust.Table):
    """A table that remembers the changelog records it sent until they are delivered."""

    unsent: list[Any]

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        self.unsent.append(future)
        return future


def _register(table: DeliveredTable) -> Any:
    table.unsent = []
    _tables.append(table)
    return app.tables.add(table)


async def changelogs_delivered() -> None:
    """Wait until every changelog record written so far is acknowledged by Kafka."""
    for table in _tables:
        pending, table.unsent = table.unsent, []
        if pending:
            await asyncio.gather(*pending)


def delivered_table(name: str, help: str, **options: Any) -> DeliveredTable:
    return _register(DeliveredTable(app, name=name, help=help, beacon=app.tables.beacon,
                                    **options))


class RawKeyTable(DeliveredTable):
    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is str else super()._serializer_from_type(typ)


def raw_key_table(name: str, help: str) -> RawKeyTable:
    """A table of JSON values under raw `str` keys, partitioned like the source topics."""
    return _register(RawKeyTable(app, name=name, default=None, key_type=str,
                                 beacon=app.tables.beacon, partitions=app.conf.topic_partitions,
                                 help=help))
