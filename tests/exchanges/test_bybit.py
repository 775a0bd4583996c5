"""Bybit v5 spot connector: documented message shapes (tests/fixtures/bybit/) and the
fixture recording tests/fixtures/replays/BYBIT.*, checked against an independent rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from config.settings import load_settings
from app.subscriptions import from_recordings
from exchanges.bybit import Bybit, book_depth, to_native
from exchanges.publisher import Publisher
from exchanges.replay import load_recordings
from records import BUY, SELL, OrderBook, Ticker, Trade
from tests.support import SentMessages

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BYBIT = FIXTURES / "bybit"
URL = "wss://stream.bybit.com/v5/public/spot"


def fixture(name: str) -> str:
    return (BYBIT / name).read_text().strip()


def connector(symbols=("BTC-USDT",), channels=("trades", "book", "ticker")) -> Bybit:
    bybit = Bybit({s: set(channels) for s in symbols}, Publisher("bybit"), load_settings({}))
    bybit.session = SentMessages()  # type: ignore[assignment]
    return bybit


def published(bybit: Bybit, topic: str) -> list:
    return [value for t, _, value, _, _ in bybit.out.pending if t == topic]


def drain(bybit: Bybit) -> list:
    pending, bybit.out.pending = bybit.out.pending, []
    return pending


class Rebuild:
    """A dict-per-side book built from raw frames, independent of L2Book."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def load(self, bids, asks) -> None:
        self.bids, self.asks = {}, {}
        self.apply(bids, asks)

    def apply(self, bids, asks) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if float(size) == 0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = float(size)

    def top(self, depth: int) -> tuple[list, list]:
        return (sorted(self.bids.items(), reverse=True)[:depth],
                sorted(self.asks.items())[:depth])


def test_symbol_mapping_both_ways_with_the_recorded_market_list():
    assert to_native("BTC-USDT") == "BTCUSDT"
    assert to_native("eth-usdc") == "ETHUSDC"
    with pytest.raises(ValueError):
        to_native("BTCUSDT")
    bybit = connector(("BTC-USDT", "ETH-USDT"))
    assert bybit.unified == {"BTCUSDT": "BTC-USDT", "ETHUSDT": "ETH-USDT"}
    recording = load_recordings(FIXTURES / "replays")["bybit"]
    markets = json.loads(recording.rest[0].body)["result"]["list"]
    for market in markets:  # every market of the REST list maps to its own native symbol
        unified = f"{market['baseCoin']}-{market['quoteCoin']}"
        assert to_native(unified) == market["symbol"]
        assert bybit.unified[market["symbol"]] == unified


def test_subscriptions_are_split_at_10_topics_per_request():
    symbols = [f"C{i}-USDT" for i in range(7)]
    bybit = connector(symbols)
    [stream] = bybit.connections()
    assert stream.url == URL
    requests = [orjson.loads(m) for m in stream.subscribe]
    assert [len(r["args"]) for r in requests] == [10, 10, 1]
    topics = [t for r in requests for t in r["args"]]
    assert len(set(topics)) == 21
    assert {"orderbook.50.C0USDT", "publicTrade.C0USDT", "tickers.C0USDT"} <= set(topics)
    assert all(r["op"] == "subscribe" for r in requests)
    assert stream.symbols == sorted(symbols)
    assert Bybit.ping_interval == 20 and orjson.loads(Bybit.ping_message)["op"] == "ping"
    assert (book_depth(20), book_depth(50), book_depth(51), book_depth(5000)) == (50, 50, 200,
                                                                                  1000)


def test_trade_and_ticker():
    bybit = connector()
    [stream] = bybit.connections()
    bybit.on_frame(fixture("trade.json"), 1.5, stream)
    assert published(bybit, "trade-data.bybit") == [
        Trade("bybit", "BTC-USDT", 1672304486.865, 1.5, 16578.5, 0.001, BUY,
              "2100000000007764263"),
        Trade("bybit", "BTC-USDT", 1672304486.866, 1.5, 16578.0, 0.25, SELL,
              "2100000000007764264"),
    ]
    bybit.on_frame(fixture("ticker.json"), 2.5, stream)
    assert published(bybit, "ticker-data.bybit") == [
        Ticker("bybit", "BTC-USDT", 1673853746.003, 2.5, 21109.77, None, None, None, None,
               6780.866843, 141946527.22907118)]


def test_snapshot_deltas_reset_and_gap():
    bybit = connector()
    [stream] = bybit.connections()
    session = bybit.session
    # a delta before any snapshot: resync and resubscribe, no book
    bybit.on_frame(fixture("delta.json"), 1.0, stream)
    out = drain(bybit)
    assert [t for t, *_ in out] == ["ws.error"]
    assert "before any snapshot" in orjson.loads(out[0][2])["reason"]
    assert session.json == [
        {"req_id": "resync", "op": "unsubscribe", "args": ["orderbook.50.BTCUSDT"]},
        {"req_id": "resync", "op": "subscribe", "args": ["orderbook.50.BTCUSDT"]}]
    bybit.on_frame(fixture("delta.json"), 1.0, stream)  # still waiting: quietly dropped
    assert drain(bybit) == [] and len(session.sent) == 2

    bybit.on_frame(fixture("snapshot.json"), 2.0, stream)
    bybit.on_frame(fixture("delta.json"), 3.0, stream)
    bybit.on_frame(fixture("delta_empty_side.json"), 4.0, stream)
    books = [v for _, _, v, _, _ in drain(bybit)]
    assert books == [
        OrderBook("bybit", "BTC-USDT", 1672304484.976, 2.0,
                  [(16493.5, 0.006), (16493.0, 0.1), (16492.5, 1.25)],
                  [(16611.0, 0.029), (16612.0, 0.213), (16612.5, 0.5)], 18521288),
        OrderBook("bybit", "BTC-USDT", 1672304484.998, 3.0,
                  [(16494.0, 0.3), (16493.0, 0.1), (16492.5, 1.25)],
                  [(16610.0, 0.12), (16611.0, 0.01), (16612.0, 0.213), (16612.5, 0.5)],
                  18521289),
        OrderBook("bybit", "BTC-USDT", 1672304485.018, 4.0,
                  [(16494.0, 0.3), (16493.0, 0.1), (16492.5, 1.25)],
                  [(16610.0, 0.12), (16611.0, 0.01), (16612.5, 0.5), (16613.0, 0.7)],
                  18521290),
    ]
    # a new snapshot replaces the book whatever its u
    bybit.on_frame(fixture("snapshot_after_delta.json"), 5.0, stream)
    [(_, _, book, _, _)] = drain(bybit)
    assert (book.bids, book.asks, book.sequence) == (
        [(16500.0, 2.0), (16499.5, 0.01)], [(16501.0, 0.4), (16502.5, 3.0)], 18521400)
    # u jumps from 18521400 to 18521403: resync, resubscribe, nothing published
    bybit.on_frame(fixture("out_of_order_u.json"), 6.0, stream)
    out = drain(bybit)
    assert [t for t, *_ in out] == ["ws.error"]
    assert "u=18521400" in orjson.loads(out[0][2])["reason"]
    assert len(session.sent) == 4 and not bybit.books["BTC-USDT"].ready
    # u == 1: the service restarted, the delta is a snapshot
    restart = orjson.loads(fixture("delta.json"))
    restart["data"]["u"] = 1
    bybit.on_frame(orjson.dumps(restart), 7.0, stream)
    [(_, _, book, _, _)] = drain(bybit)
    assert (book.bids, book.asks, book.sequence) == (
        [(16494.0, 0.3)], [(16610.0, 0.12), (16611.0, 0.01)], 1)


def test_control_messages_and_bad_frames():
    bybit = connector()
    [stream] = bybit.connections()
    bybit.on_frame('{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}', 1.0, stream)
    bybit.on_frame('{"success":true,"ret_msg":"subscribe","conn_id":"x","req_id":"sub-1",'
                   '"op":"subscribe"}', 1.0, stream)
    assert bybit.out.pending == []
    with pytest.raises(ValueError, match="request failed"):
        bybit.on_frame('{"success":false,"ret_msg":"Invalid symbol","op":"subscribe"}', 1.0,
                       stream)
    trade = orjson.loads(fixture("trade.json"))
    trade["data"][0]["s"] = "DOGEUSDT"
    with pytest.raises(ValueError, match="not subscribed"):
        bybit.on_frame(orjson.dumps(trade), 1.0, stream)


def test_fixture_recording_every_trade_once_and_every_book_right():
    recording = load_recordings(FIXTURES / "replays")["bybit"]
    subscriptions = from_recordings({"bybit": recording})["bybit"]
    bybit = Bybit(subscriptions, Publisher("bybit"), load_settings({}))
    bybit.session = SentMessages()  # type: ignore[assignment]
    [stream] = bybit.connections()
    [connection] = recording.connections
    assert connection.url == stream.url
    assert [m for _, m in connection.sent] == stream.subscribe  # what the connector sends
    rebuilds = {"BTCUSDT": Rebuild(), "ETHUSDT": Rebuild()}
    last_u: dict[str, int] = {}  # markets whose rebuilt book chains, and their last u
    expected_trades, expected_books, gaps = [], [], 0
    trades: list[Trade] = []
    reported: list[dict] = []
    for ts, frame in connection.received:
        bybit.on_frame(frame, ts, stream)
        msg = json.loads(frame)
        topic = msg.get("topic", "")
        if topic.startswith("publicTrade."):
            expected_trades += [(t["i"], float(t["p"]), float(t["v"]),
                                 1 if t["S"] == "Buy" else -1) for t in msg["data"]]
        elif topic.startswith("orderbook."):
            data = msg["data"]
            rebuild = rebuilds[data["s"]]
            if msg["type"] == "snapshot":
                rebuild.load(data["b"], data["a"])
            elif data["s"] not in last_u:
                continue  # waiting for a snapshot
            elif last_u[data["s"]] != data["u"] - 1:
                gaps += 1
                del last_u[data["s"]]
                continue
            else:
                rebuild.apply(data["b"], data["a"])
            last_u[data["s"]] = data["u"]
            expected_books.append((data["s"], rebuild.top(20)))
        out = drain(bybit)
        books = [v for t, _, v, _, _ in out if t == "orderbook-data.bybit"]
        if topic.startswith("orderbook.") and data["s"] in last_u:
            assert len(books) == 1
            assert (books[0].bids, books[0].asks) == expected_books[-1][1]
        else:
            assert books == []
        for t, _, v, _, _ in out:
            if t == "trade-data.bybit":
                trades.append(v)
            elif t == "ws.error":
                reported.append(orjson.loads(v))
    assert [(t.trade_id, t.price, t.amount, t.side) for t in trades] == expected_trades
    assert len({t.trade_id for t in trades}) == len(expected_trades) > 10
    assert {BUY, SELL} == {t.side for t in trades}
    assert {t.symbol for t in trades} == {"BTC-USDT", "ETH-USDT"}
    assert gaps == 1 and [e["symbol"] for e in reported] == ["ETH-USDT"]
    assert len(expected_books) > 20
    assert len(bybit.session.sent) == 2  # unsubscribe + subscribe of the gapped topic
