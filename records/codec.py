"""The one codec between the project's records and Kafka: JSON (orjson) or Avro.

Which topic carries which encoding is fixed here (`AVRO_FAMILIES`, `JSON_TOPICS`); the README
shows it as a table. With a schema registry (`KCS_SCHEMA_REGISTRY`) the Avro topics carry the
Confluent wire format: byte 0, the 4-byte big-endian schema id registered under the subject
`<topic>-value`, then the Avro binary body: fastavro's (schemaless, with the parsed schema),
except for Trade, OrderBook and Ticker, written by records/avro_binary.py to the same bytes
(fastavro was the ingest path's bottleneck; the figures are there).
Without one, every topic is JSON. The ids are resolved once at start (records/registry.py)
and handed to `Codec`: encoding never calls the registry. Keys are not encoded here: they
stay UTF-8 strings (`exchange:BASE-QUOTE`, or the asset).

Decoding accepts both encodings on an Avro topic (JSON written before the registry was set
is still read), and resolves a writer schema it does not know (a newer or older version
registered by another producer) once through `fetch_schema`, then reads it into this
version's schema: old and new readers read each other's records as Avro's resolution rules
allow (see the README's compatibility rules).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import fastavro
import msgspec
import orjson

from records import avro_binary
from records.derived import dumps_as_is

__all__ = ["Codec", "RegistryUnavailable", "JSON", "SCHEMAS_DIR", "AVRO_FAMILIES",
           "JSON_TOPICS", "schema_file", "is_avro", "load_schema", "subject", "MAGIC",
           "is_confluent_avro", "TradeRow"]

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
MAGIC = 0
_MAGIC_BYTE = bytes([MAGIC])


def is_confluent_avro(value: bytes) -> bool:
    """Whether a value is in Confluent's wire format (the magic byte, a schema id, Avro);
    anything else on these topics is JSON."""
    return value[:1] == _MAGIC_BYTE


# Topic family (the topic name, or its part before the last dot) -> schema file (no .avsc).
AVRO_FAMILIES = {
    "trade-data": "trade",
    "orderbook-data": "order_book",
    "ticker-data": "ticker",
    "ws.connect_success": "connect_success",
    "ws.metrics": "ws_metrics",
    "market-state": "market_state",
    "features": "features",
    "candles": "candle",
    "signals": "signal",
    "premium": "premium",
    "bbo": "bbo",
}
# Always JSON, registry or not: topic -> the schema file that documents its fields (None:
# `ws.dlq` carries a frame's raw bytes, its details in headers).
JSON_TOPICS = {
    "ws.command": "ws_command",
    "ws.error": "error_event",
    "ws.dlq": None,
    "ws.backpressure.events": "backpressure_event",
    "monitoring.batch.performance": "batch_performance",
}


def _family(topic: str) -> str:
    return topic if topic in AVRO_FAMILIES or topic in JSON_TOPICS else topic.rpartition(".")[0]


def schema_file(topic: str) -> str | None:
    """The schema file name (without `.avsc`) of `topic`'s records, None for none."""
    family = _family(topic)
    if family in AVRO_FAMILIES:
        return AVRO_FAMILIES[family]
    return JSON_TOPICS.get(topic)


def is_avro(topic: str) -> bool:
    """Whether `topic` carries Avro when a registry is set."""
    return _family(topic) in AVRO_FAMILIES


def subject(topic: str) -> str:
    """TopicNameStrategy: the value schema of `topic` is registered under `<topic>-value`."""
    return f"{topic}-value"


def load_schema(name: str, directory: Path = SCHEMAS_DIR) -> tuple[str, Any]:
    """(the file's text, its parsed schema); raises ValueError naming the file."""
    path = directory / f"{name}.avsc"
    try:
        text = path.read_text(encoding="utf-8")
        return text, fastavro.parse_schema(json.loads(text))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"schema file {path}: {exc}") from None


def _as_mapping(record: Any) -> Callable[[Any], dict[str, Any]]:
    """How to turn records of `record`'s type into the dict fastavro writes."""
    if isinstance(record, dict):
        return lambda r: r
    if hasattr(record, "as_dict"):  # derived and control records (nested, renamed fields)
        return lambda r: r.as_dict()
    if is_dataclass(record):  # the flat market-data records, on the ingest hot path
        # A dict display reads the fields 2-3x faster than dict(zip(names, attrgetter(...)))
        # (bench/ingest.py); the names are the dataclass's own identifiers.
        body = ", ".join(f"{f.name!r}: r.{f.name}" for f in fields(record))
        return eval(f"lambda r: {{{body}}}")
    raise TypeError(f"cannot encode {type(record).__name__}")


class _AvroTopic:
    __slots__ = ("header", "schema", "declared", "encoders", "buffer")

    def __init__(self, schema_id: int, schema: Any, declared: dict[str, Any]) -> None:
        self.header = _MAGIC_BYTE + schema_id.to_bytes(4, "big")
        self.schema = schema
        self.declared = declared  # the .avsc's JSON, as written (for records.avro_binary)
        self.encoders: dict[type, Callable[[Any], bytes]] = {}  # record type -> value bytes
        # One buffer per topic, the header written once: each record only rewinds it past
        # the header (the codec is used from one thread, the event loop's).
        self.buffer = io.BytesIO(self.header)
        self.buffer.seek(5)

    def encoder(self, record: Any) -> Callable[[Any], bytes]:
        """The function that writes records of `record`'s type, made once per type: the
        hand-written one for the hot market-data records (records/avro_binary.py, when the
        schema is exactly the one it was written for), else fastavro's writer."""
        fast = avro_binary.encoder_for(type(record), self.declared, self.header)
        if fast is not None:
            return fast
        convert = _as_mapping(record)
        out, schema, write = self.buffer, self.schema, fastavro.schemaless_writer

        def encode(r: Any) -> bytes:
            out.seek(5)
            out.truncate()
            write(out, schema, convert(r))
            return out.getvalue()

        return encode


class TradeRow(msgspec.Struct, gc=False):
    """A `records.Trade` as the feature agents read it back: the same fields, by attribute.
    A JSON value is decoded straight into it, not through a dict: 0.53 against 1.0 us a
    trade (orjson's dict; in-process, on bench/features.py's synthetic trades), and its
    fields read faster. bench/features.py back to back: 28.1% -> 36.9% of the floor."""

    exchange: str
    symbol: str
    ts_event: float
    ts_recv: float
    price: float
    amount: float
    side: int
    trade_id: str | None


_TRADE_ROW = msgspec.json.Decoder(TradeRow).decode


class Codec:
    """Encodes and decodes record values per topic.

    `schema_ids` (topic -> registered schema id) turns Avro on for those topics; empty, every
    topic is JSON. `fetch_schema(id)` returns the text of a schema id this codec has not
    seen (called once per id, when a record written with it is first decoded)."""

    def __init__(self, schema_ids: Mapping[str, int] | None = None,
                 fetch_schema: Callable[[int], str] | None = None,
                 directory: Path = SCHEMAS_DIR) -> None:
        self.schema_ids = dict(schema_ids or {})
        self.fetch_schema = fetch_schema
        self.avro: dict[str, _AvroTopic] = {}
        self.readers: dict[str, Any] = {}  # topic -> this version's parsed schema
        self.writers: dict[int, Any] = {}  # schema id -> parsed writer schema
        self.directory = directory
        parsed: dict[str, Any] = {}
        declared: dict[str, Any] = {}
        for topic, schema_id in self.schema_ids.items():
            name = schema_file(topic)
            if name is None or not is_avro(topic):
                raise ValueError(f"topic {topic!r} is not an Avro topic")
            if name not in parsed:
                text, parsed[name] = load_schema(name, directory)
                declared[name] = json.loads(text)
            self.avro[topic] = _AvroTopic(schema_id, parsed[name], declared[name])
            self.readers[topic] = parsed[name]
            self.writers[schema_id] = parsed[name]

    @property
    def uses_avro(self) -> bool:
        return bool(self.avro)

    def encode(self, topic: str, record: Any) -> bytes:
        """The value bytes of `record` on `topic`."""
        avro = self.avro.get(topic)
        if avro is None:
            if self.avro and is_avro(topic):
                raise LookupError(f"topic {topic!r} has no schema id: it was not in the "
                                  f"start-up preflight")
            if hasattr(record, "as_dict") and not dumps_as_is(type(record)):
                record = record.as_dict()
            return orjson.dumps(record)
        encode = avro.encoders.get(type(record))
        if encode is None:
            encode = avro.encoders[type(record)] = avro.encoder(record)
        return encode(record)

    def decode(self, topic: str, value: bytes) -> Any:
        """The record of `value` as plain Python values (dicts, lists)."""
        if value[:1] != _MAGIC_BYTE:  # is_confluent_avro, inline: once per record
            return orjson.loads(value)
        schema_id = int.from_bytes(value[1:5], "big")
        writer = self.writers.get(schema_id)
        if writer is None:
            writer = self.writers[schema_id] = self._fetch(schema_id)
        reader = self.readers.get(topic)
        if reader is None:  # a topic this codec does not write: read it as this version's
            name = schema_file(topic)  # schema file says (a reader such as the archive role)
            if name is None or not is_avro(topic):
                reader = writer
            else:
                reader = self.readers[topic] = load_schema(name, self.directory)[1]
        body = io.BytesIO(value)
        body.seek(5)
        return fastavro.schemaless_reader(body, writer, None if reader is writer else reader)

    def decode_trade(self, topic: str, value: bytes) -> TradeRow:
        """A trade topic's value as a `TradeRow`."""
        if value[:1] != _MAGIC_BYTE:  # is_confluent_avro, inline: once per trade
            return _TRADE_ROW(value)
        return msgspec.convert(self.decode(topic, value), TradeRow)

    def _fetch(self, schema_id: int) -> Any:
        if self.fetch_schema is None:
            raise LookupError(f"schema id {schema_id} is unknown and no registry is set")
        try:
            text = self.fetch_schema(schema_id)
        except LookupError:  # the registry answered: no such id (the record is unreadable)
            raise
        except Exception as exc:  # the registry did not answer: nothing wrong with the record
            raise RegistryUnavailable(f"schema id {schema_id}: the schema registry did not "
                                      f"answer: {exc!r}") from exc
        return fastavro.parse_schema(json.loads(text))


class RegistryUnavailable(ConnectionError):
    """A record's schema could not be fetched because the registry did not answer: a worker
    stops (and retries when restarted) instead of refusing the record
    (agents/dead_letters.py)."""


JSON = Codec()  # JSON everywhere: the codec when no registry is set
