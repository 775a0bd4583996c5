"""What every exchange module declares: its endpoints and channels as data, and its parsing.

An exchange module subclasses `Connector`, sets the class attributes, and implements
`connections()` (which sockets to open and what to send on them) and `on_frame()` (turn one
received frame into records on `self.out`). Everything else - connecting, heartbeats,
reconnecting, the silence watchdog, DLQ on parse errors, recording and replay - is done once
in `exchanges.session`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from exchanges.book import L2Book
from exchanges.publisher import Publisher

if TYPE_CHECKING:
    from config.settings import Settings
    from exchanges.session import Session

__all__ = ["Connector", "Stream", "Subscriptions", "CHANNELS"]

log = logging.getLogger(__name__)

CHANNELS = ("trades", "book", "ticker")

# unified symbol ("BTC-KRW") -> channels ({"trades", "book"})
Subscriptions = dict[str, set[str]]


@dataclass(slots=True)
class Stream:
    """One WebSocket connection: where to connect and what to send once connected."""

    url: str
    subscribe: list[str | bytes] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)  # unified symbols carried on it
    # Runtime state, set by the session.
    ws: Any = None
    last_frame: float = 0.0
    frames: int = 0  # received on this stream, over every connection
    attempt: int = 0  # connections opened (1 = the first)


class Connector:
    name: ClassVar[str]
    # Application-level heartbeat the client must send (None: WebSocket pings suffice).
    ping_interval: ClassVar[float | None] = None
    ping_message: ClassVar[str | bytes | None] = None
    # Offer permessage-deflate where the exchange supports it.
    compression: ClassVar[bool] = False
    # The exchange's market code -> our `BASE-QUOTE` (modules set their `to_unified`).
    to_unified: ClassVar[Callable[[str], str]]

    def __init__(self, subscriptions: Subscriptions, out: Publisher, settings: Settings) -> None:
        self.subscriptions = subscriptions
        self.out = out
        self.settings = settings
        self.depth = settings.book_depth
        self.books: dict[str, L2Book] = {}
        self.session: Session | None = None  # set by the session that runs this connector
        self._unified: dict[str, str] = {}  # memo of `symbol()`
        # Native code -> unified symbol of the markets subscribed, filled by modules whose
        # codes (`BTCUSDT`) cannot be split without the market list; read by `subscribed()`.
        self.unified: dict[str, str] = {}

    # -- to implement per exchange -------------------------------------------------------

    def connections(self) -> list[Stream]:
        raise NotImplementedError

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        """Parse one frame and append its records to `self.out`; raise on a bad frame."""
        raise NotImplementedError

    async def on_open(self, stream: Stream) -> None:
        """Called after connecting and subscribing; e.g. to request snapshots."""

    # -- shared helpers --------------------------------------------------------------------

    def symbol(self, native: str) -> str:
        """The unified symbol of an exchange's market code, worked out once per market."""
        symbol = self._unified.get(native)
        if symbol is None:
            symbol = self._unified[native] = self.to_unified(native)
        return symbol

    def subscribed(self, native: str) -> str:
        """The unified symbol of a subscribed market (`self.unified`); a frame about any other
        market is a bad frame (it goes to the DLQ)."""
        symbol = self.unified.get(native)
        if symbol is None:
            raise ValueError(f"market {native} was not subscribed")
        return symbol

    def symbols_with(self, channel: str) -> list[str]:
        return [s for s, channels in self.subscriptions.items() if channel in channels]

    def on_close(self, stream: Stream) -> None:
        """A connection ended: its books can no longer be proven current, so drop them."""
        for symbol in stream.symbols:
            book = self.books.get(symbol)
            if book is not None:
                book.clear()

    def resume_after(self, symbol: str, last_trade_id: str, last_ts: float,
                     ids_at_ts: Any = ()) -> None:
        """Publish only the market's trades after `last_trade_id` (at `last_ts`): what a new
        owner of this feed learned from Kafka was published before it took over."""
        self.out.resume_after(symbol, last_trade_id, last_ts, ids_at_ts)

    def resync(self, symbol: str, reason: str) -> None:
        """Drop a book that cannot be proven consistent and make it visible on `ws.error`."""
        book = self.books.get(symbol)
        if book is not None:
            book.clear()
        log.warning("%s %s: book dropped and resynced: %s", self.name, symbol, reason)
        self.out.error(symbol, reason)

    async def get_json(self, url: str) -> Any:
        """A REST GET through the session (replayable and recorded like the WebSocket)."""
        assert self.session is not None
        return orjson.loads(await self.session.http_get(url))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        assert self.session is not None
        return self.session.spawn(coro)
