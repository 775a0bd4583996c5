"""End to end: trades and books produced to the market-data topics, premium and BBO read back.

Real workers (`faust -A app worker`, no ingest) on a real broker. The test produces records
like the connectors do (key `exchange:BASE-QUOTE`, value the JSON of a Trade / OrderBook)
and compares the `premium` and `bbo` topics and the web views with the brute force of
tests/compute/test_premium.py, computed from the very records it produced.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import aiokafka
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.embedded import EmbeddedBroker
from exchanges import EXCHANGES
from tests.support import Worker, http_json, read_topic, wait_for
from tests.compute.test_premium import (assert_close, assert_premium_matches, book, reference_bbo,
                                reference_premium, trade)

APP_ID = "kcs-test-premium"
PARTITIONS = 4
MAX_AGE = 30.0

MARKETS = {
    "upbit:BTC-KRW": 80_000_000.0, "upbit:ETH-KRW": 4_000_000.0, "upbit:XRP-KRW": 700.0,
    "upbit:SOL-KRW": 200_000.0, "upbit:USDT-KRW": 1_370.0,
    "bithumb:BTC-KRW": 80_100_000.0, "bithumb:ETH-KRW": 4_010_000.0,
    "bithumb:XRP-KRW": 701.0, "bithumb:USDT-KRW": 1_372.0, "coinone:SOL-KRW": 200_500.0,
    "binance:BTC-USDT": 57_000.0, "binance:ETH-USDT": 2_900.0, "binance:XRP-USDT": 0.5,
    "binance:SOL-USDT": 145.0, "coinbase:BTC-USD": 56_990.0, "coinbase:ETH-USD": 2_899.0,
    "coinbase:SOL-USD": 144.9, "coinbase:SOL-USDT": 145.1, "kraken:XRP-USD": 0.501,
    "okx:ADA-USDT": 0.35, "okx:BTC-USDT": 57_010.0,
}
# Only at the start: its tables are last written long before any kill.
EARLY = {"upbit:DOGE-KRW": 100.0, "binance:DOGE-USDT": 0.072}
ASSETS = {"BTC", "ETH", "XRP", "SOL", "DOGE"}  # those with a premium


def generate(seed: int, n: int, markets: dict[str, float], ts: float) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        market = rng.choice(list(markets))
        exchange, symbol = market.split(":")
        mid = markets[market] * (1.0 + rng.uniform(-0.01, 0.01))
        tick = markets[market] * 0.0003
        ts += rng.uniform(0.001, 0.3)
        if rng.random() < 0.65:
            one_sided = rng.random() < 0.05
            records.append(book(exchange, symbol, ts, round(mid - tick, 6),
                                None if one_sided else round(mid + tick, 6),
                                rng.choice([0.5, 1.0, 2.0]), rng.choice([0.5, 1.0, 3.0])))
        else:
            records.append(trade(exchange, symbol, ts, round(mid, 6)))
    return records


def opening(seed: int) -> list[dict[str, Any]]:
    """A book and a trade of every market first (every premium exists), then a random walk."""
    ts = 1_700_000_000.0
    records = []
    for market, price in {**EARLY, **MARKETS}.items():
        exchange, symbol = market.split(":")
        ts += 0.01
        records.append(trade(exchange, symbol, ts, price))
        ts += 0.01
        records.append(book(exchange, symbol, ts, price * 0.999, price * 1.001))
    records += generate(seed, 40, EARLY, ts)
    return records + generate(seed + 1, 400, MARKETS, records[-1]["ts_recv"])


def topic_of(record: dict[str, Any]) -> str:
    return f"{'orderbook' if 'bids' in record else 'trade'}-data.{record['exchange']}"


async def _create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [f"{kind}-data.{ex}" for ex in EXCHANGES for kind in ("trade", "orderbook")]
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def _produce(bootstrap: str, records: list[dict[str, Any]], pace: float) -> None:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            key = f"{record['exchange']}:{record['symbol']}".encode()
            await producer.send(topic_of(record), json.dumps(record).encode(), key=key)
            if pace:
                await asyncio.sleep(pace)
        await producer.flush()
    finally:
        await producer.stop()


def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.url.split("://", 1)[1]


def produce(broker: EmbeddedBroker, records: list[dict[str, Any]], pace: float = 0.0) -> None:
    asyncio.run(_produce(bootstrap(broker), records, pace))


def start_workers(broker: EmbeddedBroker, tmp_path: Path, workers: list[Worker],
                  count: int) -> list[Worker]:
    asyncio.run(_create_topics(bootstrap(broker)))
    started = [Worker(broker.url, tmp_path, ingest="none", app_id=APP_ID) for _ in range(count)]
    workers.extend(started)
    threads = [threading.Thread(target=w.start) for w in started]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in started:
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
    return started


def restart(worker: Worker) -> None:
    """Start a killed worker again: same port, same data dir, same log file (so wait for a
    "Ready" written after this start)."""
    logged = len(worker.log())
    worker.start()
    wait_for(lambda: "Worker]: Ready" in worker.log()[logged:], timeout=120)


def get(url: str) -> Any:
    status, body = http_json(url, timeout=15)
    assert status == 200, (url, status, body)
    return body


def matches_reference(worker: Worker, premiums: dict[str, Any], bbos: dict[str, Any]) -> bool:
    """The views of `worker` equal the reference (used while waiting: never raises)."""
    try:
        got = get(worker.url + "/premium/")
        if set(got) != set(premiums):
            return False
        for asset, ref in premiums.items():
            assert_premium_matches(got[asset], ref)
        got_bbo = get(worker.url + "/bbo/")
        return {a: v["quotes"] for a, v in got_bbo.items()} == bbos
    except (AssertionError, OSError):
        return False


def priced(records: list[dict[str, Any]]) -> dict[tuple[str, str], set[float]]:
    """(market, source) -> every price that market ever had from that source."""
    out: dict[tuple[str, str], set[float]] = {}
    for r in records:
        market = f"{r['exchange']}:{r['symbol']}"
        if "bids" in r:
            if r["bids"] and r["asks"]:
                out.setdefault((market, "book"), set()).add(
                    (r["bids"][0][0] + r["asks"][0][0]) / 2.0)
        else:
            out.setdefault((market, "trade"), set()).add(r["price"])
    return out


def check_premium_topic(broker: EmbeddedBroker, records: list[dict[str, Any]],
                        reference: dict[str, Any]) -> int:
    """Every published premium is a true one of real inputs; the last per asset is final."""
    prices = priced(records)
    last: dict[str, Any] = {}
    published = read_topic(broker.url, "premium", idle=4.0)
    for message in published:
        asset = message.key.decode()
        value = json.loads(message.value) if message.value is not None else None
        last[asset] = value
        if value is None:
            continue
        assert value["asset"] == asset
        rate = value["rate"]
        assert rate["market"] == "upbit:USDT-KRW"
        assert rate["price"] in prices[(rate["market"], rate["source"])]
        for leg in (*value["krw"].values(), *value["global"].values()):
            assert leg["market"].split(":")[1].split("-")[0] == asset
            assert leg["price"] in prices[(leg["market"], leg["source"])]
        for k, row in value["premium"].items():
            for g, ratio in row.items():
                assert_close(ratio, value["krw"][k]["price"] /
                             (value["global"][g]["price"] * rate["price"]))
    assert set(last) >= set(reference)
    for asset, value in last.items():
        assert_premium_matches(value, reference.get(asset))
    return len(published)


def check_bbo_topic(broker: EmbeddedBroker, records: list[dict[str, Any]],
                    reference: dict[str, Any]) -> int:
    """Every published BBO side is a real top of book; the last per asset is final."""
    tops: set[tuple[str, str, str, float, float]] = set()
    for r in records:
        if "bids" in r:
            market = f"{r['exchange']}:{r['symbol']}"
            if r["bids"]:
                tops.add((market, "bid", *r["bids"][0]))
            if r["asks"]:
                tops.add((market, "ask", *r["asks"][0]))
    last: dict[str, Any] = {}
    published = read_topic(broker.url, "bbo", idle=4.0)
    for message in published:
        asset = message.key.decode()
        if message.value is None:  # every book of the asset went stale
            last.pop(asset, None)
            continue
        value = json.loads(message.value)
        last[asset] = value["quotes"]
        for ccy, row in value["quotes"].items():
            for side in ("bid", "ask"):
                if row[side] is not None:
                    market = f"{row[side + '_exchange']}:{asset}-{ccy}"
                    assert (market, side, row[side], row[side + "_size"]) in tops
    assert last == reference
    return len(published)


@pytest.mark.e2e
def test_premium_and_bbo_from_two_workers(fresh_broker: EmbeddedBroker, tmp_path: Path,
                                          workers: list[Worker]) -> None:
    a, b = start_workers(fresh_broker, tmp_path, workers, 2)
    records = opening(seed=11)
    # Over ~4 s: many market-data batches (0.25 s each), so many intermediate values.
    produce(fresh_broker, records, pace=0.008)
    premiums, bbos = reference_premium(records), reference_bbo(records, MAX_AGE)
    assert set(premiums) == ASSETS and set(bbos) == ASSETS | {"ADA", "USDT"}

    for worker in (a, b):
        wait_for(lambda w=worker: matches_reference(w, premiums, bbos), timeout=120)
    assert check_premium_topic(fresh_broker, records, premiums) > 10 * len(ASSETS)
    assert check_bbo_topic(fresh_broker, records, bbos) > len(bbos)

    # Each worker owns some assets; together they own every one, and each view answers the
    # same from either port.
    local = [set(get(w.url + "/premium/?local=1")) for w in (a, b)]
    assert local[0] and local[1] and not local[0] & local[1]
    assert local[0] | local[1] == ASSETS
    assert get(a.url + "/premium/") == get(b.url + "/premium/")
    assert get(a.url + "/bbo/") == get(b.url + "/bbo/")
    for asset in sorted(ASSETS | {"ADA", "USDT"}):
        for path in (f"/premium/{asset}/", f"/bbo/{asset}/", f"/bbo/{asset.lower()}/"):
            answers = [http_json(w.url + path, timeout=15) for w in (a, b)]
            assert answers[0] == answers[1], path
        if asset in premiums:
            assert_premium_matches(get(a.url + f"/premium/{asset}/"), premiums[asset])
        else:
            assert http_json(b.url + f"/premium/{asset}/")[0] == 404
        assert get(b.url + f"/bbo/{asset}/")["quotes"] == bbos[asset]
    for worker in (a, b):
        assert http_json(worker.url + "/bbo/NOPE/")[0] == 404


@pytest.mark.e2e
def test_kill_in_mid_replay_and_restart(fresh_broker: EmbeddedBroker, tmp_path: Path,
                                        workers: list[Worker]) -> None:
    [worker] = start_workers(fresh_broker, tmp_path, workers, 1)
    first = opening(seed=21)
    produce(fresh_broker, first[:200])
    wait_for(lambda: len(http_json(worker.url + "/premium/")[1] or {}) == len(ASSETS),
             timeout=60)

    time.sleep(4.0)  # a commit interval (2.8 s): DOGE's source offsets are committed

    # The rest streams in while the worker is killed halfway through.
    rest = first[200:]
    feeder = threading.Thread(target=produce, args=(fresh_broker, rest, 0.01))
    feeder.start()
    time.sleep(len(rest) * 0.01 / 2)
    assert feeder.is_alive()
    worker.kill()
    feeder.join()
    by_asset = f"{APP_ID}-cross-by-asset"
    doge = [r for r in read_topic(fresh_broker.url, by_asset, idle=2.0) if r.key == b"DOGE"]
    assert doge
    restart(worker)

    # Every value is right again, DOGE's too, though its records were not read again: the
    # tables came back from the store and its changelog, not from re-reading the inputs.
    premiums, bbos = reference_premium(first), reference_bbo(first, MAX_AGE)
    wait_for(lambda: matches_reference(worker, premiums, bbos), timeout=120)
    again = [r for r in read_topic(fresh_broker.url, by_asset, idle=2.0) if r.key == b"DOGE"]
    assert len(again) == len(doge)

    # The rate moves: every premium is recomputed from the restored state of its markets.
    last_ts = first[-1]["ts_recv"]
    moves = [trade("upbit", "USDT-KRW", last_ts + 1.0, 1_365.0),
             book("upbit", "USDT-KRW", last_ts + 2.0, 1_360.0, 1_362.0)]
    produce(fresh_broker, moves)
    records = first + moves
    premiums, bbos = reference_premium(records), reference_bbo(records, MAX_AGE)
    assert premiums["BTC"]["rate"] == 1_361.0
    wait_for(lambda: matches_reference(worker, premiums, bbos), timeout=120)
    check_premium_topic(fresh_broker, records, premiums)

    # Killed again, and its data dir wiped: every table comes back from its changelog alone.
    worker.kill()
    shutil.rmtree(worker.data_dir)
    restart(worker)
    wait_for(lambda: matches_reference(worker, premiums, bbos), timeout=120)
    again = [r for r in read_topic(fresh_broker.url, by_asset, idle=2.0) if r.key == b"DOGE"]
    assert len(again) == len(doge)
