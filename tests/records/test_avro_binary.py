"""The hand-written Avro encoders (records/avro_binary.py) against fastavro, byte for byte, on
every record the recordings of every exchange produce, and decoded back by fastavro and by a
client we did not write (confluent-kafka's AvroDeserializer, against a real registry)."""

from __future__ import annotations

import io
import json
import math
import shutil
import uuid
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from replay.subscriptions import RECORDING_NAMES, from_recordings
from config.settings import load_settings
from exchanges import CONNECTORS
from exchanges.base import Stream
from exchanges.publisher import Publisher
from replay.recordings import Recording, load_recordings
from records import OrderBook, Ticker, Trade
from records.avro_binary import encoder_for, zigzag_varint
from records.codec import JSON, SCHEMAS_DIR, Codec, load_schema
from records.registry import preflight

from tests.support import FIXTURES, REPLAYS

SCHEMA = {Trade: "trade", OrderBook: "order_book", Ticker: "ticker"}
TOPIC = {Trade: "trade-data.x", OrderBook: "orderbook-data.x", Ticker: "ticker-data.x"}
HEADER = b"\x00\x00\x00\x00\x07"  # schema id 7
# Recordings in ../shared/replays made with a protocol our connector does not speak
# (bench/parse.py says the same).
NOT_SPOKEN = {"bithumb"}


class OfflineSession:
    """The network stands still: no snapshot request, no message goes out."""

    def spawn(self, coro: Any) -> None:
        coro.close()

    def send_soon(self, stream: Stream, message: Any) -> None:
        pass


def replay_records(name: str, recording: Recording) -> list[Any]:
    """Every Trade, OrderBook and Ticker the connector makes of the recording's frames."""
    subs = from_recordings({recording.exchange: recording})[name]
    out = Publisher(name)
    connector = CONNECTORS[name](subs, out, load_settings({}))
    connector.session = OfflineSession()  # type: ignore[assignment]
    connector.connections()
    if name == "binance":  # its books start from the recorded REST snapshots
        for response in recording.rest:
            if "/depth?" in response.url:
                symbol = connector.unified.get(response.url.split("symbol=")[1].split("&")[0])
                if symbol in connector.books:
                    connector._load(symbol, orjson.loads(response.body), [], response.ts)
    records = []
    for conn in recording.connections:
        stream = Stream(conn.url, [], [])
        for ts, data in conn.received:
            try:
                connector.on_frame(data, ts, stream)
            except Exception:  # noqa: BLE001 - fixtures hold malformed frames on purpose
                pass
            records += [p[2] for p in out.pending if type(p[2]) in SCHEMA]
            out.pending.clear()
    return records


def all_recordings() -> dict[str, list[Any]]:
    """exchange -> its records, from ../shared/replays where our connector speaks the
    recorded protocol, else from the fixture recordings in tests/fixtures/replays."""
    found: dict[str, Recording] = {}
    for source, directory in (("fixture", FIXTURES / "replays"), ("recorded", REPLAYS)):
        if not directory.is_dir():
            continue
        for prefix, recording in load_recordings(directory).items():
            name = RECORDING_NAMES.get(prefix, prefix)
            if source == "recorded" and name in NOT_SPOKEN:
                continue
            if name in CONNECTORS and any(c.received for c in recording.connections):
                found[name] = recording
    return {name: replay_records(name, recording) for name, recording in found.items()}


@pytest.fixture(scope="module")
def replayed() -> dict[str, list[Any]]:
    if not REPLAYS.is_dir():
        pytest.skip(f"recordings folder {REPLAYS} is missing")
    return all_recordings()


def fastavro_body(record: Any) -> bytes:
    schema = load_schema(SCHEMA[type(record)])[1]
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, asdict(record))
    return out.getvalue()


def fastavro_read(record_type: type, body: bytes) -> dict[str, Any]:
    return fastavro.schemaless_reader(io.BytesIO(body), load_schema(SCHEMA[record_type])[1],
                                      None)


def json_values(record: Any) -> Any:
    return orjson.loads(JSON.encode(TOPIC[type(record)], record))


def test_every_replayed_record_is_fastavros_bytes_and_decodes_to_the_json_values(
        replayed: dict[str, list[Any]]) -> None:
    codec = Codec({topic: 7 for topic in TOPIC.values()})
    for cls in TOPIC:  # the hand-written encoder is the one in use
        assert encoder_for(cls, json.loads(load_schema(SCHEMA[cls])[0]), HEADER) is not None
    kinds: dict[str, set[str]] = {}
    for exchange, records in replayed.items():
        for record in records:
            value = codec.encode(TOPIC[type(record)], record)
            assert value == HEADER + fastavro_body(record), (exchange, record)
            assert fastavro_read(type(record), value[5:]) == json_values(record), record
            kinds.setdefault(exchange, set()).add(type(record).__name__)
    # every exchange replayed, and each record type seen somewhere
    assert set(kinds) >= {"upbit", "binance", "okx", "htx", "coinbase", "kraken", "bitfinex",
                          "bybit", "coinone", "korbit", "bithumb"}, kinds
    assert set().union(*kinds.values()) == {"Trade", "OrderBook", "Ticker"}
    assert sum(map(len, replayed.values())) > 1000


async def test_confluent_avro_deserializer_reads_every_replayed_record(
        replayed: dict[str, list[Any]], schema_registry: str) -> None:
    run = uuid.uuid4().hex[:10]
    topics = {cls: f"{topic.split('.')[0]}.t{run}" for cls, topic in TOPIC.items()}
    codec = await preflight(schema_registry, list(topics.values()))
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": schema_registry}))
    decoded = 0
    for records in replayed.values():
        for record in records:
            topic = topics[type(record)]
            got = deserializer(codec.encode(topic, record),
                               SerializationContext(topic, MessageField.VALUE))
            assert got == json_values(record), record
            decoded += 1
    assert decoded == sum(map(len, replayed.values()))


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN and -0.0 told from 0.0 (the bits are what travel); an int
    written as a double reads back as that float."""
    if isinstance(a, float) and type(b) is int:
        b = float(b)
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


NAN, INF = float("nan"), float("inf")
EDGE_RECORDS = [
    Trade("binance", "BTC-USDT", 0.0, -0.0, NAN, INF, -1, ""),
    Trade("upbit", "비트코인-KRW", 1.5, 2.5, -INF, 5e-324, 1, "x" * 63),
    Trade("okx", "ÉTH-USDT", 1.5, 2.5, 1.0, 2.0, 0, "é" * 40),  # 80 bytes: 2-byte length
    Trade("okx", "ETH-USDT", 1.5, 2.5, 1, 2, -70, "t" * 20000),  # ints as doubles, long side
    Trade("okx", "ETH-USDT", 1.5, 2.5, 1.0, 2.0, 2**31 - 1, "1"),
    OrderBook("kraken", "BTC-USD", 1.0, 2.0, [], [], None),
    OrderBook("kraken", "BTC-USD", 1.0, 2.0, [(NAN, -0.0)], [(1.0, 2.0)] * 63, 0),
    OrderBook("kraken", "BTC-USD", 1.0, 2.0, [[1.0, 2.0]] * 64, [(3, 4)] * 1000, -1),
    OrderBook("kraken", "BTC-USD", 1.0, 2.0, [(1.0, 2.0)], [], 2**63 - 1),
    OrderBook("kraken", "BTC-USD", 1.0, 2.0, [], [(1.0, 2.0)], -(2**63)),
    OrderBook("kraken", "BTC-USD", 1.0, 2.0, [], [], 123456789012345),
    Ticker("coinbase", "BTC-USD", 1.0, 2.0, None, None, None, None, None, None, None),
    Ticker("coinbase", "BTC-USD", 1.0, 2.0, NAN, -0.0, INF, 0.0, 1, 2.5, -3.5),
    Ticker("coinbase", "BTC-USD", 1.0, 2.0, 1.0, None, 2.0, None, 3.0, None, NAN),
]


@pytest.mark.parametrize("record", EDGE_RECORDS, ids=lambda r: type(r).__name__)
def test_edge_values_are_written_as_fastavro_writes_them(record: Any) -> None:
    codec = Codec({TOPIC[type(record)]: 7})
    value = codec.encode(TOPIC[type(record)], record)
    assert value == HEADER + fastavro_body(record)
    back = fastavro_read(type(record), value[5:])
    assert all(same(back[f.name], getattr(record, f.name)) for f in fields(record)), back


def test_out_of_range_longs_are_refused_like_fastavro_refuses_them() -> None:
    book = OrderBook("kraken", "BTC-USD", 1.0, 2.0, [], [], 2**63)
    with pytest.raises((OverflowError, ValueError)):
        fastavro_body(book)
    with pytest.raises(OverflowError):
        Codec({"orderbook-data.x": 7}).encode("orderbook-data.x", book)
    assert zigzag_varint(-1) == b"\x01" and zigzag_varint(64) == b"\x80\x01"
    assert zigzag_varint(-(2**63)) == b"\xff" * 9 + b"\x01"


def test_a_schema_that_is_not_exactly_the_encoders_falls_back_to_fastavro(
        tmp_path: Path) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, directory)
    path = directory / "trade.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "note", "type": ["null", "string"], "default": None,
                             "doc": "(test)"})
    path.write_text(json.dumps(schema))
    assert encoder_for(Trade, schema, HEADER) is None
    for field in schema["fields"]:  # a widened type is not the encoder's either
        if field["name"] == "side":
            field["type"] = "long"
    del schema["fields"][-1]
    assert encoder_for(Trade, schema, HEADER) is None
    codec = Codec({"trade-data.x": 7}, directory=directory)
    trade = Trade("binance", "BTC-USDT", 1.0, 2.0, 3.0, 4.0, 1, "5")
    value = codec.encode("trade-data.x", trade)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_schema("trade", directory)[1],
                               {**asdict(trade), "note": None})
    assert value == HEADER + body.getvalue()
    assert codec.decode("trade-data.x", value)["note"] is None
