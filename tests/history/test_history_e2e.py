"""End to end: real workers on real brokers replaying the recordings with the archive and
the warm store on, read back with DuckDB, the reader and PostgreSQL; replay of the archive
through a fresh app id on a second broker; and kill -9 of an archiving worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import duckdb
import psycopg
import pytest
import aiokafka

import history
from app.embedded import EmbeddedBroker
from history.archive import PART_NAME
from records import Trade
from records.codec import JSON
from tests.support import REPO, Worker, copy_recordings, http_json, start_broker, wait_for
from tests.e2e.test_features_e2e import create_topics, produce

pytestmark = pytest.mark.e2e

EXCHANGES = ["upbit", "binance", "coinbase"]
KEEP = {"warm_retention_raw": 100000, "warm_retention_1m": 100000,  # recordings are old
        "warm_retention_1h": 100000,
        "candle_intervals": "5s,1m", "candle_grace": 1}  # the recordings last seconds


def archived(root: Path, kind: str, columns: str = "*", where: str = "") -> list[tuple]:
    files = list(root.glob(f"type={kind}/**/*.parquet"))
    if not files:
        return []
    return duckdb.sql(f"SELECT {columns} FROM read_parquet('{root}/type={kind}/**/*.parquet', "
                      f"hive_partitioning = true) {where}").fetchall()


async def _read_all(bootstrap: str, topics: list[str], idle: float) -> list:
    consumer = aiokafka.AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest",
                                         enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    records, last_new = [], time.monotonic()
    try:
        while time.monotonic() - last_new < idle or not records:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
                last_new = time.monotonic()
    finally:
        await consumer.stop()
    return records


def published_records(broker: EmbeddedBroker) -> dict[tuple[str, str], list]:
    """(partition, offset, value) of every trade, book and ticker on the broker, by (type,
    exchange), each partition's in offset order: read until nothing new came for 4 s."""
    kinds = {"trade-data": "trades", "orderbook-data": "books", "ticker-data": "tickers"}
    topics = [f"{topic}.{ex}" for topic in kinds for ex in EXCHANGES]
    out: dict[tuple[str, str], list] = {(k, ex): [] for k in kinds.values() for ex in EXCHANGES}
    records = asyncio.run(_read_all(broker.url.split("://", 1)[1], topics, idle=4.0))
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        topic, _, ex = r.topic.partition(".")
        out[kinds[topic], ex].append((r.partition, r.offset, json.loads(r.value)))
    return out


def written(worker: Worker, sink: str) -> float:
    """kcs_history_records_total{sink} of the worker: source records its sink has written
    (the warm store: offered to PostgreSQL, stored or found there already)."""
    with urllib.request.urlopen(f"{worker.url}/metrics/", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f'kcs_history_records_total{{sink="{sink}"}}'):
                return float(line.rpartition(" ")[2])
    return 0.0


def views(worker: Worker, markets: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in markets:
        exchange, _, symbol = key.partition(":")
        out[key] = (http_json(f"{worker.url}/features/{exchange}/{symbol}/")[1],
                    *(http_json(f"{worker.url}/candles/{exchange}/{symbol}/?interval={i}"
                                f"&limit=1000")[1] for i in ("5s", "1m")))
    return out


def test_recordings_archived_once_stored_warm_read_back_and_replayed(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path, workers: list[Worker],
        warm_dsn: str) -> None:
    directory = copy_recordings(tmp_path / "replay", "UPBIT", "BINANCE", "COINBASE",
                                source=replays)
    root = tmp_path / "archive"
    worker = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-history",
                    archive_dir=root, archive_roll_seconds=0.5, warm_dsn=warm_dsn, **KEEP)
    workers.append(worker.start())

    # What the connectors published, per exchange: every trade, book and ticker.
    published = published_records(fresh_broker)
    trades = [v for ex in EXCHANGES for _, _, v in published["trades", ex]]
    # (the Binance recording has books only)
    assert len(trades) > 100 and published["trades", "upbit"] and published["trades", "coinbase"]
    assert published["books", "binance"]

    # The archive: every trade exactly once, with equal values; books and tickers too.
    wait_for(lambda: len(archived(root, "trades")) >= len(trades), timeout=60)
    time.sleep(1.5)  # a roll later: nothing more may come
    rows = archived(root, "trades", "exchange, symbol, trade_id, price, amount, side, "
                    "ts_event, ts_recv, epoch_us(time), date, kafka_partition, kafka_offset")
    assert len(rows) == len(trades)
    assert sorted(r[:8] for r in rows) == sorted(
        (t["exchange"], t["symbol"], t["trade_id"], t["price"], t["amount"], t["side"],
         t["ts_event"], t["ts_recv"]) for t in trades)
    assert all(r[8] == round(r[6] * 1e6) for r in rows)
    assert all(str(r[9]) == dt.datetime.fromtimestamp(r[6], dt.UTC).date().isoformat()
               for r in rows)
    source = {(ex, p, o) for ex in EXCHANGES for p, o, _ in published["trades", ex]}
    assert {(r[0], r[10], r[11]) for r in rows} == source
    for kind in ("books", "tickers"):
        want = sum(len(published[kind, ex]) for ex in EXCHANGES)
        wait_for(lambda k=kind, n=want: len(archived(root, k)) >= n, timeout=30)
        assert len(archived(root, kind)) == want, kind
    # The layout: type=/exchange=/date=/part-... and nothing else.
    files = [p.relative_to(root).parts for p in root.rglob("*") if p.is_file()]
    assert files and all(len(parts) == 4 and parts[0].startswith("type=") and
                         parts[1].startswith("exchange=") and parts[2].startswith("date=") and
                         PART_NAME.match(parts[3]) for parts in files), files

    # The reader: one market's trades as a DataFrame, by event time, then as published.
    market = sorted((v for _, _, v in published["trades", "upbit"] if v["symbol"] == "LAMB-KRW"),
                    key=lambda t: t["ts_event"])
    start = min(t["ts_event"] for t in market)
    frame = history.trades("upbit", "LAMB-KRW", start, max(t["ts_event"] for t in market)
                           + 1, root=str(root))
    assert list(frame.columns) == ["exchange", "symbol", "ts_event", "ts_recv", "time",
                                   "price", "amount", "side", "trade_id", "kafka_partition",
                                   "kafka_offset"]
    assert frame[["trade_id", "price", "amount", "side"]].values.tolist() == \
        [[t["trade_id"], t["price"], t["amount"], t["side"]] for t in market]

    # The warm store: every trade once, every top of book once.
    with psycopg.connect(warm_dsn) as conn:
        def count(table: str) -> int:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        wait_for(lambda: count("trades") >= len(trades), timeout=60)
        assert count("trades") == len(trades)
        assert conn.execute("SELECT count(DISTINCT (exchange, symbol, trade_id)) FROM trades"
                            ).fetchone()[0] == len(trades)
        books = sum(len(published["books", ex]) for ex in EXCHANGES)
        wait_for(lambda: count("book_tops") >= books, timeout=30)
        parts = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                             "'trades'::regclass").fetchone()[0]
        assert parts >= 1

    # The original run's features and candles, once every trade is folded.
    markets = sorted({f"{t['exchange']}:{t['symbol']}" for t in trades})
    per_market = {key: sum(1 for t in trades if f"{t['exchange']}:{t['symbol']}" == key)
                  for key in markets}
    wait_for(lambda: all(views(worker, [k])[k][0].get("n") == per_market[k]
                         for k in markets), timeout=60)
    original = views(worker, markets)

    # The hot view: a market's last trades, as published (oldest first), from the ring.
    lamb = [v for _, _, v in published["trades", "upbit"] if v["symbol"] == "LAMB-KRW"]
    status, body = http_json(f"{worker.url}/trades/upbit/lamb-krw/?limit=5")
    assert status == 200 and body["trades"] == lamb[-5:], body
    assert len(http_json(f"{worker.url}/trades/upbit/LAMB-KRW/")[1]["trades"]) == \
        min(100, len(lamb))
    assert http_json(f"{worker.url}/trades/upbit/LAMB-KRW/?limit=101")[0] == 400
    assert http_json(f"{worker.url}/trades/upbit/NONE-KRW/")[0] == 404
    assert sum(len(body["candles"]) for _, body, _ in original.values()) > 5

    # Replay of the archive through a fresh app id on another broker, which also delivers
    # every record a second time to the same warm store.
    (tmp_path / "second").mkdir()
    second_broker = start_broker(tmp_path / "second")
    fresh = Worker(second_broker.url, tmp_path, ingest="none",
                   app_id="kcs-test-history-replayed", archive="off", warm_dsn=warm_dsn, **KEEP)
    try:
        fresh.start()
        end = max(max(t["ts_event"], t["ts_recv"]) for t in trades) + 1
        done = subprocess.run(
            [sys.executable, "-m", "history", "replay", "--from", "2000-01-01",
             "--to", str(end), "--broker", second_broker.url, "--archive", str(root)],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        total = sum(len(v) for v in published.values())
        assert f"replayed {total} records" in done.stderr
        wait_for(lambda: all(views(fresh, [k])[k][0].get("n") == per_market[k]
                             for k in markets), timeout=90)
        assert views(fresh, markets) == original

        wait_for(lambda: written(fresh, "warm") >= total, timeout=60)
        with psycopg.connect(warm_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == len(trades)
    finally:
        fresh.stop()
        second_broker.stop()


def test_archive_holds_every_trade_once_through_a_kill(
        fresh_broker: EmbeddedBroker, tmp_path: Path, workers: list[Worker]) -> None:
    """kill -9 of the archiving worker while trades stream in, then a restart: every trade
    is in the archive exactly once."""
    bootstrap = fresh_broker.url.split("://", 1)[1]
    asyncio.run(create_topics(bootstrap, ["trade-data.binance"]))
    trades = [Trade("binance", f"S{i % 24:02d}-USDT", 1_764_460_000.0 + i * 0.01,
                    1_764_460_000.1 + i * 0.01, 100.0 + (i % 97) / 4, 0.5 + (i % 13),
                    1 if i % 3 else -1, str(i)) for i in range(48000)]
    chunks = [trades[i:i + 3000] for i in range(0, len(trades), 3000)]

    def send(part: list[list[Trade]], pause: float) -> None:
        for chunk in part:
            topic = "trade-data.binance"
            asyncio.run(produce(bootstrap, [(topic, f"binance:{t.symbol}".encode(),
                                             JSON.encode(topic, t)) for t in chunk]))
            time.sleep(pause)

    worker = Worker(fresh_broker.url, tmp_path, ingest="none", app_id="kcs-test-archive-kill",
                    archive_roll_seconds=0.3, archive_roll_bytes=100000)
    workers.append(worker.start())
    root = worker.data_dir / "archive"  # the default: <KCS_DATA_DIR>/archive
    sender = threading.Thread(target=send, args=(chunks[:10], 0.4))
    sender.start()
    wait_for(lambda: len(archived(root, "trades", "1")) > 6000, timeout=90, interval=0.1)
    worker.kill()
    at_kill = len(archived(root, "trades", "1"))
    sender.join()
    assert at_kill < 30000

    restarted = Worker(fresh_broker.url, tmp_path, data_dir=worker.data_dir, ingest="none",
                       app_id="kcs-test-archive-kill", archive_roll_seconds=0.3,
                       archive_roll_bytes=100000)
    workers.append(restarted.start())
    send(chunks[10:], 0.0)
    wait_for(lambda: len(archived(root, "trades", "1")) >= len(trades), timeout=120)
    time.sleep(1.5)
    rows = archived(root, "trades", "trade_id, price, amount, side, ts_event")
    assert len(rows) == len(trades)
    assert sorted(rows, key=lambda r: int(r[0])) == \
        [(t.trade_id, t.price, t.amount, t.side, t.ts_event) for t in trades]
    assert "resumes at offset" in restarted.log()
