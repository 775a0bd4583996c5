"""More than one ingest shard per exchange, and more ingest workers than the app has partitions.

With a cap of 1 market a shard (`KCS_SHARD_MARKETS=upbit=1`) the 4 markets with frames in
the Upbit recording become four shards, `upbit` to `upbit#3`, each its own connection. The
app's topics have 2 partitions (`KCS_PARTITIONS=2`); the control topic keeps its own 16
(`KCS_INGEST_PARTITIONS`), so three workers all own shards. The venue is a local WebSocket
server speaking Upbit's protocol that serves, on every connection, the recorded frames of
exactly the markets the connection asked for, from the start of the recording: a shard that
moves to another worker is served again from the start there, so what its first owner
published comes again and must be recognised as published.

Then `ws.command` (keyed by the exchange, read by whichever worker owns that partition of
`ws.command`) reaches the shards' owners: a new market goes to a new shard (every shard is
full), an unsubscribe empties the shard that had the market, nothing else reconnects, and
the new shard, which exists only in Kafka, keeps its set when its owner stops.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from app.embedded import EmbeddedBroker
from tests.e2e.test_ingest_commands import send
from tests.e2e.test_ingest_ownership import owners as shards_of
from tests.e2e.test_ingest_ownership import settled
from tests.support import Worker, http_json, read_topic, wait_for
from tests.venue import LoopbackServer

APP_ID = "kcs-test-shards"


class UpbitVenue(LoopbackServer):
    """Upbit's quotation socket on loopback: each connection gets the recorded frames of the
    codes its request names, then stays open until the client closes it."""

    def __init__(self, recording: Path) -> None:
        self.frames: dict[str, list[bytes]] = {}
        for line in recording.read_text().splitlines()[1:]:
            if " <- " in line or ": b'" not in line:
                continue
            frame = line.split(": b'", 1)[1][:-1].encode()
            code = re.search(rb'"cd":"([A-Z0-9]+-[A-Z0-9]+)"', frame)
            if code:
                self.frames.setdefault(code[1].decode(), []).append(frame)
        self.connections: list[set[str]] = []
        super().__init__()

    def trades(self) -> set[tuple[str, str]]:
        """(BASE-QUOTE, trade id) of every recorded trade."""
        out = set()
        for code, frames in self.frames.items():
            quote, base = code.split("-")
            for frame in frames:
                if b'"ty":"trade"' in frame:
                    out.add((f"{base}-{quote}", re.search(rb'"sid":(\d+)', frame)[1].decode()))  # type: ignore[index]
        return out

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", "/api.upbit.com/websocket/v1", self._socket),
                ("GET", "/api.upbit.com/v1/market/all", self._market_list),
                ("GET", "/api.upbit.com/v1/trades/ticks", self._history)]

    async def _market_list(self, request: web.Request) -> web.Response:
        """Upbit's market list: the recorded markets and KRW-NEW, which the test subscribes
        (a market the venue does not list is refused)."""
        return web.json_response([{"market": code} for code in [*self.frames, "KRW-NEW"]])

    async def _history(self, request: web.Request) -> web.Response:
        """Upbit's REST trade history: the market's recorded trades, newest first (a shard
        that moves backfills from it; every trade it returns comes again on the socket)."""
        code = request.query.get("market", "")
        trades = [json.loads(f) for f in self.frames.get(code, []) if b'"ty":"trade"' in f]
        return web.json_response([
            {"market": code, "timestamp": t["ttms"], "trade_price": t["tp"],
             "trade_volume": t["tv"], "ask_bid": t["ab"], "sequential_id": t["sid"]}
            for t in reversed(trades)])

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        asked: set[str] = set()
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            for part in json.loads(message.data):
                asked |= {code.split(".")[0] for code in part.get("codes", [])}
            self.connections.append(set(asked))
            for code in sorted(asked):
                for frame in self.frames.get(code, []):
                    await ws.send_bytes(frame)
        return ws


def published(broker: EmbeddedBroker) -> Counter[tuple[str, str]]:
    return Counter((json.loads(r.value)["symbol"], json.loads(r.value)["trade_id"])
                   for r in read_topic(broker.url, "trade-data.upbit", idle=2.0, timeout=30))


def test_an_exchange_split_into_shards_shared_by_more_workers_than_partitions(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path,
        workers: list[Worker]) -> None:
    venue = UpbitVenue(replays / "UPBIT.ws.62.0").start()
    try:
        want = venue.trades()
        markets = sorted(venue.frames)
        assert len(markets) == 4 and len(want) > 20
        seed = tmp_path / "subscriptions.toml"
        seed.write_text("[upbit]\n" + "".join(
            f'"{code.split("-")[1]}-{code.split("-")[0]}" = ["trades", "book"]\n'
            for code in markets))
        settings = {"replay": venue.url, "subscriptions": seed, "app_id": APP_ID,
                    "partitions": 2, "shard_markets": "upbit=1"}
        upbit = [f"upbit#{n}" if n else "upbit" for n in range(4)]

        first = Worker(fresh_broker.url, tmp_path, **settings)
        workers.append(first.start())
        health = http_json(first.url + "/health/")[1]["shards"]
        assert [len(health[name]["subscriptions"]) for name in upbit] == [1] * 4
        wait_for(lambda: set(shards_of([first])) >= set(upbit) and settled([first]),
                 timeout=90)
        alone = published(fresh_broker)
        assert set(alone) == want and max(alone.values()) == 1
        assert sorted(len(c) for c in venue.connections) == [1] * 4  # a connection a shard

        others = [Worker(fresh_broker.url, tmp_path, **settings) for _ in range(2)]
        for worker in others:
            workers.append(worker.start())
        everyone = [first, *others]

        def spread() -> bool:
            now = shards_of(everyone)
            return set(now) >= set(upbit) and all(len(w) == 1 for w in now.values()) and \
                {w[0] for w in now.values()} == {0, 1, 2}
        wait_for(spread, timeout=120)
        wait_for(lambda: settled(everyone), timeout=90)
        now = shards_of(everyone)
        owners = {name: now[name][0] for name in upbit}
        print("upbit shards' owners:", owners, "; shards per worker:",
              Counter(w[0] for w in now.values()))
        assert all(len(w) == 1 for w in now.values()), now  # each shard on one worker
        assert len(set(owners.values())) >= 2  # the exchange's shards are shared
        both = published(fresh_broker)
        print(f"upbit trades: {len(want)} recorded, {sum(both.values())} published, "
              f"{len(venue.connections)} connections served")
        assert max(both.values()) == 1, [k for k, n in both.items() if n > 1]
        assert set(both) == want

        def sets() -> dict[str, dict[str, list[str]]]:
            return {name: shard["subscriptions"] for worker in everyone
                    if worker.process is not None and worker.process.poll() is None
                    for name, shard in http_json(worker.url + "/health/")[1]["shards"].items()
                    if shard["state"] == "running" and name.startswith("upbit")}
        before = sets()
        served = len(venue.connections)
        send(fresh_broker, b'{"op": "subscribe", "exchange": "upbit", "symbols": ["NEW-KRW"], '
                           b'"channels": ["trades"], "id": "sub-new"}',
             b'{"op": "unsubscribe", "exchange": "upbit", "symbols": ["WAVES-KRW"], '
             b'"id": "unsub-waves"}')
        after = {**before, "upbit#2": {}, "upbit#4": {"NEW-KRW": ["trades"]}}
        wait_for(lambda: sets() == after, timeout=60)
        wait_for(lambda: len(venue.connections) == served + 1)
        assert venue.connections[-1] == {"KRW-NEW"}  # the new shard's; no other reconnected
        # The emptied shard has room again: a market subscribed now goes there.
        send(fresh_broker, b'{"op": "subscribe", "exchange": "upbit", "symbols": ["WAVES-KRW"], '
                           b'"channels": ["trades"], "id": "resub-waves"}')
        after["upbit#2"] = {"WAVES-KRW": ["trades"]}
        wait_for(lambda: sets() == after, timeout=60)
        wait_for(lambda: len(venue.connections) == served + 2)
        assert venue.connections[-1] == {"KRW-WAVES"}
        acks = [json.loads(r.value) for r in read_topic(
            fresh_broker.url, "ws.connect_success.upbit", idle=3.0)]
        # (KRW-NEW has no frames: its connection never delivers, so it is not acknowledged)
        assert {"unsub-waves", "resub-waves"} <= {c for a in acks for c in a["commands"]}
        again = published(fresh_broker)  # WAVES-KRW served again from the start
        assert max(again.values()) == 1 and set(again) == want
        # Moved shards backfilled from the venue's history: nothing it could not return.
        errors = [json.loads(r.value) for r in read_topic(fresh_broker.url, "ws.error", idle=2.0)]
        assert not [e for e in errors if e["kind"] == "trade_gap"]

        owner = everyone[shards_of(everyone)["upbit#4"][0]]
        owner.stop()
        alive = [w for w in everyone if w is not owner]
        wait_for(lambda: "upbit#4" in shards_of(alive) and sets() == after, timeout=90)
        print("after its owner stopped, upbit#4 runs on", shards_of(alive)["upbit#4"])
    finally:
        for worker in workers:
            worker.stop()
        venue.stop()
