"""The shared session: recording, reconnecting, the silence watchdog and the DLQ, against
real WebSocket servers on loopback."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from config.settings import load_settings
from exchanges.base import Connector, Stream
from exchanges.metrics import metrics
from exchanges.publisher import Publisher
from exchanges.replay import load_recordings
from exchanges.session import Session
from tests.support import FIXTURES
from tests.exchanges.test_binance import Collector, replay_through_session


class Echo(Connector):
    """A minimal connector: every frame that is the text of an int becomes a count."""

    name = "echo"

    def __init__(self, url: str, settings: Any) -> None:
        super().__init__({}, Publisher("echo", Collector()), settings)
        self.url = url
        self.values: list[int] = []

    def connections(self) -> list[Stream]:
        return [Stream(self.url, ["subscribe"], [])]

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        self.values.append(int(frame))


async def test_live_sessions_are_recorded_in_the_replay_format(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for path in (FIXTURES / "replays").glob("BINANCE.*"):
        shutil.copy(path, source / path.name)
    record = tmp_path / "recorded"
    await replay_through_session(source, record=record)
    original = load_recordings(source)["binance"]
    recorded = load_recordings(record)["binance"]
    [conn] = recorded.connections
    assert [d for _, d in conn.received] == [d for _, d in original.connections[0].received]
    assert conn.url.startswith("wss://stream.binance.com:9443/stream?streams=")  # the live URL
    assert sorted(r.url for r in recorded.rest) == [
        "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000",
        "https://api.binance.com/api/v3/depth?symbol=ETHUSDT&limit=1000"]


async def test_reconnects_after_a_drop_and_after_silence_and_dlqs_bad_frames() -> None:
    connections = 0
    finished = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        assert await ws.recv() == "subscribe"  # resubscribed on every connection
        if connections == 1:
            await ws.send("1")
            await ws.send("not a number")  # -> DLQ, and the connection stays up
            await ws.send("2")
            await ws.close()  # the exchange drops us
        elif connections == 2:
            await ws.send("3")
            await finished.wait()  # then goes silent: the watchdog must reconnect
        else:
            await ws.send("4")
            await finished.wait()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = load_settings({"KCS_SILENCE_TIMEOUT": "1", "KCS_BACKOFF_INITIAL": "0.1"})
        connector = Echo(f"ws://127.0.0.1:{port}/", settings)
        silent_before = metrics.get("kcs_silent_feeds_total", exchange="echo")
        session = Session(connector, settings)
        await session.start()
        try:
            for _ in range(100):
                if connector.values == [1, 2, 3, 4]:
                    break
                await asyncio.sleep(0.1)
        finally:
            await session.stop()
            finished.set()
    assert connector.values == [1, 2, 3, 4]
    assert connections == 3
    assert metrics.get("kcs_silent_feeds_total", exchange="echo") == silent_before + 1
    [dlq] = connector.out.producer.on("ws.dlq")  # type: ignore[union-attr]
    assert dlq == b"not a number"
