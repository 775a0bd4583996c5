"""Record live sessions in the replay format (`EX.http.0.0`, `EX.ws.C.0`), so they can be
replayed later. The session gets a `Recorder` from the app when `KCS_RECORD` is set."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from replay.recordings import FILE_NAME

__all__ = ["Recorder", "WsRecorder"]

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
            if (match := FILE_NAME.fullmatch(path.name)) and match["prefix"] == self.prefix
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
