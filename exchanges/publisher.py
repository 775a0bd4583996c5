"""Where connectors put what they parsed: normalized records, DLQ frames and error events.

Parsing is synchronous, so a connector appends `(topic, key, value, headers)` to `pending`
and the session hands the whole list to Kafka once per frame with `drain()`. Sends are not
awaited one by one: aiokafka batches them and the acknowledgement arrives on a future,
which is where failures are counted and, in the benchmark, latency is measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from exchanges.metrics import metrics
from records import DLQ_TOPIC, ERROR_TOPIC, OrderBook, Ticker, Trade, book_topic, market_key
from records import ticker_topic, trade_topic

__all__ = ["Publisher", "Producer"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]] | None
Pending = tuple[str, bytes, Any, Headers, float]


class Producer(Protocol):
    async def send(self, topic: str, value: bytes, key: bytes, headers: Headers = None) -> Any:
        ...


class Publisher:
    """Collects one exchange's output and sends it to Kafka; one per connector."""

    __slots__ = ("exchange", "producer", "pending", "trade_topic", "book_topic", "ticker_topic",
                 "on_ack", "sent", "keys", "last_event")

    def __init__(self, exchange: str, producer: Producer | None = None,
                 on_ack: Callable[[float], None] | None = None) -> None:
        self.exchange = exchange
        self.producer = producer
        self.pending: list[Pending] = []
        self.trade_topic = trade_topic(exchange)
        self.book_topic = book_topic(exchange)
        self.ticker_topic = ticker_topic(exchange)
        self.on_ack = on_ack  # called with ts_recv of each acknowledged record (benchmark)
        self.sent = 0
        self.keys: dict[str, bytes] = {}  # symbol -> Kafka key, built once per market
        self.last_event = 0.0  # ts_event of the newest record drained (the health view)

    def key(self, symbol: str) -> bytes:
        key = self.keys.get(symbol)
        if key is None:
            key = self.keys[symbol] = market_key(self.exchange, symbol)
        return key

    def trade(self, trade: Trade) -> None:
        self.pending.append((self.trade_topic, self.key(trade.symbol), trade,
                             None, trade.ts_recv))

    def book(self, book: OrderBook) -> None:
        self.pending.append((self.book_topic, self.key(book.symbol), book, None,
                             book.ts_recv))

    def ticker(self, ticker: Ticker) -> None:
        self.pending.append((self.ticker_topic, self.key(ticker.symbol), ticker,
                             None, ticker.ts_recv))

    def dlq(self, raw: bytes | str, reason: str, ts_recv: float, url: str = "") -> None:
        """The frame's exact bytes as the value; what went wrong travels in the headers."""
        metrics.inc("kcs_dlq_frames_total", exchange=self.exchange)
        value = raw.encode() if isinstance(raw, str) else raw
        headers = [("exchange", self.exchange.encode()), ("reason", reason.encode()),
                   ("ts_recv", repr(ts_recv).encode()), ("url", url.encode())]
        self.pending.append((DLQ_TOPIC, self.exchange.encode(), value, headers, ts_recv))

    def error(self, symbol: str, reason: str, kind: str = "resync") -> None:
        """A book integrity failure or resync: an event on `ws.error` plus a counter."""
        metrics.inc("kcs_book_resyncs_total", exchange=self.exchange, reason=kind)
        now = time.time()
        event = {"exchange": self.exchange, "symbol": symbol, "kind": kind, "reason": reason,
                 "ts": now}
        self.pending.append((ERROR_TOPIC, market_key(self.exchange, symbol),
                             orjson.dumps(event), None, now))

    async def drain(self) -> None:
        """Hand every pending message to the producer (acks arrive later on futures)."""
        pending, self.pending = self.pending, []
        last = pending[-1][2] if pending else None
        if last is not None and type(last) is not bytes:  # a record, not a DLQ frame or event
            self.last_event = last.ts_event
        producer = self.producer
        if producer is None:
            return
        on_ack = self.on_ack
        for topic, key, value, headers, ts_recv in pending:
            if type(value) is not bytes:
                value = orjson.dumps(value)
            future = await producer.send(topic, value=value, key=key, headers=headers)
            if on_ack is None:
                future.add_done_callback(check_delivery)
            else:
                future.add_done_callback(
                    lambda fut, t=ts_recv: on_ack(t) if not fut.exception() else
                    check_delivery(fut))
        self.sent += len(pending)


def check_delivery(future: Any) -> None:
    """Count and log a record Kafka did not take (after the producer's own retries)."""
    if future.cancelled() or future.exception() is None:
        return
    metrics.inc("kcs_produce_errors_total")
    log.error("a record was not delivered to Kafka: %r", future.exception())
