"""Coinone parsing: frames from tests/fixtures/coinone/ (documented and captured shapes).

Each test feeds frames to a real connector whose publisher has no producer, then checks the
exact records it queued.
"""

from __future__ import annotations

import orjson
import pytest

from config.settings import load_settings
from exchanges.coinone import URL, Coinone, to_native, to_unified
from exchanges.metrics import metrics
from exchanges.publisher import Publisher
from records import BUY, ERROR_TOPIC, SELL, OrderBook, Ticker, Trade

from tests.support import FIXTURES

TS_RECV = 1790134180.25
SUBSCRIPTIONS = {"BTC-KRW": {"trades", "book", "ticker"}, "ETH-KRW": {"trades"}}


def frame(name: str) -> str:
    return (FIXTURES / "coinone" / name).read_text(encoding="utf-8")  # text frames


@pytest.fixture
def connector() -> Coinone:
    return Coinone(SUBSCRIPTIONS, Publisher("coinone"), load_settings({}))


def feed(connector: Coinone, *names: str) -> list:
    stream = connector.connections()[0]
    for name in names:
        connector.on_frame(frame(name), TS_RECV, stream)
    return [entry[2] for entry in connector.out.pending]


def books(connector: Coinone) -> list[OrderBook]:
    return [r for r in (e[2] for e in connector.out.pending) if isinstance(r, OrderBook)]


def errors(connector: Coinone) -> list[dict]:
    return [orjson.loads(v) for t, _, v, _, _ in connector.out.pending if t == ERROR_TOPIC]


def test_symbols_map_both_ways():
    assert to_native("BTC-KRW") == {"quote_currency": "KRW", "target_currency": "BTC"}
    assert to_unified({"quote_currency": "KRW", "target_currency": "ETH"}) == "ETH-KRW"
    assert to_unified(to_native("XRP-KRW")) == "XRP-KRW"
    with pytest.raises(ValueError):
        to_native("BTCKRW")


def test_one_stream_one_message_per_channel_and_market(connector):
    (stream,) = connector.connections()
    assert stream.url == URL == "wss://stream.coinone.co.kr"
    assert stream.symbols == ["BTC-KRW", "ETH-KRW"]
    assert [orjson.loads(m) for m in stream.subscribe] == [
        {"request_type": "SUBSCRIBE", "channel": channel,
         "topic": {"quote_currency": "KRW", "target_currency": target}, "format": "DEFAULT"}
        for channel, target in (("TRADE", "BTC"), ("TRADE", "ETH"), ("ORDERBOOK", "BTC"),
                                ("TICKER", "BTC"))
    ]


def test_client_pings_every_20_seconds():
    assert Coinone.ping_interval == 20.0
    assert orjson.loads(Coinone.ping_message) == {"request_type": "PING"}


def test_seller_maker_trade_is_a_buy_taker(connector):
    # literal meaning of is_seller_maker (docs/normalization.md, "Taker side")
    (trade,) = feed(connector, "trade.json")
    assert trade == Trade("coinone", "BTC-KRW", 1790134177.835, TS_RECV, 116460000.0,
                          0.00483595, BUY, "1790134177835001")
    assert connector.out.pending[0][:2] == ("trade-data.coinone", b"coinone:BTC-KRW")


def test_buyer_maker_trade_is_a_sell_taker(connector):
    (trade,) = feed(connector, "trade_seller_taker.json")
    assert trade == Trade("coinone", "ETH-KRW", 1790134177.901, TS_RECV, 3714000.0, 1.5, SELL,
                          "1790134177901002")


def test_book_asks_are_reversed_to_best_first(connector):
    (book,) = feed(connector, "orderbook.json")
    assert book == OrderBook("coinone", "BTC-KRW", 1790134177.753, TS_RECV,
                             [(116450000.0, 0.0118), (116400000.0, 0.2),
                              (116250000.0, 0.01325806)],
                             [(116460000.0, 0.0232), (116470000.0, 0.05),
                              (116650000.0, 0.01198956)],
                             1790134177753001)
    assert connector.out.pending[0][:2] == ("orderbook-data.coinone", b"coinone:BTC-KRW")


def test_stale_book_is_skipped_and_counted(connector):
    before = metrics.get("kcs_stale_books_total", exchange="coinone")
    feed(connector, "orderbook.json", "orderbook_stale.json")
    assert [b.sequence for b in books(connector)] == [1790134177753001]
    assert metrics.get("kcs_stale_books_total", exchange="coinone") == before + 1
    # the same id again is not newer either
    feed(connector, "orderbook.json")
    assert len(books(connector)) == 1
    assert metrics.get("kcs_stale_books_total", exchange="coinone") == before + 2
    # a newer id (same ms, next counter) is published
    feed(connector, "orderbook_newer.json")
    assert [b.sequence for b in books(connector)] == [1790134177753001, 1790134177753002]
    assert books(connector)[-1].asks == [(116460000.0, 0.03), (116470000.0, 0.05)]
    assert errors(connector) == []  # staleness is not an integrity failure


def test_book_drops_zero_and_padded_levels(connector):
    (book,) = feed(connector, "orderbook_padded.json")
    assert book.bids == [(116450000.0, 0.0118)]
    assert book.asks == [(116460000.0, 0.0232), (116470000.0, 0.05)]
    assert book.sequence == 1790134178000001


def test_book_with_an_empty_side_is_published(connector):
    (book,) = feed(connector, "orderbook_empty_side.json")
    assert book.asks == []
    assert book.bids == [(116450000.0, 0.0118), (116400000.0, 0.2)]


def test_book_is_cut_to_depth_from_the_best_end(connector):
    connector.depth = 2
    (book,) = feed(connector, "orderbook.json")
    assert book.asks == [(116460000.0, 0.0232), (116470000.0, 0.05)]
    assert book.bids == [(116450000.0, 0.0118), (116400000.0, 0.2)]


def test_crossed_book_is_resynced_not_published(connector):
    feed(connector, "orderbook_crossed.json")
    assert books(connector) == []
    (event,) = errors(connector)
    assert (event["exchange"], event["symbol"], event["kind"]) == ("coinone", "BTC-KRW",
                                                                    "resync")
    assert event["reason"] == "crossed book: bid 116450000.0 >= ask 116440000.0"
    # the crossed book did not advance the id: an older but sane book is still accepted
    feed(connector, "orderbook_padded.json")
    assert len(books(connector)) == 1


def test_asks_in_the_wrong_order_are_refused(connector):
    feed(connector, "orderbook_asks_best_first.json")
    assert books(connector) == []
    (event,) = errors(connector)
    assert event["reason"] == "book side out of price order"


def test_ticker(connector):
    (ticker,) = feed(connector, "ticker.json")
    assert ticker == Ticker("coinone", "BTC-KRW", 1790133796.484, TS_RECV, 116380000.0,
                            116370000.0, 8.60554308, 116400000.0, 0.00562817, 267.27610034,
                            30947007404.5912)


@pytest.mark.parametrize("name", ["connected.json", "subscribed.json", "pong.json"])
def test_control_messages_are_silent(connector, name):
    assert feed(connector, name) == []


def test_unknown_channel_is_silent(connector):
    stream = connector.connections()[0]
    connector.on_frame('{"response_type":"DATA","channel":"CHART","data":{}}', TS_RECV, stream)
    assert connector.out.pending == []


def test_exchange_error_raises(connector):
    with pytest.raises(ValueError, match="160012: Invalid Topic"):
        feed(connector, "error.json")


def test_malformed_frame_raises(connector):
    with pytest.raises(ValueError):
        feed(connector, "malformed.json")
    assert connector.out.pending == []
