"""`ws.command` through a real worker, and the control topics it and the worker write.

The Upbit recording is split into connections the way the exchange would serve them: the
first carries the seeded markets only; after `subscribe LAMB-KRW` the worker reconnects and
the second carries every market; after `unsubscribe ITAM-BTC` the third carries the rest.
What the worker asked for on each connection is read back from its own recording of the
session (`KCS_RECORD`). Commands are sent with a plain aiokafka producer, keyed by exchange.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiokafka

from app.embedded import EmbeddedBroker
from tests.support import Worker, http_json, read_topic, wait_for

SEEDED = ["ITAM-BTC", "WAVES-KRW", "XTZ-BTC"]
APP_ID = "kcs-test-commands"


def split_recording(source: Path, dest: Path) -> dict[str, set[str]]:
    """UPBIT.ws.1.0 (seeded markets), .2.0 (all), .3.0 (all but ITAM-BTC); returns the
    trade ids per market of the recording."""
    dest.mkdir(parents=True)
    (dest / "UPBIT.0").write_text((source / "UPBIT.0").read_text())
    lines = (source / "UPBIT.ws.62.0").read_text().splitlines()
    header, frames = lines[0], [line for line in lines[1:] if line and " <- " not in line]
    def market(line: str) -> str:
        quote, base = re.search(r'"cd":"([A-Z]+)-([A-Z0-9]+)"', line).groups()  # type: ignore
        return f"{base}-{quote}"
    keep = {1: set(SEEDED), 2: {*SEEDED, "LAMB-KRW"}, 3: {"WAVES-KRW", "XTZ-BTC", "LAMB-KRW"}}
    for number, markets in keep.items():
        chosen = [line for line in frames if market(line) in markets]
        (dest / f"UPBIT.ws.{number}.0").write_text("\n".join([header, *chosen]) + "\n")
    trades: dict[str, set[str]] = {}
    for line in frames:
        if '"ty":"trade"' in line:
            trades.setdefault(market(line), set()).add(re.search(r'"sid":(\d+)', line)[1])  # type: ignore
    return trades


def send(broker: EmbeddedBroker, *commands: bytes) -> None:
    async def run() -> None:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.url.split("://")[1])
        await producer.start()
        try:
            for command in commands:
                await producer.send_and_wait("ws.command", command, key=b"upbit")
        finally:
            await producer.stop()
    asyncio.run(run())


def subscriptions(worker: Worker) -> dict[str, list[str]]:
    return http_json(worker.url + "/health/")[1]["shards"]["upbit"]["subscriptions"]


def requested(record_dir: Path) -> list[set[str]]:
    """The markets the worker asked for on each connection it opened, in order."""
    out = []
    for path in sorted(record_dir.glob("UPBIT.ws.*.0"), key=lambda p: int(p.name.split(".")[2])):
        for line in path.read_text().splitlines():
            if " <- " in line:
                request = json.loads(line.split(": ", 1)[1])
                out.append({code for part in request for code in part.get("codes", [])})
    return out


def test_commands_change_the_live_subscriptions_and_survive_a_restart(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path,
        workers: list[Worker]) -> None:
    trade_ids = split_recording(replays, tmp_path / "replay")
    seed = tmp_path / "subscriptions.toml"
    seed.write_text("[upbit]\n" + "".join(f'"{s}" = ["trades", "book"]\n' for s in SEEDED))
    record = tmp_path / "record"
    worker = Worker(fresh_broker.url, tmp_path, replay=tmp_path / "replay", app_id=APP_ID,
                    subscriptions=seed, record=record, metrics_interval=1)
    workers.append(worker.start())
    wait_for(lambda: subscriptions(worker) == {s: ["book", "trades"] for s in SEEDED})

    # Refused: nothing changes, each answered on ws.error with its id and the reason.
    bad = [b"{not json", b'{"op": "subscribe", "exchange": "nowhere", "symbols": ["BTC-KRW"],'
           b' "id": "bad-exchange"}',
           b'{"op": "subscribe", "exchange": "upbit", "symbols": ["BTCKRW"], "id": "bad-symbol"}',
           b'{"op": "fly", "exchange": "upbit", "symbols": ["BTC-KRW"], "id": "bad-op"}',
           b'{"op": "subscribe", "exchange": "upbit", "symbols": ["LAMB-KRW"], '
           b'"channels": ["candles"], "id": "bad-channel"}']
    send(fresh_broker, *bad)
    errors = [json.loads(r.value) for r in read_topic(fresh_broker.url, "ws.error", expect=5)]
    refused = {e["command_id"]: e["reason"] for e in errors if e.get("kind") == "command"}
    assert set(refused) == {None, "bad-exchange", "bad-symbol", "bad-op", "bad-channel"}
    assert "not JSON" in refused[None] and "nowhere" in refused["bad-exchange"]
    assert "BTCKRW" in refused["bad-symbol"] and "fly" in refused["bad-op"]
    assert "candles" in refused["bad-channel"]
    assert subscriptions(worker) == {s: ["book", "trades"] for s in SEEDED}

    # Subscribe: LAMB-KRW's trades flow, nothing published twice.
    send(fresh_broker, b'{"op": "subscribe", "exchange": "upbit", "symbols": ["LAMB-KRW"], '
                       b'"channels": ["trades", "book"], "id": "sub-lamb"}')
    wait_for(lambda: "LAMB-KRW" in subscriptions(worker))
    want = sum(len(ids) for ids in trade_ids.values())
    published = [json.loads(r.value) for r in read_topic(fresh_broker.url, "trade-data.upbit",
                                                         expect=want)]
    got = [(t["symbol"], t["trade_id"]) for t in published]
    assert len(got) == len(set(got)) == want
    assert {s for s, _ in got} == set(trade_ids) and "LAMB-KRW" in trade_ids

    # Unsubscribe: the next connection asks without ITAM-BTC.
    send(fresh_broker, b'{"op": "unsubscribe", "exchange": "upbit", "symbols": ["ITAM-BTC"], '
                       b'"id": "unsub-itam"}')
    final = {"LAMB-KRW": ["book", "trades"], "WAVES-KRW": ["book", "trades"],
             "XTZ-BTC": ["book", "trades"]}
    wait_for(lambda: subscriptions(worker) == final)
    acks = [json.loads(r.value) for r in read_topic(fresh_broker.url, "ws.connect_success.upbit",
                                                    expect=3)]
    assert [a["attempt"] for a in acks] == [1, 1, 1]  # one connection per subscription set
    assert [a["commands"] for a in acks] == [[], ["sub-lamb"], ["unsub-itam"]]
    assert sorted(acks[1]["symbols"]) == sorted([*SEEDED, "LAMB-KRW"])
    for ack in acks:
        assert set(ack) == {"exchange", "region", "url", "symbols", "channels", "attempt",
                            "commands", "worker", "ts_recv"}  # records.control.ConnectSuccess
        assert (ack["exchange"], ack["region"], ack["channels"]) == ("upbit", "korea",
                                                                    ["book", "trades"])
        assert ack["url"] == "wss://api.upbit.com/websocket/v1"

    # The control topics of a running worker: ws.metrics.upbit and the batch performance.
    metrics = [json.loads(r.value) for r in read_topic(fresh_broker.url, "ws.metrics.upbit",
                                                       expect=2)]
    for sample in metrics:
        assert set(sample) == {"exchange", "url", "frames", "records", "reconnects", "resyncs",
                               "dlq_frames", "last_frame_age", "latency_p50", "latency_p99",
                               "interval", "worker", "ts_recv"}  # records.control.WsMetrics
    assert max(m["frames"] for m in metrics) > 0
    assert max(m["records"]["trade"] for m in metrics) > 0
    batches = [json.loads(r.value) for r in read_topic(
        fresh_broker.url, "monitoring.batch.performance", idle=2.0)]
    assert batches and sum(b["records"] for b in batches) >= want
    for batch in batches:
        assert set(batch) == {"agent", "records", "markets", "duration", "records_per_s",
                              "oldest_record_age", "worker", "ts_recv"}  # BatchPerformance
        assert batch["records"] > 0 and batch["duration"] >= 0

    # A restart keeps the set the commands left, not the seed.
    worker.stop()
    worker.start()
    wait_for(lambda: subscriptions(worker) == final)
    worker.stop()
    asked = requested(record)
    assert asked[:3] == [{"BTC-ITAM", "KRW-WAVES", "BTC-XTZ"},
                         {"BTC-ITAM", "KRW-WAVES", "BTC-XTZ", "KRW-LAMB"},
                         {"KRW-WAVES", "BTC-XTZ", "KRW-LAMB"}]
    assert asked[-1] == {"KRW-WAVES", "BTC-XTZ", "KRW-LAMB"}
