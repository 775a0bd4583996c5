"""The one WebSocket session mechanism: runs a connector's streams forever.

For each `Stream` of a connector: connect (through the replay server when replaying, the
same code otherwise), send the subscriptions, keep the exchange's heartbeat, hand every
frame to the connector, and reconnect with exponential backoff and full jitter whenever the
connection fails or goes silent for `silence_timeout`. It never gives up: a market-data feed
that stops retrying is a dead feed. A frame the connector cannot parse goes to the DLQ with
its raw bytes and the reason, and the next frame is read as usual.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection, connect

from config.settings import Settings
from exchanges.base import Connector, Stream
from exchanges.metrics import metrics
from exchanges.replay import Recorder, WsRecorder, replay_url

__all__ = ["Session"]

log = logging.getLogger(__name__)


class Session:
    def __init__(self, connector: Connector, settings: Settings, replay_base: str = "") -> None:
        self.connector = connector
        self.settings = settings
        self.replay_base = replay_base
        self.recorder = Recorder(settings.record, connector.name) if settings.record else None
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        # The streams being kept up, and whether each is connected now (by id(stream); a
        # stream not in it has not connected yet). Read by the health view.
        self.streams: list[Stream] = []
        self.connected: dict[int, bool] = {}
        self.readers: dict[int, asyncio.Task[Any]] = {}  # id(stream) -> its run_stream
        self.stopping = False
        self.frames = 0
        connector.session = self

    def endpoint(self, url: str) -> str:
        return replay_url(url, self.replay_base) if self.replay_base else url

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.streams = self.connector.connections()
        for stream in self.streams:
            self.readers[id(stream)] = self.spawn(self.run_stream(stream))

    async def stop(self, grace: float = 1.0) -> None:
        """Stop every stream without dropping what was parsed: connected streams are closed,
        so each reader ends after the frame in hand has been handed to the producer (a reader
        cancelled inside `drain()` would lose the rest of that frame's records); whatever
        is still running after `grace` seconds, and streams not connected, are cancelled."""
        self.stopping = True
        closing = []
        for stream in self.streams:
            reader = self.readers.get(id(stream))
            if self.connected.get(id(stream)) and stream.ws is not None:
                self.spawn(stream.ws.close())
                if reader is not None:
                    closing.append(reader)
            elif reader is not None:
                reader.cancel()
        if closing:
            await asyncio.wait(closing, timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        if self.recorder is not None:
            self.recorder.close()

    async def http_get(self, url: str) -> bytes:
        assert self.http is not None
        async with self.http.get(self.endpoint(url)) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {response.status}: {body[:200]!r}")
        if self.recorder is not None:
            self.recorder.http(url, time.time(), body.decode())
        return body

    async def run_stream(self, stream: Stream) -> None:
        """Keep one stream connected forever."""
        name = self.connector.name
        settings = self.settings
        delay = settings.backoff_initial
        while not self.stopping:
            started = time.monotonic()
            try:
                await self._connect_and_read(stream)
                reason = "closed by the server"
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected[id(stream)] = False
                self.connector.on_close(stream)
            if self.stopping:
                return
            metrics.inc("kcs_reconnects_total", exchange=name)
            if time.monotonic() - started > 60.0:
                delay = settings.backoff_initial  # it was up for a while: start over
            wait = random.uniform(0.0, delay)  # full jitter, so many feeds do not stampede
            log.warning("%s: connection lost (%s); reconnecting in %.1f s", name, reason, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2.0, settings.backoff_max)

    async def _connect_and_read(self, stream: Stream) -> None:
        connector = self.connector
        settings = self.settings
        url = self.endpoint(stream.url)
        async with connect(url, max_size=settings.max_frame_bytes, open_timeout=15,
                           close_timeout=2, ping_interval=20, ping_timeout=20,
                           compression="deflate" if connector.compression else None,
                           user_agent_header=None) as ws:
            recording = self.recorder.open_ws(stream.url, time.time()) if self.recorder else None
            log.info("%s: connected to %s (%d symbols)", connector.name, url, len(stream.symbols))
            for message in stream.subscribe:
                await ws.send(message)
                if recording is not None:
                    recording.sent(message, time.time())
            self.connected[id(stream)] = True
            stream.ws = ws  # before on_open, which may send (send_soon) on it
            await connector.on_open(stream)
            helpers = [self.spawn(self._watchdog(ws, stream))]
            if connector.ping_interval and connector.ping_message is not None:
                helpers.append(self.spawn(self._heartbeat(ws, connector.ping_message,
                                                          connector.ping_interval)))
            try:
                await self._read(ws, stream, recording)
            finally:
                for task in helpers:
                    task.cancel()
                if recording is not None:
                    recording.close()

    async def _read(self, ws: ClientConnection, stream: Stream,
                    recording: WsRecorder | None) -> None:
        # The hot path: one frame in, records out. Kept flat on purpose.
        connector = self.connector
        out = connector.out
        on_frame = connector.on_frame
        now = time.time
        url = stream.url
        async for frame in ws:
            ts = now()
            stream.last_frame = ts
            self.frames += 1
            if recording is not None:
                recording.received(frame, ts)
            try:
                on_frame(frame, ts, stream)
            except Exception as exc:  # a bad frame must not stop the feed
                out.dlq(frame, f"{type(exc).__name__}: {exc}", ts, url)
            if out.pending:
                await out.drain()

    async def _watchdog(self, ws: ClientConnection, stream: Stream) -> None:
        """Close a connection that delivered nothing for `silence_timeout` seconds."""
        timeout = self.settings.silence_timeout
        connected_at = time.time()  # stream.last_frame stays the last frame's time
        while True:
            await asyncio.sleep(min(timeout / 4.0, 5.0))
            if time.time() - max(stream.last_frame, connected_at) > timeout:
                log.warning("%s: no data for %.0f s, reconnecting", self.connector.name, timeout)
                metrics.inc("kcs_silent_feeds_total", exchange=self.connector.name)
                await ws.close(code=4000, reason="silent feed")
                return

    async def _heartbeat(self, ws: ClientConnection, message: str | bytes,
                         interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await ws.send(message)

    def send_soon(self, stream: Stream, message: str | bytes) -> None:
        """Answer a server heartbeat from synchronous parsing code."""
        if stream.ws is not None:
            self.spawn(stream.ws.send(message))
