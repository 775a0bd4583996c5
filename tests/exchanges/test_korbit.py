"""Korbit (v2 public) parsing: frames from tests/fixtures/korbit/ (documented/captured shapes).

Each test feeds one frame to a real connector whose publisher has no producer, then checks
the exact records it queued.
"""

from __future__ import annotations

import orjson
import pytest

from config.settings import load_settings
from exchanges.korbit import URL, Korbit, to_native, to_unified
from exchanges.publisher import Publisher
from records import BUY, ERROR_TOPIC, SELL, OrderBook, Ticker, Trade

from tests.support import FIXTURES

TS_RECV = 1790134330.75
SUBSCRIPTIONS = {"BTC-KRW": {"trades", "book", "ticker"}, "ETH-KRW": {"book"}}


def frame(name: str) -> str:
    return (FIXTURES / "korbit" / name).read_text(encoding="utf-8")  # text frames


@pytest.fixture
def connector() -> Korbit:
    return Korbit(SUBSCRIPTIONS, Publisher("korbit"), load_settings({}))


def feed(connector: Korbit, name: str) -> list:
    connector.on_frame(frame(name), TS_RECV, connector.connections()[0])
    return [entry[2] for entry in connector.out.pending]


def errors(connector: Korbit) -> list[dict]:
    return [orjson.loads(v) for t, _, v, _, _ in connector.out.pending if t == ERROR_TOPIC]


def test_symbols_map_both_ways():
    assert to_native("BTC-KRW") == "btc_krw"
    assert to_unified("btc_krw") == "BTC-KRW"
    assert to_unified(to_native("USDT-KRW")) == "USDT-KRW"
    with pytest.raises(ValueError):
        to_unified("KRW-BTC")
    with pytest.raises(ValueError):
        to_native("btc_krw")


def test_one_stream_one_array_request(connector):
    (stream,) = connector.connections()
    assert stream.url == URL == "wss://ws-api.korbit.co.kr/v2/public"
    assert stream.symbols == ["BTC-KRW", "ETH-KRW"]
    (message,) = stream.subscribe
    assert orjson.loads(message) == [
        {"method": "subscribe", "type": "trade", "symbols": ["btc_krw"], "requestId": 1},
        {"method": "subscribe", "type": "orderbook", "symbols": ["btc_krw", "eth_krw"],
         "requestId": 2},
        {"method": "subscribe", "type": "ticker", "symbols": ["btc_krw"], "requestId": 3},
    ]
    assert Korbit.ping_message is None  # the server pings at the WebSocket level


def test_every_trade_of_a_message_with_its_own_time_and_side(connector):
    records = feed(connector, "trade.json")
    assert records == [
        Trade("korbit", "BTC-KRW", 1790134317.52, TS_RECV, 116439000.0, 0.0067, SELL,
              "25441720"),
        Trade("korbit", "BTC-KRW", 1790134317.99, TS_RECV, 116445000.0, 0.012, BUY,
              "25441725"),
    ]
    assert [e[:2] for e in connector.out.pending] == [("trade-data.korbit", b"korbit:BTC-KRW")] * 2


def test_trades_repeated_by_a_snapshot_are_not_published_twice(connector):
    feed(connector, "trade.json")
    records = feed(connector, "trade_after_reconnect.json")[2:]
    assert records == [Trade("korbit", "BTC-KRW", 1790134399.0, TS_RECV, 116450000.0, 0.2, SELL,
                             "25441790")]
    assert feed(connector, "trade_after_reconnect.json")[3:] == []  # nothing new at all
    # ids are per pair: the same id on another pair is a different trade
    other = frame("trade.json").replace("btc_krw", "eth_krw")
    connector.on_frame(other, TS_RECV, connector.connections()[0])
    assert [(t.symbol, t.trade_id) for t in (e[2] for e in connector.out.pending[3:])] == [
        ("ETH-KRW", "25441720"), ("ETH-KRW", "25441725")]


def test_book_uses_the_book_time(connector):
    (book,) = feed(connector, "orderbook.json")
    assert book == OrderBook("korbit", "BTC-KRW", 1790134242.563, TS_RECV,
                             [(116455000.0, 0.00499), (116453000.0, 0.01919775),
                              (116451000.0, 0.00059)],
                             [(116506000.0, 0.27522), (116538000.0, 0.00665633),
                              (116542000.0, 0.03897506)],
                             None)
    assert connector.out.pending[0][:2] == ("orderbook-data.korbit", b"korbit:BTC-KRW")


def test_book_drops_zero_and_padded_levels(connector):
    (book,) = feed(connector, "orderbook_padded.json")
    assert book.asks == [(116506000.0, 0.27522), (116538000.0, 0.00665633)]
    assert book.bids == [(116455000.0, 0.00499)]


def test_suspended_pair_publishes_an_empty_book(connector):
    (book,) = feed(connector, "orderbook_suspended.json")
    assert (book.symbol, book.bids, book.asks, book.ts_event) == ("ETH-KRW", [], [],
                                                                  1790134243.0)


def test_book_with_an_empty_side_is_published(connector):
    (book,) = feed(connector, "orderbook_empty_side.json")
    assert book.bids == []
    assert book.asks == [(116506000.0, 0.27522)]


def test_book_is_cut_to_depth(connector):
    connector.depth = 1
    (book,) = feed(connector, "orderbook.json")
    assert (book.bids, book.asks) == ([(116455000.0, 0.00499)], [(116506000.0, 0.27522)])


def test_depth_counts_the_levels_kept_not_the_zero_ones(connector):
    connector.depth = 2  # the zero ask between the two kept ones is not one of the 2
    (book,) = feed(connector, "orderbook_padded.json")
    assert book.asks == [(116506000.0, 0.27522), (116538000.0, 0.00665633)]
    assert book.bids == [(116455000.0, 0.00499)]
    connector.depth = 1
    book = feed(connector, "orderbook_padded.json")[-1]  # after the first one
    assert (book.bids, book.asks) == ([(116455000.0, 0.00499)], [(116506000.0, 0.27522)])


def test_crossed_book_is_resynced_not_published(connector):
    records = feed(connector, "orderbook_crossed.json")
    assert not [r for r in records if isinstance(r, OrderBook)]
    (event,) = errors(connector)
    assert (event["exchange"], event["symbol"], event["kind"]) == ("korbit", "BTC-KRW",
                                                                    "resync")
    assert event["reason"] == "crossed book: bid 116455000.0 >= ask 116450000.0"


def test_ticker_has_no_sizes_and_uses_the_envelope_time(connector):
    (ticker,) = feed(connector, "ticker.json")
    assert ticker == Ticker("korbit", "BTC-KRW", 1790134313.071, TS_RECV, 116463000.0,
                            116426000.0, None, 116477000.0, None, 39.25266763,
                            4549864965.49708)


def test_success_ack_is_silent(connector):
    assert feed(connector, "success.json") == []


def test_failure_raises(connector):
    with pytest.raises(ValueError, match="INVALID_SYMBOL"):
        feed(connector, "fail.json")


def test_malformed_frame_raises(connector):
    with pytest.raises(ValueError):
        feed(connector, "malformed.json")
    assert connector.out.pending == []


def test_server_error_raises(connector):
    """{"status":"error","message":..}: Korbit's notice of an error no request names."""
    with pytest.raises(ValueError, match="Invalid request format"):
        feed(connector, "error.json")
    assert connector.out.pending == []


def test_a_data_message_that_begins_as_an_answer_is_parsed_as_one(connector):
    """`answer_starts` only decides which decode is tried first: a ticker whose first key is
    `status` is read as an answer, is not one, and is published as the ticker it is; one
    with a bad value is refused as the typed decode refuses it. Answers as bytes too."""
    stream = connector.connections()[0]
    ticker = frame("ticker.json")
    connector.on_frame('{"status":"x",' + ticker.lstrip()[1:], TS_RECV, stream)
    assert connector.out.pending[0][2] == feed(Korbit(SUBSCRIPTIONS, Publisher("korbit"),
                                                      load_settings({})), "ticker.json")[0]
    bad = '{"status":"x",' + ticker.lstrip()[1:].replace('"close":"', '"close":"-', 1)
    with pytest.raises(ValueError, match="negative"):
        connector.on_frame(bad, TS_RECV, stream)
    connector.on_frame(frame("success.json").encode(), TS_RECV, stream)
    with pytest.raises(ValueError, match="INVALID_SYMBOL"):
        connector.on_frame(frame("fail.json").encode(), TS_RECV, stream)
    assert len(connector.out.pending) == 1
