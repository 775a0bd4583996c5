"""Binance: parsing and the snapshot + `U`/`u` book procedure, through the real session and
replay server (REST snapshots included), on the recorded session and on fixture frames."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import orjson

from config.settings import load_settings
from replay.subscriptions import from_recordings
from exchanges.binance import Binance, to_native
from exchanges.publisher import Publisher
from replay.recorder import Recorder
from replay.recordings import load_recordings
from replay.server import ReplayServer
from exchanges.session import Session
from records import BUY, SELL, OrderBook, Ticker, Trade
from tests.support import FIXTURES


class Collector:
    """The producer end of the test: keeps what the connector sent, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> Any:
        self.sent.append((topic, key, json.loads(value) if topic != "ws.dlq" else value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def on(self, topic: str) -> list[Any]:
        return [v for t, _, v in self.sent if t == topic]


async def replay_through_session(directory: Path, record: Path | None = None) -> Collector:
    recordings = load_recordings(directory)
    server = ReplayServer(recordings)
    await server.start()
    collector = Collector()
    settings = load_settings({"KCS_RECORD": str(record)} if record else {})
    connector = Binance(from_recordings(recordings)["binance"], Publisher("binance", collector),
                        settings)
    recorder = Recorder(record, "binance") if record else None
    session = Session(connector, settings, server.base_url, recorder)
    await session.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if server.finished and not connector.loading:
                break
        await asyncio.sleep(0.2)
    finally:
        await session.stop()
        await server.stop()
    return collector


def rebuild_books(directory: Path) -> dict[str, list[tuple[tuple, tuple]]]:
    """The test's own book: REST snapshot, then every diff event that chains, in plain dicts.
    Returns, per symbol, the top 20 levels per side after the snapshot and after each event
    that changed them (a record is published after each change of the top 20)."""
    snapshots = {}
    for line in (directory / "BINANCE.http.0.0").read_text().splitlines():
        if not line:
            continue
        url, _, rest = line.partition(" -> ")
        body = rest.partition(": ")[2].split(" header: ")[0]
        snapshots[url.split("symbol=")[1].split("&")[0]] = json.loads(body)
    books: dict[str, Any] = {}
    tops: dict[str, list[tuple[tuple, tuple]]] = {}
    [ws] = directory.glob("BINANCE.ws.*")
    for line in ws.read_text().splitlines()[1:]:
        if not line:
            continue
        event = json.loads(line.partition(": ")[2])["data"]
        if event.get("e") != "depthUpdate":
            continue
        native = event["s"]
        if native not in books:
            snap = snapshots[native]
            books[native] = {"id": snap["lastUpdateId"],
                             "b": {float(p): float(q) for p, q in snap["bids"]},
                             "a": {float(p): float(q) for p, q in snap["asks"]}}
            tops[native] = [top(books[native])]
        book = books[native]
        if event["u"] <= book["id"]:
            continue
        assert event["U"] == book["id"] + 1, "the recording itself has a gap"
        for side, levels in (("b", event["b"]), ("a", event["a"])):
            for p, q in levels:
                if float(q) == 0:
                    book[side].pop(float(p), None)
                else:
                    book[side][float(p)] = float(q)
        book["id"] = event["u"]
        if top(book) != tops[native][-1]:
            tops[native].append(top(book))
    return tops


def top(book: dict[str, Any]) -> tuple[tuple, tuple]:
    return (tuple(sorted(book["b"].items(), reverse=True)[:20]),
            tuple(sorted(book["a"].items())[:20]))


def published_tops(collector: Collector) -> dict[str, list[tuple[tuple, tuple]]]:
    tops: dict[str, list] = {}
    for book in collector.on("orderbook-data.binance"):
        native = to_native(book["symbol"])
        tops.setdefault(native, []).append((tuple(map(tuple, book["bids"])),
                                            tuple(map(tuple, book["asks"]))))
    return tops


def test_symbols_and_connections_respect_the_stream_limit() -> None:
    assert to_native("BTC-USDT") == "BTCUSDT"
    subs = {f"C{i}-USDT": {"trades", "book", "ticker"} for i in range(100)}
    streams = Binance(subs, Publisher("binance"), load_settings({})).connections()
    assert [len(s.url.split("=", 1)[1].split("/")) for s in streams] == [198, 102]
    assert all(s.url.startswith("wss://stream.binance.com:9443/stream?streams=") for s in streams)
    assert sum(len(s.symbols) for s in streams) == 100


async def test_recorded_books_equal_an_independent_rebuild(replays: Path, tmp_path: Path) -> None:
    for path in replays.glob("BINANCE.*"):
        shutil.copy(path, tmp_path / path.name)
    collector = await replay_through_session(tmp_path)
    expected = rebuild_books(tmp_path)
    published = published_tops(collector)
    assert published == expected
    # 4 snapshots + 53 of the 59 chained events (6 changed nothing within the top 20)
    assert sum(map(len, published.values())) == 57
    assert collector.on("ws.error") == [] and collector.on("ws.dlq") == []
    # The recording's bookTicker stream parses as tickers with the top of book.
    tickers = collector.on("ticker-data.binance")
    assert len(tickers) == 26 and tickers[0]["symbol"] in {"NKN-USDT", "LRC-BTC"}


async def test_fixture_trades_tickers_and_books(tmp_path: Path) -> None:
    directory = FIXTURES / "replays"
    for path in directory.glob("BINANCE.*"):
        shutil.copy(path, tmp_path / path.name)
    collector = await replay_through_session(tmp_path)
    trades = [Trade(**t) for t in collector.on("trade-data.binance")]
    assert [(t.symbol, t.trade_id, t.price, t.amount, t.side) for t in trades] == [
        ("BTC-USDT", "5001", 97000.5, 0.01, BUY),
        ("BTC-USDT", "5002", 97000.0, 0.25, SELL),  # m=true: the buyer was the maker
        ("ETH-USDT", "7001", 3100.1, 1.5, BUY),
        ("ETH-USDT", "300", 3100.0, 0.75, SELL),  # an aggTrade parses too
        ("BTC-USDT", "5003", 97001.0, 0.05, BUY),
    ]
    assert trades[0].ts_event == 1790000000.149
    tickers = [Ticker(**t) for t in collector.on("ticker-data.binance")]
    assert (tickers[0].symbol, tickers[0].last, tickers[0].bid, tickers[0].ask,
            tickers[0].volume_24h) == ("BTC-USDT", 97000.0, 97000.1, 97000.5, 12345.678)
    assert published_tops(collector) == rebuild_books(tmp_path)
    last_btc = [OrderBook(**b) for b in collector.on("orderbook-data.binance")
                if b["symbol"] == "BTC-USDT"][-1]
    assert last_btc.bids == [[97000.1, 0.3], [97000.0, 1.5], [96999.0, 0.5]]
    assert last_btc.asks == [[97001.0, 0.7], [97002.0, 3.0]]
    assert last_btc.sequence == 1005


async def test_a_gap_drops_the_book_reports_it_and_resyncs(tmp_path: Path) -> None:
    directory = FIXTURES / "replays"
    for path in directory.glob("BINANCE.*"):
        shutil.copy(path, tmp_path / path.name)
    ws = tmp_path / "BINANCE.ws.1.0"
    lines = ws.read_text().splitlines()
    dropped = [line for line in lines if '"U":1003' in line]
    ws.write_text("\n".join(line for line in lines if line not in dropped) + "\n")
    # The server's answer to the second snapshot request: the book as of update 1003.
    snapshot = {"lastUpdateId": 1003,
                "bids": [["97000.10000000", "0.30000000"], ["97000.00000000", "1.50000000"],
                         ["96999.50000000", "2.00000000"], ["96999.00000000", "0.50000000"]],
                "asks": [["97001.00000000", "1.20000000"], ["97002.00000000", "3.00000000"]]}
    with open(tmp_path / "BINANCE.http.0.0", "a") as f:
        f.write("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000 -> 1790000001.0: "
                + json.dumps(snapshot) + "\n")
    collector = await replay_through_session(tmp_path)
    [error] = collector.on("ws.error")
    assert error["symbol"] == "BTC-USDT" and "gap" in error["reason"]
    btc = [OrderBook(**b) for b in collector.on("orderbook-data.binance")
           if b["symbol"] == "BTC-USDT"]
    # snapshot, update 1002, then (after the gap) the fresh snapshot and update 1004-1005.
    assert [b.sequence for b in btc] == [1000, 1002, 1003, 1005]
    assert btc[-1].bids == [[97000.1, 0.3], [97000.0, 1.5], [96999.0, 0.5]]
    assert btc[-1].asks == [[97001.0, 0.7], [97002.0, 3.0]]


class _Offline:
    def spawn(self, coro: Any) -> None:
        coro.close()


def _fed(frames: list[str], typed: bool) -> tuple[list[Any], list[Any]]:
    """Each frame's outcome (None, or its error) and the records queued, by `on_frame` (the
    typed reading first) or by `on_message` alone (orjson's reading, the path before it)."""
    connector = Binance({"BNB-BTC": {"trades", "book", "ticker"}}, Publisher("binance"),
                        load_settings({}))
    [stream] = connector.connections()
    connector.session = _Offline()  # type: ignore[assignment]
    connector._load("BNB-BTC", {"lastUpdateId": 100, "bids": [["0.0024", "10"]],
                                "asks": [["0.0026", "100"]]}, [], 1.0)
    outcomes: list[Any] = []
    for frame in frames:
        try:
            if typed:
                connector.on_frame(frame, 2.0, stream)
            else:
                connector.on_message(orjson.loads(frame), 2.0)
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - compared
            outcomes.append((type(exc).__name__, str(exc)))
    # an error event's ts_recv is the wall clock's
    return outcomes, [(t, k, {**orjson.loads(v), "ts_recv": None} if t == "ws.error" else v)
                      for t, k, v, _, _ in connector.out.pending]


def test_typed_reading_publishes_and_refuses_as_the_dict_reading() -> None:
    """The events read typed (depth, bookTicker, trade, aggTrade, 24hrTicker) give the same
    records and the same errors as orjson's reading, for well-formed events and for events
    whose fields are missing or of another type (which the typed path leaves to it)."""
    def depth(first: int, last: int, bids: list) -> dict:
        return {"e": "depthUpdate", "E": 1700000000123, "s": "BNBBTC", "U": first, "u": last,
                "b": bids, "a": []}

    def book_ticker(native: str, bid: Any, u: Any = 5) -> dict:
        return {"u": u, "s": native, "b": bid, "B": "31.21", "a": "0.0026", "A": "40.66"}

    def trade(kind: str, native: str, maker: Any) -> dict:
        return {"e": kind, "E": 1, "s": native, "t": 7, "a": 9, "p": "0.0025", "q": "2",
                "T": 1700000000400, "m": maker}

    def ticker(bid: Any) -> dict:
        return {"e": "24hrTicker", "E": 1700000000500, "s": "BNBBTC", "c": "0.0025", "b": bid,
                "B": "10", "a": "0.0026", "A": "100", "v": "1.5", "q": "0.00375"}

    events = [
        depth(101, 101, [["0.00245", "3"]]),
        depth(102, 103, [["0.00245", "0"], ["0.0023", "1"]]),
        depth(90, 99, [["0.0022", "1"]]),  # already in the book
        depth(104, 104, [["0.0027", "1"]]),  # crossed: dropped
        depth(110, 111, [["0.0024", "1"]]),  # not ready any more
        depth(112, 112, [["0.0024", "1", "x"]]), depth(113, 113, [["abc", "1"]]),
        book_ticker("BNBBTC", "0.0024"), book_ticker("BNBBTC", 0.0024),
        book_ticker("BNBBTC", "0.0024", None), book_ticker("ETHBTC", "0.0024"),
        trade("trade", "BNBBTC", True), trade("aggTrade", "BNBBTC", False),
        trade("trade", "BNBBTC", 1), trade("trade", "ETHBTC", True),
        ticker("0.0024"), ticker(0.0024), ticker("-1"),
        {"e": "kline", "E": 1, "s": "BNBBTC", "k": {}}, {"e": "what", "E": 1},
    ]
    frames = [orjson.dumps({"stream": "bnbbtc@x", "data": e}).decode() for e in events]
    frames += ['{"result":null,"id":1}', '{"stream":"x"}', "[1]", '{"data":', '{"data":7}']
    assert _fed(frames, typed=True) == _fed(frames, typed=False)
    outcomes, published = _fed(frames, typed=True)
    assert outcomes.count(None) > 10 and len(published) > 8
