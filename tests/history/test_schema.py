"""The two ways a record value becomes a row of the archive: decoded to a dict (`to_table`)
and read by pyarrow's JSON reader (`json_table`). The reader's table must equal the decoded
one, value for value, and a value the reader cannot take as its type must send the whole
batch the decoded way (None), where the bad-record rules live."""

from __future__ import annotations

import random

import orjson
import pytest

from history.schema import decode_value, json_table, to_table
from records import OrderBook, Ticker, Trade
from records.codec import JSON
from records.derived import Candle

DAY = 1764460800.0  # 2025-11-30 00:00 UTC


def awkward(rng: random.Random) -> float:
    """Floats whose shortest text needs all 17 digits, or a few, or an exponent."""
    return rng.choice((rng.uniform(0.0, 2e5), rng.uniform(0, 1e-6), float(rng.randrange(9)),
                       rng.uniform(1e8, 1e12), round(rng.uniform(0, 100), 2)))


def values(kind: str, count: int, seed: int = 7) -> tuple[str, list[bytes]]:
    rng = random.Random(seed)
    exchanges = ["upbit", "binance", "kraken"]
    out = []
    for i in range(count):
        ts = DAY - 300 + rng.uniform(0, 600)  # both sides of midnight
        exchange = rng.choice(exchanges)
        if kind == "trades":
            topic = "trade-data.upbit"
            record = Trade(exchange, "BTC-KRW", ts, ts + 0.1, awkward(rng), awkward(rng),
                           rng.choice((1, -1)), f"t{i}")
        elif kind == "books":
            topic = "orderbook-data.upbit"
            record = OrderBook(
                exchange, "BTC-KRW", ts, ts + 0.1,
                [(awkward(rng), awkward(rng)) for _ in range(rng.randrange(0, 6))],
                [(awkward(rng), awkward(rng)) for _ in range(rng.randrange(0, 6))],
                rng.choice((None, rng.randrange(1 << 40))))
        elif kind == "tickers":
            topic = "ticker-data.upbit"
            record = Ticker(exchange, "BTC-KRW", ts, ts + 0.1,
                            *(rng.choice((None, awkward(rng))) for _ in range(7)))
        else:
            topic = "candles.1m"
            start = (ts // 60) * 60
            record = Candle(exchange, "BTC-KRW", "1m", start, start + 60, awkward(rng),
                            awkward(rng), awkward(rng), awkward(rng), awkward(rng),
                            awkward(rng), rng.randrange(1, 500))
        out.append(JSON.encode(topic, record))
    return topic, out


def decoded(kind: str, topic: str, raw: list[bytes], partition: int, first: int):
    rows = []
    for offset, value in enumerate(raw, first):
        row = decode_value(topic, value)
        row["kafka_partition"] = partition
        row["kafka_offset"] = offset
        rows.append(row)
    return to_table(kind, rows)


@pytest.mark.parametrize("kind", ["trades", "books", "tickers", "candles"])
def test_the_reader_gives_the_decoded_table(kind: str) -> None:
    topic, raw = values(kind, 3000)
    got = json_table(kind, raw, 3, list(range(100, 3100)))
    assert got is not None
    want = decoded(kind, topic, raw, 3, 100)
    assert got.schema == want.schema
    assert got.equals(want)
    # one value alone, and a batch sliced from the middle of the buffer
    assert json_table(kind, raw[5:6], 3, [5]).equals(decoded(kind, topic, raw[5:6], 3, 5))


def test_integers_where_floats_belong_read_as_floats() -> None:
    value = orjson.dumps({"exchange": "upbit", "symbol": "BTC-KRW", "ts_event": DAY,
                          "ts_recv": DAY, "price": 100, "amount": 2, "side": 1,
                          "trade_id": "1"})
    got = json_table("trades", [value], 0, [0])
    assert got is not None and got.equals(decoded("trades", "trade-data.upbit", [value], 0, 0))


def test_an_unknown_field_is_ignored_as_the_decoded_way_ignores_it() -> None:
    topic, raw = values("trades", 3)
    extra = [value[:-1] + b',"venue_field":[1,2]}' for value in raw]
    assert json_table("trades", extra, 0, [0, 1, 2]).equals(decoded("trades", topic, raw, 0, 0))


@pytest.mark.parametrize("count", [4, 20000])  # one block of the reader's, and several
def test_a_value_on_two_lines_is_read_whole_or_the_batch_goes_the_decoded_way(
        count: int) -> None:
    topic, raw = values("trades", count)
    middle = count // 2
    raw[middle] = raw[middle].replace(b',"ts_event"', b',\n"ts_event"')
    got = json_table("trades", raw, 0, list(range(count)))
    assert got is None or got.equals(decoded("trades", topic, raw, 0, 0))


@pytest.mark.parametrize("kind, bad", [
    ("trades", b'{"exchange":"upbit","symbol":"BTC-KRW","price":1.0}'),  # no ts_event
    ("trades", b'{"symbol":"BTC-KRW","ts_event":1.0,"ts_recv":1.0}'),  # no exchange
    ("trades", b"{not json"),
    ("trades", b'{"exchange":"upbit","symbol":"BTC-KRW","ts_event":"soon"}'),
    ("books", b'{"exchange":"upbit","symbol":"X","ts_event":1.0,"bids":[[1.0,2.0,3.0]],'
              b'"asks":[]}'),  # a level that is not a pair
    ("books", b'{"exchange":"upbit","symbol":"X","ts_event":1.0,"bids":[[1.0]],"asks":[]}'),
    ("books", b'{"exchange":"upbit","symbol":"X","ts_event":1.0,"bids":null,"asks":[]}'),
    ("books", b'{"exchange":"upbit","symbol":"X","ts_event":1.0,"bids":[[1.0,null]],'
              b'"asks":[]}'),
    ("candles", b'{"exchange":"upbit","symbol":"X","interval":"1m","end":60.0}'),  # no start
])
def test_a_value_the_reader_cannot_take_sends_the_batch_the_decoded_way(
        kind: str, bad: bytes) -> None:
    _, raw = values(kind, 4)
    assert json_table(kind, [*raw[:2], bad, *raw[2:]], 0, list(range(5))) is None
