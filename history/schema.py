"""What the history keeps of each record type: its Parquet (Arrow) columns, and the one
function that decodes a Kafka record value.

Four record types are kept, each from its topics: `trades` (`trade-data.<exchange>`),
`books` (`orderbook-data.<exchange>`, the published top N), `tickers`
(`ticker-data.<exchange>`) and `candles` (`candles.<interval>`, closed candles only).
Every row carries the record's own fields with their JSON types made exact (float64,
int8 side, strings), `time` (the event time as a UTC timestamp: `ts_event`, or a candle's
`start`), and `kafka_partition`/`kafka_offset`, where the record sat in its source topic
(replay puts each market's records back in that order).
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from records.codec import JSON, Codec

__all__ = ["TYPES", "SCHEMAS", "decode_value", "record_type", "event_time", "to_table",
           "json_table", "utc_date", "utc_day"]

LEVEL = pa.struct([("price", pa.float64()), ("size", pa.float64())])
TIME = pa.timestamp("us", tz="UTC")
SOURCE = [("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())]
MARKET = [("exchange", pa.string()), ("symbol", pa.string())]
STAMPS = [("ts_event", pa.float64()), ("ts_recv", pa.float64()), ("time", TIME)]

SCHEMAS: dict[str, pa.Schema] = {
    "trades": pa.schema(MARKET + STAMPS + [
        ("price", pa.float64()), ("amount", pa.float64()), ("side", pa.int8()),
        ("trade_id", pa.string())] + SOURCE),
    "books": pa.schema(MARKET + STAMPS + [
        ("bids", pa.list_(LEVEL)), ("asks", pa.list_(LEVEL)), ("sequence", pa.int64())]
        + SOURCE),
    "tickers": pa.schema(MARKET + STAMPS + [
        (name, pa.float64()) for name in ("last", "bid", "bid_size", "ask", "ask_size",
                                          "volume_24h", "quote_volume_24h")] + SOURCE),
    "candles": pa.schema(MARKET + [
        ("interval", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
        ("time", TIME)] + [(name, pa.float64()) for name in (
            "open", "high", "low", "close", "volume", "quote_volume")]
        + [("trades", pa.int64())] + SOURCE),
}
TYPES = tuple(SCHEMAS)
_PREFIXES = {"trade-data.": "trades", "orderbook-data.": "books", "ticker-data.": "tickers",
             "candles.": "candles"}


# The topics' codec (records/codec.py): JSON, or the registry's Avro once the worker's
# start-up preflight has run (app/main.py sets it).
codec: Codec = JSON


def decode_value(topic: str, value: bytes) -> dict[str, Any]:
    """A Kafka record value as a dict: the one place the history decodes a value."""
    return codec.decode(topic, value)


def record_type(topic: str) -> str | None:
    """"trade-data.upbit" -> "trades"; None for a topic the history does not keep."""
    for prefix, kind in _PREFIXES.items():
        if topic.startswith(prefix):
            return kind
    return None


def event_time(kind: str, row: dict[str, Any]) -> float:
    """The float epoch seconds a row is dated by: a candle's start, otherwise ts_event."""
    return row["start"] if kind == "candles" else row["ts_event"]


def utc_day(seconds: float) -> int:
    """Days since 1970-01-01 UTC (cheap, per record); `utc_date` names the day."""
    return int(seconds // 86400.0)


def utc_date(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d")


def to_table(kind: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Decoded rows (each with `kafka_partition` and `kafka_offset` set) as an Arrow table
    of the type's schema; `time` is computed here from the float seconds."""
    schema = SCHEMAS[kind]
    if kind == "books":
        for row in rows:
            row["bids"] = [{"price": p, "size": s} for p, s in row["bids"]]
            row["asks"] = [{"price": p, "size": s} for p, s in row["asks"]]
    at = schema.get_field_index("time")
    return _with_time(kind, pa.Table.from_pylist(rows, schema=schema.remove(at)))


def _with_time(kind: str, table: pa.Table) -> pa.Table:
    """`table` (the type's columns but `time`) with `time` from its float seconds."""
    schema = SCHEMAS[kind]
    at = schema.get_field_index("time")
    seconds = table["start" if kind == "candles" else "ts_event"]
    micros = pc.cast(pc.round(pc.multiply(seconds, 1_000_000.0)), pa.int64())
    return table.add_column(at, schema.field(at), micros.cast(TIME))


# The fields as a JSON value holds them, for pyarrow's JSON reader: a book's levels are
# `[[price, size], ...]` there, and `time` and the Kafka position are not in the value.
_AS_SENT = pa.list_(pa.list_(pa.float64()))
_JSON_SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([pa.field(f.name, _AS_SENT) if kind == "books" and f.name in ("bids", "asks")
                     else f for f in schema if f.name not in ("time", "kafka_partition",
                                                              "kafka_offset")])
    for kind, schema in SCHEMAS.items()}
_JSON_PARSE = {kind: pa_json.ParseOptions(explicit_schema=schema,
                                          unexpected_field_behavior="ignore")
               for kind, schema in _JSON_SCHEMAS.items()}


def json_table(kind: str, values: list[bytes], partition: int, offsets: list[int]
               ) -> pa.Table | None:
    """JSON record values (one line each, as orjson writes them) as the table `to_table`
    makes of them decoded, with `kafka_partition` and `kafka_offset`, read by pyarrow's
    JSON reader: C++ threads, without the GIL, where decoding to dicts and `to_table` held it
    for about 3 us a record (history/archive.py). None when a value does not fit the type
    as the reader reads it (not JSON, a field missing where the Python way counts the
    record as bad, a book level that is not a pair, a value split across the reader's
    blocks): the caller decodes them the Python way, which keeps its own rules for them."""
    try:
        table = pa_json.read_json(io.BytesIO(b"\n".join(values)),
                                  parse_options=_JSON_PARSE[kind])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != len(values) or table["exchange"].null_count or \
            table["start" if kind == "candles" else "ts_event"].null_count:
        return None
    if kind == "books":
        for name in ("bids", "asks"):
            levels = _levels(table[name])
            if levels is None:
                return None
            table = table.set_column(table.schema.get_field_index(name),
                                     SCHEMAS[kind].field(name), levels)
    table = table.append_column(SCHEMAS[kind].field("kafka_partition"),
                                pa.array([partition] * len(values), pa.int32()))
    table = table.append_column(SCHEMAS[kind].field("kafka_offset"),
                                pa.array(offsets, pa.int64()))
    return _with_time(kind, table)


def _levels(column: pa.ChunkedArray) -> pa.Array | None:
    """`[[price, size], ...]` per row as the schema's list of (price, size) structs; None
    when a row's levels are null or a level is not two numbers."""
    rows = column.combine_chunks()
    if rows.null_count:
        return None
    pairs = rows.flatten()
    if pairs.null_count or len(pairs) and \
            not pc.all(pc.equal(pc.list_value_length(pairs), 2)).as_py():
        return None
    numbers = pa.FixedSizeListArray.from_arrays(pairs.flatten(), 2)
    if numbers.flatten().null_count:
        return None
    levels = pa.StructArray.from_arrays(
        [pc.list_element(numbers, 0), pc.list_element(numbers, 1)], fields=list(LEVEL))
    return pa.ListArray.from_arrays(pc.subtract(rows.offsets, rows.offsets[0]), levels)
