"""Where connectors put what they parsed: normalized records, DLQ frames and error events.

Parsing is synchronous, so a connector appends `(topic, key, value, headers)` to `pending`
and the session hands the whole list to Kafka once per frame with `drain()`. Sends are not
awaited one by one: aiokafka batches them and the acknowledgement arrives on a future,
which is where failures are counted and, in the benchmark, latency is measured. Records
become value bytes through the worker's codec (records/codec.py).

Records are checked here while the frame is parsed (`exchanges.values`), and encoded by
`encode()`, which the session calls inside its per-frame protection: a bad value or a record
that cannot be encoded sends the frame to the DLQ instead of killing the feed at `drain()`.
Records queued outside a frame (a REST snapshot loaded by a task) are encoded by `drain()`,
where one that fails goes to the DLQ alone. A trade the venue repeats (same id in the same
market) is published once; a trade older than the market's newest by more than
`out_of_order_after` seconds is counted. A DLQ record is capped at `DLQ_MAX_BYTES` (the
producer's request limit is 1 MiB): a longer frame is truncated, its original size and
SHA-256 travel in the headers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from exchanges.metrics import SAMPLE_EVERY, Sampler, metrics
from exchanges import values
from exchanges.values import finite_time, non_negative, positive
from records import DLQ_TOPIC, ERROR_TOPIC, OrderBook, Ticker, Trade, book_topic, market_key
from records import dlq_headers, ticker_topic, trade_topic
from records.codec import JSON, Codec
from records.control import ErrorEvent

__all__ = ["Publisher", "Producer", "DLQ_MAX_BYTES", "TRADE_IDS_KEPT"]

log = logging.getLogger(__name__)

DLQ_MAX_BYTES = 256 * 1024  # of a frame kept on ws.dlq; well under the 1 MiB request limit
TRADE_IDS_KEPT = 4096  # per market: repeats further back than this are not recognized

# Compiled, an imported name is a dict lookup at each use, a Final one a C constant: INF is
# read several times per record.
INF: Final = values.INF

Headers = list[tuple[str, bytes]] | None
Pending = tuple[str, bytes, Any, Headers, float]


# `kcs_book_resyncs_total{reason}`: a `resync` by its cause, other kinds by their name.
REASONS = ("gap", "checksum", "crossed", "other", "stale", "disconnect")


def reason_class(reason: str) -> str:
    """A resync's free-text reason as gap, checksum, crossed or other (few label values)."""
    text = reason.lower()
    for word in ("gap", "checksum", "crossed"):
        if word in text:
            return word
    return "other"


class TradeMarket:
    """One market's trade state in a Publisher, found with one lookup per trade."""

    __slots__ = ("key", "ids", "order", "newest_ts", "newest_id")

    def __init__(self, key: bytes) -> None:
        self.key = key  # the Kafka key
        self.ids: set[str] = set()  # ids published recently
        self.order: deque[str] = deque()  # the same ids in order, for eviction
        self.newest_ts = -INF  # ts_event and id of the newest trade published
        self.newest_id: str | None = None


class BookMarket:
    """One market's book state in a Publisher, found with one lookup per book message."""

    __slots__ = ("key", "newest", "advanced", "published")

    def __init__(self, key: bytes) -> None:
        self.key = key  # the Kafka key
        # The newest ts_event of the market's book messages, published or not, and our time
        # when it last advanced (stale books, `Connector.check_stale`); -INF: not watched
        # until the next book message.
        self.newest = -INF
        self.advanced = 0.0
        self.published: float | None = None  # ts_event of the last book record (its age)


class Producer(Protocol):
    async def send(self, topic: str, value: bytes, key: bytes, headers: Headers = None) -> Any:
        ...


class Publisher:
    """Collects one exchange's output and sends it to Kafka; one per connector."""

    __slots__ = ("exchange", "producer", "pending", "trade_topic", "book_topic", "ticker_topic",
                 "on_ack", "sent", "keys", "markets", "out_of_order_after",
                 "book_markets", "held", "trades", "books", "tickers", "sampler",
                 "codec", "last_ts_event", "outbox", "resume", "skipped",
                 "last_event", "resync_series")

    def __init__(self, exchange: str, producer: Producer | None = None,
                 on_ack: Callable[[float], None] | None = None,
                 out_of_order_after: float = 5.0, codec: Codec = JSON) -> None:
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
        self.markets: dict[str, TradeMarket] = {}  # symbol -> its trades' state
        self.out_of_order_after = out_of_order_after
        self.book_markets: dict[str, BookMarket] = {}  # symbol -> its book state
        # symbol -> live trades held back while its missed trades are fetched (backfill)
        self.held: dict[str, list[Pending]] = {}
        # Read by Prometheus at scrape time (exchanges/metrics.py), never locked here.
        self.trades = self.books = self.tickers = 0
        self.last_ts_event = 0.0  # of the last record queued: the sampled event delay
        self.sampler = Sampler(exchange)
        # Series at 0 from the start, so a rate over them exists before the first event.
        for name in ("kcs_dlq_frames_total", "kcs_reconnects_total"):
            metrics.touch(name, exchange=exchange)
        for why in REASONS:
            metrics.touch("kcs_book_resyncs_total", exchange=exchange, reason=why)
        # why -> the two series a book dropped for it counts on (`error`), found once
        self.resync_series: dict[str, tuple[Any, Any]] = {}
        # When set (the ingest service), `drain()` queues here instead of sending: see
        # exchanges/outbox.py.
        self.outbox: Any = None
        # symbol -> (last trade id, its ts_event, ids of the trades at that ts): trades at or
        # before it were published already (by this shard's previous owner); see resume_after.
        self.resume: dict[str, tuple[str, float, frozenset[str]]] = {}
        self.skipped = 0  # trades not published because they were published already
        self.last_event = 0.0  # ts_event of the newest record drained (the health view)

    def key(self, symbol: str) -> bytes:
        key = self.keys.get(symbol)
        if key is None:
            key = self.keys[symbol] = market_key(self.exchange, symbol)
        return key

    @property
    def newest_trade(self) -> dict[str, tuple[float, str]]:
        """symbol -> (ts_event, trade_id) of the newest trade published: where a backfill
        starts (read on a reconnect, not per trade)."""
        return {symbol: (m.newest_ts, m.newest_id) for symbol, m in self.markets.items()
                if m.newest_id is not None}

    def _market(self, symbol: str) -> TradeMarket:
        market = self.markets[symbol] = TradeMarket(self.key(symbol))
        return market

    @property
    def book_times(self) -> dict[str, tuple[float, float]]:
        """symbol -> (the book's newest ts_event, our time when it last advanced), of the
        books watched for staleness (read on a reconnect, not per message)."""
        return {symbol: (m.newest, m.advanced) for symbol, m in self.book_markets.items()
                if m.newest > -INF}

    def trade(self, trade: Trade) -> bool:
        """Check and queue a trade; False (and nothing queued) for a repeat. Hot path: the
        usual trade costs one lookup, three type-and-range tests and a set insert."""
        symbol = trade.symbol
        if self.resume and symbol in self.resume and self._published_before(trade):
            self.skipped += 1  # published by this shard's previous owner
            return False
        market = self.markets.get(symbol)
        if market is None:
            market = self._market(symbol)
        ids = market.ids
        # Fields read untyped (`fields: Any`) where their type is checked: compiled, a read
        # typed float would turn a venue's int into a float on the way in, pass the test and
        # leave the int in the record, and a read typed str would raise TypeError before the
        # test (exchanges/_native.py).
        fields: Any = trade
        trade_id: object = fields.trade_id
        if trade_id in ids:
            metrics.inc("kcs_duplicate_trades_total", exchange=self.exchange)
            return False
        price: object = fields.price
        amount: object = fields.amount
        ts: object = fields.ts_event
        if type(price) is not float or not 0.0 < price < INF:
            trade.price = positive(price, "trade price")
        if type(amount) is not float or not 0.0 < amount < INF:
            trade.amount = positive(amount, "trade amount")
        if type(ts) is not float or not 0.0 < ts < INF:
            ts = trade.ts_event = finite_time(ts)
        if type(trade_id) is not str or (trade.side != 1 and trade.side != -1):
            raise ValueError(f"bad trade id {trade_id!r} or side {trade.side!r}")
        ids.add(trade_id)
        order = market.order
        order.append(trade_id)
        if len(order) > TRADE_IDS_KEPT:
            ids.discard(order.popleft())
        if ts >= market.newest_ts:
            market.newest_ts = ts
            market.newest_id = trade_id
        elif ts < market.newest_ts - self.out_of_order_after:
            metrics.inc("kcs_out_of_order_trades_total", exchange=self.exchange)
        self.trades += 1
        self.last_ts_event = ts
        entry = (self.trade_topic, market.key, trade, None, trade.ts_recv)
        if self.held and symbol in self.held:
            self.held[symbol].append(entry)  # after the backfilled ones
        else:
            self.pending.append(entry)
        return True

    def hold(self, symbol: str) -> None:
        """Hold the market's live trades back until `release` (a backfill is in flight)."""
        self.held.setdefault(symbol, [])

    def release(self, symbol: str, before: list[Trade]) -> int:
        """Publish `before` (missed trades, oldest first; repeats dropped), then the live
        trades held back; the number of `before` published."""
        held = self.held.pop(symbol, [])
        published = 0
        # A backfilled trade must not end the market's resume check (`_published_before`):
        # a feed that sends its trades again from before the resume point (a recording
        # replayed from its start) still has them skipped; the first live trade ends it.
        resume = self.resume.get(symbol)
        for trade in before:
            try:
                published += self.trade(trade)
            except ValueError as exc:  # a bad value in the history: that trade only
                log.warning("%s: a backfilled trade was refused: %s", self.exchange, exc)
        if resume is not None:
            self.resume[symbol] = resume
        self.pending.extend(held)
        return published

    def resume_after(self, symbol: str, trade_id: str, ts: float,
                     ids_at_ts: Iterable[str] = ()) -> None:
        """Publish only the market's trades after this one (and the others at its ts)."""
        self.resume[symbol] = (str(trade_id), ts,
                               frozenset(map(str, ids_at_ts)) | {str(trade_id)})

    def _published_before(self, trade: Trade) -> bool:
        """Whether the trade is at or before the market's resume point: by id where both ids
        are numbers (every venue but Kraken v1), else by time (and id within the same time).
        The first trade after it ends the check for the market."""
        last_id, last_ts, ids = self.resume[trade.symbol]
        trade_id = str(trade.trade_id)
        if trade_id.isdigit() and last_id.isdigit():
            if int(trade_id) <= int(last_id):
                return True
        elif trade.ts_event < last_ts or (trade.ts_event == last_ts and trade_id in ids):
            return True
        del self.resume[trade.symbol]
        return False

    def book(self, book: OrderBook) -> None:
        """Queue a book record. Hot path: each field read once, one lookup per market."""
        fields: Any = book  # read untyped: see `trade()`
        ts: object = fields.ts_event
        if type(ts) is not float or not 0.0 < ts < INF:
            ts = book.ts_event = finite_time(ts)
        ts_recv = fields.ts_recv
        market = self._book_time(fields.symbol, ts, ts_recv)
        market.published = ts
        self.books += 1
        self.last_ts_event = ts
        # levels were checked where parsed: an L2Book's setters, or `book.check_levels` and
        # `book.first_levels` for full book messages (no second pass per level here)
        self.pending.append((self.book_topic, market.key, book, None, ts_recv))

    def book_seen(self, symbol: str, ts_event: float, ts_recv: float) -> None:
        """A book update that left the published top N as it was: nothing is published, but
        its exchange time still counts as the book's (stale-book detection)."""
        self._book_time(symbol, ts_event, ts_recv)

    def _book_time(self, symbol: str, ts_event: float, ts_recv: float) -> BookMarket:
        """The market's book state, its newest exchange time advanced to `ts_event`."""
        market = self.book_markets.get(symbol)
        if market is None:
            market = self.book_markets[symbol] = BookMarket(self.key(symbol))
        if ts_event > market.newest:
            market.newest = ts_event
            market.advanced = ts_recv
        return market

    def ticker(self, ticker: Ticker) -> None:
        """Prices must be real where sent (a ticker without a bid has a null bid, never 0);
        sizes and volumes may be 0. Hot path: a float in range costs one type test and one
        chained comparison, as in `trade()`; anything else is converted or refused by the
        checks of `exchanges.values`."""
        fields: Any = ticker  # read untyped: see `trade()`
        ts: object = fields.ts_event
        if type(ts) is not float or not 0.0 < ts < INF:
            ts = ticker.ts_event = finite_time(ts)
        x: object = fields.last
        if x is not None and (type(x) is not float or not 0.0 < x < INF):
            ticker.last = positive(x, "ticker last")
        x = fields.bid
        if x is not None and (type(x) is not float or not 0.0 < x < INF):
            ticker.bid = positive(x, "ticker bid")
        x = fields.ask
        if x is not None and (type(x) is not float or not 0.0 < x < INF):
            ticker.ask = positive(x, "ticker ask")
        x = fields.bid_size
        if x is not None and (type(x) is not float or not 0.0 <= x < INF):
            ticker.bid_size = non_negative(x, "ticker bid size")
        x = fields.ask_size
        if x is not None and (type(x) is not float or not 0.0 <= x < INF):
            ticker.ask_size = non_negative(x, "ticker ask size")
        x = fields.volume_24h
        if x is not None and (type(x) is not float or not 0.0 <= x < INF):
            ticker.volume_24h = non_negative(x, "ticker volume")
        x = fields.quote_volume_24h
        if x is not None and (type(x) is not float or not 0.0 <= x < INF):
            ticker.quote_volume_24h = non_negative(x, "ticker quote volume")
        self.tickers += 1
        self.last_ts_event = ts
        self.pending.append((self.ticker_topic, self.key(ticker.symbol), ticker, None,
                             ticker.ts_recv))

    def encode(self, start: int) -> None:
        """Encode the records queued since `start` (one frame's); raises on one that cannot be
        encoded (a field of the wrong type, an int over 64 bits), leaving them queued."""
        pending, encode, trade_topic = self.pending, self.codec.encode, self.trade_topic
        for i in range(start, len(pending)):
            topic, key, value, headers, ts_recv = pending[i]
            if type(value) is not bytes and type(value) is not tuple:
                data = encode(topic, value)
                # a trade keeps its record beside its bytes: the outbox's checkpoint reads it
                pending[i] = (topic, key, (data, value) if topic == trade_topic else data,
                              headers, ts_recv)

    def reject(self, frame: bytes | str, exc: Exception, ts_recv: float, url: str = "") -> None:
        """A frame that failed: to the DLQ with the reason; a rejected value is also counted
        by reason, and a book it was dropped from is reported like any resync."""
        reason = getattr(exc, "reason", None)
        if reason is not None:
            metrics.inc("kcs_rejected_values_total", exchange=self.exchange, reason=reason)
            metrics.inc("kcs_validation_rejections_total", exchange=self.exchange,
                        reason=reason)
        self.dlq(frame, f"{type(exc).__name__}: {exc}", ts_recv, url)

    def dlq(self, raw: bytes | str, reason: str, ts_recv: float, url: str = "") -> None:
        """The frame's exact bytes as the value; what went wrong travels in the headers."""
        metrics.inc("kcs_dlq_frames_total", exchange=self.exchange)
        metrics.inc("kcs_validation_rejections_total", exchange=self.exchange,
                    reason="unparseable")
        value = raw.encode(errors="replace") if isinstance(raw, str) else bytes(raw)
        headers = dlq_headers(self.exchange, reason, ts_recv, url)
        if len(value) > DLQ_MAX_BYTES:
            metrics.inc("kcs_dlq_truncated_total", exchange=self.exchange)
            headers += [("size", str(len(value)).encode()),
                        ("sha256", hashlib.sha256(value).hexdigest().encode()),
                        ("truncated", b"true")]
            value = value[:DLQ_MAX_BYTES]
        self.pending.append((DLQ_TOPIC, self.exchange.encode(), value, headers, ts_recv))

    def error(self, symbol: str, reason: str, kind: str = "resync", **fields: Any) -> None:
        """An event on `ws.error` plus a counter: a book dropped and resynced (kinds `resync`,
        `disconnect`, `stale`: `kcs_book_resyncs_total{reason}`, a `resync` by its cause), or
        another kind (`trade_gap`: `kcs_trade_gaps_total`), with its `fields` (ErrorEvent's
        optional ones) in the event."""
        if kind == "trade_gap":
            metrics.inc("kcs_trade_gaps_total", exchange=self.exchange)
        else:
            why = reason_class(reason) if kind == "resync" else kind
            counted = self.resync_series.get(why)
            if counted is None:
                counted = self.resync_series[why] = (
                    metrics.series("kcs_book_resyncs_total", exchange=self.exchange,
                                   reason=why),
                    metrics.series("kcs_validation_rejections_total",
                                   exchange=self.exchange, reason=why))
            counted[0].inc()
            counted[1].inc()
        now = time.time()
        event = ErrorEvent(self.exchange, symbol, kind, reason, None, now, **fields)
        self.pending.append((ERROR_TOPIC, market_key(self.exchange, symbol),
                             self.codec.encode(ERROR_TOPIC, event), None, now))

    async def drain(self) -> None:
        """Hand every pending message to the producer (acks arrive later on futures)."""
        pending, self.pending = self.pending, []
        # ts_event of the newest record drained (the health view's exchange-time age)
        self.last_event = self.last_ts_event
        if self.outbox is not None:
            # Records queued outside a frame (a task's REST snapshot, a backfill) are encoded
            # here: the outbox takes bytes only, and what cannot be encoded goes to the DLQ.
            kept = []
            for entry in pending:
                value = entry[2]
                if type(value) is not bytes and type(value) is not tuple:
                    topic = entry[0]
                    try:
                        data = self.codec.encode(topic, value)
                    except (TypeError, ValueError, OverflowError) as exc:
                        log.error("%s: a record could not be encoded: %s", self.exchange, exc)
                        self.dlq(repr(value), f"{type(exc).__name__}: {exc}", entry[4])
                        continue
                    entry = (topic, entry[1], (data, value) if topic == self.trade_topic
                             else data, entry[3], entry[4])
                kept.append(entry)
            if self.pending:  # the DLQ records of those that failed
                kept += self.pending
                self.pending = []
            self.outbox.put(kept, self.last_ts_event)
            self.sent += len(kept)
            return
        producer = self.producer
        if producer is None:
            return
        on_ack = self.on_ack
        future = None
        encode = self.codec.encode
        for topic, key, value, headers, ts_recv in pending:
            if type(value) is tuple:
                value = value[0]
            elif type(value) is not bytes:
                try:
                    value = encode(topic, value)
                except (TypeError, ValueError, OverflowError) as exc:  # queued outside a frame
                    log.error("%s: a record could not be encoded: %s", self.exchange, exc)
                    self.dlq(repr(value), f"{type(exc).__name__}: {exc}", ts_recv)
                    topic, key, value, headers, ts_recv = self.pending.pop()
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
            ts_recv, ts_event = pending[0][4], self.last_ts_event
            # A sampled drain: its last record's acknowledgement is its records' (one
            # produce request, or very nearly), observed in the latency histograms.
            sampler.next_at = ts_recv + SAMPLE_EVERY
            future.add_done_callback(lambda _: sampler.observe(ts_recv, ts_event))

    def metric_samples(self, now: float) -> list[tuple[str, tuple[str, ...], float]]:
        """This publisher's figures for exchanges.metrics.SourcesCollector."""
        ex = self.exchange
        samples: list[tuple[str, tuple[str, ...], float]] = [
            ("kcs_records", (ex, "trade"), float(self.trades)),
            ("kcs_records", (ex, "book"), float(self.books)),
            ("kcs_records", (ex, "ticker"), float(self.tickers))]
        samples += [("kcs_book_age_seconds", (ex, symbol), now - market.published)
                    for symbol, market in list(self.book_markets.items())
                    if market.published is not None]
        return samples


def check_delivery(future: Any) -> None:
    """Count and log a record Kafka did not take (after the producer's own retries)."""
    if future.cancelled() or future.exception() is None:
        return
    metrics.inc("kcs_produce_errors_total")
    log.error("a record was not delivered to Kafka: %r", future.exception())
