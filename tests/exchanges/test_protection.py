"""A feed never dies silently: per-frame protection (encoding included), capped DLQ records,
connection tasks that end unexpectedly, books dropped by a disconnect, the backoff reset.
Real WebSocket servers on loopback, the real session."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from config.settings import load_settings
from exchanges.base import Connector, Stream
from exchanges.book import L2Book
from exchanges.metrics import metrics
from exchanges.publisher import DLQ_MAX_BYTES, Publisher
from exchanges.session import Session
from records import Trade


class Producer:
    """The producer end: keeps topic, key, value and headers of every record, acked at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> Any:
        assert type(value) is bytes  # everything reaching Kafka is already encoded
        self.sent.append((topic, key, value, headers))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def on(self, topic: str) -> list[tuple[bytes, Any]]:
        return [(v, h) for t, _, v, h in self.sent if t == topic]


class Trades(Connector):
    """Frames are `{"id": .., "price": .., "size": ..}`; the price is used as given, so a
    wrongly typed one reaches the encoder. `{"book": [[p, s]]}` sets bids of one book."""

    name = "protect"

    def __init__(self, url: str, settings: Any) -> None:
        super().__init__({"X-Y": {"trades", "book"}}, Publisher("protect", Producer()),
                         settings)
        self.url = url
        self.books["X-Y"] = L2Book()
        self.opened = 0

    def connections(self) -> list[Stream]:
        return [Stream(self.url, ["subscribe"], ["X-Y"])]

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        msg = orjson.loads(frame)
        if "book" in msg:
            book = self.books["X-Y"]
            for price, size in msg["book"]:
                book.set_bid(price, size)
            book.ready = True
            return
        self.out.trade(Trade("protect", "X-Y", 1.0, ts_recv, msg["price"], 1.0, 1,
                             str(msg["id"])))


async def run(connector: Connector, settings: Any, until: Any, timeout: float = 10.0) -> None:
    session = Session(connector, settings)
    await session.start()
    try:
        async with asyncio.timeout(timeout):
            while not until():
                await asyncio.sleep(0.05)
    finally:
        await session.stop()


def published_ids(connector: Connector) -> list[str]:
    producer: Producer = connector.out.producer  # type: ignore[assignment]
    return [orjson.loads(v)["trade_id"] for v, _ in producer.on("trade-data.protect")]


async def test_a_record_that_cannot_be_encoded_goes_to_the_dlq_and_the_feed_goes_on() -> None:
    class Unencodable(float):  # a float subclass: passes the value check, orjson refuses it
        pass

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"id": 1, "price": 10.0}')
        await ws.send('{"id": 2, "price": 1180591620717411303424}')
        await ws.send('{"id": 3, "price": 11.5}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({})
        connector = Trades(f"ws://127.0.0.1:{port}/", settings)
        # frame 2 yields a record with a field orjson refuses (as a venue's field of a type the
        # parser did not expect would)
        original = connector.on_frame

        def on_frame(frame: bytes | str, ts_recv: float, stream: Stream) -> None:
            msg = orjson.loads(frame)
            if msg["id"] == 2:
                trade = Trade("protect", "X-Y", 1.0, ts_recv, 5.0, 1.0, 1, "2")
                trade.ts_recv = Unencodable(ts_recv)  # orjson: "Type is not JSON serializable"
                connector.out.trade(trade)
                return
            original(frame, ts_recv, stream)

        connector.on_frame = on_frame  # type: ignore[method-assign]
        await run(connector, settings, lambda: len(published_ids(connector)) == 2)
    assert published_ids(connector) == ["1", "3"]
    producer: Producer = connector.out.producer  # type: ignore[assignment]
    [(value, headers)] = producer.on("ws.dlq")
    assert value == b'{"id": 2, "price": 1180591620717411303424}'
    assert b"not JSON serializable" in dict(headers)["reason"]


async def test_a_2_mib_bad_frame_is_truncated_on_the_dlq_with_its_size_and_hash() -> None:
    huge = "x" * (2 * 1024 * 1024)

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"id": 1, "price": 10.0}')
        await ws.send(huge)
        await ws.send('{"id": 2, "price": 10.5}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({})
        connector = Trades(f"ws://127.0.0.1:{port}/", settings)
        await run(connector, settings, lambda: len(published_ids(connector)) == 2)
    assert published_ids(connector) == ["1", "2"]
    producer: Producer = connector.out.producer  # type: ignore[assignment]
    [(value, headers)] = producer.on("ws.dlq")
    headers = dict(headers)
    assert len(value) == DLQ_MAX_BYTES < 1024 * 1024
    assert value == huge.encode()[:DLQ_MAX_BYTES]
    assert headers["size"] == str(len(huge)).encode()
    assert headers["sha256"] == hashlib.sha256(huge.encode()).hexdigest().encode()


async def test_bad_values_go_to_the_dlq_counted_by_reason_and_nothing_of_the_frame_is_published(
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"id": 1, "price": 10.0}')
        await ws.send('{"id": 2, "price": -1.0}')
        await ws.send('{"id": 3, "price": 0}')
        await ws.send('{"id": 4, "price": "12"}')
        await ws.send('{"id": 1, "price": 10.0}')  # repeated by the venue: published once
        await ws.send('{"id": 6, "price": 11.0}')
        await ws.wait_closed()

    before = {r: metrics.get("kcs_rejected_values_total", exchange="protect", reason=r)
              for r in ("negative", "zero", "type")}
    dupes = metrics.get("kcs_duplicate_trades_total", exchange="protect")
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({})
        connector = Trades(f"ws://127.0.0.1:{port}/", settings)
        await run(connector, settings, lambda: "6" in published_ids(connector))
    assert published_ids(connector) == ["1", "6"]
    for reason in before:
        assert metrics.get("kcs_rejected_values_total", exchange="protect",
                           reason=reason) == before[reason] + 1
    assert metrics.get("kcs_duplicate_trades_total", exchange="protect") == dupes + 1
    producer: Producer = connector.out.producer  # type: ignore[assignment]
    assert len(producer.on("ws.dlq")) == 3


async def test_an_unexpected_end_of_a_connection_task_is_logged_counted_and_restarted(
        caplog: Any) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"id": 1, "price": 10.0}')
        await ws.wait_closed()

    class Crashing(Trades):
        async def on_open(self, stream: Stream) -> None:
            self.opened += 1
            if self.opened == 1:
                raise KeyError("a bug in on_open")

    crashes = metrics.get("kcs_stream_crashes_total", exchange="protect")
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({"KCS_BACKOFF_INITIAL": "0.1"})
        connector = Crashing(f"ws://127.0.0.1:{port}/", settings)
        await run(connector, settings, lambda: published_ids(connector) == ["1"])
    assert connector.opened == 2
    assert metrics.get("kcs_stream_crashes_total", exchange="protect") == crashes + 1
    assert "the connection task failed; restarting it" in caplog.text
    assert "a bug in on_open" in caplog.text


async def test_a_book_dropped_by_a_disconnect_is_reported_and_the_backoff_starts_over(
        monkeypatch: Any) -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.recv()
        await ws.send('{"book": [[10.0, 1.0]]}')
        await ws.send(f'{{"id": {connections}, "price": 10.0}}')
        if connections < 4:
            await ws.close()  # drops us after delivering data, three times
        await ws.wait_closed()

    # the jitter at its largest: the waits are the backoff itself. Doubling, the three waits
    # would be 1 + 2 + 4 s; starting over after each connection that delivered data, 1 + 1 + 1
    monkeypatch.setattr("exchanges.session.random.uniform", lambda low, high: high)
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({"KCS_BACKOFF_INITIAL": "1", "KCS_BACKOFF_MAX": "60"})
        connector = Trades(f"ws://127.0.0.1:{port}/", settings)
        await run(connector, settings, lambda: len(published_ids(connector)) == 4, timeout=5.5)
    producer: Producer = connector.out.producer  # type: ignore[assignment]
    events = [orjson.loads(v) for v, _ in producer.on("ws.error")]
    disconnects = [e for e in events if e["kind"] == "disconnect"]
    assert len(disconnects) == 3
    assert all(e["symbol"] == "X-Y" and "connection lost" in e["reason"] for e in disconnects)
    # this venue has no trade history: each reconnect's possible gap is named instead
    gaps = [e for e in events if e["kind"] == "trade_gap"]
    assert [g["after_id"] for g in gaps] == ["1", "2", "3"]
    assert all(g["from_ts"] <= g["to_ts"] for g in gaps)
