"""Bitfinex v2: the real recording (sequence numbers, no checksums) and a checksummed session
fixture (tests/fixtures/bitfinex/checksummed_session.jsonl, documented shapes: `cs`, `te`,
`tu`), through the connector.

Books are rebuilt here independently (Decimal price -> (price text, amount text)) and the
checksum is recomputed here from the raw tokens, read with the stdlib (`parse_float=str`).
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from replay.subscriptions import from_recordings
from exchanges.bitfinex import URL, Bitfinex, to_native, to_unified
from exchanges.book import L2Book
from exchanges.publisher import Publisher
from replay.recordings import load_recordings
from records import BUY, SELL, OrderBook, Ticker, Trade
from tests.support import SentMessages, FIXTURES

SESSION = FIXTURES / "bitfinex" / "checksummed_session.jsonl"


def raw(frame: str) -> Any:
    """A frame with every number kept as its text."""
    return json.loads(frame, parse_float=str, parse_int=str)


class RebuiltBook:
    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def apply(self, price: str, count: str, amount: str) -> None:
        side = self.asks if amount.startswith("-") else self.bids
        if count == "0":
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = (price, amount)

    def sorted_bids(self) -> list[tuple[str, str]]:
        return [self.bids[p] for p in sorted(self.bids, reverse=True)]

    def sorted_asks(self) -> list[tuple[str, str]]:
        return [self.asks[p] for p in sorted(self.asks)]

    def levels(self) -> list[list[tuple[float, tuple[float, str, str]]]]:
        """Every level as the connector's book keeps it: (price, (size, price text, amount
        text)), best first; the floats are `float()` of the texts."""
        return [[(float(p), (abs(float(a)), p, a)) for p, a in side]
                for side in (self.sorted_bids(), self.sorted_asks())]

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return ([(float(p), abs(float(a))) for p, a in self.sorted_bids()[:n]],
                [(float(p), abs(float(a))) for p, a in self.sorted_asks()[:n]])

    def checksum(self) -> int:
        bids, asks = self.sorted_bids()[:25], self.sorted_asks()[:25]
        parts = []
        for i in range(25):
            parts += list(bids[i]) if i < len(bids) else []
            parts += list(asks[i]) if i < len(asks) else []
        value = zlib.crc32(":".join(parts).encode())
        return value - 2**32 if value >= 2**31 else value


def new_connector(subscriptions: dict[str, set[str]]) -> Bitfinex:
    connector = Bitfinex(subscriptions, Publisher("bitfinex"), load_settings({}))
    connector.session = SentMessages()  # type: ignore[assignment]
    return connector


def recorded_subscriptions(recording: Any) -> dict[str, set[str]]:
    return from_recordings({"bitfinex": recording})["bitfinex"]


class Checker:
    """Feeds frames to a connector and checks every published book against the rebuild: a
    record after every (proven) change of the top N levels, none when they did not change."""

    def __init__(self, connector: Bitfinex) -> None:
        self.connector = connector
        self.stream = connector.connections()[0]
        self.channels: dict[int, tuple[str, str]] = {}  # chanId -> (channel, native symbol)
        self.books: dict[str, RebuiltBook] = {}
        self.dirty: dict[str, bool] = {}
        self.published: dict[str, tuple] = {}  # symbol -> the top of the last record published
        self.checksummed = False
        self.counts = {"books": 0, "checksums": 0}

    def feed(self, frames: list[str]) -> None:
        for frame in frames:
            start = len(self.connector.out.pending)
            self.connector.on_frame(frame, 1.0, self.stream)
            self.check(raw(frame), start)

    def check(self, msg: Any, start: int) -> None:
        published = [r for r in self.connector.out.pending[start:]
                     if r[0] == "orderbook-data.bitfinex"]
        if isinstance(msg, dict):
            if msg.get("event") == "subscribed":
                self.channels[int(msg["chanId"])] = (msg["channel"], msg["symbol"])
            if msg.get("event") == "conf":
                self.checksummed = bool(int(msg["flags"]) & 131072)
            return
        channel, native = self.channels.get(int(msg[0]), ("?", "?"))
        if channel != "book" or msg[1] == "hb":
            assert published == []
            return
        symbol = to_unified(native)
        if msg[1] == "cs":
            if self.books[symbol].checksum() != int(msg[2]):
                return  # corrupted by the caller, who checks the outcome
            self.counts["checksums"] += 1
            if not self.dirty.pop(symbol, False):
                assert published == []
                return
        elif isinstance(msg[1][0], list):
            book = self.books[symbol] = RebuiltBook()
            self.dirty.pop(symbol, None)
            for level in msg[1]:
                book.apply(*level)
        else:
            self.books[symbol].apply(*msg[1])
            if self.checksummed:
                self.dirty[symbol] = True
                assert published == []  # not before its checksum proves it
                return
        want = self.books[symbol].top(self.connector.depth)
        book = self.connector.books[symbol]
        assert (book.top_bids(self.connector.depth), book.top_asks(self.connector.depth)) == want
        assert [book.bids.items(), book.asks.items()] == self.books[symbol].levels()
        self.counts["books"] += 1
        if not published and not isinstance(msg[1][0], list):  # a snapshot always publishes
            assert self.published[symbol] == want  # nothing within the top N changed
            return
        [(_, key, record, _, _)] = published
        assert key == f"bitfinex:{symbol}".encode()
        assert isinstance(record, OrderBook)
        assert (record.bids, record.asks) == want
        self.published[symbol] = want


def errors(connector: Bitfinex, start: int = 0) -> list[dict]:
    return [json.loads(r[2]) for r in connector.out.pending[start:] if r[0] == "ws.error"]


def published(connector: Bitfinex, topic: str, start: int = 0) -> list[Any]:
    return [r[2] for r in connector.out.pending[start:] if r[0] == topic]


# -- symbols and subscriptions ------------------------------------------------------------------


def test_symbols() -> None:
    assert to_native("BTC-USD") == "tBTCUSD"
    assert to_native("BTC-USDT") == "tBTCUST"
    assert to_native("TESTBTC-TESTUSD") == "tTESTBTC:TESTUSD"
    assert to_native("DOGE-USD") == "tDOGE:USD"
    assert to_unified("tBTCUSD") == "BTC-USD"
    assert to_unified("tBTCUST") == "BTC-USDT"
    assert to_unified("tTESTBTC:TESTUSD") == "TESTBTC-TESTUSD"
    assert to_unified("tBCHN:USD") == "BCH-USD"
    with pytest.raises(ValueError):
        to_unified("tBTCUSDT")


def test_conf_first_and_25_channels_per_connection() -> None:
    symbols = {f"A{i:02d}-USD": {"trades", "book", "ticker"} for i in range(10)}
    streams = new_connector(symbols).connections()
    assert [s.url for s in streams] == [URL, URL]
    for stream in streams:
        assert json.loads(stream.subscribe[0]) == {"event": "conf", "flags": 65536 + 131072}
    assert [len(s.subscribe) - 1 for s in streams] == [25, 5]
    book = next(json.loads(m) for m in streams[0].subscribe if '"book"' in m)
    assert book == {"event": "subscribe", "channel": "book", "symbol": "tA00USD", "prec": "P0",
                    "freq": "F0", "len": "25"}


# -- the real recording -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording(replays: Path) -> Any:
    return load_recordings(replays)["bitfinex"]


def test_recording_books_trades_tickers(recording: Any) -> None:
    frames = [f for _, f in recording.connections[0].received]
    connector = new_connector(recorded_subscriptions(recording))
    checker = Checker(connector)
    checker.feed(frames)
    messages = [raw(f) for f in frames]
    book_ids = {int(m["chanId"]) for m in messages
                if isinstance(m, dict) and m.get("channel") == "book"}
    book_messages = [m for m in messages if isinstance(m, list) and int(m[0]) in book_ids
                     and m[1] != "hb"]
    assert checker.counts["books"] == len(book_messages) == 514
    assert errors(connector) == [] and published(connector, "ws.dlq") == []

    # every trade of the snapshots exactly once, oldest first, with the taker's side
    trade_ids = {int(m["chanId"]): m["symbol"] for m in messages
                 if isinstance(m, dict) and m.get("channel") == "trades"}
    expected = [(to_unified(trade_ids[int(m[0])]), t) for m in messages
                if isinstance(m, list) and int(m[0]) in trade_ids and isinstance(m[1], list)
                for t in reversed(m[1])]
    trades = published(connector, "trade-data.bitfinex")
    assert len(trades) == len(expected) == 210
    for trade, (symbol, (trade_id, mts, amount, price)) in zip(trades, expected, strict=True):
        assert isinstance(trade, Trade)
        assert (trade.symbol, trade.trade_id, trade.ts_event, trade.price, trade.amount) == (
            symbol, trade_id, int(mts) / 1000.0, float(price), abs(float(amount)))
        assert trade.side == (SELL if amount.startswith("-") else BUY)
    assert {t.side for t in trades} == {BUY, SELL}
    assert {t.symbol for t in trades} >= {"TESTBTC-TESTUSD", "BFT-USD"}

    ticker_ids = {int(m["chanId"]): m["symbol"] for m in messages
                  if isinstance(m, dict) and m.get("channel") == "ticker"}
    raw_tickers = [m for m in messages if isinstance(m, list) and int(m[0]) in ticker_ids
                   and m[1] != "hb"]
    tickers = published(connector, "ticker-data.bitfinex")
    assert len(tickers) == len(raw_tickers) == 11
    for ticker, m in zip(tickers, raw_tickers, strict=True):
        t = m[1]
        assert isinstance(ticker, Ticker) and ticker.symbol == to_unified(ticker_ids[int(m[0])])
        assert (ticker.bid, ticker.bid_size, ticker.ask, ticker.ask_size, ticker.last,
                ticker.volume_24h) == tuple(float(t[i]) for i in (0, 1, 2, 3, 6, 7))


def renumber(frames: list[str], first: int) -> list[str]:
    """Give channel messages consecutive sequence numbers from `first` (as the server would)."""
    out = []
    for frame in frames:
        if frame.startswith("["):  # replace the last number only: the rest stays as sent
            frame = f"{frame[:frame.rindex(',') + 1]}{first}]"
            first += 1
        out.append(frame)
    return out


def text_snapshot(chan_id: int, book: RebuiltBook, sequence: int) -> str:
    levels = ",".join(f"[{p},1,{a}]" for p, a in book.sorted_bids() + book.sorted_asks())
    return f"[{chan_id},[{levels}],{sequence}]"


def test_recording_sequence_gap_resyncs_every_book_then_snapshots_restore(recording: Any) -> None:
    frames = [f for _, f in recording.connections[0].received]
    messages = [raw(f) for f in frames]
    book_channels = {int(m["chanId"]): m["symbol"] for m in messages
                     if isinstance(m, dict) and m.get("channel") == "book"}
    # drop the 20th book update
    updates = [i for i, m in enumerate(messages) if isinstance(m, list)
               and int(m[0]) in book_channels and isinstance(m[1], list)
               and not isinstance(m[1][0], list)]
    lost = updates[19]
    connector = new_connector(recorded_subscriptions(recording))
    checker = Checker(connector)
    checker.feed(frames[:lost])
    live = {c: s for c, s in checker.channels.items() if s[0] == "book"}
    assert len(live) >= 4
    start = len(connector.out.pending)
    connector.on_frame(frames[lost + 1], 2.0, checker.stream)  # its sequence skips one
    found = errors(connector, start)
    assert sorted(e["symbol"] for e in found) == sorted(to_unified(s) for _, s in live.values())
    assert all("sequence gap" in e["reason"] for e in found)
    sent = connector.session.json  # type: ignore[union-attr]
    assert [m for m in sent if m["event"] == "unsubscribe"] == [
        {"event": "unsubscribe", "chanId": c} for c in live]
    assert sorted(m["symbol"] for m in sent if m["event"] == "subscribe") == sorted(
        s for _, s in live.values())

    # Until the answers arrive, the old channels' messages publish nothing.
    after = len(connector.out.pending)
    following = lost + 2 + 20
    for frame in frames[lost + 2:following]:
        connector.on_frame(frame, 2.0, checker.stream)
    assert not [b for b in published(connector, "orderbook-data.bitfinex", after)
                if to_native(b.symbol) in {s for _, s in live.values()}]

    # The server answers: new chanIds and snapshots of the true books (rebuilt here from
    # every recorded message, the lost one included); the rest of the recording continues
    # on the new chanIds, with its sequence numbers continuing.
    truth: dict[int, RebuiltBook] = {}
    for m in messages[:following]:
        if isinstance(m, list) and int(m[0]) in live and isinstance(m[1], list):
            if isinstance(m[1][0], list):
                truth[int(m[0])] = RebuiltBook()
                for level in m[1]:
                    truth[int(m[0])].apply(*level)
            else:
                truth[int(m[0])].apply(*m[1])
    new_ids = {old: 900000 + i for i, old in enumerate(live)}
    answer = []
    for old, new in new_ids.items():
        answer.append(json.dumps({"event": "unsubscribed", "status": "OK", "chanId": old}))
        answer.append(json.dumps({"event": "subscribed", "channel": "book", "chanId": new,
                                  "symbol": live[old][1], "prec": "P0", "freq": "F0",
                                  "len": "25"}))
        answer.append(text_snapshot(new, truth[old], 0))
    rest = []
    for frame in frames[following:]:
        msg = json.loads(frame)
        if isinstance(msg, list) and msg[0] in new_ids:
            frame = frame.replace(f"[{msg[0]},", f"[{new_ids[msg[0]]},", 1)
        rest.append(frame)
    sequence = json.loads(frames[following - 1])[-1] + 1
    before = dict(checker.counts)
    checker.feed(renumber(answer + rest, sequence))
    assert len(errors(connector, start)) == len(live)  # no new error
    assert checker.counts["books"] - before["books"] >= len(live) + 10
    for old in new_ids:
        symbol = to_unified(live[old][1])
        assert (connector.books[symbol].top_bids(25), connector.books[symbol].top_asks(25)) == \
            checker.books[symbol].top(25)


# -- the checksummed session fixture ------------------------------------------------------------


def session_frames() -> list[str]:
    return SESSION.read_text().splitlines()


def test_checksummed_session_books_trades_ticker() -> None:
    connector = new_connector({"BTC-USDT": {"book", "trades", "ticker"}})
    checker = Checker(connector)
    frames = session_frames()
    checker.feed(frames)
    checksums = [m for m in map(raw, frames) if isinstance(m, list) and m[1] == "cs"]
    assert len(checksums) == 5 and checker.counts == {"books": 5, "checksums": 5}
    assert errors(connector) == [] and published(connector, "ws.dlq") == []
    # the checksum covers 25 bids of the 27 sent: the cut-off and the text both matter
    book = connector.books["BTC-USDT"]
    assert len(book.bids) == 27 and book.text_bids(1)[0][1:] == ("7254.8", "0.5")
    assert book.bids[7254.6][1:] == ("7254.6", "0.00001")  # not 1e-05

    trades = published(connector, "trade-data.bitfinex")
    assert [(t.trade_id, t.side, t.price, t.amount) for t in trades] == [
        ("401597390", BUY, 7254.6, 1.5), ("401597394", SELL, 7254.7, 0.1),
        ("401597395", BUY, 7255.0, 0.005),
        ("401597396", SELL, 7254.8, 0.25), ("401597397", BUY, 7255.2, 0.75)]  # `tu` ignored
    # a snapshot after a resubscription adds nothing already published
    chan = next(c for c, v in connector.channels.items() if v.kind == "trades")
    connector.on_frame(f"[{chan},[[401597397,1574694479100,0.75,7255.2],"
                       f"[401597396,1574694479000,-0.25,7254.8]],19]", 2.0, checker.stream)
    assert len(published(connector, "trade-data.bitfinex")) == 5

    tickers = published(connector, "ticker-data.bitfinex")
    assert [(t.symbol, t.bid, t.bid_size, t.ask, t.ask_size, t.last, t.volume_24h)
            for t in tickers] == [
        ("BTC-USDT", 7254.6, 12.5, 7255.0, 3.25, 7254.7, 5191.36754297),
        ("BTC-USDT", 7254.8, 0.5, 7255.2, 0.00002, 7255.2, 5192.11754297)]


def test_corrupt_checksum_resyncs_then_snapshot_restores() -> None:
    frames = session_frames()
    cs = [i for i, f in enumerate(frames) if '"cs"' in f]
    bad = cs[2]  # after the ask at 7255 was deleted
    msg = json.loads(frames[bad])
    corrupted = json.dumps([msg[0], "cs", msg[2] + 1, msg[3]], separators=(",", ":"))
    connector = new_connector({"BTC-USDT": {"book", "trades", "ticker"}})
    checker = Checker(connector)
    checker.feed(frames[:bad])
    start = len(connector.out.pending)
    connector.on_frame(corrupted, 3.0, checker.stream)
    [error] = errors(connector, start)
    assert (error["symbol"], error["kind"]) == ("BTC-USDT", "resync")
    assert f"bitfinex sent {msg[2] + 1}" in error["reason"]
    assert published(connector, "orderbook-data.bitfinex", start) == []
    assert connector.session.json == [  # type: ignore[union-attr]
        {"event": "unsubscribe", "chanId": 17082},
        {"event": "subscribe", "channel": "book", "symbol": "tBTCUST", "prec": "P0",
         "freq": "F0", "len": "25"}]
    # later messages of the old channel are ignored; the others go on
    for frame in frames[bad + 1:]:
        connector.on_frame(frame, 4.0, checker.stream)
    assert published(connector, "orderbook-data.bitfinex", start) == []
    assert len(published(connector, "trade-data.bitfinex", start)) == 2

    # the answer: a new channel with a snapshot of the true book and its checksum, then two
    # updates and theirs
    truth = RebuiltBook()
    for m in map(raw, frames):
        if isinstance(m, list) and m[0] == "17082" and isinstance(m[1], list):
            for level in (m[1] if isinstance(m[1][0], list) else [m[1]]):
                truth.apply(*level)
    answer = [json.dumps({"event": "unsubscribed", "status": "OK", "chanId": 17082}),
              json.dumps({"event": "subscribed", "channel": "book", "chanId": 17099,
                          "symbol": "tBTCUST", "prec": "P0", "freq": "F0", "len": "25"}),
              text_snapshot(17099, truth, 0), f'[17099,"cs",{truth.checksum()},0]',
              "[17099,[7254.1,1,0.25],0]", "[17099,[7261.25,0,-1],0]"]
    truth.apply("7254.1", "1", "0.25")
    truth.apply("7261.25", "0", "-1")
    answer.append(f'[17099,"cs",{truth.checksum()},0]')
    after = len(connector.out.pending)
    checker.feed(renumber(answer, json.loads(frames[-1])[-1] + 1))
    assert errors(connector, after) == []
    assert checker.counts["checksums"] >= 2
    books = published(connector, "orderbook-data.bitfinex", after)
    assert len(books) == 2  # the snapshot, then the two updates once their checksum proved them
    assert (books[-1].bids, books[-1].asks) == truth.top(20)


def test_dropped_message_in_checksummed_session_is_detected() -> None:
    frames = session_frames()
    dropped = next(i for i, f in enumerate(frames) if f.startswith("[17082,[7254.8"))
    connector = new_connector({"BTC-USDT": {"book", "trades", "ticker"}})
    checker = Checker(connector)
    checker.feed(frames[:dropped])
    start = len(connector.out.pending)
    for frame in frames[dropped + 1:]:
        connector.on_frame(frame, 5.0, checker.stream)
    [error] = errors(connector, start)
    assert error["symbol"] == "BTC-USDT" and "sequence gap: 4 then 6" in error["reason"]
    assert published(connector, "orderbook-data.bitfinex", start) == []  # nothing unproven
    assert len(published(connector, "trade-data.bitfinex", start)) == 2  # trades go on


@pytest.mark.parametrize("update", ["[7254.5, 0,1]", "[7254.5,0,1,2]", "[7254.5,0.0,1]",
                                    "[true,1,1]", '[7254.5,1,"1"]', "[7254.5,1,null]",
                                    "[7254.5,false,1]"])
def test_update_that_is_not_three_numbers_is_refused(update: str) -> None:
    """An update's numbers are the ones orjson decoded and its texts are cut from the frame:
    a count whose text is not the decoded integer (a space, `0.0`: the count decides a
    deletion), an extra field, or a value that is no number refuses the frame (the session
    sends it to the DLQ), and the book is left as it was."""
    cut = L2Book()
    cut.apply_counted("[17082,[7255,2,-1.5],5]", [7255, 2, -1.5])
    assert cut.text_asks(5) == [(1.5, "7255", "-1.5")]
    cut.apply_counted("[17082,[7255,0,-1],6]", [7255, 0, -1])
    assert not cut.asks
    frames = session_frames()
    first_update = next(i for i, f in enumerate(frames) if f.startswith("[17082,[7254.8"))
    connector = new_connector({"BTC-USDT": {"book", "trades", "ticker"}})
    checker = Checker(connector)
    checker.feed(frames[:first_update])
    book = connector.books["BTC-USDT"]
    before = (book.text_bids(100), book.text_asks(100))
    with pytest.raises(ValueError):
        connector.on_frame(f"[17082,{update},5]", 2.0, checker.stream)
    assert (book.text_bids(100), book.text_asks(100)) == before
