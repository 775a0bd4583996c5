"""The ingest buffer between a shard's connector and Kafka, bounded over all shards.

The session's read loop must never wait for Kafka: an exchange cuts a feed whose socket is
not read. So `Publisher.drain()` only appends to its shard's `Outbox` (no await), and one
sender task per shard hands the records to the producer in order, a chunk at a time, and
waits for the chunk's acknowledgements. A record Kafka did not take (a dead or stopped
broker: aiokafka expires a batch at its request timeout) is put back at the head of the
queue and sent again after a backoff, so a broker outage costs no record: they wait here.

The bytes waiting in every outbox count against one `Budget` (`KCS_INGEST_BUFFER_BYTES`).
Crossing half of it is announced (a high water mark), and so is falling back under a tenth
of it (the low water mark). Past the bound, records still queued are dropped, oldest first:
books first (each book record is a whole top-N, and the book is marked for resync), then
tickers and anything else, trades last. Every drop is counted per exchange and type and
announced. Announcements are dicts in `Budget.events`, sent on `ws.backpressure.events`
by the ingest service.

The outbox also remembers, per market, the last trade Kafka acknowledged (and per partition
the next offset): the shard's checkpoint, from which a new owner learns where to resume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from exchanges.metrics import SAMPLE_EVERY, Sampler, metrics

__all__ = ["Budget", "Outbox", "fold_trade", "KIND_NAMES", "TRADE", "BOOK", "TICKER", "OTHER"]

log = logging.getLogger(__name__)

TRADE, BOOK, TICKER, OTHER = 0, 1, 2, 3
KIND_NAMES = ("trade", "book", "ticker", "other")
DROP_ORDER = (BOOK, TICKER, OTHER, TRADE)  # what goes first when the buffer is full
OVERHEAD = 64  # bytes counted per record beyond key and value (tuple, headers, bookkeeping)
LATENCY_SAMPLES = 10_000  # ts_recv - ts_event samples kept per metrics interval
CHUNK = 4096  # records handed to the producer before waiting for their acknowledgements

# topic, key, value, headers, kind, size, trade id (trades only, else None), ts_recv, and
# for a trade its symbol and ts_event (the checkpoint's). Only atomic values, not the Trade:
# the collector untracks such a tuple the first time it sees it, so a backlog of queued
# records is not walked by every collection until sent (bench/ingest.py --outbox: 2.0 young
# tracked objects per queued trade with the Trade kept, 1.0 without, never promoted).
Entry = tuple[str, bytes, bytes, Any, int, int, str | None, float, str | None, float]


def fold_trade(last: dict[str, list[Any]], symbol: str, trade_id: str, ts: float) -> None:
    """Remember a market's latest trade `[id, ts, ids of the trades at that ts]`."""
    entry = last.get(symbol)
    if entry is not None and entry[1] == ts:
        entry[0] = trade_id
        if trade_id not in entry[2]:
            entry[2].append(trade_id)
    elif entry is None or ts > entry[1] or (
            trade_id.isdigit() and entry[0].isdigit() and int(trade_id) > int(entry[0])):
        last[symbol] = [trade_id, ts, [trade_id]]


class Budget:
    """One bound over the bytes buffered by every outbox, with its water marks."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.high = limit // 2
        self.low = limit // 10
        self.used = 0
        self.above_high = False
        self.outboxes: list[Outbox] = []
        self.events: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.dropped: dict[tuple[str, str], int] = {}
        self.clock = clock

    def _event(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, "buffered_bytes": self.used, "limit": self.limit,
                            "high": self.high, "low": self.low, "ts": self.clock(), **fields})

    def added(self, size: int) -> None:
        self.used += size
        if self.used > self.high and not self.above_high:
            self.above_high = True
            log.warning("ingest buffer above its high water mark (%d bytes)", self.used)
            self._event("high_water")
        if self.used > self.limit:
            self.make_room()

    def removed(self, size: int) -> None:
        self.used -= size
        if self.above_high and self.used <= self.low:
            self.above_high = False
            log.warning("ingest buffer back under its low water mark (%d bytes)", self.used)
            self._event("low_water")

    def queued(self) -> dict[str, int]:
        """Records waiting in every outbox per type (not those with the producer)."""
        counts = [0, 0, 0, 0]
        for box in self.outboxes:
            for entry in box.queue:
                counts[entry[4]] += 1
        return {KIND_NAMES[k]: n for k, n in enumerate(counts)}

    def make_room(self) -> None:
        """Drop queued records, books first and trades last, until 5% of the bound is free
        (not just one record's worth: a sustained overflow scans the queues less often)."""
        target = self.limit - self.limit // 20
        for kind in DROP_ORDER:
            if kind == TRADE and any(box.inflight_other for box in self.outboxes):
                # Books handed to the producer cannot be taken back; when Kafka fails them
                # they return to their queue and go first. Till then the bound is exceeded
                # by at most that chunk, rather than trades going before books.
                return
            for box in self.outboxes:
                if self.used <= target:
                    return
                box.drop(kind, target)


class Outbox:
    """One shard's records on their way to Kafka, in the order they were parsed."""

    def __init__(self, exchange: str, producer: Any, budget: Budget,
                 kinds: dict[str, int], on_book_dropped: Callable[[str], None] | None = None,
                 retry_initial: float = 0.5, retry_max: float = 5.0) -> None:
        self.exchange = exchange
        self.producer = producer
        self.budget = budget
        self.kinds = kinds  # topic -> TRADE/BOOK/TICKER (others: OTHER)
        self.on_book_dropped = on_book_dropped
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.queue: deque[Entry] = deque()
        self.inflight = 0  # records handed to the producer, not acknowledged yet
        self.inflight_other = 0  # of which not trades
        self.inflight_bytes = 0
        self.paused = False
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None
        # The checkpoint: per market [last trade id, its ts, ids of trades at that ts], and
        # per partition of the trade topic the offset after the last trade acknowledged.
        self.last_trades: dict[str, list[Any]] = {}
        self.offsets: dict[int, int] = {}
        self.acked = 0
        self.first_ack: float | None = None
        # For ws.metrics: records queued per kind, and a sample of ts_recv - ts_event.
        self.counts = [0, 0, 0, 0]
        self.latencies: list[float] = []
        # The publisher's latency histograms (frame -> ack, ts_recv - ts_event), observed for
        # one acknowledged chunk every SAMPLE_EVERY s at most; set by the ingest service.
        self.sampler: Sampler | None = None
        self.last_ts_event = 0.0  # of the newest record put
        budget.outboxes.append(self)

    # -- the parsing side (synchronous) ------------------------------------------------------

    def put(self, pending: Iterable[tuple[str, bytes, Any, Any, float]],
            last_ts_event: float = 0.0) -> None:
        """Queue a frame's records (`Publisher.pending` entries: a value is bytes, a trade's
        is (bytes, Trade), or a record not encoded yet); never waits."""
        if last_ts_event:
            self.last_ts_event = last_ts_event
        kinds = self.kinds
        queue = self.queue
        counts = self.counts
        latencies = self.latencies
        added = 0
        for topic, key, value, headers, ts_recv in pending:
            kind = kinds.get(topic, OTHER)
            counts[kind] += 1
            if type(value) is tuple:
                value, trade = value
                if len(latencies) < LATENCY_SAMPLES:
                    latencies.append(trade.ts_recv - trade.ts_event)
            elif type(value) is not bytes:
                trade = value if kind == TRADE else None
                if len(latencies) < LATENCY_SAMPLES:
                    latencies.append(value.ts_recv - value.ts_event)
                value = orjson.dumps(value)
            else:
                trade = None
            size = len(value) + len(key) + OVERHEAD
            if trade is None:
                queue.append((topic, key, value, headers, kind, size, None, ts_recv, None, 0.0))
            else:
                queue.append((topic, key, value, headers, kind, size, str(trade.trade_id),
                              ts_recv, trade.symbol, trade.ts_event))
            added += size
        if added:
            self.idle.clear()
            if not self.paused:
                self.wake.set()
            self.budget.added(added)

    def take_stats(self) -> tuple[list[int], list[float]]:
        """Records queued per kind since the start, and the latency sample since the last
        call (which starts a new one)."""
        latencies, self.latencies = self.latencies, []
        return list(self.counts), latencies

    def drop(self, kind: int, target: int) -> None:
        """Drop queued records of `kind`, oldest first, until the budget is at `target`."""
        budget = self.budget
        kept: deque[Entry] = deque()
        count = 0
        books: set[str] = set()
        for entry in self.queue:
            if entry[4] == kind and budget.used > target:
                budget.used -= entry[5]
                count += 1
                if kind == BOOK:
                    books.add(entry[1].decode().partition(":")[2])
            else:
                kept.append(entry)
        if not count:
            return
        self.queue = kept
        name = KIND_NAMES[kind]
        key = (self.exchange, name)
        budget.dropped[key] = budget.dropped.get(key, 0) + count
        metrics.inc("kcs_ingest_dropped_total", count, exchange=self.exchange, type=name)
        log.error("%s: ingest buffer full: %d %s records dropped", self.exchange, count, name)
        budget._event("dropped", exchange=self.exchange, type=name, count=count,
                      total=budget.dropped[key], queued=budget.queued())
        if self.on_book_dropped is not None:
            for symbol in sorted(books):
                self.on_book_dropped(symbol)

    # -- the sending side ---------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def pause(self) -> None:
        """Hold what is queued, and what comes next, until `resume()` (or `stop()`)."""
        self.paused = True
        self.wake.clear()

    def resume(self) -> None:
        self.paused = False
        if self.queue:
            self.wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued record is acknowledged; False if `timeout` s passed."""
        if self.queue and not self.paused:
            self.wake.set()
        try:
            async with asyncio.timeout(timeout):
                await self.idle.wait()
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        """Stop sending; what is still queued is given up (a new owner resumes from Kafka)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        # Cancelled while a chunk was with the producer: its bytes are still counted.
        self.budget.removed(sum(entry[5] for entry in self.queue) + self.inflight_bytes)
        self.inflight = self.inflight_other = self.inflight_bytes = 0
        self.queue.clear()
        if self in self.budget.outboxes:
            self.budget.outboxes.remove(self)

    async def run(self) -> None:
        backoff = self.retry_initial
        while True:
            await self.wake.wait()
            if self.paused or not self.queue:
                self.wake.clear()
                if not self.queue:
                    self.idle.set()
                continue
            queue = self.queue
            chunk = [queue.popleft() for _ in range(min(CHUNK, len(queue)))]
            self.inflight = len(chunk)
            self.inflight_other = sum(1 for entry in chunk if entry[4] != TRADE)
            self.inflight_bytes = sum(entry[5] for entry in chunk)
            retry = await self._send(chunk)
            self.inflight = self.inflight_other = self.inflight_bytes = 0
            if retry:
                self.queue.extendleft(reversed(retry))
                if self.budget.used > self.budget.limit:
                    self.budget.make_room()
                metrics.inc("kcs_produce_retries_total", len(retry), exchange=self.exchange)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2.0, self.retry_max)
            else:
                backoff = self.retry_initial

    async def _send(self, chunk: list[Entry]) -> list[Entry]:
        """Hand a chunk to the producer and wait for it; returns the records to send again,
        in order (none when all were acknowledged)."""
        send = self.producer.send
        futures = []
        error: BaseException | None = None
        for entry in chunk:
            try:
                futures.append(await send(entry[0], entry[2], key=entry[1], headers=entry[3]))
            except Exception as exc:  # e.g. no metadata while the broker is away
                error = exc
                break
        retry: list[Entry] = []
        done = 0
        last_trades = self.last_trades
        offsets = self.offsets
        # The futures are awaited in order rather than gathered: a batch's acknowledgement
        # resolves all its records' futures at once, so only the first of each batch is
        # still pending when reached. gather() added a done-callback (a copied context, then
        # a loop handle) to every record's future: 2 of the ~4 young tracked objects each
        # record in flight cost the collector.
        for entry, future in zip(chunk[:len(futures)], futures, strict=True):
            if not future.done():
                try:
                    await future
                except asyncio.CancelledError:
                    # stop() cancels this task, and with it the future it waits on: that
                    # is not a record's failure.
                    task = asyncio.current_task()
                    if not future.cancelled() or (task is not None and task.cancelling()):
                        raise
                except Exception:
                    pass  # read below, like any other record's
            failed = asyncio.CancelledError() if future.cancelled() else future.exception()
            if failed is not None:
                error = error or failed
                retry.append(entry)
                continue
            done += entry[5]
            if entry[6] is not None:
                result = future.result()
                offsets[result.partition] = result.offset + 1
                fold_trade(last_trades, entry[8], entry[6], entry[9])
        retry.extend(chunk[len(futures):])
        acked = len(chunk) - len(retry)
        if acked:
            self.acked += acked
            if self.first_ack is None:
                self.first_ack = time.time()
            sampler = self.sampler
            if sampler is not None and chunk[0][7] >= sampler.next_at:
                sampler.next_at = chunk[0][7] + SAMPLE_EVERY
                sampler.observe(chunk[0][7], self.last_ts_event)
        self.budget.removed(done)
        if retry:
            log.warning("%s: Kafka did not take %d records (%r); they wait in the ingest "
                        "buffer and are sent again", self.exchange, len(retry), error)
        return retry

    def checkpoint(self) -> dict[str, Any]:
        return {"offsets": {str(p): o for p, o in self.offsets.items()},
                "last": self.last_trades}
