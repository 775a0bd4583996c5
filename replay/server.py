"""Recorded exchange sessions: parse them, serve them back, record new ones.

A recording folder holds, per exchange prefix `EX` (e.g. `BINANCE`), text files in the
cryptofeed line format (see `shared/replays/README.md`):

- `EX.0`         REST responses `URL -> TS: BODY`, then `configuration: {json}`;
- `EX.http.C.R`  REST calls made during the session, same line format (a trailing
                 ` header: {json}` is dropped);
- `EX.ws.C.R`    websocket connection C (rotation R): `URL <-> TS` (opened),
                 `URL <- TS: DATA` (client sent), `TS: DATA` (received). Binary frames are
                 written as Python bytes literals, text frames verbatim.

`load_recordings` parses a folder, `ReplayServer` plays it back on one local port (HTTP and
WebSocket, addressed as `/<original host>/<original path>`, see `replay_url`), and `Recorder`
writes live sessions in the same format so they can be replayed later.

The server delivers every recorded frame exactly once per server lifetime: the n-th
connection to a host+path gets the n-th recorded connection there, later ones stay idle.

CLI: `python -m exchanges.replay serve DIR [--port N] [--speed X]`.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import logging
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from aiohttp import WSCloseCode, web

__all__ = [
    "HOST_ALIASES",
    "HttpResponse",
    "Recorder",
    "Recording",
    "ReplayServer",
    "WsConnection",
    "WsRecorder",
    "load_recordings",
    "replay_url",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WsConnection:
    """One recorded websocket connection."""

    url: str
    opened_at: float
    sent: list[tuple[float, str]] = field(default_factory=list)  # binary: its bytes literal
    received: list[tuple[float, bytes | str]] = field(default_factory=list)  # bytes = binary


@dataclass(slots=True)
class HttpResponse:
    """One recorded REST response."""

    url: str
    ts: float
    body: str


@dataclass(slots=True)
class Recording:
    """Everything recorded for one exchange (one file prefix)."""

    exchange: str  # lower case, e.g. "binance"
    rest: list[HttpResponse] = field(default_factory=list)  # EX.0 first, then EX.http.C.R
    connections: list[WsConnection] = field(default_factory=list)  # ordered by C
    configuration: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Parsing

_FILE_NAME = re.compile(r"(?P<prefix>[^.]+)\.(?:0|(?P<kind>http|ws)\.(?P<c>\d+)\.(?P<r>\d+))")
_CONFIGURATION = "configuration: "
_HEADER = " header: {"


def load_recordings(directory: str | Path) -> dict[str, Recording]:
    """Parse every recording in `directory`, keyed by lower-case exchange name."""
    initial: dict[str, Path] = {}
    numbered: dict[str, list[tuple[int, int, str, Path]]] = {}
    for path in Path(directory).iterdir():
        match = _FILE_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue  # README, licence, anything else
        prefix = match["prefix"]
        if match["kind"] is None:
            initial[prefix] = path
        else:
            entry = (int(match["c"]), int(match["r"]), match["kind"], path)
            numbered.setdefault(prefix, []).append(entry)

    recordings: dict[str, Recording] = {}
    for prefix in sorted(initial.keys() | numbered.keys()):
        recording = Recording(exchange=prefix.lower())
        if prefix in initial:
            _read_rest(initial[prefix], recording)
        by_connection: dict[int, WsConnection] = {}
        # (C, R) order: rotations of one connection follow each other
        for c, _r, kind, path in sorted(numbered.get(prefix, [])):
            if kind == "http":
                _read_rest(path, recording)
            else:
                by_connection[c] = _read_ws(path, by_connection.get(c))
        recording.connections = [by_connection[c] for c in sorted(by_connection)]
        recordings[recording.exchange] = recording
    return recordings


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) for the non-empty lines of a recording file."""
    # newline="\n": bodies may contain "\r" or Unicode line separators; only "\n" ends a line
    with open(path, encoding="utf-8", newline="\n") as file:
        for number, line in enumerate(file, 1):
            line = line.removesuffix("\n")
            if line:
                yield number, line


def _read_rest(path: Path, recording: Recording) -> None:
    """Append the REST lines of `EX.0` or `EX.http.C.R` (only `EX.0` has `configuration:`)."""
    for number, line in _lines(path):
        try:
            if line.startswith(_CONFIGURATION):
                recording.configuration = json.loads(line.removeprefix(_CONFIGURATION))
            else:
                recording.rest.append(_parse_http_line(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc


def _parse_http_line(line: str) -> HttpResponse:
    """`URL -> TS: BODY[ header: {json}]`."""
    url, arrow, rest = line.partition(" -> ")
    ts, colon, body = rest.partition(": ")
    if not arrow or not colon:
        raise ValueError(f"not a REST line: {line[:80]!r}")
    head, header, tail = body.rpartition(_HEADER)
    if header and tail.endswith("}"):
        body = head
    return HttpResponse(url=url, ts=float(ts), body=body)


def _read_ws(path: Path, connection: WsConnection | None) -> WsConnection:
    """Parse one ws file; `connection` is the same C's earlier rotation, if any."""
    for number, line in _lines(path):
        try:
            if line[0].isdigit():  # `TS: DATA`; every other line starts with the URL
                ts, _, data = line.partition(": ")
                if connection is None:
                    raise ValueError("frame received before the connection was opened")
                connection.received.append((float(ts), _decode_frame(data)))
                continue
            url, arrow, rest = line.split(" ", 2)
            if arrow == "<->":
                # a later rotation may repeat the open line: it is still the same connection
                if connection is None:
                    connection = WsConnection(url=url, opened_at=float(rest))
            elif arrow == "<-":
                ts, _, data = rest.partition(": ")
                if connection is None:
                    raise ValueError("frame sent before the connection was opened")
                connection.sent.append((float(ts), data))
            else:
                raise ValueError(f"unknown line {line[:80]!r}")
        except (ValueError, SyntaxError) as exc:  # SyntaxError: broken bytes literal
            raise ValueError(f"{path}:{number}: {exc}") from exc
    if connection is None:
        raise ValueError(f"{path}: no `URL <-> TS` line")
    return connection


def _decode_frame(data: str) -> bytes | str:
    if not data.startswith(("b'", 'b"')):
        return data
    frame = ast.literal_eval(data)
    if isinstance(frame, bytes):
        return frame
    raise ValueError(f"not a bytes literal: {data[:80]!r}")


# ---------------------------------------------------------------------------------------------
# Addressing

_HttpKey = tuple[str, str, tuple[tuple[str, str], ...]]


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


# ---------------------------------------------------------------------------------------------
# Recorder

_BUFFER = 1 << 16  # the file flushes itself whenever this fills up, and on close


def _one_line(text: str) -> str:
    # The format has no escape for newlines. In JSON, where they can occur at all, a raw
    # newline is only insignificant whitespace, so a space keeps the meaning.
    return text.replace("\n", " ") if "\n" in text else text


class Recorder:
    """Write a live session of one exchange as `EX.http.0.0` and `EX.ws.C.0` files."""

    def __init__(self, directory: str | Path, exchange: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = exchange.upper()
        # continue after connections already in the folder instead of overwriting them
        taken = (
            int(match["c"])
            for path in self.directory.glob(f"{self.prefix}.ws.*.*")
            if (match := _FILE_NAME.fullmatch(path.name)) and match["prefix"] == self.prefix
        )
        self._next_connection = max(taken, default=0) + 1
        self._http: TextIO | None = None
        self._sockets: list[WsRecorder] = []

    def open_ws(self, url: str, ts: float) -> WsRecorder:
        path = self.directory / f"{self.prefix}.ws.{self._next_connection}.0"
        self._next_connection += 1
        self._sockets = [ws for ws in self._sockets if not ws.closed]
        recorder = WsRecorder(path, url, ts)
        self._sockets.append(recorder)
        return recorder

    def http(self, url: str, ts: float, body: str) -> None:
        if self._http is None:
            path = self.directory / f"{self.prefix}.http.0.0"
            # held open for the whole session, closed in close()
            self._http = open(path, "a", encoding="utf-8", buffering=_BUFFER)
        self._http.write(f"{url} -> {ts!r}: {_one_line(body)}\n")

    def close(self) -> None:
        for ws in self._sockets:
            ws.close()
        self._sockets.clear()
        if self._http is not None:
            self._http.close()
            self._http = None


class WsRecorder:
    """One recorded websocket connection (file `EX.ws.C.0`); made by `Recorder.open_ws`."""

    __slots__ = ("_file", "url")

    def __init__(self, path: Path, url: str, ts: float) -> None:
        self.url = url
        # held open for the whole connection, closed in close()
        self._file = open(path, "w", encoding="utf-8", buffering=_BUFFER)
        self._file.write(f"{url} <-> {ts!r}\n")
        self._file.flush()  # a file never lacks its open line, even if the process dies

    @property
    def closed(self) -> bool:
        return self._file.closed

    def sent(self, data: str | bytes, ts: float) -> None:
        text = repr(data) if isinstance(data, bytes) else _one_line(data)
        self._file.write(f"{self.url} <- {ts!r}: {text}\n")

    def received(self, data: str | bytes, ts: float) -> None:
        # hot path: one isinstance, one format, one buffered write
        if isinstance(data, bytes):
            self._file.write(f"{ts!r}: {data!r}\n")
        else:
            self._file.write(f"{ts!r}: {_one_line(data)}\n")

    def close(self) -> None:
        self._file.close()  # a no-op when already closed


# ---------------------------------------------------------------------------------------------
# CLI


async def _serve(directory: Path, port: int, speed: float) -> None:
    recordings = load_recordings(directory)
    server = ReplayServer(recordings, speed=speed, port=port)
    await server.start()
    connections = sum(len(recording.connections) for recording in recordings.values())
    bodies = sum(len(recording.rest) for recording in recordings.values())
    print(
        f"replay server on {server.base_url} ({connections} connections, {bodies} REST bodies)",
        flush=True,
    )
    try:
        await asyncio.Event().wait()  # until Ctrl-C cancels us
    finally:
        await server.stop()


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m exchanges.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a recordings folder until Ctrl-C")
    serve.add_argument("directory", type=Path, help="folder with EX.0 / EX.ws.C.R files")
    serve.add_argument("--port", type=int, default=8123, help="port to bind (default 8123)")
    serve.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="0 = as fast as possible (default); 1 = recorded pace; 2 = twice as fast",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.directory, args.port, args.speed))


if __name__ == "__main__":
    _main()
