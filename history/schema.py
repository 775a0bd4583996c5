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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from records.codec import JSON, Codec

__all__ = ["TYPES", "SCHEMAS", "decode_value", "record_type", "event_time", "to_table",
           "utc_date", "utc_day"]

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
    table = pa.Table.from_pylist(rows, schema=schema.remove(at))
    seconds = table["start" if kind == "candles" else "ts_event"]
    micros = pc.cast(pc.round(pc.multiply(seconds, 1_000_000.0)), pa.int64())
    return table.add_column(at, schema.field(at), micros.cast(TIME))
