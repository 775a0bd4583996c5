"""The one WebSocket session mechanism: runs a connector's streams forever.

For each `Stream` of a connector: connect (through the replay server when replaying, the
same code otherwise), send the subscriptions, keep the exchange's heartbeat, hand every
frame to the connector, and reconnect with exponential backoff and full jitter whenever the
connection fails or goes silent for `silence_timeout`. It never gives up: a market-data feed
that stops retrying is a dead feed. The backoff starts over after a connection that delivered
data. Any other end of a connection's task (a bug) is logged with its traceback, counted
(`kcs_stream_crashes_total`) and restarted the same way.

Per-frame protection: a frame the connector cannot parse, that carries a value that cannot be
published, or whose records cannot be encoded goes to the DLQ with its raw bytes and the
reason; nothing of it is published and the next frame is read as usual.

Replay: the replay server closes a connection with code 4001 once it has served every
recorded frame of that path; the stream then ends ("replay finished") instead of
reconnecting forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection, connect

from config.settings import Settings
from exchanges import REGIONS
from exchanges.base import Connector, Stream, Subscriptions
from exchanges.metrics import metrics
from exchanges.values import BadValue

__all__ = ["Session", "replay_url", "REPLAY_FINISHED"]

log = logging.getLogger(__name__)

REPLAY_FINISHED = 4001  # close code of the replay server: every recorded frame was served


def replay_url(url: str, base: str) -> str:
    """Map a live URL onto the replay server at `base` ("http://HOST:PORT").

    'wss://api.upbit.com/websocket/v1' -> 'ws://HOST:PORT/api.upbit.com/websocket/v1';
    http(s) URLs map to 'http://HOST:PORT/<host>/<path>?<query>'. The original port is
    dropped, the query is kept.
    """
    live, server = urlsplit(url), urlsplit(base)
    secure = server.scheme == "https"
    if live.scheme in ("ws", "wss"):
        scheme = "wss" if secure else "ws"
    else:
        scheme = "https" if secure else "http"
    path = f"/{live.hostname}{live.path or '/'}"
    return urlunsplit((scheme, server.netloc, path, live.query, ""))


class WsRecording(Protocol):
    def sent(self, data: str | bytes, ts: float) -> None: ...
    def received(self, data: str | bytes, ts: float) -> None: ...
    def close(self) -> None: ...


class SessionRecorder(Protocol):
    """What records a session (`replay.recorder.Recorder`, given by the app when recording)."""

    def open_ws(self, url: str, ts: float) -> WsRecording: ...
    def http(self, url: str, ts: float, body: str) -> None: ...
    def close(self) -> None: ...


class ReplayFinished(Exception):
    """The replay server served everything recorded for this stream."""


class Session:
    def __init__(self, connector: Connector, settings: Settings, replay_base: str = "",
                 recorder: SessionRecorder | None = None) -> None:
        self.connector = connector
        self.settings = settings
        self.replay_base = replay_base
        self.recorder = recorder
        # refused at start, with the setting's name, rather than in a helper task later
        self.stale_after = settings.stale_after_for(connector.name, connector.stale_after)
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        # The streams being kept up, and whether each is connected now (by id(stream); a
        # stream not in it has not connected yet). Read by the health view.
        self.streams: list[Stream] = []
        self.connected: dict[int, bool] = {}
        self.finished: set[int] = set()  # id(stream) of the streams whose replay has ended
        self.readers: dict[int, asyncio.Task[Any]] = {}  # id(stream) -> its run_stream
        self.recordings: dict[int, WsRecording] = {}  # id(stream) -> its open recording
        self.stopping = False
        self.frames = 0
        # Called with the stream once a (re)connection has delivered its first frame: the
        # subscriptions were taken (the ingest service announces it on ws.connect_success).
        self.on_connect: Callable[[Stream], None] | None = None
        connector.session = self

    def endpoint(self, url: str) -> str:
        return replay_url(url, self.replay_base) if self.replay_base else url

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A helper task (a snapshot load, a backfill) that failed is logged and counted,
        never lost silently."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            name = self.connector.name
            log.error("%s: task %s failed", name, task.get_coro(), exc_info=task.exception())
            metrics.inc("kcs_stream_crashes_total", exchange=name)

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.streams = list(self.connector.connections())
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

    def log_fields(self, phase: str, request_type: str = "websocket") -> dict[str, str]:
        """The connection logging schema's fields (`extra=` of a log call)."""
        name = self.connector.name
        return {"exchange": name, "region": REGIONS.get(name, ""), "request_type": request_type,
                "phase": phase}

    def metric_samples(self, now: float) -> list[tuple[str, tuple[str, ...], float]]:
        """Frames, connection state and frame age per stream (exchanges.metrics), plus the
        publisher's figures; a stream is labelled by its index in `connections()`."""
        name = self.connector.name
        samples = [("kcs_frames", (name,), float(self.frames))]
        for index, stream in enumerate(self.streams):
            labels = (name, str(index))
            samples.append(("kcs_connection_up", labels,
                            1.0 if self.connected.get(id(stream)) else 0.0))
            if stream.last_frame:
                samples.append(("kcs_last_frame_age_seconds", labels, now - stream.last_frame))
        return samples + self.connector.out.metric_samples(now)

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
        """Keep one stream connected forever (until a replay has served everything)."""
        name = self.connector.name
        settings = self.settings
        delay = settings.backoff_initial
        while not self.stopping:
            frames_before = self.frames
            try:
                try:
                    await self._connect_and_read(stream)
                except websockets.ConnectionClosed as exc:
                    if self.replay_base and exc.rcvd is not None and \
                            exc.rcvd.code == REPLAY_FINISHED:
                        raise ReplayFinished from None
                    raise
                reason = "closed by the server"
            except ReplayFinished:
                log.warning("%s: replay finished for %s: every recorded frame was served",
                            name, stream.url)
                self.connected[id(stream)] = False
                self.finished.add(id(stream))
                stream.ws = None
                self._closed(stream, "replay finished")
                return
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug: never a silent end of the feed
                log.exception("%s: the connection task failed; restarting it", name)
                metrics.inc("kcs_stream_crashes_total", exchange=name)
                reason = f"{type(exc).__name__}: {exc}"
            except BaseException:  # cancelled (stop): the stream is down
                self.connected[id(stream)] = False
                raise
            self.connected[id(stream)] = False
            stream.ws = None
            if self.stopping:  # closed by stop(): not a lost connection, nothing to report
                return
            self._closed(stream, reason)
            await self._drain_quietly()
            metrics.inc("kcs_reconnects_total", exchange=name)
            if self.frames > frames_before:
                delay = settings.backoff_initial  # it delivered data: start over
            wait = random.uniform(0.0, delay)  # full jitter, so many feeds do not stampede
            log.warning("%s: connection lost (%s); reconnecting in %.1f s", name, reason, wait,
                        extra=self.log_fields("reconnect"))
            await asyncio.sleep(wait)
            delay = min(delay * 2.0, settings.backoff_max)

    def _closed(self, stream: Stream, reason: str) -> None:
        stream.close_reason = reason
        try:
            self.connector.on_close(stream)
        except Exception:
            log.exception("%s: on_close failed", self.connector.name)
            metrics.inc("kcs_stream_crashes_total", exchange=self.connector.name)

    async def _drain_quietly(self) -> None:
        """Send what on_close queued (its `ws.error` events); a failure is logged, not fatal."""
        try:
            await self.connector.out.drain()
        except Exception:
            log.exception("%s: could not hand records to Kafka", self.connector.name)
            metrics.inc("kcs_produce_errors_total")

    async def _connect_and_read(self, stream: Stream) -> None:
        connector = self.connector
        settings = self.settings
        url = self.endpoint(stream.url)
        async with connect(url, max_size=settings.max_frame_bytes, open_timeout=15,
                           close_timeout=2, ping_interval=20, ping_timeout=20,
                           compression="deflate" if connector.compression else None,
                           user_agent_header=None) as ws:
            recording = self.recorder.open_ws(stream.url, time.time()) if self.recorder else None
            if recording is not None:
                self.recordings[id(stream)] = recording  # a live change is recorded too
            log.info("%s: connected to %s (%d symbols)", connector.name, url, len(stream.symbols),
                     extra=self.log_fields("connected"))
            for message in stream.subscribe:
                await ws.send(message)
                if recording is not None:
                    recording.sent(message, time.time())
            self.connected[id(stream)] = True
            stream.ws = ws  # before on_open, which may send (send_soon) on it
            stream.connects += 1
            stream.attempt += 1
            opened = stream.frames
            await connector.on_open(stream)
            if stream.connects > 1 or connector.resume_points:
                connector.after_reconnect(stream)
            helpers = [self.spawn(self._watchdog(ws, stream)),
                       self.spawn(self._stale_books(stream))]
            if self.on_connect is not None:
                helpers.append(self.spawn(self._announce(stream, opened)))
            if connector.ping_interval and connector.ping_message is not None:
                helpers.append(self.spawn(self._heartbeat(ws, connector.ping_message,
                                                          connector.ping_interval)))
            try:
                await self._read(ws, stream, recording)
            finally:
                for task in helpers:
                    task.cancel()
                if recording is not None:
                    self.recordings.pop(id(stream), None)
                    recording.close()

    async def _read(self, ws: ClientConnection, stream: Stream,
                    recording: WsRecording | None) -> None:
        # The hot path: one frame in, records out. Kept flat on purpose.
        connector = self.connector
        out = connector.out
        on_frame = connector.on_frame
        now = time.time
        url = stream.url
        async for frame in ws:
            ts = now()
            stream.last_frame = ts
            stream.frames += 1
            self.frames += 1
            if recording is not None:
                recording.received(frame, ts)
            mark = len(out.pending)
            try:
                on_frame(frame, ts, stream)
                if len(out.pending) > mark:
                    out.encode(mark)
            except Exception as exc:  # a bad frame must not stop the feed
                del out.pending[mark:]  # nothing of a bad frame is published
                out.reject(frame, exc, ts, url)
                if isinstance(exc, BadValue) and exc.book is not None:
                    connector.book_rejected(exc.book, str(exc), stream)
            if out.pending:
                await out.drain()

    async def _announce(self, stream: Stream, opened: int) -> None:
        """Call `on_connect` when the connection's first frame has arrived."""
        while stream.frames <= opened:
            await asyncio.sleep(0.05)
        if self.on_connect is not None:
            self.on_connect(stream)

    async def _watchdog(self, ws: ClientConnection, stream: Stream) -> None:
        """Close a connection that delivered nothing for `silence_timeout` seconds."""
        timeout = self.settings.silence_timeout
        stream.last_frame = time.time()  # the silence is counted from the connection
        while True:
            await asyncio.sleep(min(timeout / 4.0, 5.0))
            if time.time() - stream.last_frame > timeout:
                log.warning("%s: no data for %.0f s, reconnecting", self.connector.name, timeout,
                            extra=self.log_fields("silent"))
                metrics.inc("kcs_silent_feeds_total", exchange=self.connector.name)
                await ws.close(code=4000, reason="silent feed")
                return

    async def _stale_books(self, stream: Stream) -> None:
        """Check the stream's books for exchange time that stopped advancing."""
        connector = self.connector
        stale_after = self.stale_after
        interval = min(stale_after / 4.0, 1.0)
        while True:
            await asyncio.sleep(interval)
            connector.check_stale(stream, time.time(), stale_after)
            if connector.out.pending:
                await connector.out.drain()

    def reconnect_soon(self, stream: Stream, reason: str) -> None:
        """Close the stream's connection (it reconnects as after any drop)."""
        if stream.ws is not None:
            log.warning("%s: reconnecting: %s", self.connector.name, reason)
            self.spawn(stream.ws.close(code=4002, reason=reason[:100]))

    async def change(self, subscriptions: Subscriptions) -> Stream | None:
        """Apply a new subscription set on the open connection, where the venue allows it
        (`Connector.live_changes`) and the set stays on one connection; the stream it was
        applied on, or None: the caller reconnects with the new set instead.

        Books of markets added start empty (each venue's usual first-snapshot path fills
        them); books of markets removed are dropped. The stream's URL, subscribe messages and
        symbols become the new set's, so a later reconnect asks for the new set."""
        connector = self.connector
        if connector.live_changes == "reconnect" or len(self.streams) != 1:
            return None
        stream = self.streams[0]
        ws = stream.ws
        if ws is None or not self.connected.get(id(stream)):
            return None
        old, books = connector.subscriptions, connector.books
        added = {s: set(c) - old.get(s, set()) for s, c in subscriptions.items()}
        removed = {s: c - subscriptions.get(s, set()) for s, c in old.items()}
        added = {s: c for s, c in added.items() if c}
        removed = {s: c for s, c in removed.items() if c}
        connector.subscriptions, connector.books = subscriptions, {}
        connector.on_subscriptions(added, removed)
        planned = connector.connections()
        if len(planned) != 1:  # the new set needs another number of connections: reconnect
            connector.subscriptions, connector.books = old, books
            return None
        # the books that stay are the live ones; the new ones are the plan's empty books
        connector.books = {s: books.get(s, book) for s, book in connector.books.items()}
        plan = planned[0]
        if connector.live_changes == "replace":
            messages = list(plan.subscribe)
        else:
            messages = connector.change_messages(stream, added, removed)
        stream.url, stream.subscribe, stream.symbols = plan.url, plan.subscribe, plan.symbols
        connector.adopt(plan, stream)
        recording = self.recordings.get(id(stream))
        try:
            for message in messages:
                await ws.send(message)
                if recording is not None:
                    recording.sent(message, time.time())
        except websockets.ConnectionClosed:
            return None  # lost meanwhile: the caller reconnects with the new set
        log.warning("%s: subscriptions changed on the open connection (+%s -%s)", connector.name,
                    ",".join(sorted(added)) or "nothing", ",".join(sorted(removed)) or "nothing",
                    extra=self.log_fields("subscribe"))
        return stream

    async def _heartbeat(self, ws: ClientConnection, message: str | bytes,
                         interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await ws.send(message)

    def send_soon(self, stream: Stream, message: str | bytes) -> None:
        """Answer a server heartbeat from synchronous parsing code."""
        if stream.ws is not None:
            self.spawn(stream.ws.send(message))
