"""Unit tests of the market-state fold: top of book, microprice, depth and imbalance."""

from __future__ import annotations

import orjson
import pytest

from compute.market_state import apply_event
from records import OrderBook, Ticker, Trade
from records.codec import JSON


def decoded(record: object) -> dict:
    return orjson.loads(orjson.dumps(record))


def test_book_gives_top_microprice_depth_and_imbalance():
    book = OrderBook("upbit", "BTC-KRW", 10.0, 10.5,
                     bids=[(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)],
                     asks=[(101.0, 3.0), (102.0, 1.0), (103.0, 5.0)], sequence=None)
    state: dict = {}
    apply_event(state, "book", decoded(book), levels=2)
    assert (state["best_bid"], state["best_bid_size"]) == (100.0, 1.0)
    assert (state["best_ask"], state["best_ask_size"]) == (101.0, 3.0)
    assert state["spread"] == 1.0 and state["mid"] == 100.5
    # size-weighted mid: each price weighted by the other side's size, so it leans toward
    # the side with less size (here the bid)
    assert state["microprice"] == pytest.approx((100.0 * 3.0 + 101.0 * 1.0) / 4.0)
    assert state["bid_volume"] == 3.0 and state["ask_volume"] == 4.0  # top 2 levels only
    assert state["imbalance"] == pytest.approx((3.0 - 4.0) / 7.0)
    assert state["book_ts"] == 10.0 and state["ts_recv"] == 10.5

    apply_event(state, "book", decoded(book), levels=10)  # fewer levels than asked: all
    assert state["bid_volume"] == 6.0 and state["ask_volume"] == 9.0


def test_one_sided_and_empty_books():
    state: dict = {}
    apply_event(state, "book", decoded(OrderBook("okx", "ETH-USDT", 1.0, 1.0, bids=[],
                                                 asks=[(5.0, 2.0)], sequence=1)), levels=5)
    assert state["best_bid"] is None and state["spread"] is None and state["microprice"] is None
    assert state["bid_volume"] == 0.0 and state["imbalance"] == -1.0
    apply_event(state, "book", decoded(OrderBook("okx", "ETH-USDT", 2.0, 2.0, bids=[],
                                                 asks=[], sequence=2)), levels=5)
    assert state["imbalance"] is None and state["ask_volume"] == 0.0


def test_trade_and_ticker_fields_and_times():
    state: dict = {}
    apply_event(state, "trade", decoded(Trade("upbit", "BTC-KRW", 5.0, 6.0, 100.0, 0.5, -1,
                                              "t1")))
    assert (state["last_price"], state["last_amount"], state["last_side"]) == (100.0, 0.5, -1)
    assert state["last_trade_ts"] == 5.0 and state["last_trade_id"] == "t1"
    ticker = Ticker("upbit", "BTC-KRW", 7.0, 8.0, 100.0, 99.0, 2.0, 101.0, 2.0, 1234.0, None)
    apply_event(state, "ticker", decoded(ticker))
    # no book yet: the ticker fills the top of book (equal sizes: microprice = mid)
    assert state["best_bid"] == 99.0 and state["microprice"] == pytest.approx(100.0)
    assert state["ticker_ts"] == 7.0 and state["volume_24h"] == 1234.0 and state["ts_recv"] == 8.0
    apply_event(state, "book", decoded(OrderBook("upbit", "BTC-KRW", 9.0, 7.5,
                                                 bids=[(98.0, 1.0)], asks=[(102.0, 1.0)],
                                                 sequence=None)))
    apply_event(state, "ticker", decoded(ticker))
    assert state["best_bid"] == 98.0  # a book, once seen, owns the top of book
    assert state["ts_recv"] == 8.0  # the newest receive time, not the last event's


def test_trades_at_once_equal_trades_one_by_one():
    from compute.market_state import apply_trades, new_state

    trades = [decoded(Trade("upbit", "BTC-KRW", ts, recv, 100.0 + i, 0.5, 1 if i % 2 else -1,
                            str(i)))
              for i, (ts, recv) in enumerate([(5.0, 6.0), (4.0, 7.0), (6.0, 6.5), (5.5, 6.6)])]
    one_by_one, at_once = new_state("upbit:BTC-KRW"), new_state("upbit:BTC-KRW")
    for trade in trades:
        apply_event(one_by_one, "trade", trade)
    rows = [JSON.decode_trade("trade-data.upbit", orjson.dumps(t)) for t in trades]
    apply_trades(at_once, rows)
    assert at_once == one_by_one
    apply_trades(at_once, [])
    assert at_once == one_by_one
