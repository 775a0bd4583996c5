"""Stale books by exchange time: a Bybit-speaking WebSocket server on loopback whose book
timestamps freeze while its ticker keeps flowing; the real session and connector."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from config.settings import load_settings
from exchanges.bybit import URL, Bybit
from exchanges.metrics import metrics
from exchanges.publisher import Publisher
from exchanges.session import Session
from tests.exchanges.test_protection import Producer

STALE_AFTER = 2.0


def book(kind: str, u: int, cts: int, bid: str) -> bytes:
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "ts": cts, "type": kind, "cts": cts,
                         "data": {"s": "BTCUSDT", "b": [[bid, "1"]], "a": [["200", "1"]],
                                  "u": u, "seq": u}})


def ticker(ts: int) -> bytes:
    return orjson.dumps({"topic": "tickers.BTCUSDT", "ts": ts, "type": "snapshot",
                         "data": {"symbol": "BTCUSDT", "lastPrice": "150", "volume24h": "1",
                                  "turnover24h": "150"}})


async def test_a_book_whose_exchange_time_freezes_is_reported_stale_and_resynced() -> None:
    frozen_at: list[float] = []
    resubscribed: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the subscription
        now_ms = int(time.time() * 1000)
        await ws.send(book("snapshot", 1, now_ms, "100"))
        await ws.send(book("delta", 2, now_ms + 100, "101"))
        frozen_at.append(time.time())  # from here on the book's exchange time stands still

        async def read() -> None:
            async for message in ws:
                if b'"subscribe"' in (message if isinstance(message, bytes)
                                      else message.encode()) and not resubscribed:
                    resubscribed.append(time.time())
                    # the fresh snapshot of a resubscription carries the current time
                    await ws.send(book("snapshot", 1000, int(time.time() * 1000), "102"))

        reader = asyncio.create_task(read())
        u = 3
        try:
            while True:  # the ticker keeps flowing, and so do book deltas with a frozen time
                await asyncio.sleep(0.1)
                await ws.send(ticker(int(time.time() * 1000)))
                if not resubscribed:
                    await ws.send(book("delta", u, now_ms + 100, "101"))
                    u += 1
        finally:
            reader.cancel()

    stale_before = metrics.get("kcs_book_resyncs_total", exchange="bybit", reason="stale")
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({"KCS_STALE_AFTER": str(STALE_AFTER)})
        connector = Bybit({"BTC-USDT": {"book", "ticker"}}, Publisher("bybit", Producer()),
                          settings)
        # the connector's live URL, served by this loopback server (the session, not the
        # connector, is patched: a compiled connector's methods cannot be replaced)
        session = Session(connector, settings)
        session.endpoint = lambda url: f"ws://127.0.0.1:{port}/"  # type: ignore[method-assign]
        await session.start()
        producer: Producer = connector.out.producer  # type: ignore[assignment]
        try:
            async with asyncio.timeout(STALE_AFTER + 5 + 3):
                while not [b for b, _ in producer.on("orderbook-data.bybit")
                           if orjson.loads(b)["sequence"] == 1000]:
                    await asyncio.sleep(0.05)
        finally:
            await session.stop()
    assert URL.startswith("wss://stream.bybit.com")
    [event] = [orjson.loads(v) for v, _ in producer.on("ws.error")]
    assert event["kind"] == "stale" and event["symbol"] == "BTC-USDT"
    assert metrics.get("kcs_book_resyncs_total", exchange="bybit",
                       reason="stale") == stale_before + 1
    # reported and resynced (resubscribed) within KCS_STALE_AFTER + 5 s of the freeze
    assert resubscribed and resubscribed[0] - frozen_at[0] <= STALE_AFTER + 5
    assert resubscribed[0] - frozen_at[0] >= STALE_AFTER
    tickers = producer.on("ticker-data.bybit")
    assert len(tickers) > 10  # the socket was alive all along


def test_kcs_stale_after_per_venue_and_a_bad_value_refused_with_its_name() -> None:
    assert load_settings({}).stale_after_for("bybit", 60.0) == 60.0
    assert load_settings({"KCS_STALE_AFTER": "12"}).stale_after_for("upbit", 300.0) == 12.0
    per_venue = load_settings({"KCS_STALE_AFTER": "upbit=120, binance=30"})
    assert per_venue.stale_after_for("binance", 60.0) == 30.0
    assert per_venue.stale_after_for("okx", 60.0) == 60.0
    with pytest.raises(ValueError, match="KCS_STALE_AFTER"):
        Session(Bybit({}, Publisher("bybit"), load_settings({"KCS_STALE_AFTER": "soon"})),
                load_settings({"KCS_STALE_AFTER": "soon"}))
