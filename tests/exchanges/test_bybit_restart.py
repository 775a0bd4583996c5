"""Bybit v5: after a service restart the feed sends a snapshot with `u` = 1 (v5 docs,
"orderbook": "if you receive a message with u=1, reset your local orderbook"); mid-stream,
on a book that is ready and chained, it replaces the whole book and the chain restarts."""

from __future__ import annotations

import orjson

from config.settings import load_settings
from exchanges.bybit import Bybit
from exchanges.publisher import Publisher
from tests.support import SentMessages


def frame(kind: str, u: int, bids: list, asks: list, ts: int) -> bytes:
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "ts": ts, "type": kind,
                         "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": u, "seq": u},
                         "cts": ts})


def test_a_u_1_message_mid_stream_replaces_the_book_and_restarts_the_chain() -> None:
    bybit = Bybit({"BTC-USDT": {"book"}}, Publisher("bybit"), load_settings({}))
    session = bybit.session = SentMessages()  # type: ignore[assignment]
    [stream] = bybit.connections()
    bybit.on_frame(frame("snapshot", 500, [["100.0", "1"], ["99.0", "2"]],
                         [["101.0", "1"], ["102.0", "2"]], 1000), 1.0, stream)
    bybit.on_frame(frame("delta", 501, [["99.5", "3"]], [["102.0", "0"]], 1001), 2.0, stream)
    assert bybit.books["BTC-USDT"].sequence == 501
    # the service restarted: u = 1, with a book that shares nothing with the old one
    bybit.on_frame(frame("snapshot", 1, [["200.0", "5"]], [["201.0", "6"]], 1002), 3.0, stream)
    bybit.on_frame(frame("delta", 2, [["199.0", "1"]], [], 1003), 4.0, stream)
    # and a restart announced as a delta with u = 1 is a snapshot as well
    bybit.on_frame(frame("delta", 1, [["300.0", "1"]], [["301.0", "1"]], 1004), 5.0, stream)
    books = [v for t, _, v, _, _ in bybit.out.pending if t == "orderbook-data.bybit"]
    assert [(b.bids, b.asks, b.sequence) for b in books] == [
        ([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)], 500),
        ([(100.0, 1.0), (99.5, 3.0), (99.0, 2.0)], [(101.0, 1.0)], 501),
        ([(200.0, 5.0)], [(201.0, 6.0)], 1),  # nothing of the old book is left
        ([(200.0, 5.0), (199.0, 1.0)], [(201.0, 6.0)], 2),  # u = 2 chains on u = 1
        ([(300.0, 1.0)], [(301.0, 1.0)], 1),
    ]
    # no resync, no resubscription: a restart is not a gap
    assert [t for t, *_ in bybit.out.pending if t == "ws.error"] == []
    assert session.sent == []
