"""Trades per second through the feature agents of one worker, and the naive baseline.

Self-contained: starts its own embedded broker (Tansu), fills `trade-data.binance` with
synthetic trades beforehand, then runs one real worker (`faust -A app worker`, ingest off,
RocksDB tables and changelogs on, every agent of the app running: the market-data agent of
market state, features, candles and signals, and the cross-exchange agents, which read the
trades too) over it and times it from the Kafka timestamps of the `features` records the
worker publishes: the first batch's record to the record carrying the last trade. The
baseline is the naive design, one table write per trade, measured the same way with a
minimal app (`faust -A bench.features:naive worker`, built only here) whose agent reads,
folds and writes a market's table entry for every trade. The batched design runs twice, with
the Parquet archive off and on (KCS_ARCHIVE: its own consumer group in the same worker).

The floor, measured in the same run on the same topic, is what Kafka can deliver to one
process: a bare aiokafka consumer (no group, every partition assigned) reading the topic
and decoding every value through the codec, timed from its first fetch (left out, as the
worker's first batch is) to its last record. The batched runs come in rounds, with a floor
pass before the first round and after each: each run is compared with the mean of the floor
passes either side of it, and the median of those features/floor ratios is printed as a
percentage.

    python bench/features.py [--trades 600000] [--naive-trades 30000] [--markets 40]
                             [--rate 500] [--archive off,on] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from collections.abc import Callable
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiokafka  # noqa: E402
import orjson  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from app.embedded import EmbeddedBroker, free_port, stop_process  # noqa: E402
from records import Trade  # noqa: E402
from records.codec import JSON  # noqa: E402

__all__ = ["main"]

TOPIC = "trade-data.binance"
PARTITIONS = 4


def synthetic_trades(count: int, markets: int, rate: float = 500.0, seed: int = 1
                     ) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: `markets` markets, `rate` trades per second of event time, a few
    percent out of order. At 500/s, 600,000 trades span 1,200 s: every window fills (15m the
    longest), and buckets leave it as new ones come, as in a live market."""
    rng = random.Random(seed)
    symbols = [f"S{i:03d}-USDT" for i in range(markets)]
    clock = 1_700_000_000.0
    out = []
    for i in range(count):
        clock += rng.expovariate(rate)
        symbol = symbols[rng.randrange(markets)]
        ts = clock - (rng.uniform(0, 3) if rng.random() < 0.03 else 0.0)
        trade = Trade("binance", symbol, round(ts, 3), clock + 0.05,
                      round(rng.uniform(99, 101), 2), round(rng.uniform(0.001, 2.0), 4),
                      rng.choice((1, -1)), str(i))
        out.append((f"binance:{symbol}".encode(), JSON.encode("trade-data.binance", trade)))
    return out


async def fill(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                         max_batch_size=262144)
    await producer.start()
    try:
        futures = [await producer.send(TOPIC, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def start_worker(broker: EmbeddedBroker, tmp: Path, app_module: str, app_id: str,
                 archive: str = "off") -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    env.update(KCS_BROKER=broker.url, KCS_INGEST="none", KCS_APP_ID=app_id,
               KCS_WEB_PORT=str(port), KCS_WEB_HOST="127.0.0.1", KCS_WEB_BIND="127.0.0.1",
               KCS_DATA_DIR=str(tmp / app_id), KCS_BROKER_PROFILE="tansu",
               KCS_ARCHIVE=archive)
    log = tmp / f"{app_id}.log"
    process = subprocess.Popen([sys.executable, "-m", "faust", "-A", app_module, "worker",
                                "-l", "warn"], cwd=REPO, env=env,
                               stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    return process, port, log


def measure_worker(broker: EmbeddedBroker, tmp: Path, app_module: str, app_id: str,
                   measure: Callable[[subprocess.Popen[bytes], int], tuple[int, float]],
                   archive: str = "off") -> tuple[int, float]:
    """`measure(process, web_port)` of a worker started for it (its log's tail printed if
    it fails), the worker stopped after."""
    process, port, log = start_worker(broker, tmp, app_module, app_id, archive)
    try:
        return measure(process, port)
    except BaseException:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        stop_process(process, grace=20.0)


async def time_features(bootstrap: str, expected: dict[str, int], timeout: float,
                        process: subprocess.Popen[bytes], since_ms: int = 0
                        ) -> tuple[int, float]:
    """(trades timed, seconds) from the `features` records' timestamps (those from
    `since_ms` on: an earlier run's records on the same topic are left out)."""
    consumer = aiokafka.AIOKafkaConsumer("features", bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    latest: dict[str, int] = {}
    first_ms: int | None = None
    first_n = 0
    last_ms = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.timestamp < since_ms:
                        continue
                    n = orjson.loads(record.value)["n"]
                    key = record.key.decode()
                    if first_ms is None or record.timestamp < first_ms:
                        first_ms = record.timestamp
                    if first_ms == record.timestamp and key not in latest:
                        first_n += n  # the first batch: before the clock starts
                    latest[key] = max(latest.get(key, 0), n)
                    last_ms = max(last_ms, record.timestamp)
            if latest == expected:
                break
            if process.poll() is not None:
                raise RuntimeError("the worker exited")
        else:
            raise TimeoutError(f"features saw {sum(latest.values())} of "
                               f"{sum(expected.values())} trades")
    finally:
        await consumer.stop()
    assert first_ms is not None
    return sum(expected.values()) - first_n, (last_ms - first_ms) / 1000.0


async def time_floor(bootstrap: str, total: int, timeout: float) -> tuple[int, float]:
    """(records timed, seconds) of a bare consumer reading and decoding all `total` records
    of the topic: the first fetch's records are left out, its end starts the clock.
    aiokafka's default fetch (1 MiB a partition): the worker's 8 MiB
    (KCS_FETCH_PARTITION_BYTES) did not move the floor (alternating passes, 2026-12-01:
    1 MiB 335,364-380,143, 8 MiB 347,274-389,606 trades/s)."""
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign([aiokafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
        decode = JSON.decode
        seen = first_n = 0
        started = 0.0
        deadline = time.monotonic() + timeout
        while seen < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the floor consumer read {seen} of {total} records")
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=1000)).items():
                for record in records:
                    decode(tp.topic, record.value)
                seen += len(records)
            if not first_n and seen:
                first_n, started = seen, time.perf_counter()
        return total - first_n, time.perf_counter() - started
    finally:
        await consumer.stop()


def time_naive(port: int, total: int, timeout: float, process: subprocess.Popen[bytes]
               ) -> tuple[int, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the worker exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/naive/", timeout=2) as r:
                stats = orjson.loads(r.read())
            if stats["count"] >= total:
                return stats["count"] - 1, stats["last"] - stats["first"]
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the naive agent did not finish")


def run(trades: int, naive_trades: int, markets: int, rate: float,
        archive_runs: tuple[str, ...] = ("off", "on"), rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="kcs-bench-") as scratch:
        tmp = Path(scratch)
        broker = EmbeddedBroker(log_path=tmp / "broker.log").start()
        bootstrap = broker.url.split("://", 1)[1]
        try:
            records = synthetic_trades(trades, markets, rate)
            started = time.monotonic()
            asyncio.run(fill(bootstrap, records))
            print(f"filled {TOPIC} with {trades} trades of {markets} markets in "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            expected: dict[str, int] = {}
            for key, _ in records:
                expected[key.decode()] = expected.get(key.decode(), 0) + 1

            # Rounds alternate with the floor's passes (floor, workers, floor, ...): the
            # machine is shared, and a single 0.6 s floor pass moved by a third between runs.
            floors: list[float] = []
            rates: dict[str, list[float]] = {archive: [] for archive in archive_runs}

            def floor_pass() -> None:
                timed, seconds = asyncio.run(time_floor(bootstrap, trades, 600.0))
                floors.append(timed / seconds)
                print(f"floor (bare aiokafka consumer, read and decode): {floors[-1]:,.0f} "
                      f"trades/s ({timed} trades in {seconds:.2f} s)", flush=True)

            floor_pass()
            for round_ in range(1, rounds + 1):
                for archive in archive_runs:  # the Parquet archive in the same worker, or not
                    since_ms = int(time.time() * 1000)
                    timed, seconds = measure_worker(
                        broker, tmp, "app", f"kcs-bench-features-archive-{archive}-{round_}",
                        lambda process, _, t=since_ms: asyncio.run(time_features(
                            bootstrap, expected, 600.0, process, t)), archive)
                    rates[archive].append(timed / seconds)
                    print(f"round {round_}, features worker, KCS_ARCHIVE={archive}: "
                          f"{rates[archive][-1]:,.0f} trades/s ({timed} trades in "
                          f"{seconds:.2f} s)", flush=True)
                floor_pass()
            floor = statistics.median(floors)
            print(f"floor, median of {len(floors)} passes: {floor:,.0f} trades/s", flush=True)
            # Each pass against the mean of the floor passes either side of its round.
            shares = {archive: [r / ((floors[i] + floors[i + 1]) / 2) * 100
                                for i, r in enumerate(passes)]
                      for archive, passes in rates.items()}
            medians = {archive: statistics.median(r) for archive, r in rates.items()}
            for archive, rate_ in medians.items():
                print(f"features (batched, one write per market per batch), KCS_ARCHIVE="
                      f"{archive}: {rate_:,.0f} trades/s per worker (median of "
                      f"{len(rates[archive])} passes); "
                      f"{statistics.median(shares[archive]):.1f}% of the floor (median of the "
                      f"passes, each against the floor passes either side: "
                      + ", ".join(f"{share:.1f}%" for share in shares[archive]) + ")",
                      flush=True)
            batched = medians.get("off") or medians["on"]
            if len(medians) == 2:
                print(f"archive cost: {(1 - medians['on'] / medians['off']) * 100:.1f}% of the "
                      f"features' throughput", flush=True)
            if naive_trades <= 0:
                return  # --naive-trades 0: the batched figure only

            timed, seconds = measure_worker(
                broker, tmp, "bench.features:naive", "kcs-bench-naive",
                lambda process, port: time_naive(port, naive_trades, 150.0, process))
            naive_rate = timed / seconds
            print(f"naive (one table write per trade):                {naive_rate:,.0f} "
                  f"trades/s per worker ({timed} trades in {seconds:.2f} s)", flush=True)
            print(f"speed-up: {batched / naive_rate:.1f}x", flush=True)
        finally:
            broker.stop()


# --- the naive baseline app, built only when `faust -A bench.features:naive` asks for it ---

_naive: Any = None


def _build_naive() -> Any:
    import faust

    from agents import faust_internals
    from config.settings import load_settings

    settings = load_settings()
    faust_internals.install(settings.fetch_max_wait_ms)
    naive = faust.App(settings.app_id, broker=settings.broker, store="rocksdb://",
                      datadir=settings.data_dir, topic_partitions=PARTITIONS,
                      topic_replication_factor=1, web_port=settings.web_port,
                      web_bind=settings.web_bind, canonical_url=settings.canonical_url,
                      consumer_auto_offset_reset="earliest",
                      broker_session_timeout=6.0,
                      broker_heartbeat_interval=1.0, producer_max_batch_size=1)
    table = naive.Table("naive", default=None, key_type=str, partitions=PARTITIONS)
    source = naive.topic(TOPIC, key_type=str, key_serializer="raw", value_serializer="raw")
    stats = {"count": 0, "first": 0.0, "last": 0.0}

    @naive.agent(source)
    async def fold_each(stream: Any) -> None:
        async for event in stream.events():
            trade = orjson.loads(event.value)
            state = table.get(event.key) or {"volume": 0.0, "notional": 0.0, "trades": 0}
            state["volume"] += trade["amount"]
            state["notional"] += trade["price"] * trade["amount"]
            state["trades"] += 1
            state["last_price"] = trade["price"]
            table[event.key] = state  # the one write per trade
            now = time.time()
            if stats["count"] == 0:
                stats["first"] = now
            stats["count"] += 1
            stats["last"] = now

    @naive.page("/naive/")
    async def naive_stats(view: Any, request: Any) -> Any:
        return view.json(stats)

    return naive


def __getattr__(name: str) -> Any:
    global _naive
    if name == "naive":
        if _naive is None:
            _naive = _build_naive()
        return _naive
    raise AttributeError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 600,000: a worker's pass lasts about 5 s (1.5 s with 200,000, whose passes of one run
    # ranged 24-46% of the floor). Longer passes did not remove the machine's noise: one run
    # of 600,000 ranged 33-38%, a later one 18-42% (README, "Benchmarks").
    parser.add_argument("--trades", type=int, default=600_000)
    parser.add_argument("--naive-trades", type=int, default=30_000)
    parser.add_argument("--markets", type=int, default=40)
    parser.add_argument("--rate", type=float, default=500.0,
                        help="trades per second of event time in the synthetic data")
    parser.add_argument("--archive", default="off,on",
                        help="the batched runs of each round, in order: KCS_ARCHIVE of each")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the batched runs, each followed by a floor pass")
    args = parser.parse_args()
    run(args.trades, args.naive_trades, args.markets, args.rate,
        tuple(a.strip() for a in args.archive.split(",") if a.strip()), args.rounds)


if __name__ == "__main__":
    main()
