"""Recorded exchange sessions, parsed: the one reader of recording files.

A recording folder holds, per exchange prefix `EX` (e.g. `BINANCE`), text files in the
cryptofeed line format (see `shared/replays/README.md`):

- `EX.0`         REST responses `URL -> TS: BODY`, then `configuration: {json}`;
- `EX.http.C.R`  REST calls made during the session, same line format (a trailing
                 ` header: {json}` is dropped);
- `EX.ws.C.R`    websocket connection C (rotation R): `URL <-> TS` (opened),
                 `URL <- TS: DATA` (client sent), `TS: DATA` (received). Binary frames are
                 written as Python bytes literals, text frames verbatim.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FILE_NAME", "HttpResponse", "Recording", "WsConnection", "load_recordings"]


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

FILE_NAME = re.compile(r"(?P<prefix>[^.]+)\.(?:0|(?P<kind>http|ws)\.(?P<c>\d+)\.(?P<r>\d+))")
_CONFIGURATION = "configuration: "
_HEADER = " header: {"


def load_recordings(directory: str | Path) -> dict[str, Recording]:
    """Parse every recording in `directory`, keyed by lower-case exchange name."""
    initial: dict[str, Path] = {}
    numbered: dict[str, list[tuple[int, int, str, Path]]] = {}
    for path in Path(directory).iterdir():
        match = FILE_NAME.fullmatch(path.name)
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
