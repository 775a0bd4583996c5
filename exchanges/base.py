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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from mypy_extensions import mypyc_attr

from exchanges.book import L2Book
from exchanges.codecs import DecodeError, ValidationError, refused
from exchanges.history import backfill
from exchanges.publisher import Publisher
from exchanges.values import INF
from records import Trade

if TYPE_CHECKING:
    from config.settings import Settings
    from exchanges.session import Session

__all__ = ["Connector", "Stream", "Subscriptions", "CHANNELS"]

log = logging.getLogger(__name__)

CHANNELS = ("trades", "book", "ticker")
NEW_MARKET_MARGIN = 10.0  # s before a stream's last exchange time, for markets with no trade

# unified symbol ("BTC-KRW") -> channels ({"trades", "book"})
Subscriptions = dict[str, set[str]]


@dataclass(slots=True)
class Stream:
    """One WebSocket connection: where to connect and what to send once connected."""

    url: str
    subscribe: Sequence[str | bytes] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)  # unified symbols carried on it
    # Runtime state, set by the session.
    ws: Any = None
    last_frame: float = 0.0
    close_reason: str = ""  # why the last connection ended
    connects: int = 0  # connections made so far
    frames: int = 0  # received on this stream, over every connection
    attempt: int = 0  # connections opened (1 = the first)


# Compiled by mypyc (exchanges/_native.py), yet subclassed by interpreted connectors in tests.
@mypyc_attr(allow_interpreted_subclasses=True)
class Connector:
    name: ClassVar[str]
    # Application-level heartbeat the client must send (None: WebSocket pings suffice).
    ping_interval: ClassVar[float | None] = None
    ping_message: ClassVar[str | bytes | None] = None
    # Offer permessage-deflate where the exchange supports it.
    compression: ClassVar[bool] = False
    # A book whose exchange time has not advanced for this long (s) while the socket delivers
    # other frames is stale (KCS_STALE_AFTER overrides it).
    stale_after: ClassVar[float] = 60.0
    # Trade history over REST (exchanges.history): ids rising by 1 per market, and how far
    # back it reaches (README).
    history_ids: ClassVar[bool] = False
    history_reach: ClassVar[str] = "no public trade history: a reconnect's gap is reported"
    # How an open connection takes a `ws.command` change of its markets (README, ws.command):
    # "delta": `change_messages` subscribes and unsubscribes what changed on the open socket;
    # "replace": each request replaces the socket's whole set, so the full new request is sent;
    # "reconnect": the connection is opened again with the new set (the session's fallback).
    live_changes: str = "reconnect"  # a module may decide per instance (Kraken v1)
    # The venue's public market list (REST), read by `listed()`: a `ws.command` subscribe of a
    # market it does not hold is refused (exchanges/listing.py). None: not checked.
    listing_url: ClassVar[str | None] = None
    # Venues with typed messages (exchanges.codecs) have `on_frame` call `typed_frame`, and
    # declare `decode_message` and the name of each message type's handler:
    # `(message, ts_recv)`.
    message_handlers: ClassVar[dict[type, str]] = {}
    # How such a venue's answers (acks, pongs, errors) begin, as sent: `typed_frame` reads a
    # frame that begins so with orjson and offers it to `on_answer` before any typed decode.
    # An answer is not an error, and failing the typed decode on it (msgspec raises) cost
    # 1.3-1.6 us of the 1.5-2 us an answer took (Korbit's acks, Coinone's SUBSCRIBED).
    # Only a prefix, so a data message is never slowed down by looking for it; an answer
    # sent otherwise still takes the typed decode's way, as before.
    answer_starts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, subscriptions: Subscriptions, out: Publisher, settings: Settings) -> None:
        self.subscriptions = subscriptions
        self.out = out
        self.settings = settings
        self.depth = settings.book_depth
        self.books: dict[str, L2Book] = {}
        self.session: Session | None = None  # set by the session that runs this connector
        # symbol -> (ts_event, trade id, ids at that ts) of the last trade a previous owner of
        # this feed published (a handover or failover, app/ingest.py): backfilled from on the
        # first connection that delivers, as after a reconnect.
        self.resume_points: dict[str, tuple[float, str, frozenset[str]]] = {}
        self._unified: dict[str, str] = {}  # memo of `symbol()`
        # Native code -> unified symbol of the markets subscribed, filled by modules whose
        # codes (`BTCUSDT`) cannot be split without the market list; read by `subscribed()`.
        self.unified: dict[str, str] = {}
        # message type -> bound handler, built once (typed_frame's dispatch)
        self.handle: dict[type, Callable[[Any, float], None]] = {
            cls: getattr(self, name) for cls, name in self.message_handlers.items()}
        self.answer_bytes = tuple(start.encode() for start in self.answer_starts)

    # -- to implement per exchange -------------------------------------------------------

    def to_unified(self, native: str) -> str:
        """The exchange's market code -> our `BASE-QUOTE` (read through `symbol()`)."""
        raise NotImplementedError

    def decode_message(self, frame: bytes | str) -> Any:
        """A typed venue's frame as one of its message types (`typed_frame`)."""
        raise NotImplementedError

    def connections(self) -> list[Stream]:
        raise NotImplementedError

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        """Parse one frame and append its records to `self.out`; raise on a bad frame."""
        raise NotImplementedError

    def typed_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        """`on_frame` of a venue with typed messages: decoded by `decode_message`, handed to
        its type's handler. A frame that begins as the venue's answers do (`answer_starts`)
        is read by orjson first and taken by `on_answer` if it is one. A frame that is not
        one of the message types (an answer, an error, a data message whose value does not
        fit) goes to `on_untyped`, decoded by orjson."""
        answer_bytes = self.answer_bytes
        if answer_bytes and (frame.startswith(self.answer_starts) if isinstance(frame, str)
                             else frame.startswith(answer_bytes)) and \
                self.on_answer(orjson.loads(frame), stream):
            return
        try:
            message = self.decode_message(frame)
        except ValidationError as exc:
            self.on_untyped(orjson.loads(frame), exc, ts_recv, stream)
            return
        except DecodeError:
            orjson.loads(frame)  # not JSON: refused with orjson's error, as on every venue
            raise
        self.handle[type(message)](message, ts_recv)

    def on_answer(self, message: Any, stream: Stream) -> bool:
        """Whether a frame `typed_frame` read as an answer (`answer_starts`) is one: True
        when it was taken (raise to refuse it, an error); False when it is not (a data
        message, or not an object), and it goes the typed way."""
        return False

    def on_untyped(self, message: Any, exc: ValidationError, ts_recv: float,
                   stream: Stream) -> None:
        """A frame `typed_frame` could not decode as a data message: an answer when
        `on_answer` takes it; else refused, to the DLQ (not an object, or a data message
        with a value that does not fit)."""
        if type(message) is not dict:
            raise ValueError(f"unexpected message: {message!r}")
        if not self.on_answer(message, stream):
            raise refused(exc) from None

    async def on_open(self, stream: Stream) -> None:
        """Called after connecting and subscribing; e.g. to request snapshots."""

    @classmethod
    def listed(cls, body: Any) -> set[str]:
        """The unified symbols of the venue's market list (`listing_url`'s JSON answer)."""
        raise NotImplementedError

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """The messages that subscribe `added` and unsubscribe `removed` (symbol -> channels)
        on the open `stream` ("delta" venues; `self.subscriptions` is the new set already)."""
        raise NotImplementedError

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        """The subscription set changed on the open socket (`self.subscriptions` is the new
        one): learn what the markets added need (e.g. their native codes in `self.unified`)
        before the new set's `connections()` is planned. A removed market's native code is
        kept: a frame of it still in flight parses as usual; its book is gone (`books`)."""

    def adopt(self, plan: Stream, stream: Stream) -> None:
        """`connections()` planned `plan` for the open `stream`, which now carries its set:
        a module that keeps its planned streams points them at the live one."""

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
        """A connection ended: its books can no longer be proven current, so drop them, and
        report each one that had content like any resync (`ws.error` kind `disconnect`)."""
        for symbol in stream.symbols:
            book = self.books.get(symbol)
            if book is not None:
                if book.ready or book.bids or book.asks:
                    self.out.error(symbol, f"connection lost: {stream.close_reason}",
                                   kind="disconnect")
                book.clear()

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        """The REST URL of the market's trades after the last one published (`last_id` at
        `last_ts`; `last_id` "" when none was: trades since `last_ts`), or None where the
        venue has no public trade history."""
        return None

    def history_trades(self, symbol: str, body: Any, ts_recv: float) -> list[Trade]:
        """The venue's trade-history answer as Trades (any order)."""
        raise NotImplementedError

    def after_reconnect(self, stream: Stream) -> None:
        """A stream connected again, or for the first time with `resume_points` (the feed had
        another owner): fetch the trades its markets missed meanwhile. A market with a resume
        point is backfilled from it; on a reconnect, the others from their newest trade, and
        a market with no trade published yet from the stream's last exchange time (its newest
        trade or book time before the drop, less `NEW_MARKET_MARGIN`)."""
        if self.session is None:
            return
        out = self.out
        handed = [s for s in stream.symbols if s in self.resume_points and
                  "trades" in self.subscriptions.get(s, ())]
        for symbol in handed:
            ts, trade_id, published = self.resume_points[symbol]
            out.hold(symbol)
            self.spawn(backfill(self, symbol, (ts, trade_id), stream, published))
        if stream.connects < 2:
            return
        times = [out.newest_trade[s][0] for s in stream.symbols if s in out.newest_trade]
        books = out.book_times
        times += [books[s][0] for s in stream.symbols if s in books]
        if not times:
            return  # nothing was heard on it: nothing to continue from
        # exchange times of different markets interleave: a little before the newest
        clock = max(times) - NEW_MARKET_MARGIN
        for symbol in stream.symbols:
            if "trades" in self.subscriptions.get(symbol, ()) and symbol not in handed:
                out.hold(symbol)  # now, before the new connection's first frame
                self.spawn(backfill(self, symbol, out.newest_trade.get(symbol, (clock, "")),
                                    stream))

    def book_rejected(self, book: L2Book, reason: str, stream: Stream) -> None:
        """A frame carried a bad level into `book` (already cleared): report it and start the
        book over (`restart_book`)."""
        for symbol, candidate in self.books.items():
            if candidate is book:
                self.resync(symbol, reason)
                self.restart_book(symbol, stream)
                return

    def restart_book(self, symbol: str, stream: Stream) -> None:
        """Get a dropped book going again. By default the stream is reconnected (every venue
        sends fresh books on a new connection); venues that can resubscribe one book, or
        whose next update restarts it, override this."""
        if self.session is not None:
            self.session.reconnect_soon(stream, f"{symbol} book restarted")

    def resume_after(self, symbol: str, last_trade_id: str, last_ts: float,
                     ids_at_ts: Any = ()) -> None:
        """Publish only the market's trades after `last_trade_id` (at `last_ts`): what a new
        owner of this feed learned from Kafka was published before it took over."""
        self.out.resume_after(symbol, last_trade_id, last_ts, ids_at_ts)

    def resync(self, symbol: str, reason: str, kind: str = "resync") -> None:
        """Drop a book that cannot be proven consistent and make it visible on `ws.error`."""
        book = self.books.get(symbol)
        if book is not None:
            book.clear()
        log.warning("%s %s: book dropped and resynced: %s", self.name, symbol, reason,
                    extra={"exchange": self.name, "symbol": symbol, "phase": "resync"})
        self.out.error(symbol, reason, kind=kind)

    def check_stale(self, stream: Stream, now: float, stale_after: float) -> None:
        """Drop, resync and report (`ws.error` kind `stale`) each book of `stream` whose
        exchange time has not advanced for `stale_after` s while the socket delivered frames
        (a silent socket is the session's silence watchdog's business)."""
        if now - stream.last_frame > stale_after:
            return
        markets = self.out.book_markets
        for symbol in stream.symbols:
            market = markets.get(symbol)
            if market is not None and market.newest > -INF and \
                    now - market.advanced > stale_after:
                stuck = market.newest
                market.newest = -INF  # watched again from the next book message
                self.resync(symbol, f"stale: exchange time stuck at {stuck:.3f} for "
                                    f"{now - market.advanced:.0f} s while the feed is alive",
                            kind="stale")
                self.restart_book(symbol, stream)

    async def get_json(self, url: str) -> Any:
        """A REST GET through the session (replayable and recorded like the WebSocket)."""
        assert self.session is not None
        return orjson.loads(await self.session.http_get(url))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        assert self.session is not None
        return self.session.spawn(coro)
