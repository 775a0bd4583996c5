"""The ingest service: runs the ingest shards this worker owns and their Kafka producer.

With `KCS_INGEST=auto` (the default) the consumer group decides which worker runs which shard
(at least one per exchange, more where the venue caps a connection): see app/shards.py and
the README's "Ingest ownership". Each shard's
records go through its outbox (exchanges/outbox.py), which holds them while Kafka is away.
Started with the Faust worker. Connectors produce through their own aiokafka producer rather
than Faust's: ingest wants large batches and a short linger, while Faust's producer (tables'
changelogs) may be tuned for a broker's quirks (see `agents/application.py`). Records are keyed
`exchange:BASE-QUOTE` and partitioned by Kafka's default partitioner, exactly as the tables'
keys are, so the worker that owns a market's table partition also owns its source partition.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from typing import Any

import aiokafka
import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner, murmur2
from mode import Service

from agents import topics
from app.commands import Command, CommandError, parse_command
from app.shards import (Directory, directory_key, latest_records, learn_last_trades, placed,
                        shard_exchange, shard_name, shard_partition, split, subscriptions_key)
from config.settings import Settings
from app.subscriptions import load_subscriptions
from exchanges import CONNECTORS, EXCHANGES, REGIONS
from exchanges.base import Stream, Subscriptions
from exchanges.listing import Listings, ListingUnavailable
from exchanges.metrics import metrics
from exchanges.outbox import BOOK, KIND_NAMES, OTHER, TICKER, TRADE, Budget, Outbox, fold_trade
from exchanges.publisher import Publisher
from exchanges.session import Session
from replay.recorder import Recorder
from replay.recordings import load_recordings
from replay.server import ReplayServer
from replay.subscriptions import from_recordings
from records import DLQ_TOPIC, ERROR_TOPIC, book_topic, ticker_topic, trade_topic
from records.codec import JSON, Codec
from records.control import BackpressureEvent, ConnectSuccess, ErrorEvent, WsMetrics

__all__ = ["IngestService", "bootstrap_servers", "new_producer", "market_data_topics"]

log = logging.getLogger(__name__)

# How long a produce request may wait for its answer, and a batch for delivery, before the
# producer gives up on it. Long on purpose: a broker that is stopped or slow answers a
# request it already holds once it is back, while a request given up and sent again would
# be written twice (no idempotent producer on every broker, none on Tansu). A batch the
# producer does give up on waits in the ingest outbox and is sent again (exchanges/outbox.py).
REQUEST_TIMEOUT_MS = 300_000


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
COMMAND_HEADER = "command_id"  # header of a shard's new set: the command's id (JSON)
CHECKPOINT_INTERVAL = 2.0  # seconds between two checkpoints of a shard that published
REVOKE_DRAIN = 2.0  # at most this long (s) to drain a revoked shard: the rebalance waits
STOP_DRAIN = 10.0  # at most this long (s) to drain at shutdown


# Gen-0 threshold: net new tracked objects (allocated minus freed) between two collections.
# What keeps the young generation growing on the ingest path is not garbage but records in
# flight: each record the producer holds until its acknowledgement keeps an aiokafka future
# and its metadata, each record queued in an outbox its entry. Measured with the collector
# off (bench/ingest.py, 100,000 Binance trades): at most 41,000 young tracked objects with the
# producer alone (either encoding), 16,000 through a shard's outbox. Every collection those
# trigger walks them all and frees nothing (1 object in 50,000), at 20-50 ms per 50,000 on the
# shared 2-core machine. 100,000 leaves room for the producer's in-flight records and a few
# shards sending at once; a burst beyond it is still collected, in fewer, longer pauses.
GEN0_THRESHOLD = 100_000


def tune_gc() -> None:
    """Fewer, shorter collector pauses, in every worker.

    Every frame, and every record the agents fold, allocates a few short-lived objects; with
    the default gen-0 threshold (700) the collector runs every few hundred of them. Its
    pauses were the p99 of frame-to-ack latency (bench/ingest.py: p99 4.9 -> 2.5 ms at 10,000
    msg/s) and a sixth of the feature agents' time (bench/features.py: 19,400 -> 23,300-24,500
    trades/s). Objects alive at start-up (modules, the app, the schemas) are frozen out of
    every later scan, after one collection so that start-up's garbage is not frozen with them.
    See GEN0_THRESHOLD for the young generation's size.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, 50, 100)


def market_data_topics() -> list[str]:
    """Every topic ingest produces to, for every exchange (created before Faust starts)."""
    names = [DLQ_TOPIC, ERROR_TOPIC]
    for exchange in EXCHANGES:
        names += [trade_topic(exchange), book_topic(exchange), ticker_topic(exchange)]
    return names


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://h1:9092;h2:9092` -> `h1:9092,h2:9092`."""
    hosts = []
    for part in broker_url.split(";"):
        part = part.strip()
        hosts.append(part.split("://", 1)[1] if "://" in part else part)
    return ",".join(h.rstrip("/") for h in hosts if h)


class CachedPartitioner(DefaultPartitioner):
    """Kafka's default partitioner (murmur2 of the key), computed once per key.

    Market-data keys are few (one per market) and aiokafka's murmur2 is pure Python, so
    hashing every message cost more than parsing it. Same result as the default, so topics
    stay partitioned exactly as any Kafka client (and Faust's table routing) expects.
    """

    def __init__(self) -> None:
        self.cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],  # type: ignore[override]
                 available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner.__call__(key, all_partitions, available)
        count = len(all_partitions)
        partition = self.cache.get((key, count))
        if partition is None:
            partition = self.cache[(key, count)] = all_partitions[
                (murmur2(key) & 0x7FFFFFFF) % count]
        return partition


def new_producer(settings: Settings, broker_url: str,
                 client: str = "ingest") -> aiokafka.AIOKafkaProducer:
    return aiokafka.AIOKafkaProducer(
        partitioner=CachedPartitioner(),
        bootstrap_servers=bootstrap_servers(broker_url),
        client_id=f"{settings.app_id}-{client}",
        acks=settings.producer_acks if settings.producer_acks == "all" else int(
            settings.producer_acks),
        linger_ms=settings.producer_linger_ms,
        max_batch_size=settings.producer_batch_bytes,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )


class Shard:
    """One unit of ingest: an exchange's connector, its session and its outbox."""

    def __init__(self, name: str, exchange: str, partition: int,
                 subscriptions: Subscriptions) -> None:
        self.name = name
        self.exchange = exchange
        self.partition = partition
        self.subscriptions = subscriptions  # the seed; Kafka's set wins once read
        self.state = "stopped"  # starting, running, paused (revoked: holding), stopped
        self.session: Session | None = None
        self.outbox: Outbox | None = None
        self.starting: asyncio.Task[None] | None = None
        self.checkpointed = -1  # outbox.acked at the last checkpoint written
        self.started_at: float | None = None
        self.publisher: Publisher | None = None
        self.commands: list[Any] = []  # ids of commands applied, until the next connect
        self.subs_offset = -1  # control-topic offset of the subscription set applied

    def describe(self) -> dict[str, Any]:
        session, outbox = self.session, self.outbox
        return {"partition": self.partition, "state": self.state,
                "symbols": len(self.subscriptions),
                "subscriptions": {s: sorted(c) for s, c in sorted(self.subscriptions.items())},
                "streams": len(session.connected) if session else 0,
                "connected": sum(session.connected.values()) if session else 0,
                # connections opened: a change applied on the open socket leaves it alone
                "connects": sum(s.connects for s in session.streams) if session else 0,
                "frames": session.frames if session else 0,
                "published": outbox.acked if outbox else 0,
                "skipped_published_before": self.publisher.skipped if self.publisher else 0,
                "buffered": len(outbox.queue) if outbox else 0,
                "started_at": self.started_at}


class IngestService(Service):
    """Runs the shards this worker owns: with `KCS_INGEST=auto` the ones whose control
    partition the group assigns it (started on assignment, paused at revocation, stopped when
    assigned elsewhere), else the pinned exchanges from the start."""

    def __init__(self, app: faust.App, settings: Settings, broker_url: str,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        # KCS_BROKER, or the embedded broker's URL once a worker has started it (app/main.py)
        self.broker_url = broker_url
        self.control_topic = topics.INGEST_SHARDS
        # its partition count: KCS_INGEST_PARTITIONS, or the existing topic's (app/main.py)
        self.control_partitions = settings.ingest_partitions
        self.tasks: set[asyncio.Task[None]] = set()
        self.shards: dict[str, Shard] = {}
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self.replay_server: ReplayServer | None = None
        self.codec: Codec = JSON  # set by the app after the schema registry preflight
        self.replay_base = ""
        self.budget = Budget(settings.ingest_buffer_bytes)
        self.assigned: set[int] = set()  # control partitions the group gave this worker
        self.ready = False
        self.lock = asyncio.Lock()
        self.control: deque[tuple[str, bytes, bytes, int | None]] = deque(maxlen=100_000)
        self.listings = Listings()  # the venues' market lists (REST base set in on_start)

    @property
    def bootstrap(self) -> str:
        return bootstrap_servers(self.broker_url)

    @property
    def sessions(self) -> list[Session]:
        return [s.session for s in self.shards.values() if s.session is not None]

    async def on_start(self) -> None:
        settings = self.settings
        recordings = None
        if settings.replay_server:
            # a replay server already running (`python -m replay serve`)
            self.replay_base = settings.replay.rstrip("/")
            log.info("replaying from the replay server at %s", self.replay_base)
        elif settings.replay:
            recordings = load_recordings(settings.replay)
            self.replay_server = ReplayServer(recordings, speed=settings.replay_speed)
            await self.replay_server.start()
            self.replay_base = self.replay_server.base_url
            log.info("replaying %s (%s) at speed %s from %s", settings.replay,
                     ", ".join(sorted(recordings)), settings.replay_speed or "max",
                     self.replay_base)
        self.listings.replay_base = self.replay_base
        if recordings is not None and not settings.subscriptions:
            subscriptions = from_recordings(recordings)
        else:
            subscriptions = load_subscriptions(settings)
        if settings.ingest_auto:  # every exchange has a shard: ws.command may subscribe any
            subscriptions = {name: subscriptions.get(name, {}) for name in
                             sorted(set(subscriptions) | set(CONNECTORS))}
        chosen = {name: subs for name, subs in subscriptions.items() if settings.ingests(name)}
        for name in sorted(set(chosen) - set(CONNECTORS)):
            log.warning("no connector for exchange %r yet: its subscriptions are ignored", name)
            del chosen[name]
        if not chosen:
            log.info("this worker ingests no exchange (KCS_INGEST=%s)", settings.ingest)
            return
        for name, subs in sorted(chosen.items()):
            for shard, markets in split(name, subs, settings.shard_markets_for(name)).items():
                self._add_shard(shard, markets)
        await self._discover([shard_partition(name, self.control_partitions)
                              for name in sorted(chosen)])
        self.producer = await self._start_producer()
        self.add_future(self._send_control())
        self.add_future(self._checkpoints())
        self.add_future(self._metrics())
        self.ready = True
        if settings.ingest_auto:
            log.warning("ingest shards owned through the group: %s",
                        ", ".join(f"{s.name}->{s.partition}" for s in self.shards.values()))
            await self._apply_assignment()
        else:
            for shard in self.shards.values():
                await self._run_shard(shard, None)

    # -- shards ------------------------------------------------------------------------------

    def _add_shard(self, name: str, subscriptions: Subscriptions) -> Shard:
        shard = self.shards.get(name)
        if shard is None:
            exchange, _ = shard_exchange(name)
            shard = self.shards[name] = Shard(
                name, exchange, shard_partition(name, self.control_partitions), subscriptions)
        return shard

    def _may_run(self, name: str) -> bool:
        exchange, _ = shard_exchange(name)
        return exchange in CONNECTORS and self.settings.ingests(exchange)

    async def _discover(self, partitions: list[int]) -> None:
        """Shards that exist in Kafka only (commands created them, or split the exchange
        otherwise than this worker's seed): from the directories and subscription sets on
        these control partitions. The directory's sets win over the seed."""
        try:
            latest = await latest_records(self.bootstrap, self.control_topic, sorted(set(
                partitions)))
        except Exception as exc:
            log.error("ingest shards: cannot read the control topic (%r); the seed is used",
                      exc)
            return
        for key, (value, partition, _) in sorted(latest.items()):
            if key.endswith(":shards") and self._may_run(key[:-7]):
                for name, subs in value.items():
                    shard = self._add_shard(name, {})
                    if shard.state == "stopped":
                        shard.subscriptions = {m: set(c) for m, c in subs.items()}
            elif key.endswith(":subscriptions") and self._may_run(key[:-14]):
                name = key[:-14]
                if shard_partition(name, self.control_partitions) == partition:
                    self._add_shard(name, {m: set(c) for m, c in value.items()})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- ownership ---------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Stop publishing the revoked shards: what they parsed is drained to Kafka first,
        what they read from now on is held until the group says who owns them."""
        if not self.settings.ingest_auto:
            return
        lost = {tp.partition for tp in revoked if tp.topic == self.control_topic}
        self.assigned -= lost
        async with self.lock:
            shards = [s for s in self.shards.values() if s.partition in lost]
            for shard in shards:
                if shard.state == "starting" and shard.starting is not None:
                    shard.starting.cancel()
                    await asyncio.gather(shard.starting, return_exceptions=True)
                    await self._stop_shard(shard)
            running = [s for s in shards if s.state == "running" and s.outbox is not None]
            drained = await asyncio.gather(*(s.outbox.drain(REVOKE_DRAIN)  # type: ignore
                                             for s in running))
            for shard, done in zip(running, drained, strict=True):
                shard.outbox.pause()  # type: ignore[union-attr]
                shard.state = "paused"
                log.warning("ingest shard %s revoked: paused (%s)", shard.name,
                            "drained" if done else "not drained: Kafka is slow")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if not self.settings.ingest_auto:
            return
        before = self.assigned
        self.assigned = {tp.partition for tp in assigned if tp.topic == self.control_topic}
        await self._apply_assignment()
        if self.ready and self.assigned - before:
            self._spawn(self._discover_and_apply(sorted(self.assigned - before)))

    async def _discover_and_apply(self, partitions: list[int]) -> None:
        await self._discover(partitions)
        await self._apply_assignment()

    async def _apply_assignment(self) -> None:
        if not self.ready:
            return  # on_start applies it
        async with self.lock:
            for shard in self.shards.values():
                owned = shard.partition in self.assigned
                if owned and shard.state == "paused":
                    assert shard.outbox is not None
                    shard.outbox.resume()
                    shard.state = "running"
                    log.warning("ingest shard %s assigned again: resumed", shard.name)
                    self._spawn(self._refresh(shard))  # a set written while it was paused
                elif owned and shard.state == "stopped":
                    shard.state = "starting"
                    shard.starting = asyncio.get_running_loop().create_task(
                        self._start_owned(shard))
                elif not owned and shard.state in ("running", "paused"):
                    await self._stop_shard(shard)
                    log.warning("ingest shard %s is owned by another worker now", shard.name)

    async def _refresh(self, shard: Shard) -> None:
        """Apply the shard's latest set in Kafka if it is newer than the one it runs."""
        try:
            latest = await latest_records(self.bootstrap, self.control_topic, [shard.partition])
        except Exception as exc:
            log.error("ingest shard %s: cannot read its set (%r)", shard.name, exc)
            return
        subs = latest.get(subscriptions_key(shard.name))
        if subs is not None:
            await self._apply_subscriptions(shard, {m: set(c) for m, c in subs[0].items()},
                                            subs[2], [])

    async def _start_owned(self, shard: Shard) -> None:
        """Learn from Kafka where the shard's previous owner stopped, then run it."""
        delay = 1.0
        while True:
            try:
                keys = (shard.name, subscriptions_key(shard.name))
                latest = await latest_records(self.bootstrap, self.control_topic,
                                              [shard.partition])
                if not any(k in latest for k in keys):
                    # nothing on its partition: new, or the topic's partition count changed
                    latest = await latest_records(self.bootstrap, self.control_topic,
                                                  list(range(self.control_partitions)))
                subs = latest.get(subscriptions_key(shard.name))
                if subs is not None and subs[2] > shard.subs_offset:
                    shard.subscriptions = {s: set(c) for s, c in subs[0].items()}
                    shard.subs_offset = subs[2]
                checkpoint = await learn_last_trades(
                    self.bootstrap, trade_topic(shard.exchange), self.settings.partitions,
                    latest[shard.name][0] if shard.name in latest else None,
                    set(shard.subscriptions))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("ingest shard %s: cannot read its state from Kafka (%r); retrying "
                          "in %.0f s", shard.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, 30.0)
        async with self.lock:
            if shard.state != "starting":
                return
            await self._run_shard(shard, checkpoint)
            shard.starting = None

    async def _run_shard(self, shard: Shard, checkpoint: dict[str, Any] | None) -> None:
        assert self.producer is not None
        publisher = Publisher(shard.exchange, self.producer, codec=self.codec)
        kinds = {trade_topic(shard.exchange): TRADE, book_topic(shard.exchange): BOOK,
                 ticker_topic(shard.exchange): TICKER}
        outbox = Outbox(shard.exchange, self.producer, self.budget, kinds,
                        on_book_dropped=lambda symbol: self._resync(shard, symbol))
        publisher.outbox = outbox
        outbox.sampler = publisher.sampler  # the latency histograms, observed at the ack
        resume_points: dict[str, tuple[float, str, frozenset[str]]] = {}
        if checkpoint is not None:
            outbox.offsets = {int(p): o for p, o in checkpoint["offsets"].items()}
            outbox.last_trades = checkpoint["last"]
            for symbol, (trade_id, ts, ids) in checkpoint["last"].items():
                publisher.resume_after(symbol, trade_id, ts, ids)
                resume_points[symbol] = (float(ts), str(trade_id), frozenset(map(str, ids)))
        if self.replay_server is not None:
            # Recordings are replayed from their start: what the previous owner published
            # comes again (and is skipped), nothing was missed, and a history request would
            # find no recorded answer (a false `trade_gap`).
            resume_points = {}
            # In Kafka before anything is published: a successor must find where to start.
            await self._write_now(self.control_topic, shard.name.encode(),
                                  orjson.dumps(outbox.checkpoint()), shard.partition)
            shard.checkpointed = outbox.acked
        shard.outbox, shard.publisher = outbox, publisher
        outbox.start()
        await self._start_session(shard, resume_points)
        shard.state = "running"
        shard.started_at = time.time()
        log.info("ingesting %s: %d symbols%s", shard.name, len(shard.subscriptions),
                 f" (resuming {len(checkpoint['last'])} markets after their last published "
                 "trade)" if checkpoint else "",
                 extra={"exchange": shard.exchange, "region": REGIONS.get(shard.exchange, ""),
                        "phase": "start"})

    async def _start_session(self, shard: Shard, resume_points: dict[
            str, tuple[float, str, frozenset[str]]] | None = None) -> None:
        """A connector and session for the shard's subscription set (none for an empty set),
        publishing through the shard's publisher and outbox. `resume_points`: the last trade
        a previous owner published per market, where the first connection backfills from
        (a handover or failover: the trades sent while nobody was connected)."""
        assert shard.publisher is not None
        if not shard.subscriptions:
            return
        connector = CONNECTORS[shard.exchange](shard.subscriptions, shard.publisher,
                                               self.settings)
        connector.resume_points = dict(resume_points or {})
        recorder = (Recorder(self.settings.record, shard.exchange) if self.settings.record
                    else None)
        session = Session(connector, self.settings, self.replay_base, recorder)
        session.on_connect = lambda stream: self._connected(shard, stream)
        shard.session = session
        await session.start()

    def _resync(self, shard: Shard, symbol: str) -> None:
        if shard.session is not None:
            shard.session.connector.resync(
                symbol, "book records dropped: the ingest buffer was full")

    async def _stop_shard(self, shard: Shard) -> None:
        if shard.session is not None:
            await shard.session.stop()
        if shard.outbox is not None:
            await shard.outbox.stop()
        shard.session = shard.outbox = shard.publisher = None
        shard.state = "stopped"
        shard.started_at = None

    # -- ws.command ---------------------------------------------------------------------------

    async def apply_command(self, key: str | None, value: bytes) -> None:
        """Apply one `ws.command` record, or answer on `ws.error` why not (nothing changes)."""
        try:
            command = parse_command(value, sorted(CONNECTORS))
            shard = self.shards.get(command.exchange)
            if shard is None:
                raise CommandError(command.id, f"exchange {command.exchange} is not ingested "
                                               f"by this app (KCS_INGEST={self.settings.ingest})")
            if command.op == "subscribe":  # the markets none of its shards has yet
                subscribed = {market for other in self.shards.values()
                              if other.exchange == command.exchange
                              for market in other.subscriptions}
                await self._check_listed(command, [s for s in command.symbols
                                                   if s not in subscribed])
        except CommandError as exc:
            log.warning("ws.command refused: %s", exc.reason)
            event = ErrorEvent(key or "", None, "command", exc.reason, exc.command_id,
                               time.time(), command=value.decode("utf-8", "replace"))
            self.control.append((topics.ERROR, (key or "command").encode(),
                                 self.codec.encode(topics.ERROR, event), None))
            return
        touched = await self._route_command(command)
        log.warning("ws.command %s applied: %s %s %s; %s", command.id, command.op,
                    ",".join(command.symbols), ",".join(command.channels),
                    ", ".join(f"{name} now has {len(subs)} symbols"
                              for name, subs in touched.items()))

    async def _route_command(self, command: Command) -> Directory:
        """Place the command's markets in the exchange's shards (app/shards.py: `placed`),
        keep the exchange's directory and each touched shard's new set in Kafka, and apply
        the sets of the shards running here. The owners of the others apply theirs when they
        read them from their control partitions (`on_control`). Commands of one exchange
        are read by one worker at a time (ws.command is keyed by exchange): one writer."""
        exchange = command.exchange
        first = self.shards[shard_name(exchange, 0)]
        delay = 0.5
        while True:
            try:
                latest = await latest_records(self.bootstrap, self.control_topic,
                                              [first.partition])
                break
            except Exception as exc:
                log.warning("ws.command %s waits for the control topic (%r)", command.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, 5.0)
        if directory_key(exchange) in latest:
            directory = {n: {m: set(c) for m, c in subs.items()}
                         for n, subs in latest[directory_key(exchange)][0].items()}
        else:  # no command yet: this worker's split, and a set an older version kept
            directory = {n: dict(s.subscriptions) for n, s in self.shards.items()
                         if s.exchange == exchange}
            if subscriptions_key(first.name) in latest:
                directory[first.name] = {m: set(c) for m, c in
                                         latest[subscriptions_key(first.name)][0].items()}
        new = placed(directory, command, self.settings.shard_markets_for(exchange))
        touched = {name: subs for name, subs in sorted(new.items())
                   if any(m in subs or m in directory.get(name, {}) for m in command.symbols)
                   } or {first.name: new[first.name]}
        await self._write_now(self.control_topic, directory_key(exchange).encode(),
                              orjson.dumps({n: {m: sorted(c) for m, c in sorted(s.items())}
                                            for n, s in new.items()}), first.partition)
        for name, subs in touched.items():
            known = name in self.shards
            shard = self._add_shard(name, subs)
            offset = await self._write_now(
                self.control_topic, subscriptions_key(name).encode(),
                orjson.dumps({m: sorted(c) for m, c in sorted(subs.items())}), shard.partition,
                headers=[(COMMAND_HEADER, orjson.dumps(command.id))])
            if known:
                await self._apply_subscriptions(shard, subs, offset, [command.id])
            else:
                shard.subs_offset = offset
                if shard.partition in self.assigned or not self.settings.ingest_auto:
                    shard.commands.append(command.id)  # it starts here: its first ack
                await self._start_new(shard)
        return touched

    async def _start_new(self, shard: Shard) -> None:
        """A shard this worker just learned of: pinned, it runs here; with `auto`, here if
        the group gave this worker its partition (it reads its set from Kafka)."""
        if self.settings.ingest_auto:
            await self._apply_assignment()
        elif self.ready:
            async with self.lock:
                if shard.state == "stopped":
                    await self._run_shard(shard, None)

    async def on_control(self, key: str | None, value: bytes, partition: int, offset: int,
                         headers: Any) -> None:
        """A record of a control partition this worker owns: a shard's new subscription set
        (written by the worker that read the command) is applied by its owner."""
        if not self.ready or key is None or not key.endswith(":subscriptions"):
            return
        name = key[:-len(":subscriptions")]
        if not self._may_run(name) or shard_partition(name, self.control_partitions) != partition:
            return
        try:
            subs = {m: set(c) for m, c in orjson.loads(value).items()}
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            log.warning("%s[%d]@%d: not a subscription set, ignored", self.control_topic,
                        partition, offset)
            return
        pairs = headers.items() if isinstance(headers, dict) else (headers or ())
        ids = [orjson.loads(v) for k, v in pairs if k == COMMAND_HEADER]
        shard = self.shards.get(name)
        if shard is None:  # a new shard: it reads its set when it starts
            shard = self._add_shard(name, subs)
            shard.subs_offset = offset
            shard.commands.extend(ids)
            await self._start_new(shard)
            return
        await self._apply_subscriptions(shard, subs, offset, ids)

    async def _apply_subscriptions(self, shard: Shard, subs: Subscriptions, offset: int,
                                   command_ids: list[Any]) -> None:
        """The shard's new set (control-topic record at `offset`) on its live feed, if it
        runs here; a record at or before the one applied last changes nothing (the set is
        read from Kafka at start and its record may come again through the agent). A shard
        paused by a rebalance leaves it to whoever is given the shard: a resumed session
        would otherwise keep the old set."""
        deadline = time.monotonic() + 60.0
        while shard.state == "starting" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        async with self.lock:
            if offset <= shard.subs_offset or shard.state != "running":
                return  # applied already; or its owner applies it (a start reads it)
            shard.subs_offset = offset
            shard.commands.extend(command_ids)
            if subs == shard.subscriptions:
                self._announce_command(shard, None)
                return
            shard.subscriptions = subs
            await self._resubscribe(shard)
            if shard.session is None:  # nothing left to connect: say so now
                self._announce_command(shard, None)

    async def _check_listed(self, command: Any, symbols: list[str]) -> None:
        """CommandError unless the venue lists every market of the subscribe that is not
        subscribed already (a channel added to a running market needs no list)."""
        if not symbols:
            return
        try:
            missing = await self.listings.unlisted(command.exchange, symbols)
        except ListingUnavailable as exc:
            raise CommandError(command.id, f"listing unavailable: {exc}") from None
        if missing:
            raise CommandError(command.id, f"{command.exchange} does not list "
                                           f"{', '.join(missing)}")

    async def _resubscribe(self, shard: Shard) -> None:
        """Run the shard with its new subscription set: on the open connection where the
        venue allows it (`Session.change`; answered on ws.connect_success at once, the
        connection's attempt unchanged), else on a new connection with the new set. Trades
        already parsed are not published again: the publisher resumes after the last one of
        every market."""
        assert shard.publisher is not None and shard.outbox is not None
        if shard.session is not None:
            stream = await shard.session.change(shard.subscriptions)
            if stream is not None:
                self._connected(shard, stream)
                return
            await shard.session.stop()
            shard.session = None
        last: dict[str, list[Any]] = {k: [v[0], v[1], list(v[2])]
                                      for k, v in shard.outbox.last_trades.items()}
        for entry in shard.outbox.queue:
            if entry[6] is not None:
                fold_trade(last, entry[8], entry[6], entry[9])  # symbol, trade id, ts_event
        for symbol, (trade_id, ts, ids) in last.items():
            shard.publisher.resume_after(symbol, trade_id, ts, ids)
        await self._start_session(shard)

    def _announce_command(self, shard: Shard, command: Any) -> None:
        self.control.append((topics.connect_success(shard.exchange), shard.exchange.encode(),
                             self._connect_record(shard, None), None))

    # -- ws.connect_success and ws.metrics ----------------------------------------------------

    def _connect_record(self, shard: Shard, stream: Stream | None) -> bytes:
        subs = shard.subscriptions
        symbols = stream.symbols if stream is not None else sorted(subs)
        topic = topics.connect_success(shard.exchange)
        return self.codec.encode(topic, ConnectSuccess(
            shard.exchange, REGIONS.get(shard.exchange, ""),
            stream.url if stream is not None else None, list(symbols),
            sorted({c for s in symbols for c in subs.get(s, ())}),
            stream.attempt if stream is not None else 0, list(shard.commands),
            self.settings.canonical_url, time.time()))

    def _connected(self, shard: Shard, stream: Stream) -> None:
        """A (re)connection delivers: its subscriptions were taken."""
        self.control.append((topics.connect_success(shard.exchange), shard.exchange.encode(),
                             self._connect_record(shard, stream), None))
        shard.commands.clear()

    async def _metrics(self) -> None:
        """Every KCS_METRICS_INTERVAL s, one `ws.metrics.<exchange>` record per connection."""
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            now = time.time()
            for shard in self.shards.values():
                session, outbox = shard.session, shard.outbox
                if shard.state != "running" or session is None or outbox is None:
                    continue
                exchange = shard.exchange
                counts, latencies = outbox.take_stats()
                records = {KIND_NAMES[k]: n for k, n in enumerate(counts) if k != OTHER}
                resyncs = metrics.total("kcs_book_resyncs_total", exchange=exchange)
                dlq = metrics.get("kcs_dlq_frames_total", exchange=exchange)
                p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
                topic = topics.ws_metrics(exchange)
                for stream in session.streams:
                    record = WsMetrics(
                        exchange, stream.url, stream.frames, max(stream.attempt - 1, 0),
                        now - stream.last_frame if stream.last_frame else None, records,
                        resyncs, dlq, p50, p99, self.settings.metrics_interval,
                        self.settings.canonical_url, now)
                    self.control.append((topic, exchange.encode(),
                                         self.codec.encode(topic, record), None))

    # -- checkpoints and control records ------------------------------------------------------

    def _checkpoint(self, shard: Shard, outbox: Outbox) -> None:
        self.control.append((self.control_topic, shard.name.encode(),
                             orjson.dumps(outbox.checkpoint()), shard.partition))
        shard.checkpointed = outbox.acked

    async def _write_now(self, topic: str, key: bytes, value: bytes, partition: int,
                         headers: list[tuple[str, bytes]] | None = None) -> int:
        """Write one record now, retrying until Kafka takes it; its offset."""
        assert self.producer is not None
        delay = 0.5
        while True:
            try:
                sent = await (await self.producer.send(topic, value, key=key,
                                                       partition=partition, headers=headers))
                return sent.offset
            except Exception as exc:
                log.warning("%s not written yet (%r); retrying", topic, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, 5.0)

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            for shard in self.shards.values():
                outbox = shard.outbox
                if shard.state == "running" and outbox is not None and \
                        outbox.acked != shard.checkpointed:
                    self._checkpoint(shard, outbox)

    async def _send_control(self) -> None:
        """Checkpoints and control-topic records, in order, retried until Kafka takes them."""
        assert self.producer is not None
        while True:
            while self.budget.events:
                event = self.budget.events.popleft()
                event.update(app_id=self.settings.app_id, worker=self.settings.canonical_url,
                             ts_recv=event.pop("ts"))
                key = event.get("exchange") or self.settings.app_id
                self.control.append((topics.BACKPRESSURE_EVENTS, key.encode(), self.codec.encode(
                    topics.BACKPRESSURE_EVENTS, BackpressureEvent.of(event)), None))
            if not self.control:
                await asyncio.sleep(0.2)
                continue
            topic, key, value, partition = self.control[0]
            try:
                await (await self.producer.send(topic, value, key=key, partition=partition))
            except Exception as exc:
                log.warning("control record for %s not delivered yet (%r)", topic, exc)
                await asyncio.sleep(1.0)
                continue
            self.control.popleft()

    def metric_samples(self, now: float) -> list[tuple[str, tuple[str, ...], float]]:
        """Every session's figures and the ingest buffer (exchanges.metrics)."""
        samples: list[tuple[str, tuple[str, ...], float]] = []
        for session in list(self.sessions):
            samples += session.metric_samples(now)
        return samples + [("kcs_ingest_buffer_bytes", (), float(self.budget.used)),
                          ("kcs_ingest_buffer_limit_bytes", (), float(self.budget.limit))]

    async def _start_producer(self) -> aiokafka.AIOKafkaProducer:
        delay = 1.0
        while True:
            producer = new_producer(self.settings, self.broker_url)
            try:
                await producer.start()
                return producer
            except Exception as exc:  # aiokafka raises several types for "cannot connect"
                await producer.stop()
                log.error("Kafka at %s is not reachable (%s); retrying in %.0f s",
                          self.broker_url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, 30.0)

    async def on_stop(self) -> None:
        for shard in self.shards.values():
            if shard.starting is not None:
                shard.starting.cancel()
            if shard.session is not None:
                await shard.session.stop()
        for shard in self.shards.values():
            if shard.outbox is not None and shard.state == "running":
                await shard.outbox.drain(STOP_DRAIN)
        if self.producer is not None:
            await self.producer.flush()
            await self.producer.stop()
        if self.replay_server is not None:
            await self.replay_server.stop()
