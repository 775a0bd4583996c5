"""The warm store against the real PostgreSQL server: daily partitions, records delivered
twice stored once, retention dropping old partitions, and a server that is down."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import psycopg
import pytest

from history.warm import WarmStore, apply_retention
from records import Trade
from records.codec import JSON
from tests.support import REPO

NOW = 1_764_460_800.0 + 12 * 3600  # 2025-11-30 12:00 UTC
DAY = 86400.0

TOPIC = "trade-data.upbit"


def trades(days_ago: float, count: int, start: int = 0) -> list[bytes]:
    return [JSON.encode(TOPIC, Trade("upbit", "BTC-KRW", NOW - days_ago * DAY + i, NOW,
                                     100.0 + i, 0.5, 1 if i % 2 else -1, f"{days_ago}-{i}"))
            for i in range(start, start + count)]


def write(store: WarmStore, values: list[bytes], topic: str = "trade-data.upbit") -> int | None:
    for offset, value in enumerate(values):
        store.add(topic, 0, offset, value)
    return store.flush(topic, 0)


def partitions(conn: psycopg.Connection, table: str) -> list[str]:
    return sorted(r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass", (table,)))


def test_delivered_twice_stored_once_in_daily_partitions(warm_dsn: str) -> None:
    store = WarmStore(warm_dsn)
    batch = trades(0, 50) + trades(3, 20)
    assert write(store, batch) == 70
    assert write(store, batch[10:] + trades(0, 5, start=50)) == 65  # again, and 5 new
    book = {"exchange": "upbit", "symbol": "BTC-KRW", "ts_event": NOW, "ts_recv": NOW + 1,
            "bids": [[99.0, 1.0]], "asks": [[101.0, 2.0], [102.0, 1.0]], "sequence": None}
    candle = {"exchange": "upbit", "symbol": "BTC-KRW", "interval": "1m", "start": NOW,
              "end": NOW + 60, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
              "volume": 3.0, "quote_volume": 4.0, "trades": 7}
    for _ in range(2):
        write(store, [orjson.dumps(book)], "orderbook-data.upbit")
        write(store, [orjson.dumps(candle), orjson.dumps(dict(candle, interval="5m"))],
              "candles.1m")
    store.close()
    with psycopg.connect(warm_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT trade_id) FROM trades"
                            ).fetchone() == (75, 75)
        assert partitions(conn, "trades") == ["trades_p20251127", "trades_p20251130"]
        assert conn.execute("SELECT bid, bid_size, ask, ask_size, time = to_timestamp(ts_event)"
                            " FROM book_tops").fetchall() == [(99.0, 1.0, 101.0, 2.0, True)]
        assert conn.execute("SELECT open, close, trades FROM candles_1m").fetchall() == \
            [(1.0, 1.5, 7)]
        assert conn.execute("SELECT count(*) FROM candles_1h").fetchone()[0] == 0


def test_retention_drops_partitions_older_than_it(warm_dsn: str) -> None:
    store = WarmStore(warm_dsn)
    write(store, trades(0, 3) + trades(2, 3) + trades(5, 3) + trades(9, 3))
    store.close()
    with psycopg.connect(warm_dsn) as conn:
        dropped = apply_retention(conn, {"trades": 3, "candles_1h": 1}, now=NOW)
        # A day's partition goes once its whole day is older than 3 days before NOW.
        assert sorted(dropped) == ["trades_p20251121", "trades_p20251125"]
        assert partitions(conn, "trades") == ["trades_p20251128", "trades_p20251130"]
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 6
        assert apply_retention(conn, {"trades": 3}, now=NOW) == []


def test_the_retention_command_with_a_shortened_retention(warm_dsn: str) -> None:
    now = time.time()
    store = WarmStore(warm_dsn)
    for offset, value in enumerate([JSON.encode(TOPIC, Trade("upbit", "BTC-KRW", now - days * DAY,
                                                             now, 1.0, 1.0, 1, str(days)))
                                    for days in (0, 9)]):
        store.add("trade-data.upbit", 0, offset, value)
    store.flush("trade-data.upbit", 0)
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    env.update(KCS_WARM_DSN=warm_dsn, KCS_WARM_RETENTION_RAW="5")
    done = subprocess.run([sys.executable, "-m", "history", "retention"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "dropped 1 partitions" in done.stderr
    with psycopg.connect(warm_dsn) as conn:
        assert conn.execute("SELECT trade_id FROM trades").fetchall() == [("0",)]


def test_a_server_that_is_down_keeps_the_records_waiting(warm_dsn: str) -> None:
    down = WarmStore("host=127.0.0.1 port=9 user=postgres dbname=test connect_timeout=1")
    for offset, value in enumerate(trades(0, 4)):
        down.add("trade-data.upbit", 2, offset, value)
    with pytest.raises(psycopg.OperationalError):
        down.flush("trade-data.upbit", 2)
    assert down.waiting("trade-data.upbit", 2) == 4  # kept for the retry
    down.dsn = warm_dsn  # the server is back
    assert down.flush("trade-data.upbit", 2) == 4
    down.close()
    with psycopg.connect(warm_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 4
