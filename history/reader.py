"""Reading the archive back, for researchers: one call per record type returns a market's
records of a time range as a pandas DataFrame, oldest first.

    import history
    df = history.trades("upbit", "BTC-KRW", "2026-11-30", "2026-12-01")

`start` and `end` are datetimes (naive ones are UTC), ISO strings or float epoch seconds;
the range is [start, end) on the event time (`ts_event`; a candle's `start`). Only the
day directories of the range are read. `root` is the archive (a path or URL; default
`KCS_ARCHIVE_DIR`, else `<KCS_DATA_DIR>/archive`). The columns are those of
`history.schema.SCHEMAS` (without the hive columns `type` and `date`); `exchange` comes
back as a plain string column.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from history.archive import open_filesystem
from history.schema import SCHEMAS

__all__ = ["trades", "books", "tickers", "candles", "read", "default_root"]

Time = dt.datetime | str | float | int


def default_root() -> str:
    data_dir = os.environ.get("KCS_DATA_DIR", "data")
    return os.environ.get("KCS_ARCHIVE_DIR") or f"{data_dir.rstrip('/')}/archive"


def seconds(value: Time) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def read_table(kind: str, exchange: str | None, symbol: str | None, start: Time, end: Time,
               root: str | None = None, interval: str | None = None) -> pa.Table:
    """The archived rows of `kind` as an Arrow table (see the module's docstring)."""
    fs, base = open_filesystem(root or default_root())
    directory = f"{base}/type={kind}"
    if fs.get_file_info(directory).type == 0:  # NotFound
        return SCHEMAS[kind].empty_table()
    lo, hi = seconds(start), seconds(end)
    first = dt.datetime.fromtimestamp(lo, dt.UTC).strftime("%Y-%m-%d")
    last = dt.datetime.fromtimestamp(hi, dt.UTC).strftime("%Y-%m-%d")
    partitioning = ds.partitioning(pa.schema([("exchange", pa.string()),
                                              ("date", pa.string())]), flavor="hive")
    dataset = ds.dataset(directory, filesystem=fs, format="parquet",
                         partitioning=partitioning,
                         schema=SCHEMAS[kind].append(pa.field("date", pa.string())))
    when = "start" if kind == "candles" else "ts_event"
    condition = (ds.field("date") >= first) & (ds.field("date") <= last) & \
        (ds.field(when) >= lo) & (ds.field(when) < hi)
    if exchange is not None:
        condition &= ds.field("exchange") == exchange
    if symbol is not None:
        condition &= ds.field("symbol") == symbol
    if interval is not None:
        condition &= ds.field("interval") == interval
    table = dataset.to_table(filter=condition, columns=SCHEMAS[kind].names)
    order = pc.sort_indices(table, [(when, "ascending"), ("kafka_partition", "ascending"),
                                    ("kafka_offset", "ascending")])
    return table.take(order)


def read(kind: str, exchange: str | None, symbol: str | None, start: Time, end: Time,
         root: str | None = None, **options: Any) -> pd.DataFrame:
    frame = read_table(kind, exchange, symbol, start, end, root, **options).to_pandas()
    return frame.reset_index(drop=True)


def trades(exchange: str | None, symbol: str | None, start: Time, end: Time,
           root: str | None = None) -> pd.DataFrame:
    """Columns: exchange, symbol, ts_event, ts_recv, time, price, amount, side (+1 the taker
    bought, -1 sold), trade_id, kafka_partition, kafka_offset."""
    return read("trades", exchange, symbol, start, end, root)


def books(exchange: str | None, symbol: str | None, start: Time, end: Time,
          root: str | None = None) -> pd.DataFrame:
    """Columns: exchange, symbol, ts_event, ts_recv, time, bids, asks (lists of {price,
    size}, best first), sequence, kafka_partition, kafka_offset."""
    return read("books", exchange, symbol, start, end, root)


def tickers(exchange: str | None, symbol: str | None, start: Time, end: Time,
            root: str | None = None) -> pd.DataFrame:
    """Columns: exchange, symbol, ts_event, ts_recv, time, last, bid, bid_size, ask,
    ask_size, volume_24h, quote_volume_24h, kafka_partition, kafka_offset."""
    return read("tickers", exchange, symbol, start, end, root)


def candles(exchange: str | None, symbol: str | None, start: Time, end: Time,
            interval: str = "1m", root: str | None = None) -> pd.DataFrame:
    """Closed candles of `interval` starting in [start, end). Columns: exchange, symbol,
    interval, start, end, time, open, high, low, close, volume, quote_volume, trades,
    kafka_partition, kafka_offset."""
    return read("candles", exchange, symbol, start, end, root, interval=interval)
