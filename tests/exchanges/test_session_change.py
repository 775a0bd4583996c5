"""A change of markets applied on the open connection (`Session.change`), against a real
WebSocket server on loopback speaking Binance's combined-stream protocol: SUBSCRIBE and
UNSUBSCRIBE on the open socket, trades for every stream subscribed now."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve

from config.settings import load_settings
from exchanges import CONNECTORS
from exchanges.base import Stream
from exchanges.binance import Binance
from exchanges.bitfinex import Bitfinex, _Channel
from exchanges.bithumb import Bithumb
from exchanges.publisher import Publisher
from exchanges.session import Session
from replay.recorder import Recorder
from replay.recordings import load_recordings
from tests.exchanges.test_binance import Collector


class BinanceVenue:
    """Streams named in the URL at connect time, then changed by SUBSCRIBE / UNSUBSCRIBE."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.ids = itertools.count(1)

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        query = parse_qs(urlsplit(ws.request.path).query)  # type: ignore[union-attr]
        streams = set(query["streams"][0].split("/"))
        sender = asyncio.create_task(self._send(ws, streams))
        try:
            async for message in ws:
                request = json.loads(message)
                self.requests.append(request)
                if request["method"] == "SUBSCRIBE":
                    streams.update(request["params"])
                else:
                    streams.difference_update(request["params"])
                await ws.send(json.dumps({"result": None, "id": request["id"]}))
        finally:
            sender.cancel()

    async def _send(self, ws: ServerConnection, streams: set[str]) -> None:
        while True:
            now = int(time.time() * 1000)
            for name in sorted(streams):
                market, _, kind = name.partition("@")
                if kind == "trade":
                    data = {"e": "trade", "E": now, "s": market.upper(), "t": next(self.ids),
                            "p": "10.5", "q": "2", "T": now, "m": True}
                    await ws.send(json.dumps({"stream": name, "data": data}))
            await asyncio.sleep(0.02)


def traded(collector: Collector) -> set[str]:
    return {t["symbol"] for t in collector.on("trade-data.binance")}


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_markets_are_added_and_removed_on_the_open_connection(tmp_path: Path) -> None:
    venue = BinanceVenue()
    async with serve(venue.handler, "127.0.0.1", 0) as server:
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        collector = Collector()
        connector = Binance({"BTC-USDT": {"trades"}}, Publisher("binance", collector),
                            load_settings({}))
        session = Session(connector, load_settings({}), base, Recorder(tmp_path, "binance"))
        await session.start()
        try:
            await wait_until(lambda: "BTC-USDT" in traded(collector))
            [stream] = session.streams

            added = await session.change({"BTC-USDT": {"trades"},
                                          "ETH-USDT": {"trades", "book"}})
            assert added is stream
            await wait_until(lambda: "ETH-USDT" in traded(collector))
            assert len(venue.requests) == 1
            assert venue.requests[0]["method"] == "SUBSCRIBE"
            assert venue.requests[0]["params"] == ["ethusdt@depth@100ms", "ethusdt@trade"]
            assert not connector.books["ETH-USDT"].ready  # a new book starts from a snapshot
            assert "ethusdt@trade" in stream.url  # a reconnect asks for the new set

            removed = await session.change({"ETH-USDT": {"trades"}})
            assert removed is stream
            await wait_until(lambda: len(venue.requests) == 2)
            assert venue.requests[1]["method"] == "UNSUBSCRIBE"
            assert venue.requests[1]["params"] == ["btcusdt@trade", "ethusdt@depth@100ms"]
            assert connector.books == {}  # ETH-USDT's book is dropped with its channel
            await asyncio.sleep(0.2)  # what was in flight has arrived
            before = len(collector.on("trade-data.binance"))
            btc = sum(t["symbol"] == "BTC-USDT" for t in collector.on("trade-data.binance"))
            await wait_until(lambda: len(collector.on("trade-data.binance")) > before + 5)
            assert sum(t["symbol"] == "BTC-USDT"
                       for t in collector.on("trade-data.binance")) == btc  # stopped
            assert venue.connections == 1 and stream.connects == 1
            assert stream.symbols == ["ETH-USDT"]
            assert collector.on("ws.dlq") == []
        finally:
            await session.stop()
    # the session's recording holds what was sent on the open socket
    [recorded] = load_recordings(tmp_path)["binance"].connections
    assert [json.loads(m)["method"] for _, m in recorded.sent] == ["SUBSCRIBE", "UNSUBSCRIBE"]


async def test_a_venue_without_live_changes_asks_for_a_reconnect() -> None:
    connector = Bithumb({"BTC-KRW": {"trades"}}, Publisher("bithumb", Collector()),
                        load_settings({}))
    session = Session(connector, load_settings({}))
    assert await session.change({"BTC-KRW": {"trades"}, "ETH-KRW": {"trades"}}) is None
    assert connector.subscriptions == {"BTC-KRW": {"trades"}}  # left alone


def test_each_delta_venue_builds_its_documented_messages() -> None:
    """The messages of a change (+ETH-KRW trades and book, -BTC-KRW trades) per venue."""
    added, removed = {"ETH-KRW": {"trades", "book"}}, {"BTC-KRW": {"trades"}}
    settings = load_settings({})
    sent: dict[str, list[Any]] = {}
    for name in ("bybit", "okx", "korbit", "coinone"):
        connector = CONNECTORS[name]({"ETH-KRW": {"trades", "book"}},
                                     Publisher(name, Collector()), settings)
        sent[name] = [json.loads(m) for m in connector.change_messages(Stream(""), added, removed)]
    assert sent["bybit"] == [
        {"req_id": "live-unsubscribe-1", "op": "unsubscribe", "args": ["publicTrade.BTCKRW"]},
        {"req_id": "live-subscribe-1", "op": "subscribe",
         "args": ["orderbook.50.ETHKRW", "publicTrade.ETHKRW"]}]
    assert sent["okx"] == [
        {"op": "unsubscribe", "args": [{"channel": "trades", "instId": "BTC-KRW"}]},
        {"op": "subscribe", "args": [{"channel": "books", "instId": "ETH-KRW"},
                                     {"channel": "trades", "instId": "ETH-KRW"}]}]
    assert sent["korbit"] == [[
        {"method": "unsubscribe", "type": "trade", "symbols": ["btc_krw"], "requestId": 1},
        {"method": "subscribe", "type": "trade", "symbols": ["eth_krw"], "requestId": 2},
        {"method": "subscribe", "type": "orderbook", "symbols": ["eth_krw"], "requestId": 3}]]
    topic = {"quote_currency": "KRW", "target_currency": "BTC"}
    assert sent["coinone"][0] == {"request_type": "UNSUBSCRIBE", "channel": "TRADE",
                                  "topic": topic, "format": "DEFAULT"}
    assert [(m["request_type"], m["channel"]) for m in sent["coinone"][1:]] == [
        ("SUBSCRIBE", "TRADE"), ("SUBSCRIBE", "ORDERBOOK")]


def test_the_western_venues_build_their_documented_messages() -> None:
    added, removed = {"ETH-USD": {"trades", "book"}}, {"BTC-USD": {"trades", "book"}}
    settings = load_settings({})
    sent: dict[str, list[Any]] = {}
    for name in ("coinbase", "htx", "kraken"):
        connector = CONNECTORS[name]({"ETH-USD": {"trades", "book"}},
                                     Publisher(name, Collector()), settings)
        sent[name] = [json.loads(m) for m in connector.change_messages(Stream(""), added,
                                                                       removed)]
    assert sent["coinbase"] == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]},
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["matches"]},
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat"]},
        {"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["matches"]},
        {"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["heartbeat"]}]
    assert [{k: v for k, v in m.items() if k != "id"} for m in sent["htx"]] == [
        {"unsub": "market.btcusd.depth.step0"}, {"unsub": "market.btcusd.trade.detail"},
        {"sub": "market.ethusd.depth.step0"}, {"sub": "market.ethusd.trade.detail"}]
    assert sent["kraken"] == [
        {"method": "unsubscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}},
        {"method": "unsubscribe", "params": {"channel": "book", "symbol": ["BTC/USD"],
                                             "depth": 25}},
        {"method": "subscribe", "params": {"channel": "trade", "symbol": ["ETH/USD"],
                                           "snapshot": True}},
        {"method": "subscribe", "params": {"channel": "book", "symbol": ["ETH/USD"],
                                           "depth": 25, "snapshot": True}}]


def test_bitfinex_unsubscribes_by_channel_id_and_ignores_what_is_still_in_flight() -> None:
    connector = Bitfinex({"ETH-USD": {"trades"}}, Publisher("bitfinex", Collector()),
                         load_settings({}))
    stream = Stream("")
    connector.channels = {17: _Channel("trades", "BTC-USD", stream),
                          18: _Channel("book", "BTC-USD", stream)}
    messages = [json.loads(m) for m in connector.change_messages(
        stream, {"ETH-USD": {"trades"}}, {"BTC-USD": {"trades", "book"}})]
    assert messages == [{"event": "unsubscribe", "chanId": 17},
                        {"event": "unsubscribe", "chanId": 18},
                        {"event": "subscribe", "channel": "trades", "symbol": "tETHUSD"}]
    assert connector.leaving == {17, 18}
