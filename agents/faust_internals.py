"""Every private Faust / aiokafka touch of kor-coin-stream, in one module.

Written for, and checked against, faust-streaming 0.15.3 (`PINNED_FAUST`): importing this
module on any other version raises, because each item below relies on code that is not
Faust's public API and may change in any release. What it changes and why:

- The consumer loop (`Consumer._drain_messages`, `perform_seek`, `seek`, `_reread_dropped`):
  each source partition is delivered contiguously from its committed offset. Faust's loop
  delivers whatever a fetch returns and, when an offset jumps, counts the skipped offsets as
  processed; records fetched and then dropped around a rebalance are then committed without
  ever being delivered (after a kill -9 and restart it lost 5,504 of 30,000 trades). Upstream:
  faust-streaming #216 ("Recovery without tables resumes from kafka before seeking to
  committed offsets") and #606 ("Wrong offset commit in case of gaps", open). Here a jump is
  sought back and read again; a jump seen twice from the same offset is real (compaction,
  transaction markers) and counted as Faust does. The decisions are the pure functions
  `next_step`, `Gaps` and `dropped`, unit-tested without a broker.
- Delivery in runs (`deliver_in_runs`, the same loop): the records of a registered topic's
  partition that one fetch returned (completed by the next fetches up to `RUN_RECORDS` or
  `RUN_WITHIN` seconds) are handed to one handler as a contiguous run (aiokafka's records,
  no Faust message, event or stream step per record). A fold task folds a run inside that
  partition's table context while the loop fetches the next, and acks the run in bulk
  (Faust's `_acked`, `_acked_index`, `_n_acked`) once every table changelog record written
  for it is delivered (`RawKeyTable.send_changelog` collects them): a committed source
  offset never has a changelog record derived from it still in flight. Those records skip
  Faust's producer buffer (`ProducerBuffer`) for one FIFO lane per partition number
  (`ChangelogLanes`, publishing Faust's FutureMessages as the buffer does). A run queued or
  in progress holds back a rebalance as an event in a stream buffer does
  (`_unacked_messages`, `Consumer.wait_empty`), and so do its changelog records until they
  are delivered; one still waiting for room when a rebalance suspends the flow is dropped,
  and read again from the committed offset.
- The run topics' records read from aiokafka's fetch buffer (`ConsumerThread._fetch_records`,
  `fetched_runs`, `take_run_records`, checked against aiokafka `PINNED_AIOKAFKA`): the record
  batches' own records instead of a `ConsumerRecord` built by a generator step per record,
  which cost the worker's consumer thread more than half its time (bench/features.py).
- Eager delivery in the same loop: a message's delivery runs in place instead of in two
  tasks per message; only a delivery that blocks is finished under `wait_first`.
- The consumer's fetch wait (`ConsumerThread`): Faust hard-codes 1500 ms.
- The transport alias (`install`): the `kafka://` and `aiokafka://` schemes use `Transport`.
- The broker URL set late (`set_broker_url`): the embedded broker's port is known only when
  a worker starts, after the app and its topics (hence its transports) exist.
- Raw-key tables (`RawKeyTable._serializer_from_type`): table keys serialized as the same
  bytes as the source topics' keys, so views are routed to the worker that holds the key.
  In a run, a value is serialized once for its changelog record and its store write
  (`_EncodeOnce` in place of the store's `_encode_value`), and a partition number's next
  run is folded once its last run's changelog records are delivered (`Consumer._fold_run`).
- The offset to commit (`Consumer._new_offset`): found without a Python step per acked
  offset when they are all consecutive.
- Current-event steering (`in_partition_of`): a table write goes to the partition of the
  event made current, not of the last event of a batch.
- The serializer override (`RawSchema`): source records decoded without Faust's serializer
  registry.
- Metrics read at scrape time: the consumer's committed offsets (`consumer_lag`), and the
  bytes an aiokafka producer holds unacknowledged (`producer_buffered_bytes`).
- The worker's shutdown (`Worker._sentinel_task`, `Worker._gather_all`): mode's worker
  sleeps a fixed second before closing the loop and polls up to another second for stray
  tasks; a Ctrl-C must end the whole worker in under 5 s (README "Run, rerun, stop").
- `faust -A app agents` (`install` patches `faust.cli.agents.agents._maybe_topic`): Faust's
  command catches only NotImplementedError from `get_topic_name()`, and an agent reading
  several topics raises ValueError there, so the command crashed.

Re-check all of the above (against the new version's `faust/transport/consumer.py`,
`faust/transport/drivers/aiokafka.py`, `faust/streams.py`, `faust/tables/base.py`,
`faust/app/base.py`, `faust/cli/agents.py` and mode's `mode/worker.py`) before changing
`PINNED_FAUST`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiokafka
import aiokafka.errors
import faust
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.structs import ConsumerRecord
from faust.exceptions import AlreadyConfiguredWarning
from faust.streams import _current_event
from faust.cli import agents as cli_agents
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT
from mode.utils.futures import notify

__all__ = ["PINNED_FAUST", "check_version", "install", "set_broker_url", "Transport", "Worker",
           "Consumer", "RawSchema", "RawKeyTable", "in_partition_of", "next_step", "Gaps",
           "dropped", "DELIVER", "SKIP", "GAP", "consumer_lag", "producer_buffered_bytes",
           "deliver_in_runs", "RunHandler", "contiguous_end", "ChangelogLanes", "one_run",
           "PINNED_AIOKAFKA", "take_run_records", "fetched_runs", "full_record"]

PINNED_FAUST = "0.15.3"
# The run topics' records are read from aiokafka's fetch buffer directly (`fetched_runs`)
# only with this aiokafka; with another, through its public fetch (every record a
# ConsumerRecord), and a warning says why.
PINNED_AIOKAFKA = "0.14.0"


def check_version(version: str = faust.__version__) -> None:
    """Refuse any faust-streaming but the one this module was written for."""
    if version != PINNED_FAUST:
        raise RuntimeError(
            f"kor-coin-stream's agents/faust_internals.py is written for faust-streaming "
            f"{PINNED_FAUST}, found {version}: re-check the consumer loop (_drain_messages, "
            f"perform_seek, seek, getmany, the ack bookkeeping, wait_empty, "
            f"Channel.as_future_message and Topic.publish_message for the changelog lanes, "
            f"the store's _encode_value), "
            f"the transport alias, RawKeyTable._serializer_from_type, "
            f"faust.streams._current_event and RawSchema against it (see this module's "
            f"docstring), then change PINNED_FAUST")


check_version()

log = logging.getLogger(__name__)

_fetch_max_wait_ms = 500


# What the consumer loop does with a message of a source partition (`next_step`).
DELIVER, SKIP, GAP = 0, 1, 2


def next_step(expected: int | None, offset: int) -> int:
    """The message at `offset` of a source partition whose next offset to deliver is
    `expected` (None before the seek to its committed offset): DELIVER it, SKIP it (before
    that seek, or delivered already), or GAP (offsets `expected` to `offset - 1` were
    never delivered)."""
    if expected is None:
        return SKIP
    if offset == expected:
        return DELIVER
    return SKIP if offset < expected else GAP


def one_run(offsets: list[int]) -> bool:
    """Whether sorted, non-empty `offsets` are one run of consecutive numbers (Faust's
    `consecutive_numbers` would yield them whole)."""
    return offsets[-1] - offsets[0] == len(offsets) - 1 and len(set(offsets)) == len(offsets)


class Gaps:
    """The last jump seen per source partition. A jump is read again once; seen a second
    time from the same offset to the same offset, the broker really has no records there
    (compaction, transaction markers) and it is counted as Faust does."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: dict[Any, tuple[int, int]] = {}  # tp -> (expected, offset received)

    def is_real(self, tp: Any, expected: int, offset: int) -> bool:
        """True when the same jump was seen last time (then forgotten); else remember it."""
        if self.seen.get(tp) == (expected, offset):
            del self.seen[tp]
            return True
        self.seen[tp] = (expected, offset)
        return False

    def forget(self, tp: Any) -> None:
        self.seen.pop(tp, None)


def dropped(next_offsets: Mapping[Any, int],
            positions: Mapping[Any, int | None]) -> list[tuple[Any, int, int]]:
    """(tp, expected, position) of every source partition whose fetch position is past its
    next offset to deliver: between two fetches every record fetched has been delivered, so
    the records in between were dropped."""
    out = []
    for tp, expected in next_offsets.items():
        position = positions.get(tp)
        if position is not None and position > expected:
            out.append((tp, expected, position))
    return out


# A run's handler: (topic partition, aiokafka's records of one partition with consecutive
# offsets, an event of the run's last record that makes the partition current for tables).
RunHandler = Callable[[Any, list[Any], EventT], Awaitable[None]]

_run_handlers: dict[str, RunHandler] = {}  # topic -> its handler (`deliver_in_runs`)
_changelog_sent: list[Any] | None = None  # while a run is handled: its changelog futures
_lanes: ChangelogLanes | None = None  # while a run is handled: its consumer's lanes
# Runs folded whose changelog records are still in flight, at most: the next run waits.
# It bounds the changelog lanes, which a rebalance drains before it can go on (with 8 and
# one buffer for every partition, draining outlasted the embedded broker's 6 s session and
# the group kept rebalancing). bench/features.py, same quarter hour: 2 in flight 89,413 and
# 97,077 trades/s, 4 in flight 134,709 and 136,583, 8 in flight 116,724 and 106,446.
RUNS_IN_FLIGHT = 4
# Runs fetched and waiting for the fold task, at most; while one waits, the loop goes on
# fetching into the next (up to RUN_RECORDS), so a run grows while the fold is behind.
RUNS_QUEUED = 1
# A fetch's records are completed with the next fetches' up to this many records (every
# partition together) or RUN_WITHIN seconds, the most a record waits for its run when the
# fold task keeps up. Longer runs cost less per record: a run's cost is mostly per market
# (its tables read and written once), and the embedded broker returns a few thousand
# records per fetch.
RUN_RECORDS = 30_000
RUN_WITHIN = 0.25


def deliver_in_runs(names: Iterable[str], handler: RunHandler) -> None:
    """Hand the records of `names` (topics an agent subscribes to, so Faust's group assigns
    them) to `handler` in runs instead of one by one through the agent's stream."""
    for name in names:
        _run_handlers[name] = handler


def contiguous_end(offsets: list[int], start: int) -> int:
    """The index after the run of consecutive offsets that begins at `start` (`offsets`
    increasing)."""
    end = len(offsets)
    if offsets[end - 1] - offsets[start] == end - 1 - start:
        return end  # the common case: no gap at all
    i = start + 1
    while i < end and offsets[i] == offsets[i - 1] + 1:
        i += 1
    return i


class ChangelogLanes:
    """The changelog records written while runs are folded, published in write order per
    partition number: one FIFO lane for the changelog partitions numbered p of every table,
    instead of Faust's one producer buffer for all of them.

    Why: the producer takes one batch per changelog partition at a time and Faust's buffer
    awaits each record's place in a batch, so when a partition's batch is full (on the
    embedded broker every record is a batch of its own, `TANSU_PROFILE`) every record behind
    it waits, whatever its partition. A run writes to the changelog partitions of its source
    partition only, so one buffer made the runs of all partitions wait on each other's
    round trips (bench/features.py: the fold task idled waiting for delivery between runs).

    Order. Records handed to the producer in order are not delivered in order: a record
    waits while its changelog partition has one in flight, and a later record of another
    partition goes first (a kill -9 then left a `features` entry whose closed candle had
    never reached the `candles` changelog: tests/e2e/test_features_e2e.py, in about one run
    of ten). So a record put as a barrier is published only once every record put before it
    in its lane is delivered (a market's `features` entry after its buckets and candles, a
    deletion after the entry that stopped listing the key); the others go out as soon as
    the producer takes them. After a record of a lane fails, every later one of that lane
    fails unpublished: its run is never acked, and read again after a restart."""

    __slots__ = ("queues", "tasks", "log")

    def __init__(self, log: Any) -> None:
        self.queues: dict[int, asyncio.Queue[tuple[Any, bool]]] = {}
        self.tasks: dict[int, asyncio.Future[None]] = {}
        self.log = log

    def put(self, fut: Any, barrier: bool = False) -> None:
        """Publish Faust's FutureMessage `fut` after the ones put before in its lane (once
        they are all delivered, if `barrier`)."""
        partition = fut.message.partition
        queue = self.queues.get(partition)
        if queue is None:
            queue = self.queues[partition] = asyncio.Queue()
            self.tasks[partition] = asyncio.ensure_future(self._publish(queue))
        queue.put_nowait((fut, barrier))

    async def _publish(self, queue: asyncio.Queue[tuple[Any, bool]]) -> None:
        published: list[Any] = []  # since the last barrier, not known to be delivered
        failed: BaseException | None = None
        while True:
            fut, barrier = await queue.get()
            try:
                if barrier and failed is None:
                    waiting = [f for f in published if not f.done()]
                    if waiting:
                        await asyncio.wait(waiting)
                    failed = next((f.exception() for f in published
                                   if not f.cancelled() and f.exception() is not None),
                                  None)
                    published.clear()
                if failed is not None:
                    raise failed
                # Faust's ProducerBuffer._send_pending: resolves `fut` once delivered.
                await fut.message.channel.publish_message(fut, wait=False)
                published.append(fut)
                if len(published) > 256:
                    published = [f for f in published if not f.done() or
                                 (not f.cancelled() and f.exception() is not None)]
            except asyncio.CancelledError:
                if not fut.done():
                    fut.cancel()
                raise
            except BaseException as exc:  # never delivered: its run is never acked
                if failed is None:
                    self.log.error("Changelog record not sent: %r", exc)
                failed = exc
                if not fut.done():
                    fut.set_exception(exc)

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for queue in self.queues.values():
            while not queue.empty():
                fut, _ = queue.get_nowait()
                if not fut.done():
                    fut.cancel()


def take_run_records(result: Any) -> list[Any]:
    """aiokafka's `FetchResult.getall()` (no `max_records`) for a partition of a topic
    delivered in runs, without aiokafka's step per record: its generator and a
    `ConsumerRecord` each cost 1.4 us a record against 0.6 us for the record batches' own
    records (`DefaultRecord`: `offset`, `key`, `value`, `timestamp`, `headers`; no `topic`
    or `partition`, known from the run). The rules are aiokafka 0.14.0's
    `PartitionRecords._unpack_records` for READ_UNCOMMITTED: a batch's CRC checked, control
    batches skipped, records before the fetch offset dropped, the position moved to each
    batch's end; with READ_COMMITTED (aborted transactions), aiokafka's own `getall`."""
    partition = result._partition_records
    if partition is not None and partition._isolation_level == aiokafka_fetcher.READ_COMMITTED:
        return result.getall()  # type: ignore[no-any-return]
    tp = result._topic_partition
    if not result.check_assignment(tp) or not result.has_more():
        return []
    partition = result._partition_records
    batches, check_crcs = partition._records, partition._check_crcs
    out: list[Any] = []
    while batches.has_next():
        batch = batches.next_batch()
        if check_crcs and not batch.validate_crc():
            raise aiokafka.errors.CorruptRecordException(f"Invalid CRC - {tp}")
        if not batch.is_control_batch:
            start = len(out)
            out.extend(batch)
            if len(out) > start and out[start].offset < partition.next_fetch_offset:
                position = partition.next_fetch_offset  # a batch begun before the fetch
                out[start:] = [record for record in out[start:] if record.offset >= position]
        partition.next_fetch_offset = batch.next_offset
    result._update_position()
    result._partition_records = None
    return out


async def fetched_runs(fetcher: Any, partitions: Any, timeout: float) -> Any:
    """aiokafka 0.14.0's `Fetcher.fetched_records(partitions, timeout)` (no `max_records`),
    line for line, except that partitions of topics delivered in runs are taken by
    `take_run_records`."""
    while True:
        if fetcher._subscriptions.reassignment_in_progress:
            await fetcher._subscriptions.wait_for_assignment()
        start_time = time.monotonic()
        drained = {}
        for tp in list(fetcher._records.keys()):
            if partitions and tp not in partitions:
                if not fetcher._subscriptions.is_assigned(tp):
                    del fetcher._records[tp]
                continue
            res_or_error = fetcher._records[tp]
            if type(res_or_error) is aiokafka_fetcher.FetchResult:
                records = (take_run_records(res_or_error) if tp.topic in _run_handlers
                           else res_or_error.getall())
                if not res_or_error.has_more():
                    del fetcher._records[tp]
                    fetcher._notify(fetcher._wait_consume_future)
                if not records:
                    continue
                drained[tp] = records
            elif drained:
                return drained
            else:
                del fetcher._records[tp]
                fetcher._notify(fetcher._wait_consume_future)
                res_or_error.check_raise()
        if drained or not timeout:
            return drained
        waiter = fetcher._create_fetch_waiter()
        done, pending = await asyncio.wait([waiter], timeout=timeout)
        if not done or fetcher._closed:
            if pending:
                pending.pop().cancel()
            return {}
        if waiter.done():
            waiter.result()
        timeout = max(0, timeout - (time.monotonic() - start_time))


def full_record(tp: Any, record: Any) -> Any:
    """A `ConsumerRecord` of a record `take_run_records` returned (or of one already)."""
    if type(record) is ConsumerRecord:
        return record
    key, value = record.key, record.value
    return ConsumerRecord(tp.topic, tp.partition, record.offset, record.timestamp,
                          record.timestamp_type, key, value, record.checksum,
                          len(key) if key is not None else -1,
                          len(value) if value is not None else -1, record.headers)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts its fetcher, which happens after this returns.
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
        return consumer

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer,
                             active_partitions: Any, timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        """Faust's, with the run topics' records taken by `fetched_runs`."""
        if not _LEAN_FETCH or max_records is not None or timeout is None:
            return await super()._fetch_records(consumer, active_partitions, timeout,
                                                max_records)
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise aiokafka.errors.ConsumerStoppedError()
        with fetcher._subscriptions.fetch_context():
            return await fetched_runs(fetcher, active_partitions, timeout)


_LEAN_FETCH = aiokafka.__version__ == PINNED_AIOKAFKA
if not _LEAN_FETCH:
    warnings.warn(f"agents/faust_internals.py: aiokafka {aiokafka.__version__} is not "
                  f"{PINNED_AIOKAFKA}; the market-data runs are read through aiokafka's "
                  f"public fetch (slower), until fetched_runs and take_run_records are "
                  f"re-checked against it", RuntimeWarning, stacklevel=1)


class _Rest:
    """The rest of a coroutine whose first step already ran and is waiting on `pending`.

    Awaiting it inside a task delegates exactly as `yield from` would: the pending future
    goes up to the task, results and exceptions come back down to the coroutine."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Any:
        coro, value = self.coro, self.pending
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # thrown into us: pass it to the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, delivering each source partition contiguously from its committed
    offset (see `_drain_messages`)."""

    # Counts seeks (started and finished), so the message loop can tell a batch fetched
    # before a seek from one fetched after it.
    _seeks = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per source partition (a topic Faust acks), the offset to deliver next; absent
        # until the seek that follows the partition's assignment.
        self._next_offset: dict[Any, int] = {}
        self._gaps = Gaps()
        self._runs_in_flight: list[asyncio.Future[Any]] = []
        self._run_delivered: dict[int, asyncio.Future[Any]] = {}  # partition -> last run's
        self._lanes = ChangelogLanes(self.log)
        # Runs delivered and not yet folded: the fold task folds one while the loop fetches
        # the next (fetching waits on the broker, folding on the CPU).
        self._runs: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=RUNS_QUEUED)
        self._fold_task: asyncio.Future[None] | None = None
        self._run_commit: asyncio.Future[Any] | None = None

    async def on_stop(self) -> None:
        if self._fold_task is not None:
            self._fold_task.cancel()
        self._lanes.stop()  # runs not delivered are not acked: read again after a restart
        await super().on_stop()

    async def wait_empty(self) -> None:
        """Faust's (every run queued or in progress folded), then until the runs' changelog
        records are delivered, and so acked, and committed: a rebalance's producer flush does
        not see the lanes, and a record of a revoked partition must not reach its changelog
        after the partition's new owner has read it."""
        await super().wait_empty()
        if not self._runs_in_flight:
            return
        while self._runs_in_flight and not self.should_stop:
            await asyncio.wait(self._runs_in_flight)
            self._runs_in_flight = [r for r in self._runs_in_flight if not r.done()]
        await self.commit()

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek every assigned partition to its committed offset (Faust's perform_seek), and
        every source partition without one explicitly to where `consumer_auto_offset_reset`
        says, so that the next offset of every source partition is known."""
        self._seeks += 1
        try:
            committed = await self.seek_to_committed()
            self._read_offset.update({tp: offset if offset is not None and offset >= 0 else None
                                      for tp, offset in committed.items()})
            self._committed_offset.update({ensure_TP(tp): offset if offset else None
                                           for tp, offset in committed.items()
                                           if offset is not None})
            acking = self.app.topics.acks_enabled_for
            starts = {tp: offset for tp, offset in committed.items()
                      if offset and acking(tp.topic)}  # the partitions sought to an offset
            fresh = [tp for tp, offset in committed.items() if not offset and acking(tp.topic)]
            if fresh:
                if self.app.conf.consumer_auto_offset_reset == "latest":
                    resets = await self.highwaters(*fresh)
                else:
                    resets = await self.earliest_offsets(*fresh)
                for tp in fresh:
                    await super().seek(tp, resets[tp])
                    starts[tp] = resets[tp]
            self._next_offset.update(starts)
        finally:
            self._seeks += 1

    async def seek(self, partition: Any, offset: int) -> None:
        self._seeks += 1
        try:
            await super().seek(partition, offset)
            if self.app.topics.acks_enabled_for(partition.topic):
                self._next_offset[partition] = offset
        finally:
            self._seeks += 1

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._next_offset.pop(tp, None)
            self._gaps.forget(tp)
        await super().on_partitions_revoked(revoked)

    async def _skipped(self, tp: Any, expected: int, offset: int) -> bool:
        """Offsets `expected` to `offset - 1` of a source partition were never delivered.
        Read them again; True only when a second read shows the broker has none of them (a
        compacted or transactional gap), and the message at `offset` is next."""
        if self._gaps.is_real(tp, expected, offset):
            await self._add_gap(tp, expected, offset - 1)
            self._next_offset[tp] = offset
            return True
        self.log.info("%s[%d]: offsets %d to %d were fetched but never delivered; reading "
                      "them again", tp.topic, tp.partition, expected, offset - 1)
        await self.seek(tp, expected)
        return False

    async def _reread_dropped(self) -> None:
        """Seek back every source partition whose fetch position is past its next offset to
        deliver. Between two fetches every record fetched has been delivered, so the records
        in between were dropped (by Faust's getmany during a rebalance or a pause, or by this
        loop); when they were a partition's last, no later record would show the jump."""
        consumer = self._thread._consumer
        subscription = consumer._subscription.subscription if consumer is not None else None
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return  # rebalancing: the seek that follows sets every position
        positions = {}
        for tp in self._next_offset:
            state = assignment.state_value(tp)
            positions[tp] = state._position if state is not None else None
        for tp, expected, position in dropped(self._next_offset, positions):
            await self._skipped(tp, expected, position)

    def _new_offset(self, tp: Any) -> int | None:
        """Faust's `_new_offset` (the offset to commit: after the first run of consecutive
        acked offsets), with that run found by a sort and one comparison when every acked
        offset is consecutive, as bulk-acked runs leave them. Faust's search steps through
        the acked offsets in Python (`consecutive_numbers`), and runs ack thousands at once:
        2-3% of the market-data worker's time (bench/features.py, py-spy). Anything else (a
        gap recorded, a gap in the acked offsets) goes Faust's way."""
        acked = self._acked[tp]
        if not acked or self._gap[tp]:
            return super()._new_offset(tp)  # type: ignore[no-any-return]
        acked.sort()
        committed = self._committed_offset[tp]
        if committed and acked[0] - committed > 1:  # as Faust tests it
            return None
        if not one_run(acked):
            return super()._new_offset(tp)  # type: ignore[no-any-return]
        last = acked[-1]
        self._acked_index[tp].difference_update(acked)
        acked.clear()
        return last + 1

    def _ack_run(self, tp: Any, first: int, last: int) -> None:
        """Faust's `ack` for offsets `first` to `last` of `tp` at once."""
        committed = self._committed_offset[tp]
        if committed is not None and first < committed:
            first = committed
        if first > last:
            return
        index = self._acked_index[tp]
        offsets = range(first, last + 1)
        if not index.isdisjoint(offsets):  # some acked already (read again after a seek)
            offsets = [o for o in offsets if o not in index]  # type: ignore[assignment]
        index.update(offsets)
        self._acked[tp].extend(offsets)
        self._n_acked += len(offsets)
        notify(self._waiting_for_ack)

    async def _deliver_run(self, handler: RunHandler, tp: Any, run: list[Any]) -> bool:
        """Queue one run for its handler (the fold task, `_fold_runs`, folds it while this
        loop fetches the next); False when a rebalance suspended the flow first (the run
        is dropped and read again from the committed offset)."""
        last = full_record(tp, run[-1])
        message = self._to_message(tp, last)
        key = last.key
        event = self.app.conf.Event(self.app, key.decode("utf-8", "replace")
                                    if key is not None else None, last.value, None, message)
        self._unacked_messages.add(message)  # a rebalance waits for the run (wait_empty)
        item = (handler, tp, run, message, event)
        if self._fold_task is None:
            self._fold_task = asyncio.ensure_future(self._fold_runs())
        if not self._runs.full():
            self._runs.put_nowait(item)  # the common case
            return True
        put = asyncio.ensure_future(self._runs.put(item))
        suspended = asyncio.ensure_future(self.suspend_flow.wait())
        await asyncio.wait([put, suspended], return_when=asyncio.FIRST_COMPLETED)
        suspended.cancel()
        if put.done():
            return True
        put.cancel()  # not queued: dropped
        message.acked = True
        self._unacked_messages.discard(message)
        return False

    async def _fold_runs(self) -> None:
        """The fold task: folds the queued runs, one at a time."""
        try:
            while True:
                await self._fold_run(await self._runs.get())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, or no registry: the worker stops, nothing acked
            self.log.exception("Folding a run raised: %r", exc)
            await self.crash(exc)

    async def _fold_run(self, item: tuple[Any, ...]) -> None:
        """Hand a run to its handler inside its partition's table context, then ack it once
        its changelog records are delivered (never if one fails: the run is read again
        after a restart)."""
        global _changelog_sent, _lanes
        handler, tp, run, message, event = item
        while len(self._runs_in_flight) >= RUNS_IN_FLIGHT:
            oldest = self._runs_in_flight[0]
            if not oldest.done():
                await asyncio.wait([oldest])
            self._runs_in_flight.pop(0)
        # One run in flight per partition number: its keys (a market's, whatever its topic)
        # are written again only once their last changelog records are delivered and their
        # offsets noted in the store. Else a kill -9 could leave a record delivered but not
        # noted, which recovery replays over the newer local value of its key while the
        # newer `features` entry written after it stays: closed candles went missing after
        # the restart in tests/e2e/test_features_e2e.py (22 of 26, in 1 of 8 runs).
        previous = self._run_delivered.get(tp.partition)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        sent: list[Any] = []
        _changelog_sent, _lanes = sent, self._lanes
        try:
            with in_partition_of(event):
                await handler(tp, run, event)
        finally:
            _changelog_sent = _lanes = None
            message.acked = True
            self._unacked_messages.discard(message)
        self._ack_when_sent(tp, run[0].offset, run[-1].offset, sent)

    def _ack_when_sent(self, tp: Any, first: int, last: int, sent: list[Any]) -> None:
        if not sent:
            self._ack_run(tp, first, last)
            return
        delivered = asyncio.gather(*sent)

        def ack(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                self._ack_run(tp, first, last)

        delivered.add_done_callback(ack)
        self._runs_in_flight.append(delivered)
        self._run_delivered[tp.partition] = delivered

    async def _deliver_runs(self, handler: RunHandler, tp: Any, records: list[Any],
                            seeks: int) -> bool:
        """Deliver a fetch's records of one partition as runs from its next offset; False
        when a seek (a jump read again, a rebalance) abandons the rest of the fetch."""
        next_offset = self._next_offset
        offsets = [record.offset for record in records]
        i, n = 0, len(records)
        while i < n:
            expected = next_offset.get(tp)
            if expected is None:
                return True  # before the seek to its committed offset
            offset = offsets[i]
            if offset < expected:
                i += 1  # delivered already
                continue
            if offset > expected:
                if not await self._skipped(tp, expected, offset):
                    return False
                continue  # a real gap, counted: `offset` is next
            end = contiguous_end(offsets, i)
            if not await self._deliver_run(handler, tp, records if i == 0 and end == n
                                           else records[i:end]):
                return False
            if self._seeks != seeks:
                return False  # do not move an offset that a seek just reset
            next_offset[tp] = offsets[end - 1] + 1
            i = end
        return True

    async def _fill_runs(self, records: dict[Any, list[Any]], generation_id: int) -> None:
        """Add the next fetches' records to `records` (aiokafka's lists, one fresh list per
        partition and fetch) until they hold RUN_RECORDS, or RUN_WITHIN seconds have passed
        and the fold task has room for a run. Stops at a seek or a rebalance (the loop
        abandons what was fetched before a seek)."""
        total = sum(map(len, records.values()))
        deadline = time.monotonic() + RUN_WITHIN
        seeks = self._seeks
        while total < RUN_RECORDS:
            remaining = deadline - time.monotonic()
            if not self.flow_active or self._seeks != seeks or \
                    self.app.consumer_generation_id != generation_id or self.should_stop:
                return
            if remaining <= 0:
                if not self._runs.full():
                    return
                remaining = 0.05  # the fold task is busy and a run waits: keep fetching
            more, _ = await self._wait_next_records(remaining)
            for tp, tp_records in (more or {}).items():
                earlier = records.get(tp)
                if earlier:
                    earlier.extend(tp_records)
                else:
                    records[tp] = tp_records
                total += len(tp_records)

    def _commit_in_background(self) -> None:
        """Faust's commit every `broker_commit_every` acks, without holding up the fetch:
        a commit first flushes Faust's producer (every changelog record delivered), and a
        bulk-acked run reaches the count almost every time, so awaited here it stalled the
        loop 0.3-0.8 s per run while the fold task sat idle (bench/features.py). Only acked
        runs are committed, whenever it runs; one commit at a time."""
        if self._run_commit is not None and not self._run_commit.done():
            return
        commit = self._run_commit = asyncio.ensure_future(self.commit())

        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                self.log.warning("Commit after runs raised: %r", future.exception())

        commit.add_done_callback(done)

    async def _getmany_runs(self, timeout: float) -> Any:  # pragma: no cover
        """Faust's `getmany`, except that the records of a topic delivered in runs come as
        (tp, list of aiokafka records) before the others' (tp, message) pairs."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if any(tp.topic in _run_handlers for tp in records):
            await self._fill_runs(records, generation_id)
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        others = {}
        for tp, tp_records in records.items():
            if tp.topic not in _run_handlers:
                others[tp] = tp_records
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return
            if active_partitions is None or tp in active_partitions or \
                    tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, tp_records
        if not others:
            return
        to_message = self._to_message
        for tp, record in self.scheduler.iterate(others):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if active_partitions is None or tp in active_partitions or \
                    tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        """Faust's message loop with three changes.

        Contiguous delivery. Faust's loop delivers whatever the fetch returns and, when an
        offset jumps, counts the offsets skipped as processed. But records fetched and then
        dropped (Faust drops them while its flow is stopped, during a rebalance, or for a
        partition it is still recovering, expecting a later seek to fetch them again) have
        moved the fetch position: the records after them then arrive first, and their offsets
        are committed as processed. After a kill -9 and restart this lost 5,504 of 30,000
        trades, silently. Here each source partition (a topic Faust acks) delivers exactly
        the offset after the last one it delivered: nothing before the seek to the committed
        offset that follows every assignment, an offset already delivered is dropped, and on
        a jump the partition is sought back to the offset expected. A jump seen twice from
        the same offset is real (compaction, transaction markers) and counted as Faust does.
        A batch fetched before a seek is abandoned.

        Eager delivery. Faust delivers each message with `wait_first(callback(message),
        suspend_flow.wait())`, two tasks per message, so that a delivery blocked on a full
        stream buffer can be abandoned when a rebalance suspends the flow. Most deliveries
        never block: here the callback's first step runs in place, and only one that blocks
        is finished under that same `wait_first`.

        Runs. The records of a topic registered with `deliver_in_runs` come from
        `_getmany_runs` as one list per partition and fetch, and go to the fold task as runs
        of consecutive offsets (`_deliver_runs`), with the same contiguity rules.

        (faust-streaming 0.15.3's loop otherwise, line for line.)
        """
        callback = self.callback
        getmany = self._getmany_runs
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        next_offset = self._next_offset
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                seeks = self._seeks
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        if self._seeks != seeks:
                            break  # fetched before a seek: re-fetched from the new position
                        if type(message) is list:  # a run of a topic delivered in runs
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                self._commit_in_background()
                            if not await self._deliver_runs(_run_handlers[tp.topic], tp,
                                                            message, seeks):
                                break
                            continue
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        expected = None
                        if acks_enabled_for(message.topic):
                            expected = next_offset.get(tp)
                            if offset != expected:
                                if next_step(expected, offset) == SKIP:
                                    continue  # before the seek to its committed offset, or
                                    # delivered already
                                if not await self._skipped(tp, expected, offset):  # type: ignore[arg-type]
                                    break
                        else:
                            r_offset = get_read_offset(tp)
                            if r_offset is not None and offset < r_offset:
                                continue
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        delivery = callback(message)
                        try:
                            pending = delivery.send(None)
                        except StopIteration:
                            pass  # delivered without waiting: the common case
                        else:
                            await self.wait_first(_Rest(delivery, pending),
                                                  self.suspend_flow.wait())
                        if self._seeks != seeks:
                            break  # do not move an offset that a seek just reset
                        if expected is not None:
                            next_offset[tp] = offset + 1
                        else:
                            set_read_offset(tp, offset)  # Faust's bookkeeping, other topics
                    unset_flag(flag_consumer_fetching)
                    await self._reread_dropped()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class RawSchema(faust.Schema):
    """Keys decoded to `str` (UTF-8, undecodable bytes replaced), values left as bytes, and
    the event built directly: Faust's generic decode (serializer registry, codec lookups,
    headers copied to a dict, a settings lookup per event) cost about 15% of the feature
    agent's time per record. Headers are not kept."""

    def compile(self, app: Any, **_: Any) -> Any:
        event_class = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            key = message.key
            return event_class(app, key.decode("utf-8", "replace") if key is not None else None,
                               message.value, None, message)

        return decode


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class Worker(faust.Worker):
    """Faust's worker without mode's fixed waits at shutdown (the app's services have all
    stopped by then; what is left is closing the loop)."""

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(0.05)  # mode: 1 s

    def _gather_all(self) -> None:
        for _ in range(5):  # mode: up to 10 x 0.1 s
            if not asyncio.all_tasks(loop=self.loop):
                break
            self.loop.run_until_complete(asyncio.sleep(0.02))
        for task in asyncio.all_tasks(loop=self.loop):
            task.cancel()


def _agent_topic(command: Any, agent: Any) -> str | None:
    """`faust agents`' topic column, also for an agent that reads several topics (shown as
    `trade-data.* (11)`: one entry per topic family)."""
    channel = agent.channel
    names = getattr(channel, "topics", None)
    if names is not None and len(names) > 1:
        families: dict[str, int] = {}
        for name in names:
            family = name.rsplit(".", 1)[0] + ".*" if "." in name else name
            families[family] = families.get(family, 0) + 1
        return ", ".join(f"{f} ({n})" if n > 1 else f for f, n in sorted(families.items()))
    try:
        return channel.get_topic_name()
    except NotImplementedError:
        return None


def install(fetch_max_wait_ms: int) -> None:
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = fetch_max_wait_ms
    drivers.TRANSPORTS.aliases["kafka"] = f"{__name__}:Transport"
    drivers.TRANSPORTS.aliases["aiokafka"] = f"{__name__}:Transport"
    cli_agents.agents._maybe_topic = _agent_topic  # type: ignore[method-assign]


def set_broker_url(app: faust.App, url: str) -> None:
    """Point an app whose transports exist already (its topics made them) at `url`; call
    before the worker's services start. Faust warns that parts of the program may still use
    the old value: the transports do, and are updated here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlreadyConfiguredWarning)
        app.conf.broker = url
    app.transport.url = app.conf.broker_consumer
    app.producer_transport.url = app.conf.broker_producer


class RawKeyTable(faust.Table):
    """A table whose `str` keys are serialized raw (see agents/tables.py)."""

    # Its changelog records written in a run wait for the lane's earlier ones to be
    # delivered (`ChangelogLanes`), as deletions of every table do.
    barrier = False

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is str else super()._serializer_from_type(typ)

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        """Faust's; while a run is folded, its record goes to the lane of its partition
        number (`ChangelogLanes`) and its delivery future to the run's list: the run is acked
        once they are all delivered (`Consumer._fold_run`). The records of a table with
        `barrier` set, and deletions, wait in the lane for the earlier ones' delivery:
        sending each changelog partition's records on their own let one table's changelog
        run ahead of another's, and a kill -9 then recovered a `features` entry newer than
        its `candles` history (57 of 78 closed candles after the restart in
        tests/e2e/test_features_e2e.py). A market's entries of every table are in
        partitions of the same number, hence in one lane."""
        if _changelog_sent is None or _lanes is None:
            return super().send_changelog(*args, **kwargs)
        future = self._changelog_message(*args, **kwargs)
        _lanes.put(future, self.barrier or future.message.value is None)
        _changelog_sent.append(future)
        return future

    def _changelog_message(self, partition: int | None, key: Any, value: Any,
                           key_serializer: Any = None, value_serializer: Any = None) -> Any:
        """Faust's `send_changelog` up to the producer buffer: the FutureMessage. The value
        is serialized once for the changelog and the store (`_encode_once`)."""
        if value_serializer is None and value is not None:
            value = self._encode_once(value)
            value_serializer = "raw"
        return self.changelog_topic.as_future_message(
            key=key, value=value, partition=partition,
            key_serializer=self.key_serializer if key_serializer is None else key_serializer,
            value_serializer=(self.value_serializer if value_serializer is None
                              else value_serializer),
            callback=self._on_changelog_sent, eager_partitioning=True)

    def _encode_once(self, value: Any) -> bytes:
        """`value` serialized as the store serializes it, kept for the store's write that
        follows (Faust's `Table.__setitem__` sends the changelog record, then writes the
        store, each serializing the value: a run's bucket records are large, and the second
        serialization was 5% of the fold task's time in bench/features.py)."""
        store = self.data
        encode = store._encode_value
        if type(encode) is not _EncodeOnce:
            encode = store._encode_value = _EncodeOnce(encode)
        return encode.keep(value)


class _EncodeOnce:
    """A store's `_encode_value` that returns the bytes of the value just kept (`keep`)
    instead of serializing it again."""

    __slots__ = ("plain", "value", "encoded")

    def __init__(self, plain: Callable[[Any], Any]) -> None:
        self.plain = plain
        self.value: Any = None
        self.encoded: Any = None

    def keep(self, value: Any) -> Any:
        self.value, self.encoded = value, self.plain(value)
        return self.encoded

    def __call__(self, value: Any) -> Any:
        kept, encoded = self.value, self.encoded
        self.value = self.encoded = None  # used once: a later write serializes anew
        if value is kept and value is not None:
            return encoded
        return self.plain(value)


@contextmanager
def in_partition_of(event: EventT) -> Iterator[None]:
    """Make `event` Faust's current event: table writes inside go to its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def consumer_lag(app: Any) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) of each partition assigned to this worker's consumer: the
    high-water mark minus the committed offset, where the consumer knows both (Faust keeps
    the committed offsets in a private map of the pinned version)."""
    consumer = getattr(app, "_consumer", None)  # not created yet: nothing assigned
    if consumer is None:
        return []
    committed = consumer._committed_offset
    lags = []
    for tp in sorted(consumer.assignment()):
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not fetched yet (aiokafka asserts the assignment)
            continue
        offset = committed.get(tp)
        if highwater is not None and offset is not None:
            lags.append((tp.topic, tp.partition, max(highwater - offset, 0)))
    return lags


def producer_buffered_bytes(producer: Any) -> int:
    """Bytes an aiokafka producer holds that Kafka has not acknowledged: batches still being
    filled and batches sent and awaiting their response (aiokafka's accumulator, private)."""
    if producer is None:
        return 0
    accumulator = producer._message_accumulator
    batches = [b for queue in list(accumulator._batches.values()) for b in list(queue)]
    batches += list(accumulator._pending_batches)
    return sum(batch._builder.size() for batch in batches)
