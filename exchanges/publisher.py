"""Where connectors put what they parsed: normalized records, DLQ frames and error events.

Parsing is synchronous, so a connector appends `(topic, key, value, headers)` to `pending`
and the session hands the whole list to Kafka once per frame with `drain()`. Sends are not
awaited one by one: aiokafka batches them and the acknowledgement arrives on a future,
which is where failures are counted and, in the benchmark, latency is measured. Records
become value bytes through the worker's codec (records/codec.py) as they are handed over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol


from exchanges.metrics import SAMPLE_EVERY, Sampler, metrics
from records import DLQ_TOPIC, ERROR_TOPIC, OrderBook, Ticker, Trade, book_topic, market_key
from records import ticker_topic, trade_topic
from records.codec import JSON, Codec
from records.control import ErrorEvent

__all__ = ["Publisher", "Producer"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]] | None
Pending = tuple[str, bytes, Any, Headers, float]


REASONS = ("gap", "checksum", "crossed", "other")


def reason_class(reason: str) -> str:
    """A resync's free-text reason as one of REASONS (a metric label with few values)."""
    text = reason.lower()
    for word in ("gap", "checksum", "crossed"):
        if word in text:
            return word
    return "other"


class Producer(Protocol):
    async def send(self, topic: str, value: bytes, key: bytes, headers: Headers = None) -> Any:
        ...


class Publisher:
    """Collects one exchange's output and sends it to Kafka; one per connector."""

    __slots__ = ("exchange", "producer", "pending", "trade_topic", "book_topic", "ticker_topic",
                 "on_ack", "sent", "keys", "trades", "books", "tickers", "book_ts", "sampler",
                 "codec")

    def __init__(self, exchange: str, producer: Producer | None = None,
                 on_ack: Callable[[float], None] | None = None, codec: Codec = JSON) -> None:
        self.exchange = exchange
        self.codec = codec  # records -> value bytes (JSON, or Avro with a schema registry)
        self.producer = producer
        self.pending: list[Pending] = []
        self.trade_topic = trade_topic(exchange)
        self.book_topic = book_topic(exchange)
        self.ticker_topic = ticker_topic(exchange)
        self.on_ack = on_ack  # called with ts_recv of each acknowledged record (benchmark)
        self.sent = 0
        self.keys: dict[str, bytes] = {}  # symbol -> Kafka key, built once per market
        # Read by Prometheus at scrape time (exchanges/metrics.py), never locked here.
        self.trades = self.books = self.tickers = 0
        self.book_ts: dict[str, float] = {}  # symbol -> ts_event of its last book
        self.sampler = Sampler(exchange)
        # Series at 0 from the start, so a rate over them exists before the first event.
        for name in ("kcs_dlq_frames_total", "kcs_reconnects_total"):
            metrics.touch(name, exchange=exchange)
        for why in REASONS:
            metrics.touch("kcs_book_resyncs_total", exchange=exchange, reason=why)

    def key(self, symbol: str) -> bytes:
        key = self.keys.get(symbol)
        if key is None:
            key = self.keys[symbol] = market_key(self.exchange, symbol)
        return key

    def trade(self, trade: Trade) -> None:
        self.trades += 1
        self.pending.append((self.trade_topic, self.key(trade.symbol), trade,
                             None, trade.ts_recv))

    def book(self, book: OrderBook) -> None:
        self.books += 1
        self.book_ts[book.symbol] = book.ts_event
        self.pending.append((self.book_topic, self.key(book.symbol), book, None,
                             book.ts_recv))

    def ticker(self, ticker: Ticker) -> None:
        self.tickers += 1
        self.pending.append((self.ticker_topic, self.key(ticker.symbol), ticker,
                             None, ticker.ts_recv))

    def dlq(self, raw: bytes | str, reason: str, ts_recv: float, url: str = "") -> None:
        """The frame's exact bytes as the value; what went wrong travels in the headers."""
        metrics.inc("kcs_dlq_frames_total", exchange=self.exchange)
        metrics.inc("kcs_validation_rejections_total", exchange=self.exchange,
                    reason="unparseable")
        value = raw.encode() if isinstance(raw, str) else raw
        headers = [("exchange", self.exchange.encode()), ("reason", reason.encode()),
                   ("ts_recv", repr(ts_recv).encode()), ("url", url.encode())]
        self.pending.append((DLQ_TOPIC, self.exchange.encode(), value, headers, ts_recv))

    def error(self, symbol: str, reason: str, kind: str = "resync") -> None:
        """A book integrity failure or resync: an event on `ws.error` plus a counter."""
        why = reason_class(reason)
        metrics.inc("kcs_book_resyncs_total", exchange=self.exchange, reason=why)
        metrics.inc("kcs_validation_rejections_total", exchange=self.exchange, reason=why)
        now = time.time()
        event = ErrorEvent(self.exchange, symbol, kind, reason, None, now)
        self.pending.append((ERROR_TOPIC, market_key(self.exchange, symbol),
                             self.codec.encode(ERROR_TOPIC, event), None, now))

    async def drain(self) -> None:
        """Hand every pending message to the producer (acks arrive later on futures)."""
        pending, self.pending = self.pending, []
        producer = self.producer
        if producer is None:
            return
        on_ack = self.on_ack
        future = None
        encode = self.codec.encode
        for topic, key, value, headers, ts_recv in pending:
            if type(value) is not bytes:
                value = encode(topic, value)
            future = await producer.send(topic, value=value, key=key, headers=headers)
            if on_ack is None:
                future.add_done_callback(check_delivery)
            else:
                future.add_done_callback(
                    lambda fut, t=ts_recv: on_ack(t) if not fut.exception() else
                    check_delivery(fut))
        self.sent += len(pending)
        sampler = self.sampler
        if future is not None and pending[0][4] >= sampler.next_at:
            ts_recv = pending[0][4]
            # A sampled drain: its last record's acknowledgement is its records' (one
            # produce request, or very nearly), observed in the latency histograms.
            sampler.next_at = ts_recv + SAMPLE_EVERY
            last = pending[-1][2]
            future.add_done_callback(lambda _: sampler.observe(ts_recv, last))

    def metric_samples(self, now: float) -> list[tuple[str, tuple[str, ...], float]]:
        """This publisher's figures for exchanges.metrics.SourcesCollector."""
        ex = self.exchange
        samples = [("kcs_records", (ex, "trade"), float(self.trades)),
                   ("kcs_records", (ex, "book"), float(self.books)),
                   ("kcs_records", (ex, "ticker"), float(self.tickers))]
        samples += [("kcs_book_age_seconds", (ex, symbol), now - ts)
                    for symbol, ts in list(self.book_ts.items())]
        return samples


def check_delivery(future: Any) -> None:
    """Count and log a record Kafka did not take (after the producer's own retries)."""
    if future.cancelled() or future.exception() is None:
        return
    metrics.inc("kcs_produce_errors_total")
    log.error("a record was not delivered to Kafka: %r", future.exception())
