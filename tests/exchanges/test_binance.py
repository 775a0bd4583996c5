"""Binance: parsing and the snapshot + `U`/`u` book procedure, through the real session and
replay server (REST snapshots included), on the recorded session and on fixture frames."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from config.settings import load_settings
from app.subscriptions import from_recordings
from exchanges.binance import Binance, to_native
from exchanges.publisher import Publisher
from exchanges.replay import ReplayServer, load_recordings
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
    session = Session(connector, settings, server.base_url)
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
    Returns, per symbol, the (best bid, best ask) after the snapshot and after each event."""
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
        tops[native].append(top(book))
    return tops


def top(book: dict[str, Any]) -> tuple[tuple, tuple]:
    bid = max(book["b"])
    ask = min(book["a"])
    return (bid, book["b"][bid]), (ask, book["a"][ask])


def published_tops(collector: Collector) -> dict[str, list[tuple[tuple, tuple]]]:
    tops: dict[str, list] = {}
    for book in collector.on("orderbook-data.binance"):
        native = to_native(book["symbol"])
        tops.setdefault(native, []).append((tuple(book["bids"][0]), tuple(book["asks"][0])))
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
    assert sum(map(len, published.values())) == 63  # 4 snapshots + 59 chained events
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
