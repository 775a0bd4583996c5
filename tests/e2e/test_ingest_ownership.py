"""Ingest shards owned through the consumer group: two workers with default settings share
the feeds, each exchange on exactly one of them, and no trade is published twice when a
shard moves (a worker joins) or fails over (its owner is killed).

Each worker runs its own replay server over every recording, from the start: a shard that
moves to the second worker is replayed again from the beginning there, so everything the
first worker published comes again and must be recognised as published already.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from app.embedded import EmbeddedBroker
from replay.recordings import load_recordings
from tests.support import Worker, copy_recordings, http_json, read_topic, wait_for
from tests.e2e.test_west_e2e import expected_coinbase

RECORDINGS = ("BINANCE", "BITFINEX", "COINBASE", "HUOBI", "KRAKEN", "OKX", "UPBIT")
EXCHANGES = ("binance", "bitfinex", "coinbase", "htx", "kraken", "okx", "upbit")


def trades(broker: EmbeddedBroker) -> Counter[tuple[str, str, str]]:
    """(exchange, symbol, trade id) of every record on the trade topics, with repeats."""
    found: Counter[tuple[str, str, str]] = Counter()
    for exchange in EXCHANGES:
        for record in read_topic(broker.url, f"trade-data.{exchange}", idle=2.0, timeout=20):
            t = json.loads(record.value)
            found[(t["exchange"], t["symbol"], t["trade_id"])] += 1
    return found


def owners(workers: list[Worker]) -> dict[str, list[int]]:
    """Exchange -> the workers (indexes) running its shard now."""
    running: dict[str, list[int]] = {}
    for index, worker in enumerate(workers):
        for name in http_json(worker.url + "/health/")[1]["owned_shards"]:
            running.setdefault(name, []).append(index)
    return running


def settled(workers: list[Worker]) -> bool:
    """No shard starting, every shard's frames unchanged over a second (replay done)."""
    def frames() -> dict[tuple[int, str], tuple[str, int]]:
        out = {}
        for index, worker in enumerate(workers):
            for name, shard in http_json(worker.url + "/health/")[1]["shards"].items():
                out[(index, name)] = (shard["state"], shard["frames"], shard["buffered"])
        return out
    before = frames()
    time.sleep(1.5)
    after = frames()
    return before == after and all(s[0] in ("running", "stopped") and not s[2]
                                   for s in after.values())


def test_two_default_workers_share_the_feeds_and_publish_each_trade_once(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path,
        workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", *RECORDINGS, source=replays)
    first = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-own")
    workers.append(first.start())
    wait_for(lambda: set(owners([first])) >= set(EXCHANGES) and settled([first]), timeout=90)
    alone = trades(fresh_broker)
    assert alone and max(alone.values()) == 1, [k for k, n in alone.items() if n > 1]

    second = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-own")
    workers.append(second.start())
    seen_twice: list[dict[str, list[int]]] = []

    def shared() -> bool:
        now = owners([first, second])
        seen_twice.extend([now] if any(len(w) > 1 for w in now.values()) else [])
        return set(now) >= set(EXCHANGES) and {w[0] for w in now.values()} == {0, 1}
    wait_for(shared, timeout=90)
    wait_for(lambda: settled([first, second]), timeout=90)
    now = owners([first, second])
    print("shard owners after the second worker joined:", now)
    assert all(len(w) == 1 for w in now.values()), now  # each feed on exactly one worker
    assert not seen_twice, seen_twice

    # The moved shards were replayed from the start on the second worker: everything it read
    # was published already, and recognised as such.
    moved = http_json(second.url + "/health/")[1]["shards"]
    skipped = {n: s["skipped_published_before"] for n, s in moved.items()
               if s["state"] == "running"}
    print("trades skipped as published before, on the second worker:", skipped)
    assert sum(skipped.values()) > 0
    both = trades(fresh_broker)
    assert max(both.values()) == 1, [k for k, n in both.items() if n > 1]
    assert both == alone


def test_kill_9_of_an_owner_fails_over_without_duplicates(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path,
        workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", "COINBASE", "UPBIT", source=replays)
    recordings = load_recordings(directory)
    want = {(t[0], t[1]) for t in
            expected_coinbase(recordings["coinbase"].connections[0].received)["trades"]}
    assert len(want) == 34
    started = [Worker(fresh_broker.url, tmp_path, replay=directory, replay_speed=1,
                      app_id="kcs-test-failover") for _ in range(2)]
    for worker in started:
        workers.append(worker.start())
    wait_for(lambda: {w[0] for w in owners(started).values()} == {0, 1} and
             "coinbase" in owners(started), timeout=90)
    victim_index = owners(started)["coinbase"][0]
    victim, survivor = started[victim_index], started[1 - victim_index]
    wait_for(lambda: http_json(victim.url + "/health/")[1]["shards"]["coinbase"]["published"]
             > 0, timeout=30)
    victim.kill()
    killed_at = time.time()
    wait_for(lambda: "coinbase" in http_json(survivor.url + "/health/")[1]["owned_shards"],
             timeout=60)
    first_record = None
    deadline = time.monotonic() + 60
    while first_record is None and time.monotonic() < deadline:
        for topic in ("trade-data.coinbase", "orderbook-data.coinbase", "ticker-data.coinbase"):
            after = [r.timestamp / 1000.0 for r in read_topic(fresh_broker.url, topic, idle=1.0,
                                                              timeout=10)
                     if r.timestamp / 1000.0 > killed_at]
            if after:
                first_record = min(after + ([first_record] if first_record else []))
    assert first_record is not None
    wait_for(lambda: settled([survivor]), timeout=90)
    published = Counter((json.loads(r.value)["symbol"], json.loads(r.value)["trade_id"])
                        for r in read_topic(fresh_broker.url, "trade-data.coinbase", idle=2.0))
    missing = want - set(published)
    print(f"failover: first record from the survivor {first_record - killed_at:.1f} s after "
          f"the kill (session timeout 6 s); recorded trades missing: {len(missing)} of "
          f"{len(want)}; duplicates: {sum(n - 1 for n in published.values())}")
    assert max(published.values()) == 1, [k for k, n in published.items() if n > 1]
    assert set(published) <= want
    assert first_record - killed_at < 6 + 15  # the aim is session timeout + 5 s; slack
