"""Coinbase Exchange feed: the real recording (level2, matches, ticker) through the connector.

Books are rebuilt here independently (plain dicts of price text -> size text); trades and
tickers are read from the raw frames with the stdlib. Faults are made by editing the frames:
a lost `match` (its trade id is skipped), a heartbeat announcing a trade never received, a
crossed book.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from exchanges.coinbase import URL, Coinbase, to_native, to_unified
from exchanges.publisher import Publisher
from replay.recordings import load_recordings
from records import BUY, SELL, OrderBook, Ticker, Trade
from tests.support import SentMessages


class RebuiltBook:
    def __init__(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids = {p: s for p, s in bids if Decimal(s)}
        self.asks = {p: s for p, s in asks if Decimal(s)}
        self.published: tuple | None = None  # the top of the last record published

    def change(self, side: str, price: str, size: str) -> None:
        levels = self.bids if side == "buy" else self.asks
        if Decimal(size) == 0:
            levels.pop(price, None)
        else:
            levels[price] = size

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))[:n]
        return ([(float(p), float(s)) for p, s in bids], [(float(p), float(s)) for p, s in asks])


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


@pytest.fixture(scope="module")
def recording(replays: Path) -> Any:
    return load_recordings(replays)["coinbase"]


def frames_of(recording: Any) -> list[tuple[float, str]]:
    return list(recording.connections[0].received)


def new_connector(recording: Any) -> Coinbase:
    names = {"trades": "trades", "l2_book": "book", "ticker": "ticker"}
    subs: dict[str, set[str]] = {}
    for channel, symbols in recording.configuration.items():
        for symbol in symbols:
            subs.setdefault(symbol, set()).add(names[channel])
    connector = Coinbase(subs, Publisher("coinbase"), load_settings({}))
    connector.session = SentMessages()  # type: ignore[assignment]
    return connector


def feed(connector: Coinbase, frames: list[tuple[float, str]],
         books: dict[str, RebuiltBook]) -> int:
    """Feed frames; after each book message compare the connector's top with the rebuild,
    and the record published with it: one after every change of the top N levels, none
    when they did not change (then the last record published still equals the rebuild).
    Returns the number of books compared. A book message for a dropped book publishes
    nothing and is not compared."""
    [stream] = connector.connections()
    compared = 0
    for ts, frame in frames:
        start = len(connector.out.pending)
        connector.on_frame(frame, ts, stream)
        msg = json.loads(frame)
        if msg["type"] == "snapshot":
            books[msg["product_id"]] = RebuiltBook(msg["bids"], msg["asks"])
        elif msg["type"] == "l2update":
            for side, price, size in msg["changes"]:
                books[msg["product_id"]].change(side, price, size)
        else:
            continue
        published = [r for r in connector.out.pending[start:] if r[0] == "orderbook-data.coinbase"]
        book = connector.books[to_unified(msg["product_id"])]
        if not book.ready:
            assert published == []
            continue
        want = books[msg["product_id"]].top(connector.depth)
        assert (book.top_bids(connector.depth), book.top_asks(connector.depth)) == want
        compared += 1
        if not published:
            assert books[msg["product_id"]].published == want  # no change within the top N
            continue
        [(_, key, record, _, _)] = published
        assert key == f"coinbase:{msg['product_id']}".encode()
        assert isinstance(record, OrderBook)
        assert (record.bids, record.asks) == want
        assert record.ts_event == (epoch(msg["time"]) if "time" in msg else ts)
        books[msg["product_id"]].published = want
    return compared


def records(connector: Coinbase, topic: str, start: int = 0) -> list[Any]:
    return [r[2] for r in connector.out.pending[start:] if r[0] == topic]


def test_symbols_and_subscriptions(recording: Any) -> None:
    assert to_native("BTC-USD") == "BTC-USD" and to_unified("XBT-EUR") == "BTC-EUR"
    connector = new_connector(recording)
    [stream] = connector.connections()
    assert stream.url == URL == "wss://ws-feed.exchange.coinbase.com"
    sent = [json.loads(m) for m in stream.subscribe]
    assert [m["channels"] for m in sent] == [["level2_batch"], ["matches"], ["ticker"],
                                             ["heartbeat"]]
    assert all(len(m["product_ids"]) == 10 for m in sent)


def test_recording_books_trades_tickers(recording: Any) -> None:
    frames = frames_of(recording)
    connector = new_connector(recording)
    books: dict[str, RebuiltBook] = {}
    compared = feed(connector, frames, books)
    messages = [json.loads(f) for _, f in frames]
    assert compared == sum(m["type"] in ("snapshot", "l2update") for m in messages) == 3310
    # a record only after a change of the top 20: most updates are deeper
    assert 10 < len(records(connector, "orderbook-data.coinbase")) < compared
    assert not records(connector, "ws.error") and not records(connector, "ws.dlq")

    raw_trades = [m for m in messages if m["type"] in ("match", "last_match")]
    trades = records(connector, "trade-data.coinbase")
    assert len(trades) == len(raw_trades) == 34
    assert len({(t.symbol, t.trade_id) for t in trades}) == 34  # each exactly once
    for trade, m in zip(trades, raw_trades, strict=True):
        assert isinstance(trade, Trade)
        assert (trade.symbol, trade.trade_id, trade.price, trade.amount, trade.ts_event) == (
            m["product_id"], str(m["trade_id"]), float(m["price"]), float(m["size"]),
            epoch(m["time"]))
        assert trade.side == (SELL if m["side"] == "buy" else BUY)  # `side` is the maker's
    assert {t.side for t in trades} == {BUY, SELL}

    raw_tickers = [m for m in messages if m["type"] == "ticker"]
    tickers = records(connector, "ticker-data.coinbase")
    assert len(tickers) == len(raw_tickers) == 34
    for ticker, m in zip(tickers, raw_tickers, strict=True):
        assert isinstance(ticker, Ticker)
        assert (ticker.symbol, ticker.last, ticker.bid, ticker.ask, ticker.volume_24h) == (
            m["product_id"], float(m["price"]), float(m["best_bid"]), float(m["best_ask"]),
            float(m["volume_24h"]))
        assert ticker.bid_size is None and ticker.ask_size is None  # not in 2021's feed


def fresh_snapshot(product: str, book: RebuiltBook) -> str:
    """What the server sends after a renewed level2 subscription: the whole current book."""
    return json.dumps({"type": "snapshot", "product_id": product,
                       "bids": [[p, s] for p, s in book.bids.items()],
                       "asks": [[p, s] for p, s in book.asks.items()]})


def check_resync(connector: Coinbase, start: int, product: str, reason: str) -> None:
    errors = [json.loads(v) for v in records(connector, "ws.error", start)]
    assert [(e["symbol"], e["kind"]) for e in errors] == [(product, "resync")]
    assert reason in errors[0]["reason"]
    assert connector.session.json == [  # type: ignore[union-attr]
        {"type": "unsubscribe", "product_ids": [product], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": [product], "channels": ["level2_batch"]}]


def test_lost_match_resyncs_the_book_then_snapshot_restores(recording: Any) -> None:
    frames = frames_of(recording)
    messages = [json.loads(f) for _, f in frames]
    # the second live match of SKL-USD (trade 1568269) goes missing
    lost = [i for i, m in enumerate(messages)
            if m["type"] == "match" and m["product_id"] == "SKL-USD"][1]
    assert messages[lost]["trade_id"] == 1568269
    connector = new_connector(recording)
    books: dict[str, RebuiltBook] = {}
    feed(connector, frames[:lost], books)
    start = len(connector.out.pending)
    # up to the next SKL-USD match: it skips an id
    following = next(i for i in range(lost + 1, len(messages))
                     if messages[i]["type"] == "match" and messages[i]["product_id"] == "SKL-USD")
    feed(connector, frames[lost + 1:following + 1], books)
    check_resync(connector, start, "SKL-USD", "trade ids jump from 1568268 to 1568270")
    # the trade after the gap is still published, once
    assert [t.trade_id for t in records(connector, "trade-data.coinbase", start)
            if t.symbol == "SKL-USD"] == ["1568270"]
    assert not connector.books["SKL-USD"].ready

    # updates before the answer are not published; then the fresh snapshot, then all is right
    answer = next(i for i in range(following + 1, len(messages))
                  if messages[i]["type"] == "l2update" and messages[i]["product_id"] == "SKL-USD")
    dropped = len(connector.out.pending)
    feed(connector, frames[following + 1:answer + 1], books)
    assert not [b for b in records(connector, "orderbook-data.coinbase", dropped)
                if b.symbol == "SKL-USD"]
    rest = [(frames[answer][0], fresh_snapshot("SKL-USD", books["SKL-USD"]))]
    compared = feed(connector, rest + frames[answer + 1:], books)
    assert compared > 100
    assert len(records(connector, "ws.error", start)) == 1
    tail = [b for b in records(connector, "orderbook-data.coinbase", start)
            if b.symbol == "SKL-USD"]
    assert tail and (tail[-1].bids, tail[-1].asks) == books["SKL-USD"].top(connector.depth)


def test_heartbeat_announcing_an_unseen_trade_resyncs(recording: Any) -> None:
    frames = frames_of(recording)
    connector = new_connector(recording)
    books: dict[str, RebuiltBook] = {}
    feed(connector, frames[:200], books)
    last = connector.last_trade["NMR-EUR"]
    start = len(connector.out.pending)
    [stream] = connector.connections()
    beat = {"type": "heartbeat", "sequence": 1, "last_trade_id": last, "product_id": "NMR-EUR",
            "time": "2021-04-17T16:43:40.000000Z"}
    connector.on_frame(json.dumps(beat), 1.0, stream)  # up to date: nothing happens
    assert connector.out.pending[start:] == []
    beat["last_trade_id"] = last + 2
    connector.on_frame(json.dumps(beat), 2.0, stream)
    check_resync(connector, start, "NMR-EUR", f"heartbeat announces trade {last + 2}")
    # the `last_match` of the renewed subscription is not a new trade
    replay = {"type": "last_match", "trade_id": last + 2, "side": "buy", "size": "1",
              "price": "30.1", "product_id": "NMR-EUR", "sequence": 2,
              "time": "2021-04-17T16:43:41.000000Z"}
    connector.on_frame(json.dumps(replay), 3.0, stream)
    assert records(connector, "trade-data.coinbase", start) == []


def test_crossed_book_resyncs(recording: Any) -> None:
    frames = frames_of(recording)
    connector = new_connector(recording)
    books: dict[str, RebuiltBook] = {}
    feed(connector, frames[:100], books)
    book = connector.books["BAND-GBP"]
    best_ask = repr(book.top_asks(1)[0][0])  # the best ask price, as text
    start = len(connector.out.pending)
    [stream] = connector.connections()
    crossing = {"type": "l2update", "product_id": "BAND-GBP", "changes": [["buy", best_ask, "5"]],
                "time": "2021-04-17T16:43:40.000000Z"}
    connector.on_frame(json.dumps(crossing), 1.0, stream)
    check_resync(connector, start, "BAND-GBP", "crossed book")
    assert records(connector, "orderbook-data.coinbase", start) == []


def test_frames_as_bytes_or_in_another_key_order_publish_the_same(recording: Any) -> None:
    """Only an update that begins `{"type":"l2update"` is tried typed first; the same frames
    as bytes, or with their keys in another order (every one read by orjson then), publish
    the same records."""
    frames = frames_of(recording)
    published = []
    for variant in (lambda f: f, str.encode,
                    lambda f: json.dumps(json.loads(f), sort_keys=True, separators=(",", ":"))):
        connector = new_connector(recording)
        [stream] = connector.connections()
        for ts, frame in frames:
            connector.on_frame(variant(frame), ts, stream)
        published.append([(t, k, v) for t, k, v, _, _ in connector.out.pending])
    assert len(published[0]) > 1000
    assert published[0] == published[1] == published[2]
