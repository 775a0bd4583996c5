"""The agents' tables: raw `str` keys.

Faust serializes a table's keys as JSON unless its key type says otherwise, and routes a
view to the worker owning the partition of the *serialized* key: `"upbit:BTC-KRW"` (with
quotes) hashes to another partition than the source topics' key `upbit:BTC-KRW`, so with two
workers a view would be proxied to a worker that does not hold the key. These tables
serialize `str` keys raw, the same bytes as the source topics' keys.

Changelogs and commits: a table write reaches its changelog through Faust's producer buffer,
and Faust flushes that producer (every record sent and acknowledged) before it commits a
source offset; the writes of the market-data topics' runs go through a lane per partition
number instead, and a run is acked only once the changelog records of its writes are
delivered (`agents/faust_internals.py`, `ChangelogLanes`). A committed offset never has
table writes missing from the changelog.
What a crash can leave is the opposite: writes in the local RocksDB store whose changelog
records were never sent, for source offsets not yet committed. The agents rewrite a key's
entries the first time they read it after a start (`agents/features.py`,
`agents/cross_exchange.py`), so the changelog catches up even when the re-read records
change nothing.
"""

from __future__ import annotations

from agents.application import app
from agents.faust_internals import RawKeyTable

__all__ = ["raw_key_table"]


def raw_key_table(name: str, help: str) -> RawKeyTable:
    """A table of JSON values under raw `str` keys, partitioned like the source topics."""
    return app.tables.add(RawKeyTable(app, name=name, default=None, key_type=str,
                                      beacon=app.tables.beacon,
                                      partitions=app.conf.topic_partitions, help=help))

