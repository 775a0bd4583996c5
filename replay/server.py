"""The replay server: recorded sessions served back on one local port (HTTP and WebSocket,
addressed as `/<original host>/<original path>`, see `exchanges.session.replay_url`).

Every recorded connection is delivered completely: the n-th connection to a host+path gets
the n-th recorded connection there. A connection that fails before its recording was sent
completely hands that recording to the next connection to the same path, from its start
(the connector's trade deduplication keeps each trade once; books resync as after any
reconnect). Once a path's recordings were all sent, a later connection there is closed with
code 4001 ("replay finished", `exchanges.session.REPLAY_FINISHED`), so the feed stops instead
of reconnecting forever; once every recording was sent, `finished` is True and the server
logs it. `cut_after=N` aborts the first connection to each path after N frames (to test
that a failed connection loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import WSCloseCode, web

from exchanges.session import REPLAY_FINISHED, replay_url
from replay.recordings import Recording, WsConnection

__all__ = ["HOST_ALIASES", "ReplayServer", "replay_url"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Addressing

_HttpKey = tuple[str, str, tuple[tuple[str, str], ...]]


# Hosts that serve the same feed under a newer name -> the name the recordings were made
# under. Applied to both sides when matching a request to a recording, so a connector keeps
# its live URL and still gets an old recording.
HOST_ALIASES = {
    "ws-feed.exchange.coinbase.com": "ws-feed.pro.coinbase.com",  # Coinbase Pro -> Exchange
    "api-pub.bitfinex.com": "api.bitfinex.com",  # Bitfinex's public-only host, same protocol
    "api.exchange.coinbase.com": "api.pro.coinbase.com",  # REST, renamed with the feed
}


def _recorded_host(host: str) -> str:
    host = host.lower()
    return HOST_ALIASES.get(host, host)


def _host_and_path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return _recorded_host(parts.hostname or ""), _normal_path(parts.path)


def _normal_path(path: str) -> str:
    # clients differ in trailing slashes and percent-encoding; neither selects another resource
    return "/" + unquote(path).strip("/")


def _params(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    # `limit` only sizes a depth snapshot: Binance was recorded with 1000, clients may ask 5000
    return tuple(sorted((name, value) for name, value in pairs if name != "limit"))


# ---------------------------------------------------------------------------------------------
# Server


class ReplayServer:
    """Serve recordings over HTTP and WebSocket on one local port (aiohttp)."""

    def __init__(
        self,
        recordings: dict[str, Recording],
        *,
        speed: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        cut_after: int = 0,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        self.speed = speed
        self.host = host
        self.port = port
        self.base_url = ""
        self.replayed_frames = 0
        self.cut_after = cut_after
        self._cut: set[tuple[str, str]] = set()  # paths whose first connection was cut
        self._in_flight: Counter[tuple[str, str]] = Counter()  # connections being sent
        # recorded connections not handed out yet, per (host, path), in recorded order
        self._pending: dict[tuple[str, str], deque[WsConnection]] = {}
        self._bodies: dict[_HttpKey, list[str]] = {}
        self._served: Counter[_HttpKey] = Counter()
        self._unsent = 0  # recorded connections whose frames were not all sent yet
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        for recording in recordings.values():
            for connection in recording.connections:
                key = _host_and_path(connection.url)
                self._pending.setdefault(key, deque()).append(connection)
                self._unsent += 1
            for response in recording.rest:
                host, path = _host_and_path(response.url)
                query = parse_qsl(urlsplit(response.url).query, keep_blank_values=True)
                self._bodies.setdefault((host, path, _params(query)), []).append(response.body)

    @property
    def finished(self) -> bool:
        """True once every recorded websocket connection has been sent completely."""
        return self._unsent == 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        # no access log: a replay makes many requests and nobody reads them
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        # close our websockets first: the runner would otherwise wait for them to end. A client
        # that stopped reading can block a close; the runner's shutdown timeout handles it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(
                    *(ws.close(code=WSCloseCode.GOING_AWAY) for ws in list(self._sockets)),
                    return_exceptions=True,
                )
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host, _, path = request.rel_url.raw_path.lstrip("/").partition("/")
        host, path = _recorded_host(host), _normal_path(path)
        ws = web.WebSocketResponse(compress=False, timeout=2.0)
        if ws.can_prepare(request).ok:
            await ws.prepare(request)
            key = (host, path)
            queue = self._pending.get(key)
            # another connection to this path is still being sent: if it fails, its
            # recording comes back to the queue, so wait for that or for its end
            while not queue and self._in_flight[key] and not ws.closed:
                await asyncio.sleep(0.05)
            if not queue:
                await ws.close(code=REPLAY_FINISHED, message=b"replay finished")
                return ws
            connection = queue.popleft()
            self._in_flight[key] += 1
            try:
                await self._replay(ws, connection, key)
            finally:
                self._in_flight[key] -= 1
            return ws
        return self._answer(host, path, request.rel_url.query.items())

    def _answer(self, host: str, path: str, query: Iterable[tuple[str, str]]) -> web.Response:
        key = (host, path, _params(query))
        bodies = self._bodies.get(key)
        if not bodies:
            reason = f"no recorded response for {host}{path} with parameters {key[2]}"
            log.warning("replay: %s", reason)
            return web.Response(status=404, text=reason)
        # several snapshots of one resource: hand them out in order, then keep the last
        body = bodies[min(self._served[key], len(bodies) - 1)]
        self._served[key] += 1
        return web.Response(text=body, content_type="application/json")

    async def _replay(self, ws: web.WebSocketResponse, connection: WsConnection,
                      key: tuple[str, str]) -> None:
        self._sockets.add(ws)
        heard = asyncio.Event()  # set on the client's first message (or when it goes away)
        reader = asyncio.create_task(_drain(ws, heard))
        try:
            log.info("replay: %s (%d frames)", connection.url, len(connection.received))
            if connection.sent:
                # the live exchange answered only after the subscription: do the same
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), 2.0)
            cut = 0
            if self.cut_after and key not in self._cut:
                self._cut.add(key)
                cut = self.cut_after
            if not await self._stream(ws, connection, cut):
                log.warning("replay: %s failed before its recording was sent; the next "
                            "connection gets it", connection.url)
                self._pending[key].appendleft(connection)
                return
            self._unsent -= 1
            if self._unsent == 0:
                log.warning("replay finished: every recorded frame was served (%d frames)",
                            self.replayed_frames)
            await reader  # stay open and idle until the client closes or the server stops
        finally:
            reader.cancel()
            self._sockets.discard(ws)

    async def _stream(self, ws: web.WebSocketResponse, connection: WsConnection,
                      cut: int = 0) -> bool:
        """Send the recorded frames; False if the connection failed (or was cut) first."""
        frames = connection.received
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_ts = frames[0][0] if frames else 0.0
        for index, (ts, data) in enumerate(frames):
            if self.speed > 0:
                # schedule against the start, not the previous frame, so delays do not add up
                delay = started + (ts - first_ts) / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif index % 100 == 99:
                await asyncio.sleep(0)  # let other connections and the client's reads run
            if cut and index == cut:
                transport = ws._req.transport if ws._req is not None else None  # noqa: SLF001
                if transport is not None:
                    transport.abort()  # a failure, not a close: no close frame
                return False
            if ws.closed:
                return False
            try:
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_str(data)
            except ConnectionResetError:
                return False  # client went away mid-stream: the next connection gets it all
            self.replayed_frames += 1
        return True


async def _drain(ws: web.WebSocketResponse, heard: asyncio.Event) -> None:
    """Read and drop client messages; reading also answers pings and notices the close."""
    try:
        async for _ in ws:
            heard.set()
    finally:
        heard.set()
