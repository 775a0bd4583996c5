"""`ws.command` through a real worker, and the control topics it and the worker write.

The worker's feeds come from a loopback venue (tests/venue.py) that speaks Upbit's and
Bithumb's protocols and honours a new request on an open socket, as the venues do. Upbit
applies a change on the open socket ("replace": the full new request is sent), Bithumb by
reconnecting (its docs do not say a request replaces the set): the venue counts connections,
so the test tells one from the other. Commands are sent with a plain aiokafka producer,
keyed by exchange.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiokafka
import pytest

from app.embedded import EmbeddedBroker
from app.shards import read_partitions
from config.settings import load_settings
from tests.support import Worker, http_json, wait_for
from tests.venue import BITHUMB_WS, UPBIT_WS, LoopbackVenue

APP_ID = "kcs-test-commands"
BOTH = ["book", "trades"]


@pytest.fixture
def venue() -> Iterator[LoopbackVenue]:
    venue = LoopbackVenue(["KRW-BTC", "KRW-ETH", "KRW-XRP"]).start()
    yield venue
    venue.stop()


def send(broker: EmbeddedBroker, *commands: bytes, key: bytes = b"upbit") -> None:
    async def run() -> None:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.url.split("://")[1])
        await producer.start()
        try:
            for command in commands:
                await producer.send_and_wait("ws.command", command, key=key)
        finally:
            await producer.stop()
    asyncio.run(run())


def command(op: str, exchange: str, symbol: str, command_id: str) -> bytes:
    return json.dumps({"op": op, "exchange": exchange, "symbols": [symbol],
                       "channels": BOTH, "id": command_id}).encode()


def shard(worker: Worker, exchange: str) -> dict[str, Any]:
    return http_json(worker.url + "/health/")[1]["shards"][exchange]


def subscriptions(worker: Worker, exchange: str) -> dict[str, list[str]]:
    return shard(worker, exchange)["subscriptions"]


def everything(broker: EmbeddedBroker, topic: str) -> list[dict[str, Any]]:
    """What the topic holds now: every partition up to its high-water mark (a feed that
    keeps flowing never goes idle, so `read_topic` would wait for its timeout)."""
    partitions = load_settings({}).partitions  # the worker creates the topics with these
    records, _ = asyncio.run(read_partitions(broker.url.split("://", 1)[1], topic,
                                             {p: 0 for p in range(partitions)}))
    records.sort(key=lambda r: (r.partition, r.offset))
    return [json.loads(r.value) for r in records]


def trades(broker: EmbeddedBroker, exchange: str) -> Counter[str]:
    return Counter(t["symbol"] for t in everything(broker, f"trade-data.{exchange}"))


def refusals(broker: EmbeddedBroker) -> dict[Any, str]:
    return {e["command_id"]: e["reason"] for e in everything(broker, "ws.error")
            if e.get("kind") == "command"}


def ack(broker: EmbeddedBroker, exchange: str, command_id: str) -> dict[str, Any] | None:
    acks = everything(broker, f"ws.connect_success.{exchange}")
    return next((a for a in acks if command_id in a["commands"]), None)


def test_commands_change_the_live_subscriptions_and_survive_a_restart(
        fresh_broker: EmbeddedBroker, tmp_path: Path, venue: LoopbackVenue,
        workers: list[Worker]) -> None:
    seed = tmp_path / "subscriptions.toml"
    seed.write_text('[upbit]\n"BTC-KRW" = ["trades", "book"]\n"ETH-KRW" = ["trades", "book"]\n'
                    '[bithumb]\n"BTC-KRW" = ["trades", "book"]\n')
    worker = Worker(fresh_broker.url, tmp_path, replay=venue.url, app_id=APP_ID,
                    subscriptions=seed, metrics_interval=1)
    workers.append(worker.start())
    seeded = {"BTC-KRW": BOTH, "ETH-KRW": BOTH}
    wait_for(lambda: subscriptions(worker, "upbit") == seeded)
    wait_for(lambda: trades(fresh_broker, "upbit")["ETH-KRW"] > 0)

    # Refused: nothing changes, each answered on ws.error with its id and the reason.
    bad = [b"{not json", b'{"op": "subscribe", "exchange": "nowhere", "symbols": ["BTC-KRW"],'
           b' "id": "bad-exchange"}',
           b'{"op": "subscribe", "exchange": "upbit", "symbols": ["BTCKRW"], "id": "bad-symbol"}',
           b'{"op": "fly", "exchange": "upbit", "symbols": ["BTC-KRW"], "id": "bad-op"}',
           b'{"op": "subscribe", "exchange": "upbit", "symbols": ["XRP-KRW"], '
           b'"channels": ["candles"], "id": "bad-channel"}',
           command("subscribe", "upbit", "NOPE-KRW", "unlisted")]
    send(fresh_broker, *bad)
    wanted = {None, "bad-exchange", "bad-symbol", "bad-op", "bad-channel", "unlisted"}
    refused = wait_for(lambda: (r := refusals(fresh_broker)) and set(r) == wanted and r)
    assert "not JSON" in refused[None] and "nowhere" in refused["bad-exchange"]
    assert "BTCKRW" in refused["bad-symbol"] and "fly" in refused["bad-op"]
    assert "candles" in refused["bad-channel"]
    assert refused["unlisted"] == "upbit does not list NOPE-KRW"
    assert subscriptions(worker, "upbit") == seeded

    # Subscribe on the open socket: XRP-KRW's trades flow, on the same connection.
    send(fresh_broker, command("subscribe", "upbit", "XRP-KRW", "sub-xrp"))
    wait_for(lambda: trades(fresh_broker, "upbit")["XRP-KRW"] > 0)
    wait_for(lambda: any(b["symbol"] == "XRP-KRW"
                         for b in everything(fresh_broker, "orderbook-data.upbit")))
    assert venue.connections[UPBIT_WS] == 1 and shard(worker, "upbit")["connects"] == 1
    assert venue.requests[UPBIT_WS][-1] == {"KRW-BTC", "KRW-ETH", "KRW-XRP"}
    answer = wait_for(lambda: ack(fresh_broker, "upbit", "sub-xrp"))
    assert answer["attempt"] == 1  # the first connection's: no reconnect
    assert sorted(answer["symbols"]) == ["BTC-KRW", "ETH-KRW", "XRP-KRW"]
    assert answer["url"] == "wss://api.upbit.com/websocket/v1"

    # Unsubscribe on the open socket: ETH-KRW's trades stop, the others flow on.
    send(fresh_broker, command("unsubscribe", "upbit", "ETH-KRW", "unsub-eth"))
    wait_for(lambda: ack(fresh_broker, "upbit", "unsub-eth"))
    assert venue.requests[UPBIT_WS][-1] == {"KRW-BTC", "KRW-XRP"}
    before = trades(fresh_broker, "upbit")
    time.sleep(2.0)
    after = trades(fresh_broker, "upbit")
    assert after["ETH-KRW"] == before["ETH-KRW"] > 0
    assert after["BTC-KRW"] > before["BTC-KRW"] and after["XRP-KRW"] > before["XRP-KRW"]
    assert venue.connections[UPBIT_WS] == 1 and shard(worker, "upbit")["connects"] == 1
    assert subscriptions(worker, "upbit") == {"BTC-KRW": BOTH, "XRP-KRW": BOTH}

    # Bithumb takes a change by reconnecting with the new set.
    send(fresh_broker, command("subscribe", "bithumb", "XRP-KRW", "sub-bithumb"),
         key=b"bithumb")
    wait_for(lambda: trades(fresh_broker, "bithumb")["XRP-KRW"] > 0)
    assert venue.connections[BITHUMB_WS] == 2
    assert venue.requests[BITHUMB_WS] == [{"KRW-BTC"}, {"KRW-BTC", "KRW-XRP"}]
    assert wait_for(lambda: ack(fresh_broker, "bithumb", "sub-bithumb"))["attempt"] == 1

    # A market listed since the last fetch, while the list cannot be fetched: refused, nothing
    # changes; once the list answers again, the same market is accepted (fetched on the miss).
    venue.markets.append("KRW-SOL")
    venue.listing_status = 503
    send(fresh_broker, command("subscribe", "upbit", "SOL-KRW", "sol-down"))
    reason = wait_for(lambda: refusals(fresh_broker).get("sol-down"))
    assert reason.startswith("listing unavailable: GET https://api.upbit.com/v1/market/all")
    assert "HTTP 503" in reason
    assert subscriptions(worker, "upbit") == {"BTC-KRW": BOTH, "XRP-KRW": BOTH}
    send(fresh_broker, command("subscribe", "upbit", "XRP-KRW", "xrp-again"))
    assert wait_for(lambda: ack(fresh_broker, "upbit", "xrp-again"))  # subscribed: no list
    assert "xrp-again" not in refusals(fresh_broker)
    venue.listing_status = 200
    send(fresh_broker, command("subscribe", "upbit", "SOL-KRW", "sol-up"))
    wait_for(lambda: trades(fresh_broker, "upbit")["SOL-KRW"] > 0)
    assert venue.connections[UPBIT_WS] == 1
    final = {"BTC-KRW": BOTH, "SOL-KRW": BOTH, "XRP-KRW": BOTH}
    assert subscriptions(worker, "upbit") == final

    # The control topics of a running worker: ws.metrics.upbit and the batch performance.
    metrics = everything(fresh_broker, "ws.metrics.upbit")
    for sample in metrics:
        assert set(sample) == {"exchange", "url", "frames", "records", "reconnects", "resyncs",
                               "dlq_frames", "last_frame_age", "latency_p50", "latency_p99",
                               "interval", "worker", "ts_recv"}  # records.control.WsMetrics
    assert max(m["frames"] for m in metrics) > 0
    assert max(m["records"]["trade"] for m in metrics) > 0
    assert {m["reconnects"] for m in metrics} == {0}
    batches = everything(fresh_broker, "monitoring.batch.performance")
    assert batches and sum(b["records"] for b in batches) > 0
    for batch in batches:
        assert set(batch) == {"agent", "records", "markets", "duration", "records_per_s",
                              "oldest_record_age", "worker", "ts_recv"}  # BatchPerformance
    for answer in everything(fresh_broker, "ws.connect_success.upbit"):
        assert set(answer) == {"exchange", "url", "region", "symbols", "channels", "attempt",
                               "commands", "worker", "ts_recv"}  # ConnectSuccess
        assert (answer["exchange"], answer["region"], answer["channels"]) == ("upbit", "korea",
                                                                             BOTH)

    # A restart keeps the set the commands left, not the seed; no trade is published twice.
    worker.stop()
    worker.start()
    wait_for(lambda: subscriptions(worker, "upbit") == final)
    assert subscriptions(worker, "bithumb") == {"BTC-KRW": BOTH, "XRP-KRW": BOTH}
    wait_for(lambda: venue.connections[UPBIT_WS] == 2)
    assert venue.requests[UPBIT_WS][-1] == {"KRW-BTC", "KRW-SOL", "KRW-XRP"}
    worker.stop()
    published = [(t["symbol"], t["trade_id"]) for t in everything(fresh_broker,
                                                                 "trade-data.upbit")]
    assert len(published) == len(set(published))
