"""Bithumb (current v1 API) parsing: frames from tests/fixtures/bithumb/ (documented shapes).

Each test feeds one frame to a real connector whose publisher has no producer, then checks
the exact records it queued.
"""

from __future__ import annotations

import orjson
import pytest

from config.settings import load_settings
from exchanges.base import Stream
from exchanges.bithumb import URL, Bithumb, to_native, to_unified
from exchanges.publisher import Publisher
from records import BUY, ERROR_TOPIC, SELL, OrderBook, Ticker, Trade

from tests.support import FIXTURES

TS_RECV = 1790133520.5
SUBSCRIPTIONS = {"BTC-KRW": {"trades", "book", "ticker"}, "ETH-KRW": {"trades", "book"}}


def frame(name: str) -> bytes:
    return (FIXTURES / "bithumb" / name).read_bytes()  # Bithumb frames are binary


@pytest.fixture
def connector() -> Bithumb:
    return Bithumb(SUBSCRIPTIONS, Publisher("bithumb"), load_settings({}))


def feed(connector: Bithumb, name: str) -> list:
    connector.on_frame(frame(name), TS_RECV, connector.connections()[0])
    return [entry[2] for entry in connector.out.pending]


def errors(connector: Bithumb) -> list[dict]:
    return [orjson.loads(v) for t, _, v, _, _ in connector.out.pending if t == ERROR_TOPIC]


def test_symbols_map_both_ways():
    assert to_native("BTC-KRW") == "KRW-BTC"
    assert to_native("ETH-BTC") == "BTC-ETH"
    assert to_unified("KRW-BTC") == "BTC-KRW"
    assert to_unified("BTC-ETH") == "ETH-BTC"
    assert to_unified(to_native("XRP-KRW")) == "XRP-KRW"
    with pytest.raises(ValueError):
        to_unified("BTC_KRW")
    with pytest.raises(ValueError):
        to_native("BTCKRW")


def test_one_stream_subscribes_every_channel(connector):
    (stream,) = connector.connections()
    assert stream.url == URL == "wss://ws-api.bithumb.com/websocket/v1"
    assert stream.symbols == ["BTC-KRW", "ETH-KRW"]
    (message,) = stream.subscribe
    request = orjson.loads(message)
    assert set(request[0]) == {"ticket"}
    assert request[1:] == [
        {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"], "isOnlyRealtime": True},
        {"type": "orderbook", "codes": ["KRW-BTC", "KRW-ETH"]},
        {"type": "ticker", "codes": ["KRW-BTC"]},
        {"format": "DEFAULT"},
    ]
    assert Bithumb.ping_message is None  # WebSocket pings keep it alive


def test_no_subscriptions_no_stream():
    assert Bithumb({}, Publisher("bithumb"), load_settings({})).connections() == []


def test_trade_bid_is_a_buy_taker_with_ms_time(connector):
    (trade,) = feed(connector, "trade.json")
    # ts_event from trade_timestamp (ms), not from the KST trade_date/trade_time strings
    assert trade == Trade("bithumb", "BTC-KRW", 1790133513.739, TS_RECV, 116208000.0, 0.0009,
                          BUY, "1079953210371761700")
    topic, key = connector.out.pending[0][:2]
    assert (topic, key) == ("trade-data.bithumb", b"bithumb:BTC-KRW")


def test_trade_ask_is_a_sell_taker_and_string_ids_pass(connector):
    (trade,) = feed(connector, "trade_ask_string_id.json")
    assert trade == Trade("bithumb", "ETH-KRW", 1790133514.001, TS_RECV, 3714000.0, 1.25, SELL,
                          "1079953210371761701")


def test_trade_with_unknown_side_raises(connector):
    with pytest.raises(KeyError):
        feed(connector, "trade_bad_side.json")
    assert connector.out.pending == []


def test_book_is_published_whole_with_microsecond_time(connector):
    (book,) = feed(connector, "orderbook.json")
    assert book == OrderBook("bithumb", "ETH-KRW", 1790133505.546514, TS_RECV,
                             [(3714000.0, 3.012), (3713000.0, 15.399), (3712000.0, 0.25)],
                             [(3715000.0, 8.4592), (3716000.0, 3.3766), (3717000.0, 1.5)],
                             None)
    assert connector.out.pending[0][:2] == ("orderbook-data.bithumb", b"bithumb:ETH-KRW")


def test_book_drops_padded_units_and_zero_sizes(connector):
    (book,) = feed(connector, "orderbook_padded.json")
    assert book.bids == [(116200000.0, 0.02)]  # two padded (price 0) units dropped
    assert book.asks == [(116210000.0, 0.1234), (116212000.0, 0.5)]  # size printed as 0
    assert book.ts_event == 1790133506.000001


def test_book_with_an_empty_side_is_published(connector):
    (book,) = feed(connector, "orderbook_empty_side.json")
    assert book.bids == []
    assert book.asks == [(116210000.0, 0.1234), (116211000.0, 0.7)]


def test_book_is_cut_to_depth(connector):
    connector.depth = 2
    (book,) = feed(connector, "orderbook.json")
    assert book.bids == [(3714000.0, 3.012), (3713000.0, 15.399)]
    assert book.asks == [(3715000.0, 8.4592), (3716000.0, 3.3766)]


def test_depth_counts_the_units_kept_not_the_zero_ones(connector):
    connector.depth = 2  # the zero-size ask between the two kept ones is not one of the 2
    (book,) = feed(connector, "orderbook_padded.json")
    assert book.asks == [(116210000.0, 0.1234), (116212000.0, 0.5)]
    assert book.bids == [(116200000.0, 0.02)]
    connector.depth = 1
    book = feed(connector, "orderbook_padded.json")[-1]  # after the first one
    assert (book.bids, book.asks) == ([(116200000.0, 0.02)], [(116210000.0, 0.1234)])


def test_crossed_book_is_resynced_not_published(connector):
    records = feed(connector, "orderbook_crossed.json")
    assert not [r for r in records if isinstance(r, OrderBook)]
    (event,) = errors(connector)
    assert (event["exchange"], event["symbol"], event["kind"]) == ("bithumb", "BTC-KRW",
                                                                    "resync")
    assert event["reason"] == "crossed book: bid 116205000.0 >= ask 116200000.0"


def test_unordered_side_is_resynced_not_published(connector):
    records = feed(connector, "orderbook_unordered.json")
    assert not [r for r in records if isinstance(r, OrderBook)]
    (event,) = errors(connector)
    assert event["reason"] == "book side out of price order"


def test_ticker(connector):
    (ticker,) = feed(connector, "ticker.json")
    assert ticker == Ticker("bithumb", "BTC-KRW", 1790133796.484, TS_RECV, 116380000.0, None,
                            None, None, None, 267.27610034, 30947007404.5912)


def test_heartbeat_answer_is_silent(connector):
    assert feed(connector, "status_up.json") == []


def test_unknown_type_is_silent(connector):
    connector.on_frame(b'{"type":"candle","code":"KRW-BTC"}', TS_RECV, Stream(URL))
    assert connector.out.pending == []


def test_exchange_error_raises(connector):
    with pytest.raises(ValueError, match="WRONG_FORMAT"):
        feed(connector, "error.json")


def test_malformed_frame_raises(connector):
    with pytest.raises(ValueError):  # orjson.JSONDecodeError is a ValueError
        feed(connector, "malformed.json")
    assert connector.out.pending == []
