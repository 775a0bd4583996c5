"""Binance spot: trades, diff-depth order books and tickers over combined streams.

Streams are named in the URL (`/stream?streams=btcusdt@trade/btcusdt@depth@100ms/...`), so
nothing is sent after connecting; each event arrives wrapped as `{"stream":..,"data":..}`.
Books follow Binance's documented procedure: buffer diff events, fetch the REST snapshot,
drop events it already contains, then chain every event by `U`/`u`. A gap (`U` beyond the
book's id + 1) or a crossed book drops the book and starts over from a fresh snapshot.

Docs: not re-checked online on 2026-11-30 (the procedure is Binance's long-standing one, as
in ../shared/EXCHANGES.md §5). Trade history:
`/api/v3/historicalTrades?fromId=` (by id; market data, no key needed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

import orjson
from typing import Any, Final

from exchanges import binance_messages
from exchanges.base import Connector, Stream, Subscriptions
from exchanges.codecs import DecodeError
from exchanges.book import L2Book
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Binance", "to_native"]

log = logging.getLogger(__name__)

WS_URL = "wss://stream.binance.com:9443/stream?streams="
DEPTH_URL = "https://api.binance.com/api/v3/depth?symbol={}&limit=1000"
MAX_STREAMS = 200  # per connection; Binance allows 1024, shorter URLs reconnect faster
STREAMS = {"trades": ("@trade",), "book": ("@depth@100ms",), "ticker": ("@ticker",)}
# Read per message. Compiled, an imported name is a dict lookup at each use, a Final one a C
# constant.
decode_message: Final = binance_messages.decode_message


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return base + quote


class Binance(Connector):
    name = "binance"
    # SUBSCRIBE / UNSUBSCRIBE on an open combined-stream socket (EXCHANGES.md §5, docs)
    live_changes = "delta"
    listing_url = "https://api.binance.com/api/v3/exchangeInfo"

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        # Payloads name markets as `BTCUSDT`, which cannot be split without the market list:
        # map the ones we subscribed to.
        self.unified = {to_native(s): s for s in self.subscriptions}
        self.buffers: dict[str, list[tuple[dict, float]]] = {}  # diff events waiting for a snapshot
        self.loading: set[str] = set()  # symbols with a snapshot request in flight
        self.request_ids = itertools.count(1)

    @classmethod
    def listed(cls, body: dict) -> set[str]:
        """{"symbols":[{"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH",
        "quoteAsset":"BTC",..},..]}"""
        return {unified(m["baseAsset"], m["quoteAsset"]) for m in body["symbols"]}

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        self.unified.update({to_native(s): s for s in added})
        for symbol, channels in removed.items():
            if "book" in channels:
                self.buffers.pop(symbol, None)  # a snapshot load in flight gives up

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@depth@100ms"],"id":1}"""
        messages: list[str | bytes] = []
        for method, change in (("UNSUBSCRIBE", removed), ("SUBSCRIBE", added)):
            names = [to_native(symbol).lower() + suffix
                     for symbol, channels in sorted(change.items())
                     for channel in sorted(channels) for suffix in STREAMS.get(channel, ())]
            if names:
                messages.append(orjson.dumps({"method": method, "params": names,
                                              "id": next(self.request_ids)}).decode())
        return messages

    def connections(self) -> list[Stream]:
        # A symbol's streams stay on one connection: its book is tied to that connection.
        streams: list[Stream] = []
        names: list[str] = []
        symbols: list[str] = []
        for symbol, channels in sorted(self.subscriptions.items()):
            lower = to_native(symbol).lower()
            mine = [lower + suffix for channel in sorted(channels)
                    for suffix in STREAMS.get(channel, ())]
            if names and len(names) + len(mine) > MAX_STREAMS:
                streams.append(Stream(WS_URL + "/".join(names), [], symbols))
                names, symbols = [], []
            names += mine
            symbols.append(symbol)
        if names:
            streams.append(Stream(WS_URL + "/".join(names), [], symbols))
        for symbol in self.symbols_with("book"):
            self.books[symbol] = L2Book()
        return streams

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        for symbol in stream.symbols:
            self.buffers.pop(symbol, None)

    def restart_book(self, symbol: str, stream: Stream) -> None:
        """Nothing to do: the next diff event of a book that is not ready fetches a snapshot."""

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        """A diff depth event that extends a ready book, and a bookTicker event, are read
        typed (exchanges/binance_messages.py); every other frame, and one of them that does
        not fit its type or needs more than that (a gap, a book not ready), by `on_message`
        from orjson's reading, as before."""
        try:
            typed = decode_message(frame)
        except DecodeError:  # not JSON, or not as typed: on_message says why
            typed = None
        if typed is not None:
            event: Any = typed.data
            if event is not None:
                kind = event.e
                if kind == "depthUpdate":
                    if self._typed_depth(event, ts_recv):
                        return
                elif kind == "trade" or kind == "aggTrade":
                    if self._typed_trade(event, kind, ts_recv):
                        return
                elif kind == "24hrTicker":
                    if self._typed_ticker(event, ts_recv):
                        return
                elif kind is None and type(event.s) is str and type(event.b) is str and \
                        type(event.B) is str and type(event.a) is str and \
                        type(event.A) is str and event.u is not None:
                    # bookTicker, as in on_message
                    self.out.ticker(Ticker("binance", self.subscribed(event.s), ts_recv,
                                           ts_recv, None, float(event.b), float(event.B),
                                           float(event.a), float(event.A), None, None))
                    return
        self.on_message(orjson.loads(frame), ts_recv)

    def on_message(self, msg: Any, ts_recv: float) -> None:
        """A frame read by orjson."""
        data = msg.get("data")
        if data is None:
            if "result" in msg:
                return  # the answer to a control request
            raise ValueError("no `data` in a combined-stream frame")
        kind = data.get("e")
        if kind == "depthUpdate":
            self._depth(data, ts_recv)
        elif kind == "trade" or kind == "aggTrade":
            # {"e":"trade","E":..,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":..,"m":true}
            # `m` is "the buyer is the maker", so m=true means the taker sold.
            trade_id = data["t"] if kind == "trade" else data["a"]
            self.out.trade(Trade("binance", self.subscribed(data["s"]), data["T"] / 1000.0, ts_recv,
                                 float(data["p"]), float(data["q"]), SELL if data["m"] else BUY,
                                 str(trade_id)))
        elif kind == "24hrTicker":
            self.out.ticker(Ticker("binance", self.subscribed(data["s"]), data["E"] / 1000.0,
                                   ts_recv, float(data["c"]), float(data["b"]), float(data["B"]),
                                   float(data["a"]), float(data["A"]), float(data["v"]),
                                   float(data["q"])))
        elif kind is None and "u" in data and "B" in data:
            # bookTicker: {"u":400900217,"s":"BNBUSDT","b":"25.35","B":"31.21","a":..,"A":..}
            self.out.ticker(Ticker("binance", self.subscribed(data["s"]), ts_recv, ts_recv, None,
                                   float(data["b"]), float(data["B"]), float(data["a"]),
                                   float(data["A"]), None, None))
        elif kind == "kline":
            return  # candles are computed from trades downstream
        else:
            raise ValueError(f"unknown event {kind!r} on {msg.get('stream')}")

    def _typed_trade(self, event: Any, kind: str, ts_recv: float) -> bool:
        """A typed trade event published as `on_message` publishes it; False (nothing done)
        when a field is missing or of another type."""
        trade_id = event.t if kind == "trade" else event.a
        native, price, amount, time_ms, maker = event.s, event.p, event.q, event.T, event.m
        if type(trade_id) is not int or type(native) is not str or type(price) is not str or \
                type(amount) is not str or type(time_ms) is not int or type(maker) is not bool:
            return False
        self.out.trade(Trade("binance", self.subscribed(native), time_ms / 1000.0, ts_recv,
                             float(price), float(amount), SELL if maker else BUY,
                             str(trade_id)))
        return True

    def _typed_ticker(self, event: Any, ts_recv: float) -> bool:
        """A typed 24hrTicker event published as `on_message` publishes it; False (nothing
        done) when a field is missing or of another type."""
        native, time_ms = event.s, event.E
        figures = (event.c, event.b, event.B, event.a, event.A, event.v, event.q)
        if type(native) is not str or type(time_ms) is not int or \
                any(type(x) is not str for x in figures):
            return False
        last, bid, bid_size, ask, ask_size, volume, quote_volume = figures
        self.out.ticker(Ticker("binance", self.subscribed(native), time_ms / 1000.0, ts_recv,
                               float(last), float(bid), float(bid_size), float(ask),
                               float(ask_size), float(volume), float(quote_volume)))
        return True

    def _typed_depth(self, event: Any, ts_recv: float) -> bool:
        """A typed diff depth event applied as `_depth` applies it, when it extends a ready
        book; False (nothing done) for anything else, which `_depth` then takes."""
        native, first, last, bids, asks, time_ms = (event.s, event.U, event.u, event.b,
                                                    event.a, event.E)
        if type(native) is not str or type(first) is not int or type(last) is not int or \
                type(bids) is not list or type(asks) is not list or type(time_ms) is not int:
            return False
        symbol = self.unified.get(native)
        book = self.books.get(symbol) if symbol is not None else None
        if book is None or not book.ready:
            return False
        if last <= book.sequence:  # type: ignore[operator]
            return True  # already in the book
        if first > book.sequence + 1:  # type: ignore[operator]
            return False  # a gap: `_depth` resyncs
        self._apply_levels(symbol, book, bids, asks, last, time_ms, ts_recv)  # type: ignore[arg-type]
        return True

    def _depth(self, event: dict, ts_recv: float) -> None:
        """{"e":"depthUpdate","E":..,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[]}"""
        symbol = self.subscribed(event["s"])
        book = self.books.get(symbol)
        if book is None:
            if symbol in self.unified.values() and \
                    "book" not in self.subscriptions.get(symbol, ()):
                return  # unsubscribed on the open socket: in flight before the venue took it
            raise ValueError(f"depth update for {symbol}, which has no book subscription")
        if not book.ready:
            self._wait_for_snapshot(symbol, event, ts_recv)
            return
        if event["u"] <= book.sequence:  # type: ignore[operator]
            return  # already in the book
        if event["U"] > book.sequence + 1:  # type: ignore[operator]
            self.resync(symbol, f"gap: book at {book.sequence}, next event starts at "
                                f"{event['U']}")
            self._wait_for_snapshot(symbol, event, ts_recv)
            return
        self._apply(symbol, book, event, ts_recv)

    def _apply(self, symbol: str, book: L2Book, event: dict, ts_recv: float) -> None:
        self._apply_levels(symbol, book, event["b"], event["a"], event["u"], event["E"],
                           ts_recv)

    def _apply_levels(self, symbol: str, book: L2Book, bids: Any, asks: Any, last: Any,
                      time_ms: Any, ts_recv: float) -> None:
        book.apply_text_levels(bids, asks)
        book.sequence = last
        book.ts_event = time_ms / 1000.0
        if book.is_crossed():
            self.resync(symbol, f"crossed book: bid {book.best_bid()} >= ask {book.best_ask()}")
            return
        top = book.changed_top(self.depth)
        if top is None:
            self.out.book_seen(symbol, book.ts_event, ts_recv)
        else:
            self.out.book(OrderBook("binance", symbol, book.ts_event, ts_recv, top[0], top[1],
                                    book.sequence))

    def _wait_for_snapshot(self, symbol: str, event: dict, ts_recv: float) -> None:
        self.buffers.setdefault(symbol, []).append((event, ts_recv))
        if symbol not in self.loading:
            self.loading.add(symbol)
            self.spawn(self._load_snapshot(symbol))

    async def _load_snapshot(self, symbol: str) -> None:
        delay = 0.5
        try:
            while True:
                try:
                    snapshot = await self.get_json(DEPTH_URL.format(to_native(symbol)))
                except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
                    log.warning("binance %s: snapshot request failed: %s", symbol, exc)
                    snapshot = None
                buffered = self.buffers.get(symbol)
                if not buffered:
                    return  # the connection was reset meanwhile; the next event starts over
                # Usable when it reaches the first buffered event: U <= lastUpdateId + 1.
                if snapshot is not None and snapshot["lastUpdateId"] + 1 >= buffered[0][0]["U"]:
                    loaded = self._load(symbol, snapshot, buffered, time.time())
                    await self.out.drain()
                    if loaded:
                        return
                await asyncio.sleep(delay)  # too old, failed or gapped: fetch again
                delay = min(delay * 2.0, 10.0)
        finally:
            self.loading.discard(symbol)

    def _load(self, symbol: str, snapshot: dict, buffered: list[tuple[dict, float]],
              ts_recv: float) -> bool:
        """Load a snapshot and replay the buffered events on it; False if they do not chain."""
        book = self.books[symbol]
        book.load_text_levels(snapshot["bids"], snapshot["asks"])
        book.sequence = last_id = snapshot["lastUpdateId"]
        book.ready = True
        events = [(e, t) for e, t in buffered if e["u"] > last_id]
        buffered.clear()
        # The REST snapshot carries no time: it is as of the first event it does not contain.
        book.ts_event = events[0][0]["E"] / 1000.0 if events else ts_recv
        if book.is_crossed():
            self.resync(symbol, "crossed snapshot")
            return False
        top = book.changed_top(self.depth)
        if top is not None:  # always, after a load
            self.out.book(OrderBook("binance", symbol, book.ts_event, ts_recv, top[0], top[1],
                                    last_id))
        for i, (event, event_ts) in enumerate(events):
            if event["U"] > book.sequence + 1:
                self.resync(symbol, f"gap after snapshot {book.sequence}: next event starts at "
                                    f"{event['U']}")
                buffered.extend(events[i:])
                return False
            self._apply(symbol, book, event, event_ts)
            if not book.ready:  # the event crossed the book
                return False
        return True

    # -- trade history (exchanges.history) ------------------------------------------------

    history_ids = True  # `@trade` ids rise by 1 per market
    history_reach = "`/api/v3/historicalTrades?fromId=`: by id, as far back as needed"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        if not last_id:  # no trade published yet: the recent ones
            return f"https://api.binance.com/api/v3/trades?symbol={to_native(symbol)}&limit=1000"
        return (f"https://api.binance.com/api/v3/historicalTrades?symbol={to_native(symbol)}"
                f"&fromId={int(last_id) + 1}&limit=1000")

    def history_trades(self, symbol: str, body: list, ts_recv: float) -> list[Trade]:
        """[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
        "time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}, ...] oldest first."""
        return [Trade("binance", symbol, t["time"] / 1000.0, ts_recv, float(t["price"]),
                      float(t["qty"]), SELL if t["isBuyerMaker"] else BUY, str(t["id"]))
                for t in body]


CONNECTOR = Binance
