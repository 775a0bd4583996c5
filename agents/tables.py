"""Tables keyed by `exchange:BASE-QUOTE` text, with keys serialized as raw UTF-8 bytes.

Faust serializes a table's keys as JSON unless its key type says otherwise, and routes a
view to the worker owning the partition of the *serialized* key: `"upbit:BTC-KRW"` (with
quotes) hashes to another partition than the source topics' key `upbit:BTC-KRW`, so with two
workers a view would be proxied to a worker that does not hold the key. These tables
serialize `str` keys raw, the same bytes as the source topics' keys.
"""

from __future__ import annotations

from typing import Any

import faust

from app import app

__all__ = ["RawKeyTable", "raw_key_table"]


class RawKeyTable(faust.Table):
    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is str else super()._serializer_from_type(typ)


def raw_key_table(name: str, help: str) -> RawKeyTable:
    """A table of JSON values under raw `str` keys, partitioned like the source topics."""
    table = RawKeyTable(app, name=name, default=None, key_type=str, beacon=app.tables.beacon,
                        partitions=app.conf.topic_partitions, help=help)
    return app.tables.add(table)
