"""The Parquet archive on its own (no broker): the hive layout, typed columns any reader
opens (pyarrow.dataset, DuckDB, pandas), rolling, and resuming after a crash without
writing a record twice. Records are the recorded Upbit session's trades and books as the
connector published them (tests/fixtures)."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import history
from history.archive import PART_NAME, Archive
from exchanges.metrics import metrics
from records import Trade
from records.codec import JSON

DAY = 1764460800.0  # 2025-11-30 00:00 UTC


def trade(i: int, ts: float, symbol: str = "BTC-KRW") -> Trade:
    return Trade("upbit", symbol, ts, ts + 0.25, 1000.0 + i / 8, 0.001 * (i + 1),
                 1 if i % 3 else -1, f"t{i}")


def add_all(archive: Archive, trades: list[Trade], partition: int = 0, start: int = 0
            ) -> None:
    for offset, t in enumerate(trades, start):
        archive.add("trade-data.upbit", partition, offset, JSON.encode("trade-data.upbit", t))


def test_layout_columns_and_three_readers(tmp_path: Path) -> None:
    # Trades on both sides of midnight: one flush, two date directories.
    trades = [trade(i, DAY - 50 + i * 10) for i in range(10)]
    archive = Archive(str(tmp_path), "kafka")
    add_all(archive, trades)
    assert archive.flush("trade-data.upbit", 0) == 10
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "type=trades/exchange=upbit/date=2025-11-29/"
        "part-kafka-trade-data.upbit-0-000000000000-000000000009-1of2.parquet",
        "type=trades/exchange=upbit/date=2025-11-30/"
        "part-kafka-trade-data.upbit-0-000000000000-000000000009-2of2.parquet"]
    assert pq.ParquetFile(tmp_path / files[0]).metadata.row_group(0).column(0) \
        .compression == "SNAPPY"

    # pyarrow.dataset with hive partitioning
    table = ds.dataset(tmp_path / "type=trades", format="parquet",
                       partitioning="hive").to_table()
    assert table.num_rows == 10
    types = {f.name: str(f.type) for f in table.schema}
    assert types["price"] == "double" and types["side"] == "int8"
    assert types["time"] == "timestamp[us, tz=UTC]" and types["ts_event"] == "double"
    # DuckDB
    rows = duckdb.sql(f"SELECT trade_id, price, amount, side, ts_event, date, "
                      f"epoch_us(time) FROM read_parquet('{tmp_path}/**/*.parquet', "
                      f"hive_partitioning = true) ORDER BY ts_event").fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == \
        [(t.trade_id, t.price, t.amount, t.side, t.ts_event) for t in trades]
    assert [str(r[5]) for r in rows] == ["2025-11-29"] * 5 + ["2025-11-30"] * 5
    assert [r[6] for r in rows] == [round(t.ts_event * 1e6) for t in trades]
    # pandas, one file, no hive
    frame = pd.read_parquet(tmp_path / files[1])
    assert list(frame["trade_id"]) == [t.trade_id for t in trades[5:]]
    # the reader
    df = history.trades("upbit", "BTC-KRW", DAY - 30, DAY + 30, root=str(tmp_path))
    assert list(df["trade_id"]) == ["t2", "t3", "t4", "t5", "t6", "t7"]
    assert list(df.columns) == ["exchange", "symbol", "ts_event", "ts_recv", "time", "price",
                                "amount", "side", "trade_id", "kafka_partition",
                                "kafka_offset"]
    assert str(df["time"].dtype).startswith("datetime64") and df["side"].dtype == "int8"


def test_books_tickers_and_candles_round_trip(tmp_path: Path) -> None:
    archive = Archive(str(tmp_path), "kafka")
    book = {"exchange": "binance", "symbol": "BTC-USDT", "ts_event": DAY + 1,
            "ts_recv": DAY + 1.5, "bids": [[100.5, 2.0], [100.0, 1.0]], "asks": [[101.0, 3.0]],
            "sequence": 42}
    ticker = {"exchange": "binance", "symbol": "BTC-USDT", "ts_event": DAY + 2,
              "ts_recv": DAY + 2.5, "last": 100.7, "bid": None, "bid_size": None, "ask": 101.0,
              "ask_size": 3.0, "volume_24h": 12.5, "quote_volume_24h": None}
    candle = {"exchange": "binance", "symbol": "BTC-USDT", "interval": "1m", "start": DAY,
              "end": DAY + 60, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
              "volume": 3.0, "quote_volume": 4.0, "trades": 7}
    archive.add("orderbook-data.binance", 1, 5, orjson.dumps(book))
    archive.add("ticker-data.binance", 1, 9, orjson.dumps(ticker))
    archive.add("candles.1m", 2, 0, orjson.dumps(candle))
    archive.add("features", 0, 0, b"{}")  # not kept
    for tp in archive.pending():
        archive.flush(*tp)
    got = history.books("binance", "BTC-USDT", DAY, DAY + 60, root=str(tmp_path))
    assert [[(lv["price"], lv["size"]) for lv in side] for side in
            (got["bids"][0], got["asks"][0])] == [[(100.5, 2.0), (100.0, 1.0)], [(101.0, 3.0)]]
    assert got["sequence"][0] == 42 and got["kafka_offset"][0] == 5
    got = history.tickers("binance", "BTC-USDT", DAY, DAY + 60, root=str(tmp_path))
    assert got["last"][0] == 100.7 and pd.isna(got["bid"][0]) and got["ask_size"][0] == 3.0
    got = history.candles("binance", "BTC-USDT", DAY, DAY + 60, root=str(tmp_path))
    assert got[["open", "high", "low", "close", "trades"]].values.tolist() == \
        [[1.0, 2.0, 0.5, 1.5, 7]]
    assert history.candles("binance", "BTC-USDT", DAY, DAY + 60, interval="5m",
                           root=str(tmp_path)).empty


def test_rolls_by_size_and_time(tmp_path: Path) -> None:
    archive = Archive(str(tmp_path), "kafka", roll_bytes=2000, roll_seconds=60.0)
    add_all(archive, [trade(i, DAY + i) for i in range(5)])
    assert archive.due() == []
    assert archive.due(now=archive.buffers["trade-data.upbit", 0].opened + 60.0) == \
        [("trade-data.upbit", 0)]
    add_all(archive, [trade(i, DAY + i) for i in range(5, 20)], start=5)
    assert archive.due() == [("trade-data.upbit", 0)]  # 20 trades of ~150 bytes


def test_resume_after_a_crash_never_writes_a_record_twice(tmp_path: Path) -> None:
    trades = [trade(i, DAY - 50 + i * 10) for i in range(30)]
    first = Archive(str(tmp_path), "kafka")
    add_all(first, trades[:10])
    first.flush("trade-data.upbit", 0)  # offsets 0-9, complete
    assert first.resume("trade-data.upbit", 0) == 10
    # A crash in the middle of the next flush: its first file renamed, a second one only a
    # temporary file, the third never started.
    add_all(first, trades[10:20], start=10)
    first.flush("trade-data.upbit", 0)
    done = sorted(tmp_path.rglob("part-kafka-trade-data.upbit-0-000000000010-*.parquet"))
    assert len(done) == 1  # offsets 10-19 are all on 2025-11-30: a single file
    os.rename(done[0], done[0].with_name(done[0].name.replace("1of1", "1of2")))
    (done[0].parent / f".{done[0].name}.abcd.tmp").write_bytes(b"PAR1 half")
    assert PART_NAME.match(done[0].name.replace("1of1", "1of2"))

    restarted = Archive(str(tmp_path), "kafka")
    assert restarted.resume("trade-data.upbit", 0) == 10  # the incomplete flush is gone
    assert restarted.resume("trade-data.upbit", 1) is None
    assert not list(tmp_path.rglob(".*.tmp"))
    add_all(restarted, trades[10:], start=10)
    restarted.flush("trade-data.upbit", 0)
    assert restarted.resume("trade-data.upbit", 0) == 30
    df = history.trades("upbit", None, 0, DAY * 2, root=str(tmp_path))
    assert list(df["trade_id"]) == [t.trade_id for t in trades]
    # Another broker run (the embedded broker restarts at offset 0) resumes on its own.
    assert Archive(str(tmp_path), "tansu1").resume("trade-data.upbit", 0) is None


def test_a_bad_source_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="archive source"):
        Archive(str(tmp_path), "bad-name")


def test_a_value_that_is_not_a_record_is_skipped_and_counted(tmp_path: Path) -> None:
    archive = Archive(str(tmp_path), "kafka")
    before = metrics.get("kcs_history_bad_records_total", sink=archive.name)
    add_all(archive, [trade(0, DAY)])
    archive.add("trade-data.upbit", 0, 1, b"{not json")
    archive.add("trade-data.upbit", 0, 2, b'{"exchange": "upbit"}')  # no ts_event
    add_all(archive, [trade(3, DAY + 3)], start=3)
    assert archive.flush("trade-data.upbit", 0) == 4
    df = history.trades("upbit", "BTC-KRW", DAY, DAY + 10, root=str(tmp_path))
    assert list(df["kafka_offset"]) == [0, 3]
    assert metrics.get("kcs_history_bad_records_total", sink=archive.name) == before + 2


def test_the_json_reader_and_the_decoded_way_group_alike(tmp_path: Path) -> None:
    """A flush reads JSON values with pyarrow's reader, Avro or odd ones record by record:
    the same groups (exchange, UTC day), in the same order, with the same rows."""
    archive = Archive(str(tmp_path), "kafka")
    for offset in range(400):  # candles: every exchange in one topic, on two days
        start = DAY - 7200 + offset * 60.0
        archive.add("candles.1m", 0, offset, orjson.dumps({
            "exchange": ("upbit", "binance", "kraken")[offset % 3], "symbol": "BTC-KRW",
            "interval": "1m", "start": start, "end": start + 60, "open": 1.0 + offset / 7,
            "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0, "quote_volume": 4.0,
            "trades": offset}))
    buffer = archive.buffers["candles.1m", 0]
    fast = archive._json_groups("candles.1m", 0, buffer)
    slow = archive._decoded_groups("candles.1m", 0, buffer)
    assert fast is not None and [key for key, _ in fast] == [key for key, _ in slow]
    assert len(fast) == 6
    for (_, a), (_, b) in zip(fast, slow, strict=True):
        assert a.equals(b)


def test_a_record_a_hair_before_midnight_is_filed_on_its_day_both_ways(tmp_path: Path) -> None:
    import math

    archive = Archive(str(tmp_path), "kafka")
    for offset, ts in enumerate([math.nextafter(DAY, 0.0), DAY, math.nextafter(DAY, 2 * DAY)]):
        archive.add("trade-data.upbit", 0, offset,
                    JSON.encode("trade-data.upbit", trade(offset, ts)))
    buffer = archive.buffers["trade-data.upbit", 0]
    fast = archive._json_groups("trade-data.upbit", 0, buffer)
    slow = archive._decoded_groups("trade-data.upbit", 0, buffer)
    day = int(DAY // 86400)
    assert fast is not None
    assert [(key, t.num_rows) for key, t in fast] == [(key, t.num_rows) for key, t in slow] \
        == [(("upbit", day - 1), 1), (("upbit", day), 2)]
