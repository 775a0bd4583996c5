"""The recordings replayed twice, once with JSON and once with a schema registry set: the
Avro topics carry the Confluent wire format with the ids registered under `<topic>-value`,
and a client we did not write (confluent-kafka's AvroDeserializer) decodes every record to
the values of the JSON run. The registry is Karapace (or KCS_TEST_SCHEMA_REGISTRY); the two
workers produce to brokers of their own, so each run's topics hold only its records.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.embedded import EmbeddedBroker
from records.codec import JSON, is_avro
from records.derived import MarketState, field_names
from tests.support import Worker, copy_recordings, read_all, start_broker, wait_for

# Batch-driven topics: how many records a run sends depends on its batches; their last
# value per key is a function of the replayed frames. The others are compared whole.
LAST_ONLY = {"market-state", "features", "premium", "bbo"}
# our receive time and the worker's web URL differ between two runs of the same frames
OURS = {"ts_recv", "worker"}
# The recordings are from 2021-2022: a time after this was stamped by us (a venue that sends
# no time of its own gets our receive time as ts_event), so it differs between the runs.
RECORDED_BEFORE = 1700000000.0
TIMES = {"ts_event", "last_trade_ts", "book_ts", "ticker_ts"}


def comparable(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in OURS and not (
        k in TIMES and isinstance(v, float) and v > RECORDED_BEFORE)}


def by_topic(records: list[Any], decode: Any) -> dict[str, dict[str, list[Any]]]:
    """topic -> key -> values in offset order (Kafka keeps order per key)."""
    out: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        value = None if r.value is None else decode(r.topic, r.value)
        out[r.topic][r.key.decode()].append(comparable(value))
    return out


def replay(tmp: Path, name: str, recordings: Path, **settings: Any
           ) -> tuple[EmbeddedBroker, Worker]:
    (tmp / name).mkdir(parents=True)
    broker = start_broker(tmp / name)
    return broker, Worker(broker.url, tmp / name, app_id=f"kcs-avro-{name}",
                          replay=recordings, **settings)


def settled(broker: EmbeddedBroker) -> list[Any]:
    """Every record of every topic, once the counts stop growing."""
    last: list[Any] = []

    def stable() -> bool:
        nonlocal last
        records = read_all(broker.url, idle=2.0)
        done = bool(records) and len(records) == len(last)
        last = records
        return done

    wait_for(stable, timeout=240.0, interval=3.0)
    return last


def test_replay_with_a_schema_registry_decodes_to_the_json_run(
        tmp_path: Path, replays: Path, schema_registry: str, workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", "BINANCE", "UPBIT", "OKX", "BITHUMB",
                                "COINBASE", "KRAKEN", "BITFINEX", "HUOBI", source=replays)
    json_broker, json_worker = replay(tmp_path, "json", directory)
    avro_broker, avro_worker = replay(tmp_path, "avro", directory,
                                      schema_registry=schema_registry)
    try:
        workers.append(json_worker.start())
        workers.append(avro_worker.start(wait=180.0))  # + the preflight of ~60 subjects
        json_records = settled(json_broker)
        avro_records = settled(avro_broker)
    finally:
        for worker in workers:
            worker.stop()
        workers.clear()
        json_broker.stop()
        avro_broker.stop()
    for worker in (json_worker, avro_worker):
        assert "Crashed reason" not in worker.log()

    # Every record of every Avro topic: magic byte 0 and the id registered for its topic.
    avro_topics = sorted({r.topic for r in avro_records if is_avro(r.topic)})
    ids = {t: httpx.get(f"{schema_registry}/subjects/{t}-value/versions/latest").json()["id"]
           for t in avro_topics}
    framed = [r for r in avro_records if r.topic in ids and r.value is not None]
    assert framed and all(r.value[0] == 0 for r in framed)
    assert all(int.from_bytes(r.value[1:5], "big") == ids[r.topic] for r in framed)
    families = {t.rpartition(".")[0] or t for t in ids}
    assert families >= {"trade-data", "orderbook-data", "ticker-data", "market-state",
                        "features"}, families
    print(f"{len(framed)} Avro records on {len(ids)} topics, families {sorted(families)}")
    # The JSON run's records are JSON.
    assert all(r.value[:1] == b"{" for r in json_records if is_avro(r.topic) and r.value)

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": schema_registry}))

    def avro_decode(topic: str, value: bytes) -> Any:
        if not is_avro(topic):
            return JSON.decode(topic, value) if value[:1] in (b"{", b"[") else value
        return deserializer(value, SerializationContext(topic, MessageField.VALUE))

    def json_decode(topic: str, value: bytes) -> Any:
        return JSON.decode(topic, value) if value[:1] in (b"{", b"[") else value

    got, want = by_topic(avro_records, avro_decode), by_topic(json_records, json_decode)
    assert sorted(t for t in got if is_avro(t)) == sorted(t for t in want if is_avro(t))
    compared = 0
    for topic in avro_topics:
        assert got[topic].keys() == want[topic].keys(), topic
        for key, values in want[topic].items():
            if topic.startswith("ws.metrics."):  # counts and ages per interval: timing
                assert {tuple(v) for v in got[topic][key]} == \
                    {tuple(v) for v in values}, (topic, key)  # the same fields, decoded
            elif topic in LAST_ONLY:
                assert got[topic][key][-1] == values[-1], (topic, key)
            else:
                assert got[topic][key] == values, (topic, key)
            compared += len(got[topic][key])
    assert compared > 1000

    # market-state: every record has the same, complete field set, in both runs
    for records, decode in ((json_records, json_decode), (avro_records, avro_decode)):
        states = [decode(r.topic, r.value) for r in records if r.topic == "market-state"]
        assert states and {tuple(v) for v in states} == {field_names(MarketState)}
