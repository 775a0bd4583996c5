"""Ingest benchmark: frames through a connector into the embedded broker, as fast as they go.

    python bench/ingest.py [--frames 200000] [--rate 10000] [--exchange binance|upbit]

Each frame goes the production way: `connector.on_frame()` (decode + normalize), the
publisher's `drain()` into the ingest producer (aiokafka, the worker's settings), and the
broker's acknowledgement. Two runs on a fresh broker:
  1. throughput: frames pushed with no pause; messages per second until the last ack;
  2. latency: frames paced at --rate per second; time from "frame received" (the ts_recv
     stamped on the record) to the broker's acknowledgement, p50 and p99.
With --outbox, a third run: the throughput through the worker's own path, the publisher's
`drain()` into the shard's outbox (exchanges/outbox.py: the bounded buffer a Kafka outage
fills) and its sender, measured in the same run as the direct one.
The WebSocket read itself is not included (one `recv()` per frame, measured separately by
the websockets project); everything after it is.
"""

from __future__ import annotations

import argparse
import asyncio
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

SYMBOLS = ["BTC-USDT", "ETH-USDT", "XRP-USDT", "SOL-USDT"]


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


def make_connector(exchange: str, producer: object, on_ack: object) -> tuple[object, Stream]:
    settings = load_settings({})
    if exchange == "binance":
        subs = {s: {"trades"} for s in SYMBOLS}
        return Binance(subs, Publisher("binance", producer, on_ack), settings), Stream("bench")
    subs = {s.replace("USDT", "KRW"): {"trades"} for s in SYMBOLS}
    return Upbit(subs, Publisher("upbit", producer, on_ack), settings), Stream("bench")


async def throughput(broker: EmbeddedBroker, exchange: str, frames: list[bytes]) -> float:
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

    connector, stream = make_connector(exchange, producer, on_ack)
    out = connector.out  # type: ignore[attr-defined]
    on_frame = connector.on_frame  # type: ignore[attr-defined]
    now = time.time
    started = time.perf_counter()
    for frame in frames:
        on_frame(frame, now(), stream)
        await out.drain()
    await done
    elapsed = time.perf_counter() - started
    await producer.stop()
    return len(frames) / elapsed


async def outbox_throughput(broker: EmbeddedBroker, exchange: str,
                            frames: list[bytes]) -> float:
    settings = load_settings(dict(os.environ))
    producer = new_producer(settings, broker.url)
    await producer.start()
    connector, stream = make_connector(exchange, producer, None)
    out = connector.out  # type: ignore[attr-defined]
    outbox = Outbox(exchange, producer, Budget(settings.ingest_buffer_bytes),
                    {out.trade_topic: TRADE})
    out.outbox = outbox
    outbox.start()
    on_frame = connector.on_frame  # type: ignore[attr-defined]
    now = time.time
    started = time.perf_counter()
    for frame in frames:
        on_frame(frame, now(), stream)
        await out.drain()
    await outbox.drain(600.0)
    elapsed = time.perf_counter() - started
    assert outbox.acked == len(frames), outbox.acked
    await outbox.stop()
    await producer.stop()
    return len(frames) / elapsed


async def latency(broker: EmbeddedBroker, exchange: str, frames: list[bytes],
                  rate: int) -> list[float]:
    settings = load_settings(dict(os.environ))
    producer = new_producer(settings, broker.url)
    await producer.start()
    latencies: list[float] = []
    now = time.time

    def on_ack(ts_recv: float) -> None:
        latencies.append(now() - ts_recv)

    connector, stream = make_connector(exchange, producer, on_ack)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-frames", type=int, default=50_000)
    parser.add_argument("--exchange", choices=["binance", "upbit"], default="binance")
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
        rate = asyncio.run(throughput(broker, args.exchange, build(args.frames)))
        print(f"throughput: {rate:,.0f} messages/s in one process ({args.frames:,} frames)")
        if args.outbox:
            rate = asyncio.run(outbox_throughput(broker, args.exchange, build(args.frames)))
            print(f"throughput through the outbox: {rate:,.0f} messages/s "
                  f"({args.frames:,} frames)")
        lat = asyncio.run(latency(broker, args.exchange, build(args.latency_frames), args.rate))
        lat.sort()
        p50 = statistics.median(lat) * 1000
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000
        print(f"latency at {args.rate:,}/s, frame received -> broker ack: p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms ({len(lat):,} acks)")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
