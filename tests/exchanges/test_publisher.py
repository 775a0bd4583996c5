"""The publisher: what connectors hand it is queued per frame and drained to the producer in
order, with the record encoded once, the market key, DLQ headers and the counters."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from exchanges.metrics import metrics
from exchanges.publisher import Publisher
from records import BUY, SELL, OrderBook, Ticker, Trade


class RecordingProducer:
    """A producer that keeps every send and acknowledges it at once (or fails it)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes, Any]] = []
        self.fail = fail

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> Any:
        self.sent.append((topic, key, value, headers))
        future = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(RuntimeError("broker said no"))
        else:
            future.set_result(None)
        return future


TRADE = Trade("upbit", "BTC-KRW", 1.5, 2.5, 100.0, 0.25, BUY, "t1")
BOOK = OrderBook("upbit", "BTC-KRW", 1.6, 2.6, [(99.0, 1.0)], [(101.0, 2.0)], None)
TICKER = Ticker("upbit", "ETH-KRW", 1.7, 2.7, 5.0, 4.9, 1.0, 5.1, 2.0, 10.0, None)


async def test_records_are_drained_in_order_with_their_keys() -> None:
    producer = RecordingProducer()
    publisher = Publisher("upbit", producer)
    publisher.trade(TRADE)
    publisher.book(BOOK)
    publisher.ticker(TICKER)
    assert producer.sent == []  # queued until the frame is done
    await publisher.drain()
    assert [(t, k) for t, k, _, _ in producer.sent] == [
        ("trade-data.upbit", b"upbit:BTC-KRW"), ("orderbook-data.upbit", b"upbit:BTC-KRW"),
        ("ticker-data.upbit", b"upbit:ETH-KRW")]
    assert [orjson.loads(v) for _, _, v, _ in producer.sent] == [
        {"exchange": "upbit", "symbol": "BTC-KRW", "ts_event": 1.5, "ts_recv": 2.5,
         "price": 100.0, "amount": 0.25, "side": 1, "trade_id": "t1"},
        {"exchange": "upbit", "symbol": "BTC-KRW", "ts_event": 1.6, "ts_recv": 2.6,
         "bids": [[99.0, 1.0]], "asks": [[101.0, 2.0]], "sequence": None},
        {"exchange": "upbit", "symbol": "ETH-KRW", "ts_event": 1.7, "ts_recv": 2.7,
         "last": 5.0, "bid": 4.9, "bid_size": 1.0, "ask": 5.1, "ask_size": 2.0,
         "volume_24h": 10.0, "quote_volume_24h": None}]
    assert publisher.pending == [] and publisher.sent == 3
    await publisher.drain()  # nothing new
    assert len(producer.sent) == 3


async def test_dlq_keeps_the_exact_bytes_and_says_why() -> None:
    producer = RecordingProducer()
    publisher = Publisher("okx", producer)
    before = metrics.get("kcs_dlq_frames_total", exchange="okx")
    publisher.dlq(b'{"arg": broken', "not JSON", 12.5, "wss://x/ws")
    publisher.dlq("text frame", "unknown channel", 13.0)
    await publisher.drain()
    (topic, key, value, headers), second = producer.sent
    assert (topic, key, value) == ("ws.dlq", b"okx", b'{"arg": broken')
    assert dict(headers) == {"exchange": b"okx", "reason": b"not JSON", "ts_recv": b"12.5",
                             "url": b"wss://x/ws"}
    assert second[2] == b"text frame"
    assert metrics.get("kcs_dlq_frames_total", exchange="okx") == before + 2


async def test_error_event_and_resync_counter() -> None:
    producer = RecordingProducer()
    publisher = Publisher("kraken", producer)
    before = metrics.get("kcs_book_resyncs_total", exchange="kraken", reason="checksum")
    publisher.error("BTC-USD", "checksum 1 != 2", kind="checksum")
    await publisher.drain()
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, headers) == ("ws.error", b"kraken:BTC-USD", None)
    event = orjson.loads(value)
    assert {k: event[k] for k in ("exchange", "symbol", "kind", "reason")} == {
        "exchange": "kraken", "symbol": "BTC-USD", "kind": "checksum",
        "reason": "checksum 1 != 2"}
    assert metrics.get("kcs_book_resyncs_total", exchange="kraken",
                       reason="checksum") == before + 1


async def test_acknowledgements_reach_on_ack_with_receive_times() -> None:
    acked: list[float] = []
    publisher = Publisher("binance", RecordingProducer(), on_ack=acked.append)
    publisher.trade(Trade("binance", "BTC-USDT", 1.0, 7.0, 1.0, 1.0, SELL, "a"))
    publisher.trade(Trade("binance", "BTC-USDT", 1.0, 8.0, 1.0, 1.0, SELL, "b"))
    await publisher.drain()
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert acked == [7.0, 8.0]


async def test_a_failed_delivery_is_counted() -> None:
    publisher = Publisher("bybit", RecordingProducer(fail=True))
    before = metrics.get("kcs_produce_errors_total")
    publisher.trade(Trade("bybit", "BTC-USDT", 1.0, 1.0, 1.0, 1.0, BUY, "x"))
    await publisher.drain()
    await asyncio.sleep(0)
    assert metrics.get("kcs_produce_errors_total") == before + 1


async def test_without_a_producer_pending_records_are_dropped() -> None:
    publisher = Publisher("upbit")
    publisher.trade(TRADE)
    await publisher.drain()
    assert publisher.pending == [] and publisher.sent == 0


def test_the_key_is_built_once_per_market() -> None:
    publisher = Publisher("upbit")
    assert publisher.key("BTC-KRW") == b"upbit:BTC-KRW"
    assert publisher.key("BTC-KRW") is publisher.key("BTC-KRW")
