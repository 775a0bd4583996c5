"""Ingest benchmark: frames through a connector into the embedded broker, as fast as they go.

    python bench/ingest.py [--frames 200000] [--rate 10000] [--exchange binance|upbit]
                           [--rounds 2] [--schema-registry URL]

Each frame goes the production way: `connector.on_frame()` (decode + normalize), the
publisher's `drain()` through the codec (records/codec.py) into the ingest producer
(aiokafka, the worker's settings), and the broker's acknowledgement. On a fresh broker:
  1. throughput: frames pushed with no pause; messages per second until the last ack, with
     JSON values and with Avro values (Confluent wire format) in alternating rounds of the
     same run; the best round of each, and Avro's rate as a share of JSON's;
  2. latency: frames paced at --rate per second; time from "frame received" (the ts_recv
     stamped on the record) to the broker's acknowledgement, p50 and p99 (JSON and Avro);
  3. the codec alone: CPU time per record of `Codec.encode` on the same trades, JSON and
     Avro (no broker, no producer): where the difference between the two comes from.
The Avro schema id comes from the registry's preflight when --schema-registry (or
KCS_SCHEMA_REGISTRY) is given; without one a fixed id stands in: the id is resolved once
at start either way, so the encoding cost per record is the same.
With --outbox, each throughput round also goes through the worker's own path, the
publisher's `drain()` into the shard's outbox (exchanges/outbox.py: the bounded buffer a
Kafka outage fills) and its sender, JSON and Avro, in the same run as the direct one.
The WebSocket read itself is not included (one `recv()` per frame, measured separately by
the websockets project); everything after it is.

Each run also reports the share of this process's CPU time spent in the garbage collector
(every collection timed through `gc.callbacks`, over `time.process_time()` of the run; the
broker is another process and not counted). The target is under 1%.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.embedded import EmbeddedBroker  # noqa: E402
from app.ingest import new_producer, tune_gc  # noqa: E402
from config.settings import load_settings  # noqa: E402
from exchanges.base import Stream  # noqa: E402
from exchanges.binance import Binance  # noqa: E402
from exchanges.outbox import TRADE, Budget, Outbox  # noqa: E402
from exchanges.publisher import Publisher  # noqa: E402
from exchanges.upbit import Upbit  # noqa: E402
from records.codec import JSON, Codec  # noqa: E402

SYMBOLS = ["BTC-USDT", "ETH-USDT", "XRP-USDT", "SOL-USDT"]
# Frames parsed between two suspensions of the session's read loop through the outbox: the
# frames of one socket read (up to 256 KiB; websockets stops reading past 16 queued
# frames). `Publisher.drain()` into an outbox never suspends, so without this pause every
# frame of the run was queued before the outbox's sender ran once: a backlog of the whole
# run, not the path of a worker reading its sockets.
READ_FRAMES = 256


class GcMeter:
    """Time spent in garbage collections while active, as a share of the process's CPU time.

    `gc.callbacks` calls us at the start and the stop of every collection; the pause is
    measured in this thread's CPU time (`thread_time`), not wall time, so the other work on a
    shared machine that preempts a collection is not counted as collector time.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.longest = 0.0
        self._started = 0.0
        self._cpu = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            pause = time.thread_time() - self._started
            self.seconds += pause
            self.collections += 1
            self.longest = max(self.longest, pause)

    def __enter__(self) -> GcMeter:
        # What the previous run left (its event loop, producer and connector, dead once
        # `asyncio.run` returned: about 5,000 tracked objects a run) is collected first, so a
        # run does not pay for the one before it (the worker sets these up once).
        gc.collect()
        gc.callbacks.append(self._callback)
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cpu = time.process_time() - self._cpu
        gc.callbacks.remove(self._callback)

    def report(self) -> str:
        share = 100.0 * self.seconds / self._cpu if self._cpu > 0 else 0.0
        return (f"GC {share:.2f}% of CPU ({self.collections} collections, "
                f"{self.seconds * 1000:.1f} ms of {self._cpu:.2f} s CPU, "
                f"longest {self.longest * 1000:.2f} ms)")


def binance_frames(n: int) -> list[bytes]:
    frames = []
    for i in range(n):
        native = SYMBOLS[i % 4].replace("-", "")
        frames.append(orjson.dumps({"stream": native.lower() + "@trade", "data": {
            "e": "trade", "E": 1790000000000 + i, "s": native, "t": 1000000 + i,
            "p": f"{97000 + (i % 100) / 100:.8f}", "q": f"{0.001 * (1 + i % 50):.8f}",
            "T": 1790000000000 + i, "m": bool(i & 1), "M": True}}))
    return frames


def upbit_frames(n: int) -> list[bytes]:
    frames = []
    for i in range(n):
        code = "KRW-" + SYMBOLS[i % 4].split("-")[0]
        frames.append(orjson.dumps({
            "ty": "trade", "cd": code, "tms": 1790000000000 + i, "ttms": 1790000000000 + i,
            "tp": 140000000.0 + i % 1000, "tv": 0.0001 * (1 + i % 50),
            "ab": "BID" if i & 1 else "ASK", "sid": 17900000000000000 + i, "st": "REALTIME"}))
    return frames


def make_connector(exchange: str, producer: object, on_ack: object,
                   codec: Codec) -> tuple[object, Stream]:
    settings = load_settings({})
    if exchange == "binance":
        subs = {s: {"trades"} for s in SYMBOLS}
        return (Binance(subs, Publisher("binance", producer, on_ack, codec=codec), settings),
                Stream("bench"))
    subs = {s.replace("USDT", "KRW"): {"trades"} for s in SYMBOLS}
    return Upbit(subs, Publisher("upbit", producer, on_ack, codec=codec), settings), Stream("bench")


def avro_codec(exchange: str, registry: str) -> tuple[Codec, str]:
    topic = f"trade-data.{exchange}"
    if not registry:
        return Codec({topic: 1}), "schema id 1 standing in for a registry's"
    from records.registry import preflight

    codec = asyncio.run(preflight(registry, [topic]))
    return codec, f"schema id {codec.schema_ids[topic]} from {registry}"


async def throughput(broker: EmbeddedBroker, exchange: str, frames: list[bytes],
                     codec: Codec) -> tuple[float, float]:
    """(messages per second of wall time, messages per CPU second of this process)."""
    settings = load_settings(dict(os.environ))
    producer = new_producer(settings, broker.url)
    await producer.start()
    acked = 0
    done = asyncio.get_running_loop().create_future()

    def on_ack(ts_recv: float) -> None:
        nonlocal acked
        acked += 1
        if acked == len(frames) and not done.done():
            done.set_result(None)

    connector, stream = make_connector(exchange, producer, on_ack, codec)
    out = connector.out  # type: ignore[attr-defined]
    on_frame = connector.on_frame  # type: ignore[attr-defined]
    now = time.time
    started, cpu_started = time.perf_counter(), time.process_time()
    for frame in frames:
        on_frame(frame, now(), stream)
        await out.drain()
    await done
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await producer.stop()
    return len(frames) / elapsed, len(frames) / cpu


async def outbox_throughput(broker: EmbeddedBroker, exchange: str, frames: list[bytes],
                            codec: Codec) -> tuple[float, float]:
    """(messages per second of wall time, messages per CPU second of this process) through
    the shard's outbox and its sender, as the worker sends."""
    settings = load_settings(dict(os.environ))
    producer = new_producer(settings, broker.url)
    await producer.start()
    connector, stream = make_connector(exchange, producer, None, codec)
    out = connector.out  # type: ignore[attr-defined]
    outbox = Outbox(exchange, producer, Budget(settings.ingest_buffer_bytes),
                    {out.trade_topic: TRADE})
    out.outbox = outbox
    outbox.start()
    on_frame = connector.on_frame  # type: ignore[attr-defined]
    now = time.time
    started, cpu_started = time.perf_counter(), time.process_time()
    for i, frame in enumerate(frames, 1):
        on_frame(frame, now(), stream)
        await out.drain()
        if not i % READ_FRAMES:
            await asyncio.sleep(0)  # the socket read: the outbox's sender runs
    await outbox.drain(600.0)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert outbox.acked == len(frames), outbox.acked
    await outbox.stop()
    await producer.stop()
    return len(frames) / elapsed, len(frames) / cpu


async def latency(broker: EmbeddedBroker, exchange: str, frames: list[bytes],
                  rate: int, codec: Codec) -> list[float]:
    settings = load_settings(dict(os.environ))
    producer = new_producer(settings, broker.url)
    await producer.start()
    latencies: list[float] = []
    now = time.time

    def on_ack(ts_recv: float) -> None:
        latencies.append(now() - ts_recv)

    connector, stream = make_connector(exchange, producer, on_ack, codec)
    out = connector.out  # type: ignore[attr-defined]
    on_frame = connector.on_frame  # type: ignore[attr-defined]
    tick = 0.001  # send rate/1000 frames every millisecond, like a busy feed's bursts
    per_tick = max(1, rate // 1000)
    started = time.perf_counter()
    for i in range(0, len(frames), per_tick):
        for frame in frames[i:i + per_tick]:
            on_frame(frame, now(), stream)
        await out.drain()
        wait = started + (i // per_tick + 1) * tick - time.perf_counter()
        await asyncio.sleep(max(0.0, wait))
    await producer.flush()
    await asyncio.sleep(0.2)
    await producer.stop()
    return latencies


def encode_cost(exchange: str, frames: list[bytes], codecs: dict[str, Codec],
                rounds: int = 3) -> dict[str, float]:
    """CPU microseconds per record of each codec's `encode` on the frames' records (the best
    of `rounds` passes)."""
    connector, stream = make_connector(exchange, None, None, JSON)
    out = connector.out  # type: ignore[attr-defined]
    on_frame = connector.on_frame  # type: ignore[attr-defined]
    records = []
    for frame in frames:
        on_frame(frame, time.time(), stream)
        records += [(topic, value) for topic, _, value, _, _ in out.pending]
        out.pending.clear()
    cost = {}
    for name, codec in codecs.items():
        encode = codec.encode
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for topic, record in records:
                encode(topic, record)
            best = min(best, time.process_time() - started)
        cost[name] = best / len(records) * 1e6
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-frames", type=int, default=50_000)
    parser.add_argument("--exchange", choices=["binance", "upbit"], default="binance")
    parser.add_argument("--rounds", type=int, default=2,
                        help="throughput rounds per encoding, alternating JSON and Avro")
    parser.add_argument("--schema-registry", default=os.environ.get("KCS_SCHEMA_REGISTRY", ""))
    parser.add_argument("--outbox", action="store_true",
                        help="also measure the throughput through the worker's outbox")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    settings = load_settings(dict(os.environ))
    build = binance_frames if args.exchange == "binance" else upbit_frames
    print(f"ingest benchmark: {args.exchange} trade frames -> connector -> embedded broker "
          f"(acks={settings.producer_acks}, linger={settings.producer_linger_ms} ms)")
    broker = EmbeddedBroker().start()
    tune_gc()  # as every worker does once started (app/main.py)
    try:
        avro, where = avro_codec(args.exchange, args.schema_registry)
        codecs = {"JSON": JSON, "Avro": avro}
        print(f"Avro: Confluent wire format, {where}")
        best = {name: 0.0 for name in codecs}
        best_cpu = {name: 0.0 for name in codecs}
        paths = {"direct": throughput}
        if args.outbox:
            paths["outbox"] = outbox_throughput
        best_outbox = {name: 0.0 for name in codecs}
        for round_ in range(1, args.rounds + 1):
            for name, codec in codecs.items():
                for path, run in paths.items():
                    frames = build(args.frames)
                    with GcMeter() as gc_throughput:
                        rate, cpu_rate = asyncio.run(run(broker, args.exchange, frames, codec))
                    if path == "direct":
                        best[name] = max(best[name], rate)
                        best_cpu[name] = max(best_cpu[name], cpu_rate)
                        label = name
                    else:
                        best_outbox[name] = max(best_outbox[name], rate)
                        label = f"{name} through the outbox"
                    print(f"throughput round {round_}, {label}: {rate:,.0f} messages/s, "
                          f"{cpu_rate:,.0f} per CPU second ({args.frames:,} frames); "
                          f"{gc_throughput.report()}")
        print(f"throughput: JSON {best['JSON']:,.0f} messages/s, Avro {best['Avro']:,.0f} "
              f"messages/s in one process (best of {args.rounds}): Avro at "
              f"{best['Avro'] / best['JSON']:.0%} of JSON")
        # Per CPU second of this process (connector, codec, producer): what a machine shared
        # with other work still measures fairly; the broker's own CPU is not in it.
        print(f"per CPU second: JSON {best_cpu['JSON']:,.0f}, Avro {best_cpu['Avro']:,.0f} "
              f"messages: Avro at {best_cpu['Avro'] / best_cpu['JSON']:.0%} of JSON")
        if args.outbox:
            print(f"throughput through the outbox: JSON {best_outbox['JSON']:,.0f} messages/s, "
                  f"Avro {best_outbox['Avro']:,.0f} messages/s (best of {args.rounds}); "
                  f"direct JSON {best['JSON']:,.0f}")
        for name, codec in codecs.items():
            frames = build(args.latency_frames)
            with GcMeter() as gc_latency:
                lat = asyncio.run(latency(broker, args.exchange, frames, args.rate, codec))
            lat.sort()
            p50 = statistics.median(lat) * 1000
            p99 = lat[int(len(lat) * 0.99) - 1] * 1000
            print(f"latency at {args.rate:,}/s, {name}, frame received -> broker ack: "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(lat):,} acks); "
                  f"{gc_latency.report()}")
        cost = encode_cost(args.exchange, build(min(args.frames, 50_000)), codecs)
        print(f"codec alone, CPU per record: JSON {cost['JSON']:.2f} us, Avro "
              f"{cost['Avro']:.2f} us (Codec.encode of the same trades, best of 3)")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
