"""Kraken: the v1 recordings (real, with Kraken's checksums) and v2 fixtures (documented shapes).

Books are rebuilt here independently (plain dicts of price text -> size text, Decimal order,
truncated to the confirmed depth) and Kraken's checksum is recomputed here from that text, so
the connector is checked against the exchange's own checksums, not against itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from replay.subscriptions import from_recordings
from exchanges.kraken import URL_V1, URL_V2, Kraken, recorded_api, to_native, to_unified
from exchanges.publisher import Publisher
from replay.recordings import load_recordings
from replay.server import ReplayServer
from exchanges.session import Session
from records import BUY, SELL, OrderBook, Ticker, Trade
from tests.support import SentMessages, FIXTURES

KRAKEN_FIXTURES = FIXTURES / "kraken"


def fixture(name: str) -> str:
    return (KRAKEN_FIXTURES / name).read_text().strip()


def new_connector(subscriptions: dict[str, set[str]], replay: str = "",
                  depth: int = 20) -> Kraken:
    settings = load_settings({"KCS_REPLAY": replay, "KCS_BOOK_DEPTH": str(depth)} if replay
                             else {"KCS_BOOK_DEPTH": str(depth)})
    connector = Kraken(subscriptions, Publisher("kraken"), settings)
    connector.session = SentMessages()  # type: ignore[assignment]
    return connector


def recorded_subscriptions(recording: Any) -> dict[str, set[str]]:
    return from_recordings({"kraken": recording})["kraken"]


# -- an independent book ------------------------------------------------------------------------


class RebuiltBook:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.published: tuple | None = None  # the top of the last record published

    def apply(self, side: str, price: str, size: str) -> None:
        levels = self.bids if side == "b" else self.asks
        if Decimal(size) == 0:
            levels.pop(price, None)
        else:
            levels[price] = size

    def truncate(self) -> None:
        self.bids = dict(self.sorted_bids()[:self.depth])
        self.asks = dict(self.sorted_asks()[:self.depth])

    def sorted_bids(self) -> list[tuple[str, str]]:
        return sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)

    def sorted_asks(self) -> list[tuple[str, str]]:
        return sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return ([(float(p), float(s)) for p, s in self.sorted_bids()[:n]],
                [(float(p), float(s)) for p, s in self.sorted_asks()[:n]])

    def checksum(self) -> int:
        def text(value: str) -> str:
            return value.replace(".", "").lstrip("0")
        levels = self.sorted_asks()[:10] + self.sorted_bids()[:10]
        return zlib.crc32("".join(text(p) + text(s) for p, s in levels).encode())


def new_records(connector: Kraken, start: int) -> list[tuple[str, Any]]:
    return [(topic, value) for topic, _, value, _, _ in connector.out.pending[start:]]


# -- symbols and API choice ---------------------------------------------------------------------


def test_symbols() -> None:
    assert to_native("BTC-USD") == "BTC/USD"
    assert to_native("BTC-USD", v1=True) == "XBT/USD"
    assert to_native("DOGE-BTC", v1=True) == "XDG/XBT"
    assert to_unified("XBT/USD") == to_unified("BTC/USD") == "BTC-USD"
    assert to_unified("KSM/XBT") == "KSM-BTC"
    with pytest.raises(ValueError):
        to_unified("XBTUSD")


def test_api_follows_the_replayed_recording(tmp_path: Path, replays: Path) -> None:
    assert recorded_api(str(replays)) == "v1"
    assert recorded_api(str(FIXTURES / "replays")) == "v2"
    assert recorded_api(str(tmp_path)) == "v2"  # no Kraken recording: live API
    live = new_connector({"BTC-USD": {"trades", "book", "ticker"}})
    [stream] = live.connections()
    assert stream.url == URL_V2
    sent = [json.loads(m) for m in stream.subscribe]
    assert [m["params"]["channel"] for m in sent] == ["trade", "ticker", "book"]
    assert sent[2]["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 25,
                                 "snapshot": True}
    replaying = new_connector({"BTC-USD": {"trades", "book", "ticker"}}, str(replays))
    streams = replaying.connections()
    assert [s.url for s in streams] == [URL_V1] * 3  # one per channel, as recorded
    assert json.loads(streams[2].subscribe[0]) == {
        "event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "book", "depth": 25}}


# -- v1: the real recordings --------------------------------------------------------------------


def v1_frames(replays: Path) -> tuple[Any, list[tuple[float, str]]]:
    recording = load_recordings(replays)["kraken"]
    frames = [frame for connection in recording.connections for frame in connection.received]
    return recording, frames  # type: ignore[return-value]


def replay_v1(connector: Kraken, frames: list[tuple[float, str]],
              books: dict[str, RebuiltBook], depths: dict[int, int]) -> dict[str, int]:
    """Feed frames; after each book frame check the connector's book and what it published
    against the independent rebuild: a record after every change of the top N levels, none
    when they did not change. Returns counts of what was seen."""
    stream = connector.connections()[2]
    seen = {"books": 0, "checksums": 0}
    for ts, frame in frames:
        start = len(connector.out.pending)
        connector.on_frame(frame, ts, stream)
        msg = json.loads(frame)
        if isinstance(msg, dict):
            if msg.get("event") == "subscriptionStatus" and "depth" in msg["subscription"]:
                depths[msg["channelID"]] = msg["subscription"]["depth"]
            continue
        if not msg[-2].startswith("book"):
            continue
        symbol = to_unified(msg[-1])
        book = books.get(symbol)
        checksum = None
        if "as" in msg[1] or "bs" in msg[1]:
            book = books[symbol] = RebuiltBook(depths[msg[0]])
            for side in ("as", "bs"):
                for price, size, _ in msg[1].get(side, []):
                    book.apply(side[0], price, size)
        else:
            assert book is not None
            for part in msg[1:-2]:
                for key, levels in part.items():
                    if key == "c":
                        checksum = int(levels)
                    else:
                        for level in levels:
                            book.apply(key, level[0], level[1])
        book.truncate()
        published = new_records(connector, start)
        if checksum is not None:
            if book.checksum() != checksum:
                continue  # the caller corrupted this one: it checks the outcome itself
            seen["checksums"] += 1
        want = book.top(connector.depth)
        live = connector.books[symbol]
        assert (live.top_bids(connector.depth), live.top_asks(connector.depth)) == want
        seen["books"] += 1
        if not published:
            assert book.published == want  # nothing within the top N changed
            continue
        [(topic, record)] = published
        assert topic == "orderbook-data.kraken"
        assert isinstance(record, OrderBook) and record.symbol == symbol
        assert (record.bids, record.asks) == want
        book.published = want
    return seen


def test_v1_recording_checksums_verify_and_books_match(replays: Path) -> None:
    recording, frames = v1_frames(replays)
    connector = new_connector(recorded_subscriptions(recording), str(replays))
    assert connector.v1
    books: dict[str, RebuiltBook] = {}
    seen = replay_v1(connector, frames, books, {})
    # every book message: 10 snapshots and 1434 updates, each with a checksum that the
    # independent rebuild reproduces; the connector agreed with every one
    assert seen == {"books": 1444, "checksums": 1434}
    assert not [r for r in connector.out.pending if r[0] in ("ws.error", "ws.dlq")]
    assert connector.book_depths["XMR-USD"] == 1000  # from the subscription status

    tickers = [(json.loads(f)) for _, f in frames if '"ticker",' in f and f.startswith("[")]
    got = [r[2] for r in connector.out.pending if r[0] == "ticker-data.kraken"]
    assert len(got) == len(tickers) == 9
    for raw, ticker in zip(tickers, got, strict=True):
        t = raw[1]
        assert isinstance(ticker, Ticker) and ticker.symbol == to_unified(raw[-1])
        assert (ticker.last, ticker.bid, ticker.bid_size, ticker.ask, ticker.ask_size) == (
            float(t["c"][0]), float(t["b"][0]), float(t["b"][2]), float(t["a"][0]),
            float(t["a"][2]))
        assert ticker.volume_24h == float(t["v"][1])
        assert ticker.quote_volume_24h == pytest.approx(float(t["v"][1]) * float(t["p"][1]))


def _first_mismatch_without(frames: list[tuple[float, str]], dropped: int, pair: str,
                            book: RebuiltBook) -> int:
    """Index of the first checksum of `pair` after `dropped` that a book missing that update
    fails."""
    missing = RebuiltBook(book.depth)
    missing.bids, missing.asks = dict(book.bids), dict(book.asks)
    for index in range(dropped + 1, len(frames)):
        m = json.loads(frames[index][1])
        if not (isinstance(m, list) and m[-1] == pair and m[-2].startswith("book")):
            continue
        checksum = None
        for part in m[1:-2]:
            for key, levels in part.items():
                if key == "c":
                    checksum = int(levels)
                else:
                    for level in levels:
                        missing.apply(key, level[0], level[1])
        missing.truncate()
        if checksum is not None and missing.checksum() != checksum:
            return index
    raise AssertionError("the dropped update never shows")


def _update_that_moves_the_top(frames: list[tuple[float, str]], pair: str,
                               after: int) -> int:
    """Index of the `after`-th or later update of `pair` that carries a checksum."""
    count = 0
    for index, (_, frame) in enumerate(frames):
        if frame.startswith("[") and frame.endswith(f'"book-1000","{pair}"]') and '"c":' in frame:
            count += 1
            if count >= after:
                return index
    raise AssertionError(f"no update for {pair}")


@pytest.mark.parametrize("fault", ["corrupt checksum", "drop update"])
def test_v1_fault_resyncs_then_fresh_snapshot_restores(replays: Path, fault: str) -> None:
    recording, frames = v1_frames(replays)
    pair, symbol = "XMR/USD", "XMR-USD"
    index = _update_that_moves_the_top(frames, pair, 20)
    connector = new_connector(recorded_subscriptions(recording), str(replays))
    books: dict[str, RebuiltBook] = {}
    depths: dict[int, int] = {}
    replay_v1(connector, frames[:index], books, depths)
    before = len(connector.out.pending)

    ts, frame = frames[index]
    msg = json.loads(frame)
    if fault == "corrupt checksum":
        msg[-3]["c"] = str((int(msg[-3]["c"]) + 1) % 2**32)
        failed_at = index
        faulty = [(ts, json.dumps(msg, separators=(",", ":")))]
    else:
        # Drop this update. The loss shows at the first later checksum of the pair that
        # differs without it (updates that leave the top 10 alone cannot show it): find it
        # here, independently, then feed everything up to it.
        failed_at = _first_mismatch_without(frames, index, pair, books[symbol])
        faulty = frames[index + 1:failed_at + 1]
    replay_v1(connector, faulty, books, depths)
    errors = [json.loads(v) for t, v in new_records(connector, before) if t == "ws.error"]
    assert [(e["symbol"], e["kind"]) for e in errors] == [(symbol, "resync")]
    assert "checksum mismatch" in errors[0]["reason"]
    assert not [r for t, r in new_records(connector, before)
                if t == "orderbook-data.kraken" and r.symbol == symbol]  # nothing inconsistent
    assert connector.session.json[-2:] == [  # type: ignore[union-attr]
        {"event": "unsubscribe", "pair": [pair], "subscription": {"name": "book", "depth": 1000}},
        {"event": "subscribe", "pair": [pair], "subscription": {"name": "book", "depth": 1000}}]

    # Updates before the new snapshot are ignored; the server's answer is a fresh snapshot
    # (here: the true book at that point, in v1 snapshot form), and every later update checks.
    truth = RebuiltBook(1000)
    for _, f in frames[:failed_at + 1]:
        m = json.loads(f)
        if isinstance(m, list) and m[-1] == pair and m[-2].startswith("book"):
            for part in m[1:-2]:
                for key, levels in part.items():
                    if key != "c":
                        for level in levels:
                            truth.apply(key[0], level[0], level[1])
            truth.truncate()
    channel_id = msg[0]
    snapshot = [channel_id, {"as": [[p, s, "1618678140.000000"] for p, s in truth.sorted_asks()],
                             "bs": [[p, s, "1618678140.000000"] for p, s in truth.sorted_bids()]},
                "book-1000", pair]
    rest = [(ts, json.dumps(snapshot, separators=(",", ":")))] + frames[failed_at + 1:]
    after = len(connector.out.pending)
    seen = replay_v1(connector, rest, books, depths)
    assert seen["checksums"] > 100
    assert not [r for r in connector.out.pending[after:] if r[0] in ("ws.error", "ws.dlq")]
    assert (books[symbol].top(connector.depth)) == (
        connector.books[symbol].top_bids(connector.depth),
        connector.books[symbol].top_asks(connector.depth))


def test_v1_replay_through_the_session(tmp_path: Path, replays: Path) -> None:
    """The v1 recordings through the real session and replay server: the connector opens
    the v1 URL three times and gets all three recorded connections."""
    directory = tmp_path / "replay"
    directory.mkdir()
    for path in replays.glob("KRAKEN.*"):
        shutil.copy(path, directory / path.name)

    class Collect:
        def __init__(self) -> None:
            self.topics: list[str] = []

        async def send(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> Any:
            self.topics.append(topic)
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    async def run() -> tuple[list[str], bool]:
        recordings = load_recordings(directory)
        server = ReplayServer(recordings)
        await server.start()
        producer = Collect()
        settings = load_settings({"KCS_REPLAY": str(directory)})
        connector = Kraken(recorded_subscriptions(recordings["kraken"]),
                           Publisher("kraken", producer), settings)
        session = Session(connector, settings, server.base_url)
        await session.start()
        try:
            for _ in range(200):
                if server.finished and len(producer.topics) >= 1363:
                    break
                await asyncio.sleep(0.05)
        finally:
            await session.stop()
            await server.stop()
        return producer.topics, server.finished

    topics, finished = asyncio.run(run())
    assert finished
    # one record per change of the top 20 levels: 1354 of the 1444 book frames
    assert topics.count("orderbook-data.kraken") == 1354
    assert topics.count("ticker-data.kraken") == 9
    assert "ws.error" not in topics and "ws.dlq" not in topics


# -- v2: fixtures in the documented shapes ------------------------------------------------------


def v2_book_levels(frame: str) -> list[tuple[str, str, str]]:
    """(side, price text, qty text) of a v2 book frame, read with the stdlib keeping text."""
    msg = json.loads(frame, parse_float=str, parse_int=str)
    return [(side[0], level["price"], level["qty"]) for item in msg["data"]
            for side in ("bids", "asks") for level in item[side]]


def v2_checksum(frame: str) -> int:
    return int(json.loads(frame)["data"][0]["checksum"])


@pytest.mark.parametrize("depth", [20, 5])  # 5: fewer levels published than checksummed
def test_v2_book_snapshot_updates_truncation_and_checksums(depth: int) -> None:
    connector = new_connector({"BTC-USD": {"book"}}, depth=depth)
    [stream] = connector.connections()
    connector.on_frame(fixture("status.json"), 1.0, stream)
    connector.on_frame(fixture("subscribe_ack.json"), 1.0, stream)
    assert connector.book_depths == {"BTC-USD": 10}
    book = RebuiltBook(10)
    names = ["book_snapshot.json", "book_update.json", "book_update_empty_side.json"]
    for n, name in enumerate(names):
        frame = fixture(name)
        for side, price, qty in v2_book_levels(frame):
            book.apply(side, price, qty)
        book.truncate()
        assert book.checksum() == v2_checksum(frame)  # the fixture is self-consistent
        start = len(connector.out.pending)
        connector.on_frame(frame, 2.0 + n, stream)
        [(topic, record)] = new_records(connector, start)
        assert topic == "orderbook-data.kraken"
        assert (record.bids, record.asks) == book.top(depth)
    # the snapshot's checksum is the one in Kraken's documentation
    assert v2_checksum(fixture("book_snapshot.json")) == 3310070434
    # RFC 3339 -> epoch seconds
    assert record.ts_event == datetime(2026, 8, 16, 23, 37, 4, 1000, UTC).timestamp()
    # 45276.6 fell below depth 10 on the first update and was dropped then; a client that
    # kept it would show it again after the best bid left (and fail the checksum)
    kept = dict(connector.books["BTC-USD"].top_bids(10))  # as checksummed, whatever the depth
    assert 45276.6 not in kept and kept[45276.0] == 0.01
    assert len(record.bids) == len(record.asks) == min(depth, 10)
    connector.on_frame(fixture("heartbeat.json"), 9.0, stream)
    assert not [r for r in connector.out.pending if r[0] in ("ws.error", "ws.dlq")]


def test_v2_checksum_mismatch_resyncs_then_snapshot_restores() -> None:
    connector = new_connector({"BTC-USD": {"book"}})
    [stream] = connector.connections()
    connector.on_frame(fixture("subscribe_ack.json"), 1.0, stream)
    connector.on_frame(fixture("book_snapshot.json"), 2.0, stream)
    start = len(connector.out.pending)
    connector.on_frame(fixture("book_checksum_mismatch.json"), 3.0, stream)
    [(topic, value)] = new_records(connector, start)
    assert topic == "ws.error"
    event = json.loads(value)
    assert (event["symbol"], event["kind"]) == ("BTC-USD", "resync")
    assert "computed" in event["reason"] and "12345" in event["reason"]
    assert connector.session.json == [  # type: ignore[union-attr]
        {"method": "unsubscribe", "params": {"channel": "book", "symbol": ["BTC/USD"],
                                             "depth": 10}},
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"],
                                           "depth": 10, "snapshot": True}}]
    # an update before the fresh snapshot is not applied nor published
    start = len(connector.out.pending)
    connector.on_frame(fixture("book_update.json"), 4.0, stream)
    assert new_records(connector, start) == []
    connector.on_frame(fixture("book_snapshot.json"), 5.0, stream)
    connector.on_frame(fixture("book_update.json"), 6.0, stream)
    records = new_records(connector, start)
    assert [t for t, _ in records] == ["orderbook-data.kraken"] * 2
    book = RebuiltBook(10)
    for name in ("book_snapshot.json", "book_update.json"):
        for side, price, qty in v2_book_levels(fixture(name)):
            book.apply(side, price, qty)
        book.truncate()
    assert (records[-1][1].bids, records[-1][1].asks) == book.top(20)


def test_v2_trades_both_sides_once() -> None:
    connector = new_connector({"BTC-USD": {"trades"}})
    [stream] = connector.connections()
    for name in ("trade_snapshot.json", "trade.json", "trade_snapshot.json", "trade.json"):
        connector.on_frame(fixture(name), 7.0, stream)
    trades = [r[2] for r in connector.out.pending]
    raw = [t for name in ("trade_snapshot.json", "trade.json")
           for t in json.loads(fixture(name))["data"]]
    assert len(trades) == len(raw) == 4  # the repeated messages added nothing
    for trade, t in zip(trades, raw, strict=True):
        assert isinstance(trade, Trade)
        assert (trade.symbol, trade.trade_id, trade.price, trade.amount) == (
            "BTC-USD", str(t["trade_id"]), t["price"], t["qty"])
        assert trade.side == (BUY if t["side"] == "buy" else SELL)
    assert {t.side for t in trades} == {BUY, SELL}
    assert trades[2].ts_event == datetime(2026, 8, 16, 23, 37, 3, 745044,
                                          UTC).timestamp()


def test_v2_ticker_and_refused_subscription() -> None:
    connector = new_connector({"BTC-USD": {"ticker"}})
    [stream] = connector.connections()
    connector.on_frame(fixture("ticker.json"), 8.0, stream)
    [(_, ticker)] = new_records(connector, 0)
    t = json.loads(fixture("ticker.json"))["data"][0]
    assert isinstance(ticker, Ticker)
    assert (ticker.symbol, ticker.last, ticker.bid, ticker.bid_size, ticker.ask,
            ticker.ask_size, ticker.volume_24h) == (
        "BTC-USD", t["last"], t["bid"], t["bid_qty"], t["ask"], t["ask_qty"], t["volume"])
    assert ticker.quote_volume_24h == pytest.approx(t["volume"] * t["vwap"])
    with pytest.raises(ValueError, match="depth not supported"):
        connector.on_frame('{"error":"Subscription depth not supported","method":"subscribe",'
                           '"success":false,"time_in":"x","time_out":"y"}', 9.0, stream)
