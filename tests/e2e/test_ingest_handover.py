"""A failover loses no trade of a live feed: the new owner backfills from the venue's history.

The venue is a local server speaking Upbit's protocol whose markets keep trading whether or
not anyone is connected (ids rising, one trade a market every 100 ms), like a live venue: a
connection gets the trades made from its subscription on, and `/v1/trades/ticks` answers the
last 500 trades (Upbit's REST trade history). Two workers with default settings share the
feeds; the owner of Upbit's shard is killed (kill -9), and the trades made while nobody was
connected reach the topic anyway: the survivor starts the shard with the previous owner's
resume points and backfills each market from its point on its first connection. Every trade
the venue made is on the topic exactly once, and no `trade_gap` is reported.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from app.embedded import EmbeddedBroker
from tests.e2e.test_ingest_commands import everything
from tests.e2e.test_ingest_ownership import owners
from tests.support import Worker, http_json, wait_for
from tests.venue import LoopbackServer

APP_ID = "kcs-test-handover"
CODES = ("KRW-BTC", "KRW-ETH")
TICK = 0.1  # s between two trades of a market


class TradingVenue(LoopbackServer):
    """Upbit on loopback with a tape that runs on its own from the first subscription."""

    def __init__(self) -> None:
        self.tape: dict[str, list[dict[str, Any]]] = {code: [] for code in CODES}
        self.ids = itertools.count(1)
        self.trading = threading.Event()  # set by the first subscription: the tape starts
        self.closed = False  # the tape stopped for good
        self.history_requests = 0
        super().__init__()

    def made(self) -> set[tuple[str, str]]:
        """(BASE-QUOTE, trade id) of every trade the venue made."""
        return {("-".join(reversed(code.split("-"))), str(t["sequential_id"]))
                for code, trades in self.tape.items() for t in list(trades)}

    def stop_trading(self) -> None:
        self.closed = True

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", "/api.upbit.com/websocket/v1", self._socket),
                ("GET", "/api.upbit.com/v1/trades/ticks", self._history)]

    async def started(self) -> None:
        self.loop.create_task(self._trade())

    async def _trade(self) -> None:
        while not self.trading.is_set():
            await asyncio.sleep(0.01)
        while not self.closed:
            now = int(time.time() * 1000)
            for code in CODES:
                self.tape[code].append({
                    "market": code, "timestamp": now, "trade_price": 100.0,
                    "trade_volume": 1.5, "ask_bid": "BID", "sequential_id": next(self.ids)})
            await asyncio.sleep(TICK)

    async def _history(self, request: web.Request) -> web.Response:
        self.history_requests += 1
        trades = self.tape.get(request.query.get("market", ""), [])
        return web.json_response(list(reversed(trades[-500:])))  # newest first

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        asked: set[str] = set()
        sent: dict[str, int] = {}
        sender: asyncio.Task[None] | None = None
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                for part in json.loads(message.data):
                    if part.get("type") == "trade":
                        asked |= set(part["codes"])
                sent.update({c: len(self.tape[c]) for c in asked if c not in sent})
                self.trading.set()
                if sender is None:
                    sender = asyncio.create_task(self._send(ws, sent))
        finally:
            if sender is not None:
                sender.cancel()
        return ws

    async def _send(self, ws: web.WebSocketResponse, sent: dict[str, int]) -> None:
        """The trades made since the subscription, as they are made (SIMPLE format)."""
        while not ws.closed:
            for code, done in list(sent.items()):
                for t in self.tape[code][done:]:
                    await ws.send_bytes(json.dumps({
                        "ty": "trade", "cd": code, "ttms": t["timestamp"],
                        "tp": t["trade_price"], "tv": t["trade_volume"], "ab": t["ask_bid"],
                        "sid": t["sequential_id"]}).encode())
                    sent[code] += 1
            await asyncio.sleep(0.02)


def test_a_failover_backfills_the_trades_made_while_nobody_was_connected(
        fresh_broker: EmbeddedBroker, tmp_path: Path, workers: list[Worker]) -> None:
    venue = TradingVenue().start()
    try:
        seed = tmp_path / "subscriptions.toml"
        seed.write_text('[upbit]\n"BTC-KRW" = ["trades"]\n"ETH-KRW" = ["trades"]\n')
        started = [Worker(fresh_broker.url, tmp_path, replay=venue.url, subscriptions=seed,
                          app_id=APP_ID) for _ in range(2)]
        for worker in started:
            workers.append(worker.start())
        wait_for(lambda: len(owners(started).get("upbit", ())) == 1, timeout=60)
        victim = started[owners(started)["upbit"][0]]
        survivor = started[1 - started.index(victim)]

        def published_by(worker: Worker) -> int:
            shard = http_json(worker.url + "/health/")[1]["shards"]["upbit"]
            return shard["published"] if shard["state"] == "running" else 0
        wait_for(lambda: published_by(victim) > 20, timeout=30)
        time.sleep(3.0)  # a checkpoint or two (every 2 s)
        # the shard may have moved when the second worker joined: its current owner dies
        victim = started[owners(started)["upbit"][0]]
        survivor = started[1 - started.index(victim)]
        victim.kill()
        killed_at = time.time()
        wait_for(lambda: published_by(survivor) > 0, timeout=60)
        resumed_at = time.time()
        time.sleep(3.0)  # live trades after the backfill
        venue.stop_trading()
        made = venue.made()

        def on_topic() -> Counter[tuple[str, str]]:
            return Counter((t["symbol"], t["trade_id"])
                           for t in everything(fresh_broker, "trade-data.upbit"))
        deadline = time.monotonic() + 30
        published = on_topic()
        while not set(published) >= made and time.monotonic() < deadline:
            time.sleep(0.5)
            published = on_topic()
        missing = made - set(published)
        gaps = [e for e in everything(fresh_broker, "ws.error") if e.get("kind") == "trade_gap"]
        print(f"failover: survivor publishing {resumed_at - killed_at:.1f} s after the kill; "
              f"{len(made)} trades made, {len(missing)} missing, "
              f"{sum(n - 1 for n in published.values())} duplicates, "
              f"{venue.history_requests} history requests, {len(gaps)} trade gaps")
        assert not missing
        assert max(published.values()) == 1, [k for k, n in published.items() if n > 1]
        assert set(published) == made
        assert venue.history_requests >= len(CODES)  # the gap came from the history
        assert not gaps, gaps
    finally:
        for worker in workers:
            worker.stop()
        venue.stop()
