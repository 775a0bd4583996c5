"""OKX v5 connector against the real recording OKX.* in the shared recordings directory
(../shared/replays; 2022, books with CRC32 checksums, no seqId) and sequenced frames shaped
like today's (seqId/prevSeqId, checksum 0): every trade once, every book equal to an
independent rebuild, every recorded checksum reproduced, and corruption caught."""

from __future__ import annotations

import copy
import json
import zlib

import orjson
import pytest

from config.settings import load_settings
from app.subscriptions import from_recordings
from exchanges.base import Stream
from exchanges.book import L2Book
from exchanges.okx import Okx, checksum, to_native, to_unified
from exchanges.publisher import Publisher
from exchanges.replay import load_recordings
from records import BUY, SELL, Ticker
from tests.support import SentMessages

URL = "wss://ws.okx.com:8443/ws/v5/public"


@pytest.fixture(scope="module")
def recording(replays):
    return load_recordings(replays)["okx"]


@pytest.fixture(scope="module")
def frames(recording) -> list[tuple[float, str]]:
    [connection] = recording.connections
    return connection.received


def new_okx(recording) -> tuple[Okx, Stream]:
    okx = Okx(from_recordings({"okx": recording})["okx"], Publisher("okx"), load_settings({}))
    okx.session = SentMessages()  # type: ignore[assignment]
    [stream] = okx.connections()
    return okx, stream


def drain(okx: Okx) -> list:
    pending, okx.out.pending = okx.out.pending, []
    return pending


def feed(okx: Okx, stream: Stream, frame: str | bytes, ts: float) -> tuple[list, bool]:
    """Like the session: a frame that raises would go to the DLQ."""
    try:
        okx.on_frame(frame, ts, stream)
        rejected = False
    except (ValueError, KeyError) as exc:
        assert "not subscribed" in str(exc)
        rejected = True
    return drain(okx), rejected


class Rebuild:
    """A book of text levels per side, in plain dicts, built from raw frames (not L2Book)."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def load(self, data: dict) -> None:
        self.bids, self.asks = {}, {}
        self.apply(data)

    def apply(self, data: dict) -> None:
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for price, size, *_ in levels:
                if float(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def sorted_text(self, depth: int) -> tuple[list, list]:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:depth]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:depth]
        return bids, asks

    def top(self, depth: int) -> tuple[list, list]:
        bids, asks = self.sorted_text(depth)
        return ([(float(p), float(s)) for p, s in bids], [(float(p), float(s)) for p, s in asks])

    def crc(self) -> int:
        """OKX's checksum, written out again here from OKX's documented rule."""
        bids, asks = self.sorted_text(25)
        fields = []
        for i in range(25):
            if i < len(bids):
                fields += bids[i]
            if i < len(asks):
                fields += asks[i]
        value = zlib.crc32(":".join(fields).encode())
        return value - 2**32 if value >= 2**31 else value

    def snapshot_frame(self, inst_id: str, ts: str) -> str:
        bids, asks = self.sorted_text(400)
        data = {"asks": [[p, s, "0", "1"] for p, s in asks],
                "bids": [[p, s, "0", "1"] for p, s in bids], "ts": ts, "checksum": self.crc()}
        return json.dumps({"arg": {"channel": "books", "instId": inst_id},
                           "action": "snapshot", "data": [data]})


def test_symbol_mapping_both_ways_with_the_recorded_market_list(recording):
    assert to_native("BTC-USDT") == "BTC-USDT" and to_unified("BTC-USDT") == "BTC-USDT"
    assert to_unified("XBT-USD") == "BTC-USD"
    for derivative in ("BTC-USD-220527", "UNI-USD-SWAP"):
        with pytest.raises(ValueError):
            to_unified(derivative)
    spot = json.loads(recording.rest[0].body)["data"]
    assert recording.rest[0].url.endswith("instType=SPOT") and len(spot) > 300
    for market in spot:
        unified = to_unified(market["instId"])
        assert unified == f"{market['baseCcy']}-{market['quoteCcy']}"
        assert to_native(unified) == market["instId"]


def test_subscription_and_heartbeat(recording):
    okx, stream = new_okx(recording)
    assert stream.url == URL == recording.connections[0].url
    assert stream.symbols == ["BTC-USDT"]  # the recording's futures and swap are skipped
    [request] = [orjson.loads(m) for m in stream.subscribe]
    assert request == {"op": "subscribe", "args": [
        {"channel": "books", "instId": "BTC-USDT"}, {"channel": "tickers", "instId": "BTC-USDT"},
        {"channel": "trades", "instId": "BTC-USDT"}]}
    assert (Okx.ping_interval, Okx.ping_message) == (20.0, "ping")
    okx.on_frame("pong", 1.0, stream)
    okx.on_frame('{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', 1.0,
                 stream)
    assert okx.out.pending == []
    with pytest.raises(ValueError, match="60012"):
        okx.on_frame('{"event":"error","code":"60012","msg":"Invalid request"}', 1.0, stream)


def test_recorded_checksums_are_reproduced_on_every_book_message(frames):
    """The proof that the CRC is right: OKX's own value, on all 87 recorded book messages
    (three instruments, 400-level snapshots and updates), equals ours."""
    books: dict[str, L2Book] = {}
    checked = 0
    for _, frame in frames:
        msg = json.loads(frame)
        if msg.get("arg", {}).get("channel") != "books" or "data" not in msg:
            continue
        data = msg["data"][0]
        book = books.setdefault(msg["arg"]["instId"], L2Book())
        if msg["action"] == "snapshot":
            book.load_text_levels(data["bids"], data["asks"])
        else:
            book.apply_text_levels(data["bids"], data["asks"])
        assert data["checksum"] != 0
        assert checksum(book) == data["checksum"]
        checked += 1
    assert checked == 87 and len(books) == 3


def test_recorded_session_every_trade_once_and_every_book_right(recording, frames):
    okx, stream = new_okx(recording)
    rebuild = Rebuild()
    trades, tickers, rejected, books_seen = [], [], 0, 0
    expected_trades, expected_tickers = [], []
    for ts, frame in frames:
        out, was_rejected = feed(okx, stream, frame, ts)
        msg = json.loads(frame)
        arg = msg.get("arg", {})
        spot = arg.get("instId") == "BTC-USDT"
        rejected += was_rejected
        assert was_rejected == ("data" in msg and not spot)  # foreign markets go to the DLQ
        assert not [t for t, *_ in out if t == "ws.error"]
        books = [v for t, _, v, _, _ in out if t == "orderbook-data.okx"]
        trades += [v for t, _, v, _, _ in out if t == "trade-data.okx"]
        tickers += [v for t, _, v, _, _ in out if t == "ticker-data.okx"]
        if not spot or "data" not in msg:
            assert out == []
            continue
        if arg["channel"] == "books":
            data = msg["data"][0]
            (rebuild.load if msg["action"] == "snapshot" else rebuild.apply)(data)
            assert rebuild.crc() == data["checksum"]
            [book] = books
            assert (book.bids, book.asks) == rebuild.top(20)
            assert book.ts_event == int(data["ts"]) / 1000
            books_seen += 1
        elif arg["channel"] == "trades":
            expected_trades += [(t["tradeId"], float(t["px"]), float(t["sz"]), t["side"],
                                 int(t["ts"]) / 1000) for t in msg["data"]]
        else:
            expected_tickers += [(float(t["last"]), float(t["bidPx"]), float(t["askSz"]),
                                  float(t["vol24h"]), float(t["volCcy24h"])) for t in msg["data"]]
    assert books_seen == 30 and rejected == 61
    assert len(expected_trades) == 21 and len({t[0] for t in expected_trades}) == 21
    assert [(t.trade_id, t.price, t.amount, "buy" if t.side == BUY else "sell", t.ts_event)
            for t in trades] == expected_trades
    assert {t.side for t in trades} == {BUY, SELL}
    assert [(t.last, t.bid, t.ask_size, t.volume_24h, t.quote_volume_24h)
            for t in tickers] == expected_tickers and len(tickers) == 9
    assert tickers[0] == Ticker("okx", "BTC-USDT", 1652459224.956, tickers[0].ts_recv, 30236.0,
                                30228.6, 0.23393, 30228.7, 1.55896972, 17602.13085371,
                                525802090.62716611)


def spot_books(frames) -> list[tuple[float, str]]:
    return [(ts, f) for ts, f in frames
            if '"books"' in f and '"BTC-USDT"' in f and '"action"' in f]


def check_recovery(okx: Okx, stream: Stream, book_frames: list, broken_at: int,
                   rebuild_all: list[Rebuild]) -> None:
    """After a resync at message `broken_at`: nothing published until a fresh snapshot;
    after it, every book equals the rebuild again."""
    resume = broken_at + 3
    for ts, frame in book_frames[broken_at + 1:resume]:
        out, _ = feed(okx, stream, frame, ts)
        assert out == []  # updates while waiting for the snapshot: nothing published
    assert okx.session.sent == [
        '{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}',
        '{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}']
    # the server answers the resubscription with a fresh snapshot of the book as it is now
    ts = json.loads(book_frames[resume - 1][1])["data"][0]["ts"]
    out, _ = feed(okx, stream, rebuild_all[resume - 1].snapshot_frame("BTC-USDT", ts), 9.0)
    [(_, _, book, _, _)] = out
    assert (book.bids, book.asks) == rebuild_all[resume - 1].top(20)
    for i in range(resume, len(book_frames)):
        out, _ = feed(okx, stream, book_frames[i][1], book_frames[i][0])
        [(topic, _, book, _, _)] = out
        assert topic == "orderbook-data.okx"
        assert (book.bids, book.asks) == rebuild_all[i].top(20)


def rebuilds_after_each(book_frames) -> list[Rebuild]:
    rebuild, states = Rebuild(), []
    for _, frame in book_frames:
        msg = json.loads(frame)
        (rebuild.load if msg["action"] == "snapshot" else rebuild.apply)(msg["data"][0])
        states.append(copy.deepcopy(rebuild))
    return states


def test_corrupted_checksum_resyncs_until_a_fresh_snapshot(recording, frames):
    book_frames = spot_books(frames)
    states = rebuilds_after_each(book_frames)
    okx, stream = new_okx(recording)
    broken_at = 10
    for i, (ts, frame) in enumerate(book_frames[:broken_at + 1]):
        if i == broken_at:
            msg = json.loads(frame)
            msg["data"][0]["checksum"] += 1
            frame = json.dumps(msg)
        out, _ = feed(okx, stream, frame, ts)
        if i < broken_at:
            assert [t for t, *_ in out] == ["orderbook-data.okx"]
    [(topic, key, event, _, _)] = out
    assert (topic, key) == ("ws.error", b"okx:BTC-USDT")
    event = json.loads(event)
    assert event["kind"] == "resync" and "checksum mismatch" in event["reason"]
    assert not okx.books["BTC-USDT"].ready
    check_recovery(okx, stream, book_frames, broken_at, states)


def test_a_dropped_update_is_caught_by_the_next_checksum(recording, frames):
    book_frames = spot_books(frames)
    states = rebuilds_after_each(book_frames)
    okx, stream = new_okx(recording)
    dropped = 12
    for i, (ts, frame) in enumerate(book_frames[:dropped + 2]):
        if i == dropped:
            continue  # lost on the way
        out, _ = feed(okx, stream, frame, ts)
    [(topic, _, event, _, _)] = out
    assert topic == "ws.error" and "checksum mismatch" in json.loads(event)["reason"]
    check_recovery(okx, stream, book_frames, dropped + 1, states)


def sequenced(action: str, seq: int, prev: int, bids, asks, checksum_value: int = 0) -> str:
    """A `books` message as OKX sends it in 2026: seqId chaining, checksum 0."""
    return json.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": action,
                       "data": [{"asks": asks, "bids": bids, "ts": str(1790000000000 + seq),
                                 "checksum": checksum_value, "prevSeqId": prev, "seqId": seq}]})


def test_sequence_chaining_without_checksums(recording):
    okx, stream = new_okx(recording)
    okx.on_frame(sequenced("update", 99, 98, [["100", "1", "0", "1"]], []), 1.0, stream)
    [(topic, _, event, _, _)] = drain(okx)  # an update before any snapshot
    assert topic == "ws.error" and "before any snapshot" in json.loads(event)["reason"]
    okx.session.sent.clear()
    okx.on_frame(sequenced("snapshot", 100, -1, [["100", "1", "0", "1"], ["99.5", "2", "0", "1"]],
                           [["101", "3", "0", "1"]]), 2.0, stream)
    okx.on_frame(sequenced("update", 105, 100, [["100", "0", "0", "0"]],
                           [["100.5", "0.5", "0", "1"]]), 3.0, stream)
    okx.on_frame(sequenced("update", 105, 105, [], []), 4.0, stream)  # keepalive
    books = [v for _, _, v, _, _ in drain(okx)]
    assert [(b.bids, b.asks, b.sequence) for b in books] == [
        ([(100.0, 1.0), (99.5, 2.0)], [(101.0, 3.0)], 100),
        ([(99.5, 2.0)], [(100.5, 0.5), (101.0, 3.0)], 105),
        ([(99.5, 2.0)], [(100.5, 0.5), (101.0, 3.0)], 105)]
    # seqId 106..109 lost: the next update's prevSeqId is 109, not 105
    okx.on_frame(sequenced("update", 112, 109, [["99", "1", "0", "1"]], []), 5.0, stream)
    [(topic, _, event, _, _)] = drain(okx)
    assert topic == "ws.error" and "prevSeqId 109" in json.loads(event)["reason"]
    assert [json.loads(m)["op"] for m in okx.session.sent] == ["unsubscribe", "subscribe"]
    okx.on_frame(sequenced("update", 113, 112, [["99", "1", "0", "1"]], []), 6.0, stream)
    assert drain(okx) == []  # still waiting for the snapshot
    okx.on_frame(sequenced("snapshot", 120, -1, [["98", "1", "0", "1"]], [["99", "1", "0", "1"]]),
                 7.0, stream)
    [(_, _, book, _, _)] = drain(okx)
    assert (book.bids, book.asks, book.sequence) == ([(98.0, 1.0)], [(99.0, 1.0)], 120)
    # a crossed book is never published either
    okx.session.sent.clear()
    okx.on_frame(sequenced("update", 121, 120, [["99.5", "1", "0", "1"]], []), 8.0, stream)
    [(topic, _, event, _, _)] = drain(okx)
    assert topic == "ws.error" and "crossed" in json.loads(event)["reason"]
    assert len(okx.session.sent) == 2


def test_checksum_when_one_side_is_shorter():
    """Interleave level by level, then the longer side's rest alone (OKX's documented rule)."""
    book = L2Book()
    book.load_text_levels([["100.10", "1.000"], ["100.0", "2"], ["99.5", "0.5"]],
                          [["100.2", "3.50"]])
    text = "100.10:1.000:100.2:3.50:100.0:2:99.5:0.5"
    signed = zlib.crc32(text.encode())
    signed = signed - 2**32 if signed >= 2**31 else signed
    assert checksum(book) == signed
    book.load_text_levels([["1", "1"]], [["2", "1"], ["3", "1"], ["4", "1"]])
    rebuild = Rebuild()
    rebuild.load({"bids": [["1", "1"]], "asks": [["2", "1"], ["3", "1"], ["4", "1"]]})
    assert checksum(book) == rebuild.crc() == zlib.crc32(b"1:1:2:1:3:1:4:1") - (
        2**32 if zlib.crc32(b"1:1:2:1:3:1:4:1") >= 2**31 else 0)
    book.load_text_levels([], [])
    assert checksum(book) == 0  # crc32 of the empty string


def test_events(recording):
    okx, stream = new_okx(recording)
    okx.on_frame('{"event":"notice","code":"64008","msg":"The connection will soon be closed '
                 'for a service upgrade.","connId":"a4d3ae55"}', 1.0, stream)
    okx.on_frame('{"event":"channel-conn-count","channel":"books","connCount":"2",'
                 '"connId":"a4d3ae55"}', 1.0, stream)
    okx.on_frame('{"event":"unsubscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', 1.0,
                 stream)
    assert okx.out.pending == []
    with pytest.raises(ValueError, match="unexpected"):
        okx.on_frame('{"event":"login","code":"0"}', 1.0, stream)
