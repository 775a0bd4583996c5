"""The replay server: recorded sessions served back on one local port (HTTP and WebSocket,
addressed as `/<original host>/<original path>`, see `exchanges.session.replay_url`).

Every recorded frame is delivered exactly once per server lifetime: the n-th connection to a
host+path gets the n-th recorded connection there. A connection that fails before its
recording was sent completely is resumed by the next connection to the same path, from the
first frame the client may not have read. Once everything was sent, `finished` is True and
later connections are told so (closed with code 4001, "replay finished").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import WSCloseCode, web

from exchanges.session import replay_url
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
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        self.speed = speed
        self.host = host
        self.port = port
        self.base_url = ""
        self.replayed_frames = 0
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
            queue = self._pending.get((host, path))
            connection = queue.popleft() if queue else None
            await self._replay(ws, connection)
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

    async def _replay(self, ws: web.WebSocketResponse, connection: WsConnection | None) -> None:
        self._sockets.add(ws)
        heard = asyncio.Event()  # set on the client's first message (or when it goes away)
        reader = asyncio.create_task(_drain(ws, heard))
        try:
            if connection is not None:
                log.info("replay: %s (%d frames)", connection.url, len(connection.received))
                if connection.sent:
                    # the live exchange answered only after the subscription: do the same
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(heard.wait(), 2.0)
                await self._stream(ws, connection)
            await reader  # stay open and idle until the client closes or the server stops
        finally:
            reader.cancel()
            self._sockets.discard(ws)

    async def _stream(self, ws: web.WebSocketResponse, connection: WsConnection) -> None:
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
            if ws.closed:
                return
            try:
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_str(data)
            except ConnectionResetError:
                return  # client went away mid-stream; the rest is not replayed elsewhere
            self.replayed_frames += 1
        self._unsent -= 1


async def _drain(ws: web.WebSocketResponse, heard: asyncio.Event) -> None:
    """Read and drop client messages; reading also answers pings and notices the close."""
    try:
        async for _ in ws:
            heard.set()
    finally:
        heard.set()
