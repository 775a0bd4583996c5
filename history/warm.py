"""The warm store: recent history in PostgreSQL, in tables partitioned by day.

Tables (created when missing): `trades`, `book_tops` (best bid and ask of each published
book), `tickers` (raw records), `candles_1m` and `candles_1h` (closed candles of those
intervals, when `KCS_CANDLE_INTERVALS` computes them). Each is range-partitioned on `time`
(timestamptz: `ts_event`, or a candle's start) with one partition per UTC day, named
`<table>_pYYYYMMDD`, created on first use.

A flush COPYs a batch into a temporary staging table, then `INSERT ... ON CONFLICT DO
NOTHING` on each table's unique key, in one transaction: a record delivered twice is stored
once. Retention drops whole partitions older than the table's retention (days).

On TimescaleDB, create the tables as hypertables beforehand (README, "History"): a table
that is not natively partitioned is written the same way, and its partitions and retention
are left to TimescaleDB.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from exchanges.metrics import metrics
from history.schema import decode_value, event_time, record_type, utc_date

__all__ = ["WarmStore", "TABLES", "create_tables", "apply_retention"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # besides `time`, which is computed on insert
    unique: tuple[str, ...]
    time_from: str  # the column `time` is computed from


MARKET = (("exchange", "text NOT NULL"), ("symbol", "text NOT NULL"))
STAMPS = (("ts_event", "float8 NOT NULL"), ("ts_recv", "float8 NOT NULL"))
CANDLE = MARKET + tuple((c, "float8") for c in ("start", "open", "high", "low", "close",
                                                  "volume", "quote_volume")) + \
    (("trades", "int8"),)
TABLES = {t.name: t for t in (
    Table("trades", MARKET + STAMPS + (("price", "float8"), ("amount", "float8"),
                                       ("side", "int2"), ("trade_id", "text NOT NULL")),
          ("exchange", "symbol", "trade_id", "time"), "ts_event"),
    Table("book_tops", MARKET + STAMPS + tuple((c, "float8") for c in (
        "bid", "bid_size", "ask", "ask_size")) + (("sequence", "int8"),),
          ("exchange", "symbol", "time", "ts_recv"), "ts_event"),
    Table("tickers", MARKET + STAMPS + tuple((c, "float8") for c in (
        "last", "bid", "bid_size", "ask", "ask_size", "volume_24h", "quote_volume_24h")),
          ("exchange", "symbol", "time", "ts_recv"), "ts_event"),
    Table("candles_1m", CANDLE, ("exchange", "symbol", "time"), "start"),
    Table("candles_1h", CANDLE, ("exchange", "symbol", "time"), "start"),
)}


def _top(levels: list[list[float]]) -> tuple[float | None, float | None]:
    return (levels[0][0], levels[0][1]) if levels else (None, None)


def table_row(kind: str, value: dict[str, Any]) -> tuple[str, tuple] | None:
    """The warm table and its row (columns in `Table.columns` order) for a decoded record;
    None for a record the warm store does not keep (candles of other intervals)."""
    if kind == "books":
        bid, bid_size = _top(value["bids"])
        ask, ask_size = _top(value["asks"])
        table = TABLES["book_tops"]
        value = dict(value, bid=bid, bid_size=bid_size, ask=ask, ask_size=ask_size)
    elif kind == "candles":
        table = TABLES.get(f"candles_{value['interval']}")
        if table is None:
            return None
    else:
        table = TABLES[kind]
    return table.name, tuple(value[c] for c, _ in table.columns)


def create_tables(conn: psycopg.Connection) -> None:
    for table in TABLES.values():
        columns = ", ".join(f'"{c}" {t}' for c, t in table.columns)
        unique = ", ".join(f'"{c}"' for c in table.unique)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({columns}, "
                     f"time timestamptz NOT NULL, UNIQUE ({unique})) "
                     f"PARTITION BY RANGE (time)")


def _partitioned(conn: psycopg.Connection, table: str) -> bool:
    """False for a table that is not natively partitioned (e.g. a TimescaleDB hypertable)."""
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                       (table,)).fetchone()
    return bool(row) and row[0] == "p"


def _ensure_partition(conn: psycopg.Connection, table: str, date: str) -> None:
    day = dt.date.fromisoformat(date)
    name = f"{table}_p{day:%Y%m%d}"
    conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES "
                 f"FROM ('{day} 00:00+00') TO ('{day + dt.timedelta(days=1)} 00:00+00')")


def apply_retention(conn: psycopg.Connection, retention_days: dict[str, float],
                    now: float | None = None) -> list[str]:
    """Drop the daily partitions that end more than the table's retention before `now`;
    returns the names dropped."""
    now = time.time() if now is None else now
    dropped = []
    for table, days in retention_days.items():
        if not _partitioned(conn, table):
            continue
        cutoff = dt.datetime.fromtimestamp(now - days * 86400, dt.UTC)
        children = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)", (table,)).fetchall()
        for (name,) in children:
            suffix = name.rpartition("_p")[2]
            if not (len(suffix) == 8 and suffix.isdigit()):
                continue
            end = dt.datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=dt.UTC) + \
                dt.timedelta(days=1)
            if end <= cutoff:
                conn.execute(f"DROP TABLE IF EXISTS {name}")
                dropped.append(name)
    conn.commit()
    return dropped


@dataclass
class _Buffer:
    first: int = -1
    last: int = -1
    count: int = 0
    opened: float = field(default_factory=time.monotonic)
    rows: dict[str, list[tuple]] = field(default_factory=dict)  # table -> rows
    dates: dict[str, set[str]] = field(default_factory=dict)  # table -> UTC dates


class WarmStore:
    """The PostgreSQL sink (see `history.consume`): a partition's records are written every
    `flush_seconds` or `flush_records`, idempotently; its consumer's committed offset says
    where to resume (redelivered records are ignored by the unique keys)."""

    name = "warm"

    def __init__(self, dsn: str, flush_records: int = 10000, flush_seconds: float = 1.0
                 ) -> None:
        self.dsn = dsn
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.buffers: dict[tuple[str, int], _Buffer] = {}
        self._conn: psycopg.Connection | None = None
        self._native: dict[str, bool] = {}

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(self.dsn, connect_timeout=5)
            create_tables(conn)
            conn.commit()
            self._native = {name: _partitioned(conn, name) for name in TABLES}
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the sink interface ------------------------------------------------------------
    def resume(self, topic: str, partition: int) -> int | None:
        return None

    def add(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        kind = record_type(topic)
        if kind is None or value is None:
            return
        buffer = self.buffers.get((topic, partition))
        if buffer is None:
            buffer = self.buffers[topic, partition] = _Buffer(first=offset)
        buffer.last = offset
        try:
            record = decode_value(topic, value)
            row = table_row(kind, record)
            date = utc_date(event_time(kind, record))
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # skipped, counted
            metrics.inc("kcs_history_bad_records_total", sink=self.name)
            log.warning("warm: %s[%d]@%d is not a %s record (%r); skipped", topic, partition,
                        offset, kind, exc)
            return
        if row is None:
            return
        table, values = row
        buffer.count += 1
        buffer.rows.setdefault(table, []).append(values)
        buffer.dates.setdefault(table, set()).add(date)

    def due(self) -> list[tuple[str, int]]:
        now = time.monotonic()
        return [tp for tp, b in self.buffers.items()
                if b.count >= self.flush_records or now - b.opened >= self.flush_seconds]

    def pending(self) -> list[tuple[str, int]]:
        return list(self.buffers)

    def waiting(self, topic: str, partition: int) -> int:
        buffer = self.buffers.get((topic, partition))
        return buffer.last - buffer.first + 1 if buffer else 0

    def drop(self, topic: str, partition: int) -> None:
        self.buffers.pop((topic, partition), None)

    def flush(self, topic: str, partition: int) -> int | None:
        buffer = self.buffers.get((topic, partition))
        if buffer is None:
            return None
        try:
            self._write(buffer)
        except psycopg.Error:
            if self._conn is not None and not self._conn.closed:
                self._conn.rollback()
            raise
        del self.buffers[topic, partition]
        return buffer.last + 1

    def _write(self, buffer: _Buffer) -> None:
        conn = self.connection()
        for name, rows in buffer.rows.items():
            table = TABLES[name]
            if self._native[name]:
                for date in buffer.dates[name]:  # also recreates one retention dropped
                    _ensure_partition(conn, name, date)
            columns = ", ".join(f'"{c}"' for c, _ in table.columns)
            stage = f"stage_{name}"
            types = ", ".join(f'"{c}" {t.split()[0]}' for c, t in table.columns)
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({types}) "
                         f"ON COMMIT DELETE ROWS")
            with conn.cursor() as cursor:
                with cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(
                    f"INSERT INTO {name} ({columns}, time) SELECT {columns}, "
                    f"to_timestamp(\"{table.time_from}\") FROM {stage} "
                    f"ON CONFLICT DO NOTHING")
        conn.commit()
