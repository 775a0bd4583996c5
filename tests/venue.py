"""A loopback venue for `ws.command` tests: Upbit's and Bithumb's WebSocket protocols and
market lists on one local port, addressed as the replay server is (`/<host>/<path>`), so a
worker pointed at it with `KCS_REPLAY=http://127.0.0.1:<port>` connects there as it would to
the live venues.

Like the live venues (EXCHANGES.md §1-2), a request on a socket replaces the socket's whole
set, so a worker may change its markets on the open socket; every 200 ms each socket sends one
trade (ids rising per market) and one book for every market it is subscribed to now, and
`/v1/trades/ticks` answers the trades sent (a worker that takes a shard over backfills from
it). The venue counts connections per path and keeps every request it received, so a test
can tell a change applied on the open socket from a reconnect. Runs in its own thread: the
worker under test is another process.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from typing import Any, Self

import orjson
from aiohttp import web

__all__ = ["LoopbackServer", "LoopbackVenue"]

UPBIT_WS = "/api.upbit.com/websocket/v1"
BITHUMB_WS = "/ws-api.bithumb.com/websocket/v1"
LISTINGS = ("/api.upbit.com/v1/market/all", "/api.bithumb.com/v1/market/all")
HISTORY = ("/api.upbit.com/v1/trades/ticks", "/api.bithumb.com/v1/trades/ticks")
TICK = 0.2  # s between two rounds of frames


class LoopbackServer:
    """An aiohttp app on a free loopback port, served from its own thread and event loop (the
    worker under test is another process, so the test's own thread stays free to wait).
    Subclasses name their routes (`routes`) and may start background work (`started`)."""

    def __init__(self) -> None:
        self.url = ""  # http://127.0.0.1:<port>, once started
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    def routes(self) -> list[tuple[str, str, Any]]:
        """(method, path, handler) of every route."""
        raise NotImplementedError

    async def started(self) -> None:
        """Runs on the server's loop once it listens."""

    def start(self) -> Self:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        await self.started()


class LoopbackVenue(LoopbackServer):
    def __init__(self, markets: list[str]) -> None:
        self.markets = list(markets)  # the market list served (KRW-BTC form)
        self.listing_status = 200  # set to 503 to make the market list unavailable
        self.listing_requests = 0
        self.connections: Counter[str] = Counter()  # path -> connections opened
        self.requests: dict[str, list[set[str]]] = {}  # path -> trade codes asked, in order
        self.ids = itertools.count(1)
        self.sent: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (host, code) -> trades
        super().__init__()

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", "/{tail:.*}", self._handle)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in LISTINGS:
            self.listing_requests += 1
            if self.listing_status != 200:
                return web.Response(status=self.listing_status, text="maintenance")
            return web.json_response([{"market": m, "english_name": m} for m in self.markets])
        if path in HISTORY:  # the REST trade history: the trades sent, newest first
            trades = self.sent.get((path.split("/")[1], request.query.get("market", "")), [])
            return web.json_response([
                {"market": t["code"], "timestamp": t["trade_timestamp"],
                 "trade_price": t["trade_price"], "trade_volume": t["trade_volume"],
                 "ask_bid": t["ask_bid"], "sequential_id": t["sequential_id"]}
                for t in reversed(trades[-500:])])
        if path not in (UPBIT_WS, BITHUMB_WS):
            return web.Response(status=404, text=f"no such resource {path}")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections[path] += 1
        subscribed: dict[str, list[str]] = {"trade": [], "orderbook": []}
        host = "api.upbit.com" if path == UPBIT_WS else "api.bithumb.com"
        sender = asyncio.create_task(self._send(ws, subscribed, path == UPBIT_WS, host))
        try:
            async for message in ws:
                wanted: dict[str, list[str]] = {"trade": [], "orderbook": []}
                for part in orjson.loads(message.data):
                    if part.get("type") in wanted:
                        wanted[part["type"]] = list(part["codes"])
                subscribed.update(wanted)  # the new request replaces the socket's set
                self.requests.setdefault(path, []).append(set(wanted["trade"]))
        finally:
            sender.cancel()
        return ws

    async def _send(self, ws: web.WebSocketResponse, subscribed: dict[str, list[str]],
                    simple: bool, host: str) -> None:
        price = 100.0
        while not ws.closed:
            now = int(time.time() * 1000)
            for code in list(subscribed["trade"]):
                trade: dict[str, Any] = {"type": "trade", "code": code, "trade_price": price,
                                         "trade_volume": 1.5, "ask_bid": "BID",
                                         "trade_timestamp": now, "sequential_id": next(self.ids)}
                await ws.send_bytes(orjson.dumps(_simple(trade) if simple else trade))
                self.sent.setdefault((host, code), []).append(trade)
            for code in list(subscribed["orderbook"]):
                units = [{"ask_price": price + 1 + i, "bid_price": price - 1 - i,
                          "ask_size": 2.0, "bid_size": 3.0} for i in range(5)]
                book = {"type": "orderbook", "code": code, "timestamp": now * 1000,
                        "orderbook_units": units}
                await ws.send_bytes(orjson.dumps(_simple(book, now) if simple else book))
            await asyncio.sleep(TICK)


def _simple(message: dict[str, Any], ms: int | None = None) -> dict[str, Any]:
    """Upbit's SIMPLE format (the worker asks for it)."""
    if message["type"] == "trade":
        return {"ty": "trade", "cd": message["code"], "ttms": message["trade_timestamp"],
                "tp": message["trade_price"], "tv": message["trade_volume"],
                "ab": message["ask_bid"], "sid": message["sequential_id"]}
    return {"ty": "orderbook", "cd": message["code"], "tms": ms,
            "obu": [{"ap": u["ask_price"], "bp": u["bid_price"], "as": u["ask_size"],
                     "bs": u["bid_size"]} for u in message["orderbook_units"]]}
