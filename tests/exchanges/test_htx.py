"""HTX connector against the real recording HUOBI.* in the shared recordings directory
(../shared/replays) (gzip frames, `depth.step0` books, `trade.detail`, server pings), plus
`mbp.150` incremental books and tickers in the documented shapes."""

from __future__ import annotations

import gzip
import json

import orjson
import pytest

from config.settings import load_settings
from app.subscriptions import from_recordings
from exchanges.base import Stream
from exchanges.htx import Htx, to_native
from exchanges.publisher import Publisher
from exchanges.replay import load_recordings
from records import BUY, SELL, OrderBook, Ticker
from tests.support import SentMessages

URL = "wss://api.huobi.pro/ws"


@pytest.fixture(scope="module")
def recording(replays):
    return load_recordings(replays)["huobi"]


def new_htx(subscriptions, **settings: str) -> tuple[Htx, Stream]:
    htx = Htx(subscriptions, Publisher("htx"), load_settings(settings))
    htx.session = SentMessages()  # type: ignore[assignment]
    [stream] = htx.connections()
    return htx, stream


def drain(htx: Htx) -> list:
    pending, htx.out.pending = htx.out.pending, []
    return pending


def gz(message: dict) -> bytes:
    return gzip.compress(json.dumps(message).encode())


def test_symbol_mapping_both_ways_with_the_recorded_market_list(recording):
    assert to_native("BTC-USDT") == "btcusdt"
    assert to_native("fil3s-usdt") == "fil3susdt"
    markets = json.loads(recording.rest[0].body)["data"]
    natives = {m["symbol"]: f"{m['base-currency']}-{m['quote-currency']}".upper()
               for m in markets}
    assert len(natives) > 500
    for native, unified in natives.items():
        assert to_native(unified) == native
    subscriptions = from_recordings({"huobi": recording})["htx"]
    htx, _ = new_htx(subscriptions)
    assert len(htx.unified) == 10
    for native, unified in htx.unified.items():  # the subscribed ones map back exactly
        assert natives[native] == unified


def test_subscriptions_match_the_recorded_session(recording):
    subscriptions = from_recordings({"huobi": recording})["htx"]
    htx, stream = new_htx(subscriptions)
    [connection] = recording.connections
    assert stream.url == URL == connection.url
    assert sorted(orjson.loads(m)["sub"] for m in stream.subscribe) == \
        sorted(json.loads(m)["sub"] for _, m in connection.sent if '"sub"' in m)
    # and the one other message the recorded client sent is the answer to the server's ping
    [pong] = [json.loads(m) for _, m in connection.sent if '"sub"' not in m]
    assert list(pong) == ["pong"]
    assert len({orjson.loads(m)["id"] for m in stream.subscribe}) == 20


def test_recorded_session_every_trade_once_and_every_book_right(recording):
    subscriptions = from_recordings({"huobi": recording})["htx"]
    htx, stream = new_htx(subscriptions)
    trades, expected_trades, books, pings = [], [], 0, 0
    for ts, frame in recording.connections[0].received:
        assert isinstance(frame, bytes)
        htx.on_frame(frame, ts, stream)
        out = drain(htx)
        assert not [t for t, *_ in out if t == "ws.error"]
        msg = json.loads(gzip.decompress(frame))
        ch = msg.get("ch", "")
        if "ping" in msg:
            pings += 1
            assert out == [] and htx.session.sent[-1] == json.dumps({"pong": msg["ping"]},
                                                                     separators=(",", ":"))
        elif ch.endswith(".depth.step0"):
            [(topic, key, book, _, _)] = out
            native = ch.split(".")[1]
            assert topic == "orderbook-data.htx" and key == f"htx:{htx.unified[native]}".encode()
            tick = msg["tick"]
            assert book.bids == [(float(p), float(s)) for p, s in tick["bids"][:20]]
            assert book.asks == [(float(p), float(s)) for p, s in tick["asks"][:20]]
            assert book.bids[0][0] < book.asks[0][0]
            assert (book.ts_event, book.sequence) == (tick["ts"] / 1000, tick["version"])
            books += 1
        elif ch.endswith(".trade.detail"):
            expected_trades += [(str(t["tradeId"]), float(t["price"]), float(t["amount"]),
                                 t["direction"], t["ts"] / 1000) for t in msg["tick"]["data"]]
            trades += [v for t, _, v, _, _ in out]
        else:
            assert out == [] and msg["status"] == "ok"  # subscription acks
    assert pings == 1 and books == 82
    assert len(expected_trades) == 29 and len({t[0] for t in expected_trades}) == 29
    assert [(t.trade_id, t.price, t.amount, "buy" if t.side == BUY else "sell", t.ts_event)
            for t in trades] == expected_trades
    assert {t.side for t in trades} == {BUY, SELL}


def test_crossed_book_is_reported_and_not_published(recording):
    htx, stream = new_htx({"BTC-USDT": {"book"}})
    htx.on_frame(gz({"ch": "market.btcusdt.depth.step0", "ts": 2000, "tick": {
        "bids": [[101.0, 1.0]], "asks": [[100.0, 1.0]], "version": 7, "ts": 1999}}), 1.0, stream)
    [(topic, _, event, _, _)] = drain(htx)
    assert topic == "ws.error" and "crossed" in json.loads(event)["reason"]


def test_bad_frames_raise_for_the_dlq():
    htx, stream = new_htx({"BTC-USDT": {"trades"}}, KCS_MAX_INFLATED_BYTES="1000")
    with pytest.raises(ValueError, match="beyond 1000 bytes"):
        htx.on_frame(gzip.compress(b" " * 5000), 1.0, stream)
    with pytest.raises(ValueError, match="text"):
        htx.on_frame('{"ping":1}', 1.0, stream)
    with pytest.raises(ValueError, match="bad-request"):
        htx.on_frame(gz({"status": "error", "ts": 1, "id": 3, "err-code": "bad-request",
                         "err-msg": "invalid topic market.nope.trade.detail"}), 1.0, stream)
    with pytest.raises(ValueError, match="not subscribed"):
        htx.on_frame(gz({"ch": "market.ethusdt.trade.detail", "ts": 1, "tick": {"data": []}}),
                     1.0, stream)


def test_ticker():
    htx, stream = new_htx({"BTC-USDT": {"ticker"}})
    assert [orjson.loads(m) for m in stream.subscribe] == [
        {"sub": "market.btcusdt.ticker", "id": 1}]
    htx.on_frame(gz({"ch": "market.btcusdt.ticker", "ts": 1630994963175, "tick": {
        "open": 51732.0, "high": 52785.64, "low": 51000.0, "close": 52735.63, "amount": 13259.2,
        "vol": 687640987.4, "count": 448737, "bid": 52732.88, "bidSize": 0.036,
        "ask": 52732.89, "askSize": 0.583653, "lastPrice": 52735.63, "lastSize": 0.013}}),
        5.0, stream)
    assert [v for _, _, v, _, _ in drain(htx)] == [
        Ticker("htx", "BTC-USDT", 1630994963.175, 5.0, 52735.63, 52732.88, 0.036, 52732.89,
               0.583653, 13259.2, 687640987.4)]


def mbp(seq: int, prev: int, bids=None, asks=None) -> bytes:
    tick: dict = {"seqNum": seq, "prevSeqNum": prev}
    if bids is not None:
        tick["bids"] = bids
    if asks is not None:
        tick["asks"] = asks
    return gz({"ch": "market.btcusdt.mbp.150", "ts": 1573199600000 + seq, "tick": tick})


def snapshot(seq: int, bids, asks) -> bytes:
    return gz({"id": 9, "rep": "market.btcusdt.mbp.150", "status": "ok",
               "data": {"seqNum": seq, "bids": bids, "asks": asks}})


def test_mbp_incremental_books_chain_and_resync():
    htx = Htx({"BTC-USDT": {"book"}}, Publisher("htx"), load_settings({}))
    htx.book_channel = "mbp.150"
    htx.session = SentMessages()  # type: ignore[assignment]
    [stream] = htx.connections()
    assert [orjson.loads(m) for m in stream.subscribe] == [
        {"sub": "market.btcusdt.mbp.150", "id": 1}, {"req": "market.btcusdt.mbp.150", "id": 2}]
    htx.requested.add("BTC-USDT")  # as on_open does: the req went out with the subscription
    # updates before the snapshot are buffered; 10 and 11 are in the snapshot (seqNum 11)
    htx.on_frame(mbp(10, 9, bids=[[99.0, 5.0]]), 1.0, stream)
    htx.on_frame(mbp(11, 10, asks=[[103.0, 1.0]]), 1.1, stream)
    htx.on_frame(mbp(12, 11, bids=[[100.0, 0]], asks=[[101.5, 2.5]]), 1.2, stream)
    assert drain(htx) == [] and htx.session.sent == []
    htx.on_frame(snapshot(11, [[100.0, 1.0], [99.0, 5.0]], [[101.0, 1.0], [103.0, 1.0]]),
                 1.3, stream)
    htx.on_frame(mbp(13, 12, bids=[[99.5, 0.25]]), 1.4, stream)
    books = [v for _, _, v, _, _ in drain(htx)]
    assert [(b.bids, b.asks, b.sequence) for b in books] == [
        ([(100.0, 1.0), (99.0, 5.0)], [(101.0, 1.0), (103.0, 1.0)], 11),
        ([(99.0, 5.0)], [(101.0, 1.0), (101.5, 2.5), (103.0, 1.0)], 12),
        ([(99.5, 0.25), (99.0, 5.0)], [(101.0, 1.0), (101.5, 2.5), (103.0, 1.0)], 13)]
    assert books[1] == OrderBook("htx", "BTC-USDT", 1573199600.012, 1.3, books[1].bids,
                                 books[1].asks, 12)
    # seqNum 14 lost: resync, a new req, nothing published until its answer
    htx.on_frame(mbp(15, 14, asks=[[101.0, 0]]), 2.0, stream)
    [(topic, _, event, _, _)] = drain(htx)
    assert topic == "ws.error" and "prevSeqNum 14" in json.loads(event)["reason"]
    assert [orjson.loads(m)["req"] for m in htx.session.sent] == ["market.btcusdt.mbp.150"]
    htx.on_frame(mbp(16, 15, bids=[[99.0, 0]]), 2.1, stream)
    assert drain(htx) == []
    htx.on_frame(snapshot(15, [[99.5, 0.25], [99.0, 4.0]], [[101.5, 2.5]]), 2.2, stream)
    books = [v for _, _, v, _, _ in drain(htx)]
    assert [(b.bids, b.asks, b.sequence) for b in books] == [
        ([(99.5, 0.25), (99.0, 4.0)], [(101.5, 2.5)], 15),
        ([(99.5, 0.25)], [(101.5, 2.5)], 16)]
    # a snapshot older than the buffered updates cannot be used: ask again
    htx.resync("BTC-USDT", "test")
    drain(htx)
    htx.on_frame(mbp(30, 29, bids=[[99.0, 1.0]]), 3.0, stream)
    htx.on_frame(snapshot(20, [[99.0, 1.0]], [[101.0, 1.0]]), 3.1, stream)
    [(topic, _, event, _, _)] = drain(htx)
    assert topic == "ws.error" and "older" in json.loads(event)["reason"]
    assert len(htx.session.sent) == 3 and not htx.books["BTC-USDT"].ready
