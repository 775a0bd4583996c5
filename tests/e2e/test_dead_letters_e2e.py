"""End to end: records a worker cannot decode or fold go to `ws.dlq`, and nothing else is lost.

A real worker on a real broker reads market-data topics holding, between good records, a
value that is not JSON, a trade whose price is a string, a record without a key, a book
without bids and a ticker whose ts_recv is a string (agents/dead_letters.py). The worker keeps
running; every good record is folded (the features count them all, the market state holds the
last good book); each bad one is on `ws.dlq` with its exact bytes, its source and a reason,
and counted in `kcs_refused_records_total`.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import aiokafka
import orjson

from app.embedded import EmbeddedBroker
from records import BUY, SELL, OrderBook, Ticker, Trade
from records.codec import JSON
from tests.support import Worker, http_json, read_topic, wait_for

T0 = 1_700_000_000.0
TRADES, BOOKS, TICKERS = "trade-data.binance", "orderbook-data.binance", "ticker-data.binance"


def trade(i: int) -> bytes:
    return JSON.encode(TRADES, Trade("binance", "BTC-USDT", T0 + i, T0 + i + 0.1,
                                     60000.0 + i, 0.5, BUY if i % 2 else SELL, f"t{i}"))


def book(i: int) -> bytes:
    return JSON.encode(BOOKS, OrderBook("binance", "ETH-USDT", T0 + i, T0 + i + 0.1,
                                        [(2000.0 + i, 1.0)], [(2001.0 + i, 2.0)], i))


def ticker(i: int) -> bytes:
    return JSON.encode(TICKERS, Ticker("binance", "SOL-USDT", T0 + i, T0 + i + 0.1,
                                       150.0 + i, None, None, None, None, 1000.0 + i, None))


async def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, key, value in records:  # one at a time: the offsets below are exact
            await (await producer.send(topic, value, key=key, partition=0))
    finally:
        await producer.stop()


def test_bad_records_go_to_the_dlq_and_the_worker_folds_the_rest(
        fresh_broker: EmbeddedBroker, tmp_path: Path, workers: list[Worker]) -> None:
    worker = Worker(fresh_broker.url, tmp_path, ingest="none", app_id="kcs-test-dlq")
    workers.append(worker.start())
    not_json = b'{"exchange": "binance", "symbol": "BTC-USDT", "price": '
    string_price = trade(3).replace(b'"price":60003.0', b'"price":"60003.0"')
    assert string_price != trade(3)
    no_bids = orjson.dumps({k: v for k, v in orjson.loads(book(2)).items() if k != "bids"})
    string_recv = ticker(1).replace(b'"ts_recv":1700000001.1', b'"ts_recv":"soon"')
    assert string_recv != ticker(1)
    btc, eth, sol = b"binance:BTC-USDT", b"binance:ETH-USDT", b"binance:SOL-USDT"
    records = ([(TRADES, btc, trade(i)) for i in range(3)] +
               [(TRADES, btc, not_json), (TRADES, btc, string_price), (TRADES, None, trade(9))] +
               [(TRADES, btc, trade(i)) for i in range(4, 8)] +
               [(BOOKS, eth, book(0)), (BOOKS, eth, book(1)), (BOOKS, eth, no_bids),
                (BOOKS, eth, book(3))] +
               [(TICKERS, sol, ticker(0)), (TICKERS, sol, string_recv), (TICKERS, sol, ticker(2))])
    asyncio.run(produce(fresh_broker.url.split("://", 1)[1], records))

    dead = read_topic(fresh_broker.url, "ws.dlq", expect=5, timeout=90.0)
    by_source = {dict(r.headers)["source"].decode(): r for r in dead}
    assert sorted(by_source) == [f"{BOOKS}/0@2", f"{TICKERS}/0@1", f"{TRADES}/0@3",
                                 f"{TRADES}/0@4", f"{TRADES}/0@5"]
    for source, value, reason in [(f"{TRADES}/0@3", not_json, "DecodeError"),
                                  (f"{TRADES}/0@4", string_price, "ValidationError"),
                                  (f"{TRADES}/0@5", trade(9), "without a key"),
                                  (f"{BOOKS}/0@2", no_bids, "KeyError"),
                                  (f"{TICKERS}/0@1", string_recv, "TypeError")]:
        record = by_source[source]
        headers = dict(record.headers)
        assert record.value == value  # the exact bytes
        assert reason in headers["reason"].decode(), (source, headers["reason"])
        assert record.key == headers["exchange"] == b"binance"
        assert float(headers["ts_recv"]) > T0 and headers["url"] == b""

    # Nothing else is lost, and the worker is still running.
    features = wait_for(lambda: (lambda r: r[0] == 200 and r[1]["n"] == 7 and r[1])(
        http_json(worker.url + "/features/binance/BTC-USDT/")), timeout=30.0)
    assert features["last_price"] == 60007.0
    _, state = http_json(worker.url + "/market/binance/ETH-USDT/")
    assert state["best_bid"] == 2003.0 and state["best_ask"] == 2001.0 + 3
    _, state = http_json(worker.url + "/market/binance/SOL-USDT/")
    assert state["volume_24h"] == 1002.0
    assert worker.process is not None and worker.process.poll() is None
    assert http_json(worker.url + "/health/")[0] == 200
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    for topic, count in [(TRADES, 3), (BOOKS, 1), (TICKERS, 1)]:
        assert f'kcs_refused_records_total{{topic="{topic}"}} {count}.0' in metrics
