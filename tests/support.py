"""Real parts for tests: a Tansu broker on a free port, a real worker process, topic readers.

Nothing here is mocked: the broker is the embedded Kafka-compatible broker, the worker is
`faust -A app worker` in a subprocess with `KCS_*` settings, and topics are read back with a
plain aiokafka consumer. Tests never rely on end offsets (Tansu reports them wrong): a topic
is read until the expected count arrives or the topic stays idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiokafka

from app.embedded import EmbeddedBroker, free_port, stop_process
from records import BUY, SELL

__all__ = ["REPO", "REPLAYS", "KARAPACE", "FIXTURES", "Worker", "SentMessages", "assert_published",
           "assert_market_state", "read_topic", "http_json", "copy_recordings", "start_broker",
           "wait_for", "values", "in_symbol_order", "read_all"]

REPO = Path(__file__).resolve().parents[1]
REPLAYS = REPO.parent / "shared" / "replays"
KARAPACE = REPO.parent / "shared" / "karapace" / "start-karapace"
FIXTURES = REPO / "tests" / "fixtures"


def coroutine_name(coro: Any) -> str:
    """`Okx._load_snapshot` for a coroutine of that method, compiled too (exchanges/_native.py:
    a mypyc coroutine has no `__qualname__`, its type is named `_load_snapshot_Okx_gen`)."""
    name = getattr(coro, "__qualname__", None)
    if name is None:
        method, _, cls = type(coro).__name__.removesuffix("_gen").rpartition("_")
        name = f"{cls}.{method}"
    return name


class SentMessages:
    """Stands in for the session in connector unit tests: keeps what the connector asks it to
    send (`send_soon`), as text in `sent`, decoded JSON in `json`, with the stream in `to`."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.to: list[Any] = []
        self.spawned: list[str] = []  # names of the coroutines the connector started

    def spawn(self, coro: Any) -> None:
        self.spawned.append(coroutine_name(coro))
        coro.close()  # a unit test runs no tasks

    def send_soon(self, stream: Any, message: str) -> None:
        self.sent.append(message)
        self.to.append(stream)

    @property
    def json(self) -> list[Any]:
        return [json.loads(m) for m in self.sent]


def append_if_top_changed(books: list[tuple], entry: tuple) -> None:
    """Expect a record for a diff-book update (`entry` = (symbol, bids, asks)) only when it
    changed the market's top levels: connectors publish after each change of the top N, not
    after every message. (A snapshot always publishes: append it unconditionally.)"""
    last = next((b for b in reversed(books) if b[0] == entry[0]), None)
    if last != entry:
        books.append(entry)


def assert_published(broker: EmbeddedBroker, exchange: str, want: dict[str, list]) -> None:
    """The exchange's topics hold exactly the expected records (`want`: "trades" as (symbol,
    id, price, amount, side), "books" as (symbol, bids, asks), "tickers" as (symbol, last,
    bid, ask, volume_24h)), each market's in order: every trade exactly once, the top of
    book after every book message, every ticker (when any is expected)."""
    trades = values(broker, f"trade-data.{exchange}", len(want["trades"]))
    got = [(t["symbol"], t["trade_id"], t["price"], t["amount"], t["side"]) for t in trades]
    assert len(got) == len(want["trades"]), exchange
    assert in_symbol_order(got) == in_symbol_order(want["trades"]), exchange
    assert len({(t[0], t[1]) for t in got}) == len(got), exchange
    assert {t[4] for t in got} == {BUY, SELL}, exchange
    books = values(broker, f"orderbook-data.{exchange}", len(want["books"]))
    got_books = [(b["symbol"], [tuple(lv) for lv in b["bids"]],
                  [tuple(lv) for lv in b["asks"]]) for b in books]
    assert len(got_books) == len(want["books"]), exchange
    assert in_symbol_order(got_books) == in_symbol_order(want["books"]), exchange
    if want["tickers"]:
        tickers = values(broker, f"ticker-data.{exchange}", len(want["tickers"]))
        got_tickers = [(t["symbol"], t["last"], t["bid"], t["ask"], t["volume_24h"])
                       for t in tickers]
        assert in_symbol_order(got_tickers) == in_symbol_order(want["tickers"]), exchange


def assert_market_state(worker: Worker, exchange: str, symbol: str,
                        want: dict[str, list]) -> None:
    """The worker's `/market/` view shows the market's last expected trade (`want["trades"]`
    as in `assert_published`) and its last book's top levels, once they have been folded."""
    last_trade = [t for t in want["trades"] if t[0] == symbol][-1]
    _, bids, asks = [b for b in want["books"] if b[0] == symbol][-1]
    url = f"{worker.url}/market/{exchange}/{symbol}/"
    wait_for(lambda: http_json(url)[1].get("last_trade_id") == last_trade[1] and
             http_json(url)[1].get("best_bid") == bids[0][0])
    _, state = http_json(url)
    assert (state["last_price"], state["last_amount"], state["last_side"]) == \
        tuple(last_trade[2:]), exchange
    assert (state["best_bid"], state["best_bid_size"]) == tuple(bids[0]), exchange
    assert (state["best_ask"], state["best_ask_size"]) == tuple(asks[0]), exchange


def start_broker(tmp: Path) -> EmbeddedBroker:
    return EmbeddedBroker(log_path=tmp / "broker.log").start()


def copy_recordings(dest: Path, *prefixes: str, source: Path = REPLAYS) -> Path:
    """Copy the recordings of some exchanges (file prefixes like "UPBIT") into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for prefix in prefixes:
        for path in source.glob(f"{prefix}.*"):
            shutil.copy(path, dest / path.name)
    return dest


class Worker:
    """`faust -A app worker` in a subprocess, on its own port and data dir."""

    def __init__(self, broker_url: str, tmp: Path, data_dir: Path | None = None,
                 **settings: Any) -> None:
        self.port = free_port()
        # A restarted worker passes its predecessor's data dir to keep its RocksDB tables.
        self.data_dir = data_dir if data_dir is not None else tmp / f"worker-{self.port}"
        self.log_path = tmp / f"worker-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
        self.env.update({
            "KCS_BROKER": broker_url,
            "KCS_WEB_PORT": str(self.port),
            "KCS_WEB_HOST": "127.0.0.1",
            "KCS_WEB_BIND": "127.0.0.1",
            "KCS_DATA_DIR": str(self.data_dir),
            "KCS_BROKER_PROFILE": "tansu",  # the tests' broker is Tansu
        })
        self.env.update({f"KCS_{k.upper()}": str(v) for k, v in settings.items()})
        self.process: subprocess.Popen[bytes] | None = None
        # True for tests that expect a worker to keep retrying past start()'s wait.
        self.keep_trying = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 90.0, healthy: bool = True) -> Worker:
        """Start the worker and wait until it is ready (`/health/` 200; with `healthy` false,
        until `/health/` answers at all: 503 while a feed is down); a worker that is not, is
        stopped. Starting again (after `kill()`) reuses the port and the data dir."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{self.log()[-4000:]}")
                try:
                    # Only this run's log counts: a restart appends to the same file.
                    if "Worker]: Ready" in self.log()[offset:] and \
                            http_json(self.url + "/health/", timeout=1)[0] in (
                                (200,) if healthy else (200, 503)):
                        return self
                except OSError:
                    pass
                time.sleep(0.3)
            raise TimeoutError(f"worker not ready in {wait} s:\n{self.log()[-4000:]}")
        except BaseException:
            if not self.keep_trying:
                self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=20.0)

    def kill(self) -> None:
        """kill -9: no shutdown, no flush."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def _read(bootstrap: str, topic: str, expect: int | None, idle: float,
                timeout: float) -> list[aiokafka.ConsumerRecord]:
    consumer = aiokafka.AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest", enable_auto_commit=False,
                                         fetch_max_wait_ms=100)
    await consumer.start()
    records: list[aiokafka.ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
                last_new = time.monotonic()
            if expect is not None and len(records) >= expect:
                # Keep reading a little: more than expected is a failure, not a success.
                if time.monotonic() - last_new > 1.0:
                    break
            elif expect is None and records and time.monotonic() - last_new > idle:
                break
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def read_topic(broker_url: str, topic: str, expect: int | None = None, idle: float = 3.0,
               timeout: float = 60.0) -> list[aiokafka.ConsumerRecord]:
    """Every record of `topic` from the start: until `expect` arrived (then 1 s more), or
    until nothing new came for `idle` seconds."""
    bootstrap = broker_url.split("://", 1)[-1]
    return asyncio.run(_read(bootstrap, topic, expect, idle, timeout))


def values(broker: EmbeddedBroker, topic: str, expect: int) -> list[dict]:
    """The JSON values of `topic` (see `read_topic`)."""
    return [json.loads(r.value) for r in read_topic(broker.url, topic, expect=expect)]


def in_symbol_order(items: list[tuple]) -> dict[str, list[tuple]]:
    """Items whose first field is a symbol, per symbol: Kafka keeps order per key (market),
    not across markets."""
    by_symbol: dict[str, list[tuple]] = {}
    for item in items:
        by_symbol.setdefault(item[0], []).append(item)
    return by_symbol


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:  # e.g. a worker whose web server is not up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


async def _read_all(bootstrap: str, idle: float, timeout: float
                    ) -> list[aiokafka.ConsumerRecord]:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    records: list[aiokafka.ConsumerRecord] = []
    try:
        topics = [t for t in await consumer.topics() if not t.startswith("_")]
        consumer.assign([aiokafka.TopicPartition(t, p) for t in topics
                         for p in consumer.partitions_for_topic(t) or ()])
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < idle:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
                last_new = time.monotonic()
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    return records


def read_all(broker_url: str, idle: float = 3.0, timeout: float = 120.0
             ) -> list[aiokafka.ConsumerRecord]:
    """Every record of every topic of the broker (but `_`-prefixed ones), read until nothing
    new came for `idle` seconds."""
    return asyncio.run(_read_all(broker_url.split("://", 1)[-1], idle, timeout))
