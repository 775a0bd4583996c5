"""The cold archive: records of a source topic-partition buffered, then written as Parquet
files (snappy) under `type=<type>/exchange=<exchange>/date=<UTC date>/`.

No record is written twice, even after a kill -9: every file of one flush is named after
the flush's source topic-partition and offset range and how many files it made,
`part-<source>-<topic>-<partition>-<first>-<last>-<i>of<n>.parquet`. A file is written to a
hidden temporary name, fsynced and renamed, so it is whole or absent. On start
(`resume()`), the files of a partition say where to continue: after the last offset of the
newest complete flush; the files of a flush left incomplete by a crash are deleted (their
records are read again). Offsets are committed to Kafka only after a flush is durable, but
the files, not the committed offset, decide where reading resumes.

`<source>` tells apart brokers whose offsets restart at 0: the embedded broker keeps
everything in memory, so each of its runs gets its own source name.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from exchanges.metrics import metrics
from history.schema import decode_value, event_time, json_table, record_type, to_table, \
    utc_date, utc_day
from records.codec import is_confluent_avro

__all__ = ["Archive", "open_filesystem", "PART_NAME"]

log = logging.getLogger(__name__)

PART_NAME = re.compile(r"^part-(?P<source>[a-z0-9]+)-(?P<topic>.+)-(?P<partition>\d+)-"
                       r"(?P<first>\d+)-(?P<last>\d+)-(?P<i>\d+)of(?P<n>\d+)\.parquet$")


def open_filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root path in it, for a local path or any URL pyarrow
    knows (`file://`, `s3://`, `gs://`, `hdfs://`), or else any fsspec URL (with fsspec and
    its backend installed)."""
    if "://" not in url:
        path = os.path.abspath(url)
        return pafs.LocalFileSystem(), path
    try:
        return pafs.FileSystem.from_uri(url)
    except (pafs.ArrowInvalid, ValueError, OSError):  # a scheme only fsspec knows
        import fsspec  # optional: installed with its backends where it is used

        fs, path = fsspec.core.url_to_fs(url)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


@dataclass
class _Buffer:
    """A source partition's records since its last flush, undecoded: decoding happens in
    the flush's thread, and a buffer holds no more than its roll size in memory."""

    kind: str
    first: int = -1
    last: int = -1
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    records: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, value)


class Archive:
    """The Parquet sink: `add()` records, `due()` says which partitions should roll,
    `flush()` writes them durably and returns the next offset to commit."""

    name = "archive"

    def __init__(self, url: str, source: str, roll_bytes: int = 64 << 20,
                 roll_seconds: float = 300.0) -> None:
        self.fs, self.root = open_filesystem(url)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if not re.fullmatch(r"[a-z0-9]+", source):
            raise ValueError(f"archive source {source!r}: lower-case letters and digits only")
        self.source = source
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self.buffers: dict[tuple[str, int], _Buffer] = {}
        self.fs.create_dir(self.root, recursive=True)

    # -- where to resume -------------------------------------------------------------
    def _type_dir(self, topic: str) -> str | None:
        kind = record_type(topic)
        if kind is None:
            return None
        if kind == "candles":  # one candle topic holds every exchange
            return f"{self.root}/type={kind}"
        return f"{self.root}/type={kind}/exchange={topic.partition('.')[2]}"

    def resume(self, topic: str, partition: int) -> int | None:
        """The offset after the last record archived from this partition (None: nothing
        archived yet). Files of an incomplete flush and stray temporary files are deleted."""
        base = self._type_dir(topic)
        if base is None or self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return None
        flushes: dict[tuple[int, int, int], list[str]] = {}
        selector = pafs.FileSelector(base, recursive=True)
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            if name.startswith(".part-") and f"-{topic}-{partition}-" in name:
                self.fs.delete_file(info.path)  # a write a crash interrupted
                continue
            match = PART_NAME.match(name)
            if not match or match["source"] != self.source or match["topic"] != topic or \
                    int(match["partition"]) != partition:
                continue
            key = (int(match["first"]), int(match["last"]), int(match["n"]))
            flushes.setdefault(key, []).append(info.path)
        resume = None
        for (_, last, count), paths in flushes.items():
            if len(paths) < count:  # the crash came between two renames of one flush
                for path in paths:
                    self.fs.delete_file(path)
                continue
            resume = max(resume or 0, last + 1)
        return resume

    # -- buffering ---------------------------------------------------------------------
    def add(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        buffer = self.buffers.get((topic, partition))
        if buffer is None:
            kind = record_type(topic)
            if kind is None:
                return
            buffer = self.buffers[topic, partition] = _Buffer(kind, first=offset)
        buffer.last = offset
        if value is not None:
            buffer.size += len(value)
            buffer.records.append((offset, value))

    def due(self, now: float | None = None) -> list[tuple[str, int]]:
        """Partitions whose buffer reached the roll size or age."""
        now = time.monotonic() if now is None else now
        return [tp for tp, b in self.buffers.items()
                if b.size >= self.roll_bytes or now - b.opened >= self.roll_seconds]

    def pending(self) -> list[tuple[str, int]]:
        return list(self.buffers)

    def waiting(self, topic: str, partition: int) -> int:
        buffer = self.buffers.get((topic, partition))
        return buffer.last - buffer.first + 1 if buffer else 0

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition's buffer unwritten (it was revoked before a flush could
        complete; its records will be read again)."""
        self.buffers.pop((topic, partition), None)

    # -- writing -----------------------------------------------------------------------
    def flush(self, topic: str, partition: int) -> int | None:
        """Write the partition's buffer as one file per (type, exchange, date); returns the
        next offset to commit (None if nothing was buffered). Blocking: run it in a thread."""
        buffer = self.buffers.get((topic, partition))
        if buffer is None:
            return None
        kind = buffer.kind
        tables = self._json_groups(topic, partition, buffer)
        if tables is None:
            tables = self._decoded_groups(topic, partition, buffer)
        for i, ((exchange, day), table) in enumerate(tables, 1):
            directory = (f"{self.root}/type={kind}/exchange={exchange}/"
                         f"date={utc_date(day * 86400.0)}")
            name = (f"part-{self.source}-{topic}-{partition}-{buffer.first:012d}-"
                    f"{buffer.last:012d}-{i}of{len(tables)}.parquet")
            self._write(directory, name, table)
        del self.buffers[topic, partition]  # kept until written: a failed write is retried
        return buffer.last + 1

    def _json_groups(self, topic: str, partition: int, buffer: _Buffer
                     ) -> list[tuple[tuple[str, int], Any]] | None:
        """The buffer's tables per (exchange, UTC day), in that order, read by pyarrow's JSON
        reader (`history.schema.json_table`); None unless every value is JSON that it reads
        as the type (Avro values, a record the Python way would skip)."""
        if not buffer.records:
            return []
        offsets = [offset for offset, _ in buffer.records]
        values = [value for _, value in buffer.records]
        if any(map(is_confluent_avro, values)):
            return None
        table = json_table(buffer.kind, values, partition, offsets)
        if table is None:
            return None
        seconds = table["start" if buffer.kind == "candles" else "ts_event"]
        # utc_day's floor division: floor(s / 86400), one less where rounding the quotient
        # up reached the next day (never seen at today's epochs, exact at any).
        quotient = pc.floor(pc.divide(seconds, 86400.0))
        over = pc.greater(pc.multiply(quotient, 86400.0), seconds)
        days = pc.cast(pc.subtract(quotient, pc.cast(over, pa.float64())), pa.int64())
        keyed = table.append_column("_day", days)
        keys = keyed.group_by(["exchange", "_day"]).aggregate([]).to_pylist()
        out = []
        for exchange, day in sorted((k["exchange"], k["_day"]) for k in keys):
            mask = pc.and_(pc.equal(keyed["exchange"], exchange), pc.equal(days, day))
            out.append(((exchange, day), table.filter(mask)))
        return out

    def _decoded_groups(self, topic: str, partition: int, buffer: _Buffer
                        ) -> list[tuple[tuple[str, int], Any]]:
        """The buffer's tables per (exchange, UTC day), in that order, decoded record by
        record (a record that does not decode as its type is skipped and counted)."""
        kind = buffer.kind
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}  # (exchange, UTC day)
        for offset, value in buffer.records:
            try:
                row = decode_value(topic, value)
                day = utc_day(event_time(kind, row))
            except (ValueError, KeyError, TypeError) as exc:  # not a record: skipped, counted
                metrics.inc("kcs_history_bad_records_total", sink=self.name)
                log.warning("archive: %s[%d]@%d is not a %s record (%r); skipped", topic,
                            partition, offset, kind, exc)
                continue
            row["kafka_partition"] = partition
            row["kafka_offset"] = offset
            key = (row["exchange"], day)
            rows = groups.get(key)
            if rows is None:
                rows = groups[key] = []
            rows.append(row)
        return [(key, to_table(kind, rows)) for key, rows in sorted(groups.items())]

    def _write(self, directory: str, name: str, table: Any) -> None:
        """Write `table` to `directory/name` so that it is whole or absent."""
        self.fs.create_dir(directory, recursive=True)
        temporary = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        final = f"{directory}/{name}"
        if self.local:
            with open(temporary, "wb") as out:
                pq.write_table(table, out, compression="snappy")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself survives a power loss
            finally:
                os.close(fd)
        else:  # object stores: an upload appears whole; move is copy + delete there
            with self.fs.open_output_stream(temporary) as out:
                pq.write_table(table, out, compression="snappy")
            self.fs.move(temporary, final)
