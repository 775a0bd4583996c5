"""Hand-written Avro binary encoders for the three hot market-data records (Trade, OrderBook,
Ticker), byte for byte what fastavro's `schemaless_writer` writes for the same schema.

Why not fastavro here: it is the bottleneck of the ingest path, not our code. Measured on the
development machine (one run, CPU time per Binance trade, loaded 2-core machine): orjson.dumps
1.8 us; fastavro `schemaless_writer` of the ready dict 4.9 us, plus building the dict 1.2 us
(the codec's Avro path 6.1 us); this module 0.95 us. bench/ingest.py showed Avro at 61-72%
of JSON per CPU second with fastavro, the issue asks for >= 80%. Decoding, the derived and
control records, and any schema this module does not know exactly stay with fastavro.

An encoder is only built for a schema whose fields are exactly the ones below (names and
types, in order; `FIELDS`): a schema file that changes (a field added, a type widened)
silently falls back to fastavro, so these encoders can never write a body that disagrees
with the registered schema. tests/records/test_avro_binary.py checks the bytes against
fastavro's for every record the recordings of every exchange produce, and for the edge
values (NaN, infinities, -0.0, null, empty sides, long and non-ASCII strings, big ids).

The Avro binary encoding (https://avro.apache.org/docs/1.11.1/specification/#binary-encoding):
int/long zig-zag varint; double 8 bytes little-endian IEEE 754 (NaN bits kept as they are,
like fastavro's memcpy); string varint byte length + UTF-8; union varint branch index then
the value; array blocks of (varint count, items), ended by a 0 count (an empty array is
just the 0).
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct
from typing import Any

from records import OrderBook, Ticker, Trade

__all__ = ["FIELDS", "encoder_for", "zigzag_varint"]

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1

# The exact fields (name, Avro type as in the .avsc) each encoder is written for.
_NULLABLE_DOUBLE = ["null", "double"]
_LEVELS = {"type": "array", "items": {"type": "array", "items": "double"}}
FIELDS: dict[type, list[tuple[str, Any]]] = {
    Trade: [("exchange", "string"), ("symbol", "string"), ("ts_event", "double"),
            ("ts_recv", "double"), ("price", "double"), ("amount", "double"), ("side", "int"),
            ("trade_id", "string")],
    OrderBook: [("exchange", "string"), ("symbol", "string"), ("ts_event", "double"),
                ("ts_recv", "double"), ("bids", _LEVELS), ("asks", _LEVELS),
                ("sequence", ["null", "long"])],
    Ticker: [("exchange", "string"), ("symbol", "string"), ("ts_event", "double"),
             ("ts_recv", "double")] + [(name, _NULLABLE_DOUBLE) for name in (
                 "last", "bid", "bid_size", "ask", "ask_size", "volume_24h",
                 "quote_volume_24h")],
}


def zigzag_varint(n: int) -> bytes:
    """An Avro int/long: zig-zag, then 7 bits per byte, low first. Like fastavro, a value
    outside the 64-bit range is refused."""
    if not LONG_MIN <= n <= LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    n = (n << 1) if n >= 0 else ((-n) << 1) - 1
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]
_DOUBLE = Struct("<d").pack
_TWO_DOUBLES = Struct("<dd").pack
_FOUR_DOUBLES = Struct("<dddd").pack
_LEVEL = b"\x04"  # each level is an array of 2 doubles: one block of count 2 (zig-zag 4)
_NULL = b"\x00"  # union branch 0: null
_SECOND = b"\x02"  # union branch 1: the value


def _string(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    return (_SMALL[n << 1] if n < 0x40 else zigzag_varint(n)) + data


def _fields_of(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(f["name"], f["type"]) for f in schema.get("fields", ())]


def encoder_for(record_type: type, schema: dict[str, Any],
                header: bytes) -> Callable[[Any], bytes] | None:
    """`header` + the Avro body of a `record_type` record under `schema` (the .avsc's JSON),
    or None when this module has no encoder for exactly that type and schema."""
    if record_type not in FIELDS or _fields_of(schema) != FIELDS[record_type]:
        return None
    # header + exchange + symbol, once per market: they repeat on every record of a market.
    prefixes: dict[tuple[str, str], bytes] = {}

    def prefix(exchange: str, symbol: str) -> bytes:
        found = prefixes[(exchange, symbol)] = header + _string(exchange) + _string(symbol)
        return found

    if record_type is Trade:
        return _trade_encoder(prefixes, prefix)
    if record_type is OrderBook:
        return _book_encoder(prefixes, prefix)
    return _ticker_encoder(prefixes, prefix)


def _trade_encoder(prefixes: dict[tuple[str, str], bytes],
                   prefix: Callable[[str, str], bytes]) -> Callable[[Trade], bytes]:
    sides = {1: b"\x02", -1: b"\x01"}

    def encode(r: Trade) -> bytes:
        start = prefixes.get((r.exchange, r.symbol)) or prefix(r.exchange, r.symbol)
        side = sides.get(r.side) or zigzag_varint(r.side)
        return b"".join((start, _FOUR_DOUBLES(r.ts_event, r.ts_recv, r.price, r.amount),
                         side, _string(r.trade_id)))

    return encode


def _levels(levels: list[tuple[float, float]]) -> bytes:
    n = len(levels)
    if not n:
        return _NULL  # an empty array: the end-of-blocks count alone
    parts = [_SMALL[n << 1] if n < 0x40 else zigzag_varint(n)]
    for price, size in levels:
        parts.append(_LEVEL)
        parts.append(_TWO_DOUBLES(price, size))
        parts.append(_NULL)  # the level's end of blocks
    parts.append(_NULL)  # the side's end of blocks
    return b"".join(parts)


def _book_encoder(prefixes: dict[tuple[str, str], bytes],
                  prefix: Callable[[str, str], bytes]) -> Callable[[OrderBook], bytes]:
    def encode(r: OrderBook) -> bytes:
        start = prefixes.get((r.exchange, r.symbol)) or prefix(r.exchange, r.symbol)
        sequence = r.sequence
        return b"".join((start, _TWO_DOUBLES(r.ts_event, r.ts_recv), _levels(r.bids),
                         _levels(r.asks),
                         _NULL if sequence is None else _SECOND + zigzag_varint(sequence)))

    return encode


def _nullable(value: float | None) -> bytes:
    return _NULL if value is None else _SECOND + _DOUBLE(value)


def _ticker_encoder(prefixes: dict[tuple[str, str], bytes],
                    prefix: Callable[[str, str], bytes]) -> Callable[[Ticker], bytes]:
    def encode(r: Ticker) -> bytes:
        start = prefixes.get((r.exchange, r.symbol)) or prefix(r.exchange, r.symbol)
        return b"".join((start, _TWO_DOUBLES(r.ts_event, r.ts_recv), _nullable(r.last),
                         _nullable(r.bid), _nullable(r.bid_size), _nullable(r.ask),
                         _nullable(r.ask_size), _nullable(r.volume_24h),
                         _nullable(r.quote_volume_24h)))

    return encode
