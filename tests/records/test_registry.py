"""The start-up preflight against a real schema registry (Karapace, or KCS_TEST_SCHEMA_REGISTRY),
with records decoded by a client we did not write: confluent-kafka's AvroDeserializer."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.embedded import free_port
from records import OrderBook, Trade
from records.codec import SCHEMAS_DIR
from records.registry import SchemaContractError, preflight


def unique(prefix: str) -> str:
    return f"{prefix}.t{uuid.uuid4().hex[:10]}"


def deserialize(url: str, topic: str, value: bytes) -> dict:
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}))
    return deserializer(value, SerializationContext(topic, MessageField.VALUE))


def schemas_with_field(tmp_path: Path, field: dict) -> Path:
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, directory)
    path = directory / "trade.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(field)
    path.write_text(json.dumps(schema))
    return directory


def latest_id(url: str, subject: str) -> int:
    return httpx.get(f"{url}/subjects/{subject}/versions/latest").json()["id"]


async def test_preflight_registers_each_topic_under_topic_value(schema_registry: str) -> None:
    trades, books = unique("trade-data"), unique("orderbook-data")
    codec = await preflight(schema_registry, [trades, books, "ws.error", "ws.dlq"])
    assert set(codec.schema_ids) == {trades, books}  # JSON topics are not registered
    trade = Trade("binance", "BTC-USDT", 1790000000.125, 1790000000.5, 97000.01, 0.25, -1, "77")
    value = codec.encode(trades, trade)
    assert value[0] == 0
    assert int.from_bytes(value[1:5], "big") == latest_id(schema_registry, f"{trades}-value")
    assert deserialize(schema_registry, trades, value) == {
        "exchange": "binance", "symbol": "BTC-USDT", "ts_event": 1790000000.125,
        "ts_recv": 1790000000.5, "price": 97000.01, "amount": 0.25, "side": -1, "trade_id": "77"}
    book = OrderBook("okx", "BTC-USDT", 2.0, 2.5, [(1.5, 2.0), (1.25, 3.0)], [(1.75, 1.0)], None)
    got = deserialize(schema_registry, books, codec.encode(books, book))
    assert got["bids"] == [[1.5, 2.0], [1.25, 3.0]] and got["sequence"] is None
    assert codec.encode("ws.error", {"a": 1}) == b'{"a":1}'
    # A second start finds the same schemas registered: same ids, no new version.
    again = await preflight(schema_registry, [trades, books])
    assert again.schema_ids == codec.schema_ids
    versions = httpx.get(f"{schema_registry}/subjects/{trades}-value/versions").json()
    assert versions == [1]


async def test_a_nullable_field_with_default_null_is_accepted_both_ways(
        schema_registry: str, tmp_path: Path) -> None:
    topic = unique("trade-data")
    old = await preflight(schema_registry, [topic])
    new_dir = schemas_with_field(tmp_path, {"name": "venue_note", "type": ["null", "string"],
                                            "default": None, "doc": "A note (test)."})
    new = await preflight(schema_registry, [topic], directory=new_dir)
    assert new.schema_ids[topic] != old.schema_ids[topic]
    assert httpx.get(f"{schema_registry}/subjects/{topic}-value/versions").json() == [1, 2]
    trade = Trade("upbit", "BTC-KRW", 1.0, 2.0, 140000000.0, 0.001, 1, "9")
    # The new reader reads the old writer's record: the new field takes its default.
    from_old = new.decode(topic, old.encode(topic, trade))
    assert from_old["venue_note"] is None and from_old["trade_id"] == "9"
    # The old reader reads the new writer's record (its schema fetched once by id).
    record = {**old.decode(topic, old.encode(topic, trade)), "venue_note": "hello"}
    written = new.encode(topic, record)
    assert int.from_bytes(written[1:5], "big") == new.schema_ids[topic]
    from_new = old.decode(topic, written)
    assert "venue_note" not in from_new and from_new["price"] == 140000000.0
    assert deserialize(schema_registry, topic, written)["venue_note"] == "hello"


async def test_a_field_without_default_refuses_to_start_naming_topic_and_field(
        schema_registry: str, tmp_path: Path) -> None:
    topic = unique("trade-data")
    await preflight(schema_registry, [topic])
    bad = schemas_with_field(tmp_path, {"name": "venue", "type": "string", "doc": "(test)"})
    with pytest.raises(SchemaContractError) as refused:
        await preflight(schema_registry, [topic], directory=bad)
    message = str(refused.value)
    assert f"topic {topic}" in message and f"subject {topic}-value" in message
    assert "'venue' added without a default" in message
    assert httpx.get(f"{schema_registry}/subjects/{topic}-value/versions").json() == [1]


async def test_a_registry_down_at_start_is_waited_for_and_reported(
        schema_registry: str, caplog: pytest.LogCaptureFixture) -> None:
    """The registry's port answers nothing for a while, then a proxy to the registry opens
    on it: the preflight says it is waiting, keeps trying, then succeeds."""
    port = free_port()
    target = urlparse(schema_registry)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    topic = unique("trade-data")
    caplog.set_level(logging.ERROR, logger="records.registry")
    task = asyncio.create_task(preflight(f"http://127.0.0.1:{port}", [topic],
                                         retry_initial=0.2, retry_max=0.5))
    for _ in range(100):
        if any("not reachable" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    assert not task.done()
    assert f"Schema registry at http://127.0.0.1:{port} is not reachable" in caplog.text
    proxy = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        codec = await asyncio.wait_for(task, timeout=60)
    finally:
        proxy.close()
    assert codec.schema_ids[topic] == latest_id(schema_registry, f"{topic}-value")
