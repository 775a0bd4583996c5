"""The gap and re-seek decisions of the consumer loop (agents/faust_internals.py), its
changelog lanes, and its version guard; no broker needed."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import faust
import pytest

from agents import faust_internals
from agents.faust_internals import (DELIVER, GAP, SKIP, ChangelogLanes, Gaps, dropped,
                                    next_step)


def test_pinned_version_is_the_installed_one() -> None:
    assert faust.__version__ == faust_internals.PINNED_FAUST == "0.15.3"
    faust_internals.check_version()


def test_another_faust_version_is_refused() -> None:
    with pytest.raises(RuntimeError) as refused:
        faust_internals.check_version("0.15.4")
    message = str(refused.value)
    assert "0.15.3" in message and "0.15.4" in message
    assert "_drain_messages" in message  # says what to re-check


def test_docstring_names_the_upstream_issues() -> None:
    doc = faust_internals.__doc__ or ""
    assert "faust-streaming #216" in doc and "#606" in doc


def test_next_step() -> None:
    assert next_step(None, 0) == SKIP  # before the seek to the committed offset
    assert next_step(None, 57) == SKIP
    assert next_step(10, 10) == DELIVER
    assert next_step(10, 9) == SKIP  # delivered already (re-fetched after a seek back)
    assert next_step(10, 0) == SKIP
    assert next_step(10, 11) == GAP  # offset 10 was never delivered
    assert next_step(0, 5498) == GAP


def test_a_jump_is_read_again_once_then_counted() -> None:
    gaps = Gaps()
    tp = ("trade-data.binance", 0)
    assert not gaps.is_real(tp, 9002, 14498)  # first time: seek back and read again
    assert gaps.is_real(tp, 9002, 14498)  # same jump again: the broker has no records there
    assert not gaps.is_real(tp, 9002, 14498)  # forgotten once counted: a new jump re-reads


def test_a_different_jump_is_read_again() -> None:
    gaps = Gaps()
    tp, other = ("t", 0), ("t", 1)
    assert not gaps.is_real(tp, 5, 9)
    assert not gaps.is_real(tp, 5, 8)  # the re-read got further: not the same jump
    assert not gaps.is_real(other, 5, 8)  # per partition
    assert gaps.is_real(tp, 5, 8)
    assert not gaps.is_real(other, 5, 9)


def test_forget_on_revocation() -> None:
    gaps = Gaps()
    tp = ("t", 0)
    assert not gaps.is_real(tp, 1, 3)
    gaps.forget(tp)
    gaps.forget(tp)  # twice is fine
    assert not gaps.is_real(tp, 1, 3)


def test_dropped_records_are_found_from_fetch_positions() -> None:
    a, b, c, d = ("t", 0), ("t", 1), ("t", 2), ("t", 3)
    next_offsets = {a: 10, b: 20, c: 30, d: 40}
    positions = {a: 10, b: 25, c: None, d: 39}  # c: no position yet; d: behind (fetching)
    assert dropped(next_offsets, positions) == [(b, 20, 25)]
    assert dropped({}, positions) == []
    assert dropped({a: 0}, {}) == []  # not assigned any more


def test_contiguous_end_cuts_a_run_at_its_first_gap() -> None:
    from agents.faust_internals import contiguous_end

    assert contiguous_end([5, 6, 7, 8], 0) == 4
    assert contiguous_end([5, 6, 9, 10], 0) == 2
    assert contiguous_end([5, 6, 9, 10], 2) == 4
    assert contiguous_end([5, 7], 1) == 2
    assert contiguous_end([5], 0) == 1


def test_a_run_is_acked_from_the_committed_offset_without_duplicates() -> None:
    from collections import defaultdict
    from types import SimpleNamespace

    consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None),
                               _acked_index=defaultdict(set), _acked=defaultdict(list),
                               _n_acked=0, _waiting_for_ack=None)
    ack_run = faust_internals.Consumer._ack_run
    consumer._committed_offset["tp"] = 12
    ack_run(consumer, "tp", 10, 14)  # 10 and 11 are committed already
    assert consumer._acked["tp"] == [12, 13, 14] and consumer._n_acked == 3
    ack_run(consumer, "tp", 13, 16)  # read again after a seek: 13, 14 acked once
    assert consumer._acked["tp"] == [12, 13, 14, 15, 16] and consumer._n_acked == 5
    assert consumer._acked_index["tp"] == {12, 13, 14, 15, 16}
    ack_run(consumer, "tp", 5, 9)  # wholly before the committed offset: nothing
    assert consumer._n_acked == 5


class _Channel:
    """Stands for a changelog topic: publishing hands a record to the producer at once and
    resolves its future when "delivered"; the records named in `held` are delivered only
    once `release` is set."""

    def __init__(self, held: set[str]) -> None:
        self.published: list[str] = []
        self.held = held
        self.release = asyncio.Event()

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        name = fut.message.key
        if name.startswith("broken"):
            raise RuntimeError("broker gone")
        self.published.append(name)
        if name in self.held:
            async def deliver_later() -> None:
                await self.release.wait()
                fut.set_result(name)
            asyncio.ensure_future(deliver_later())
        else:
            fut.set_result(name)


def _record(channel: _Channel, partition: int, key: str) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.message = SimpleNamespace(channel=channel, partition=partition, key=key)  # type: ignore[attr-defined]
    return fut


def test_changelog_lanes_order_barriers_and_failures() -> None:
    async def scenario() -> None:
        channel = _Channel(held={"p0-bucket"})
        lanes = ChangelogLanes(logging.getLogger("test"))
        bucket, candle, entry, state = (_record(channel, 0, name) for name in (
            "p0-bucket", "p0-candle", "p0-entry", "p0-state"))
        other, broken, after = (_record(channel, 1, name) for name in (
            "p1-first", "broken", "p1-after"))
        lanes.put(bucket)
        lanes.put(candle)
        lanes.put(entry, barrier=True)
        lanes.put(state)
        for fut in (other, broken, after):
            lanes.put(fut)
        await asyncio.wait_for(candle, timeout=5)
        await asyncio.sleep(0.05)
        # Partition 0: the entry waits for the bucket's delivery, and so does what follows
        # it; partition 1 went on meanwhile, and after its failed record fails the rest.
        assert channel.published == ["p0-bucket", "p0-candle", "p1-first"]
        assert not entry.done() and not state.done()
        assert isinstance(broken.exception(), RuntimeError)
        assert isinstance(after.exception(), RuntimeError)
        channel.release.set()
        await asyncio.wait_for(asyncio.gather(entry, state), timeout=5)
        assert channel.published == ["p0-bucket", "p0-candle", "p1-first", "p0-entry",
                                     "p0-state"]
        lanes.stop()

    asyncio.run(scenario())


def test_one_run_says_what_faust_consecutive_numbers_says() -> None:
    """`Consumer._new_offset` takes the acked offsets whole when `one_run` says so, where
    Faust takes the first run `consecutive_numbers` yields: the two must agree."""
    import random

    from faust.utils.functional import consecutive_numbers

    from agents.faust_internals import one_run

    rng = random.Random(5)
    cases = [[7], [1, 2, 3], [1, 3], [1, 1, 2], [1, 1, 3], [2, 3, 3, 4], [0, 2, 2, 3]]
    for _ in range(3000):
        start = rng.randrange(100)
        offsets = list(range(start, start + rng.randint(1, 30)))
        if rng.random() < 0.5:  # a gap, a duplicate, or both
            del offsets[rng.randrange(len(offsets))]
        if rng.random() < 0.3 and offsets:
            offsets.append(rng.choice(offsets))
        if offsets:
            cases.append(offsets)
    for offsets in cases:
        offsets.sort()
        assert one_run(offsets) == (next(consecutive_numbers(offsets)) == offsets), offsets


# --- the run topics' records read from aiokafka's fetch buffer (take_run_records) ---

def _batch(base: int, count: int, transactional: bool = False, control: bool = False
           ) -> bytes:
    """One v2 record batch at offset `base`, as a broker returns it."""
    import struct

    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.util import calc_crc32c

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0,
                                        is_transactional=int(transactional),
                                        producer_id=7 if transactional else -1,
                                        producer_epoch=0 if transactional else -1,
                                        base_sequence=-1, batch_size=1 << 20)
    for i in range(count):
        builder.append(i, timestamp=1_700_000_000_000 + base + i,
                       key=f"binance:S{(base + i) % 3}-USDT".encode(),
                       value=b'{"n": %d}' % (base + i),
                       headers=[("h", b"1")] if i % 2 else [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    if control:  # the control flag (attributes bit 5), its CRC made right again
        attributes = struct.unpack_from(">h", data, 21)[0] | 0x20
        struct.pack_into(">h", data, 21, attributes)
        struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


def _take(buffer: bytes, fetch_offset: int, lean: bool) -> tuple[list[Any], int]:
    """(records, position after) of one fetch result read the lean way or aiokafka's."""
    from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    async def take() -> tuple[list[Any], int]:
        tp = TopicPartition("trade-data.binance", 2)
        subscriptions = SubscriptionState()
        subscriptions.assign_from_user({tp})
        assignment = subscriptions.subscription.assignment
        assignment.state_value(tp).seek(fetch_offset)
        result = FetchResult(tp, assignment=assignment, backoff=0,
                             partition_records=PartitionRecords(
                                 tp, MemoryRecords(buffer), [], fetch_offset, None, None,
                                 True, 0))
        records = (faust_internals.take_run_records(result) if lean else result.getall())
        assert not result.has_more()
        return records, assignment.state_value(tp).position

    return asyncio.run(take())


def _fields(tp: Any, record: Any) -> tuple[Any, ...]:
    full = faust_internals.full_record(tp, record)
    return (full.topic, full.partition, full.offset, full.timestamp, full.timestamp_type,
            full.key, full.value, full.checksum, full.serialized_key_size,
            full.serialized_value_size, list(full.headers))


def test_run_records_are_aiokafkas_records_from_the_fetch_offset() -> None:
    """A fetch from the middle of a batch, a transactional batch, a control batch: the
    same records, each as `full_record` makes it for Faust, and the same position as
    aiokafka's own `getall`."""
    from aiokafka.structs import TopicPartition

    tp = TopicPartition("trade-data.binance", 2)
    batches = [(10, _batch(0, 10)), (20, _batch(10, 10, transactional=True)),
               (21, _batch(20, 1, transactional=True, control=True)), (25, _batch(21, 4))]
    for fetch_offset in (0, 5, 10, 19, 21, 24):
        # as a broker answers: from the batch holding the fetch offset
        buffer = b"".join(batch for end, batch in batches if end > fetch_offset)
        lean, lean_position = _take(buffer, fetch_offset, lean=True)
        stock, stock_position = _take(buffer, fetch_offset, lean=False)
        assert [_fields(tp, r) for r in lean] == [_fields(tp, r) for r in stock]
        assert [r.offset for r in lean] == [o for o in range(fetch_offset, 25) if o != 20]
        assert lean_position == stock_position == 25
        assert type(lean[0]).__name__ != "ConsumerRecord"  # the batch's own records


def test_a_corrupt_run_batch_is_refused_as_aiokafka_refuses_it() -> None:
    import aiokafka.errors

    damaged = bytearray(_batch(0, 5))
    damaged[-3] ^= 0xFF  # inside the last record's value
    for lean in (True, False):
        with pytest.raises(aiokafka.errors.CorruptRecordException):
            _take(bytes(damaged), 0, lean)


def test_the_lean_fetch_is_on_only_for_the_pinned_aiokafka() -> None:
    import aiokafka

    assert faust_internals.PINNED_AIOKAFKA == aiokafka.__version__
    assert faust_internals._LEAN_FETCH


def test_new_offset_is_fausts_offset_to_commit() -> None:
    """`Consumer._new_offset` against Faust's own on the same acked offsets: every run,
    gap, duplicate and committed offset gives the same offset to commit and leaves the same
    offsets acked."""
    import random
    from collections import defaultdict

    from faust.transport.consumer import Consumer as FaustConsumer
    from faust.transport.drivers.aiokafka import Consumer as FaustAiokafkaConsumer
    from intervaltree import IntervalTree

    def consumer(cls: type, committed: int | None, acked: list[int],
                 gap: tuple[int, int] | None) -> Any:
        made = object.__new__(cls)
        made._acked, made._acked_index = defaultdict(list), defaultdict(set)
        made._gap, made._committed_offset = defaultdict(IntervalTree), defaultdict(lambda: None)
        made._acked["tp"] = list(acked)
        made._acked_index["tp"] = set(acked)
        made._committed_offset["tp"] = committed
        if gap is not None:
            made._gap["tp"].addi(*gap)
        return made

    rng = random.Random(3)
    cases = [(100, list(range(101, 201)), None), (None, list(range(0, 10)), None),
             (100, list(range(101, 151)) + list(range(160, 201)), None),
             (100, list(range(105, 200)), None), (100, [101, 101, 102, 103], None),
             (100, list(range(101, 121)) + list(range(130, 140)), (121, 130)), (100, [], None),
             (0, list(range(1, 50)), None)]
    for _ in range(40):
        start = rng.randrange(0, 50)
        acked = list(range(start + 1, start + rng.randrange(1, 40)))
        if rng.random() < 0.5 and len(acked) > 3:
            del acked[rng.randrange(1, len(acked) - 1)]
        rng.shuffle(acked)
        cases.append((start or None, acked, None))
    for committed, acked, gap in cases:
        ours = consumer(faust_internals.Consumer, committed, acked, gap)
        faust_s = consumer(FaustAiokafkaConsumer, committed, acked, gap)
        assert ours._new_offset("tp") == FaustConsumer._new_offset(faust_s, "tp"), acked
        assert sorted(ours._acked["tp"]) == sorted(faust_s._acked["tp"])
        assert ours._acked_index["tp"] == faust_s._acked_index["tp"]
