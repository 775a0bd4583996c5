"""Coinbase Exchange feed: trades, level 2 books and tickers from `ws-feed.exchange.coinbase.com`.

One socket per chunk of products subscribes to `matches` (trades), `level2_batch` (books;
`level2` needs authentication now, and both send the same messages), `ticker` and `heartbeat`.
Books are a `snapshot` then `l2update` messages with absolute sizes; level 2 messages carry no
sequence number, so loss is detected on the product's other messages, which share the
connection: `trade_id` rises by exactly 1 per product, and each `heartbeat` names the
product's `last_trade_id`. A trade that skips an id, or a heartbeat announcing a trade we
never received, means the feed dropped messages for that product (Coinbase drops them for
slow clients): the book is dropped (`resync`) and its level 2 subscription renewed
(unsubscribe + subscribe), which brings a fresh snapshot. A crossed book does the same.
A `match` names the MAKER's side, so the taker's side is the opposite.

Docs: not re-checked online on 2026-11-30; the Exchange feed is as in ../shared/EXCHANGES.md
§9 (the Advanced Trade feed is not spoken). Trade history: `/products/{id}/trades` (the
last 1,000 trades; `trade_id` rises by 1 per product, so a gap is named by ids).
"""

from __future__ import annotations


import orjson
from typing import TYPE_CHECKING, Any, Final

from exchanges.codecs import DecodeError, rfc3339_epoch
from exchanges.base import Connector, Stream, Subscriptions
from exchanges.book import L2Book, crossed_reason
from exchanges import coinbase_messages, values
from exchanges.coinbase_messages import Update
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Coinbase", "to_native", "to_unified"]

URL = "wss://ws-feed.exchange.coinbase.com"
BOOK_CHANNEL = "level2_batch"  # public; `level2` (unbatched) needs an authenticated feed
MAX_PRODUCTS = 100  # per socket: keeps one slow product's batch from delaying many others
TAKER_SIDE = {"buy": SELL, "sell": BUY}  # a match's `side` is the maker's

# Read per message. Compiled, an imported name is a dict lookup at each use, a Final one a C
# constant.
INF: Final = values.INF
BOOK_RECORD: Final = OrderBook
decode_message: Final = coinbase_messages.decode_message
# How the feed's book updates begin: other frames (2% of the recording: matches, tickers,
# snapshots) go to orjson straight away, not after failing the typed decode (msgspec raises:
# 1.3 us more per frame). An update sent otherwise still decodes, by either way.
UPDATE_START: Final = '{"type":"l2update"'
UPDATE_START_BYTES: Final = b'{"type":"l2update"'


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return f"{base}-{quote}"


def to_unified(product: str) -> str:
    base, _, quote = product.partition("-")
    return unified(base, quote)


class Coinbase(Connector):
    name = "coinbase"
    listing_url = "https://api.exchange.coinbase.com/products"
    # `subscribe` / `unsubscribe` with product ids and channels on the open socket (docs)
    live_changes = "delta"

    def to_unified(self, native: str) -> str:
        return to_unified(native)

    @classmethod
    def listed(cls, body: list) -> set[str]:
        """[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD",..},..]"""
        return {unified(p["base_currency"], p["quote_currency"]) for p in body}

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        self.last_trade: dict[str, int] = {}  # product -> last trade_id received
        self.ticker_sequence: dict[str, int] = {}  # product -> sequence of the last ticker
        self.book_streams: dict[str, Stream] = {}  # where to renew a book subscription
        # `time`'s whole second ("2021-04-17T16:43:42") and its epoch seconds: messages come
        # in time order, many within one second (`exchange_time`)
        self.second = ""
        self.second_epoch = 0.0

    def connections(self) -> list[Stream]:
        streams = []
        symbols = sorted(self.subscriptions)
        for symbol in self.symbols_with("book"):
            self.books.setdefault(symbol, L2Book())
        for i in range(0, len(symbols), MAX_PRODUCTS):
            chunk = symbols[i:i + MAX_PRODUCTS]
            messages = []
            for channel, name in (("book", BOOK_CHANNEL), ("trades", "matches"),
                                  ("ticker", "ticker")):
                products = [to_native(s) for s in chunk if channel in self.subscriptions[s]]
                if products:
                    messages.append(orjson.dumps({"type": "subscribe", "product_ids": products,
                                                  "channels": [name]}).decode())
            # heartbeats keep quiet products alive and announce their last trade id
            messages.append(orjson.dumps({"type": "subscribe",
                                          "product_ids": [to_native(s) for s in chunk],
                                          "channels": ["heartbeat"]}).decode())
            streams.append(Stream(URL, messages, chunk))
            for symbol in chunk:
                self.book_streams[symbol] = streams[-1]
        return streams

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        for symbol in (*added, *removed):  # a market subscribed anew starts a new id chain
            self.last_trade.pop(to_native(symbol), None)

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"type":"unsubscribe"|"subscribe","product_ids":["BTC-USD"],"channels":["matches"]}
        per channel; a market added or removed whole also joins or leaves `heartbeat`."""
        messages: list[str | bytes] = []
        whole = {"unsubscribe": sorted(s for s in removed if s not in self.subscriptions),
                 "subscribe": sorted(s for s, c in added.items()
                                     if c == self.subscriptions.get(s))}
        for kind, change in (("unsubscribe", removed), ("subscribe", added)):
            for channel, name in (("book", BOOK_CHANNEL), ("trades", "matches"),
                                  ("ticker", "ticker")):
                products = [to_native(s) for s in sorted(change) if channel in change[s]]
                if products:
                    messages.append(orjson.dumps({"type": kind, "product_ids": products,
                                                  "channels": [name]}).decode())
            if whole[kind]:
                messages.append(orjson.dumps({"type": kind, "product_ids": [
                    to_native(s) for s in whole[kind]], "channels": ["heartbeat"]}).decode())
        return messages

    def adopt(self, plan: Stream, stream: Stream) -> None:
        for symbol in plan.symbols:
            self.book_streams[symbol] = stream

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        for symbol in stream.symbols:  # a new connection starts a new trade id chain
            self.last_trade.pop(to_native(symbol), None)

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        """Book updates decode typed (exchanges/coinbase_messages.py); anything else, and an
        update that does not fit its type exactly, is parsed by `on_message`."""
        if not (frame.startswith(UPDATE_START) if isinstance(frame, str)
                else frame.startswith(UPDATE_START_BYTES)):
            self.on_message(orjson.loads(frame), ts_recv, stream)
            return
        try:
            message = decode_message(frame)
        except (DecodeError, RecursionError):  # msgspec's nesting limit is below orjson's
            self.on_message(orjson.loads(frame), ts_recv, stream)
            return
        self._book_update(message, frame, ts_recv, stream)

    def on_message(self, msg: Any, ts_recv: float, stream: Stream) -> None:
        """A frame decoded by orjson: every message but a well-formed book update."""
        kind = msg["type"]
        if kind == "l2update":
            self._update(msg, ts_recv, stream)
        elif kind == "match" or kind == "last_match":
            self._match(msg, ts_recv, stream)
        elif kind == "ticker":
            self._ticker(msg, ts_recv)
        elif kind == "snapshot":
            self._snapshot(msg, ts_recv, stream)
        elif kind == "heartbeat":
            self._heartbeat(msg, stream)
        elif kind == "subscriptions":
            return
        elif kind == "error":
            raise ValueError(f"coinbase error: {msg.get('message')}: {msg.get('reason')}")
        else:
            raise ValueError(f"unknown message type {kind!r}")

    # -- books -----------------------------------------------------------------------------
    # The typed update (`_book_update`) and the untyped one (`_update`) apply a message
    # alike. A level out of range (`nan`, `-1`, `0` for a price) is refused by the untyped
    # path, from the frame again, so that the error names the value as float(text) does
    # (msgspec reads "-0" as 0.0): a level that fits its type but cannot be used is rare,
    # and the book is dropped with it anyway.

    def _book_of(self, symbol: str, kind: str) -> L2Book | None:
        """The market's book, or None for a market unsubscribed on the open socket (a
        message in flight before the venue took it); a market never subscribed raises."""
        book = self.books.get(symbol)
        if book is None and "book" in self.subscriptions.get(symbol, ()):
            raise ValueError(f"{kind} for {symbol}, which has no book subscription")
        return book

    def _snapshot(self, msg: dict, ts_recv: float, stream: Stream) -> None:
        """{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"]],
        "asks":[["10102.55","0.57753524"]]}"""
        symbol = self.symbol(msg["product_id"])
        book = self._book_of(symbol, "snapshot")
        if book is None:
            return
        book.load_text_levels(msg["bids"], msg["asks"])
        book.ready = True
        self.book_streams[symbol] = stream
        self._publish(symbol, book, ts_recv, ts_recv, stream)  # a snapshot carries no time

    def _book_update(self, msg: Update, frame: bytes | str, ts_recv: float,
                     stream: Stream) -> None:
        symbol = self.symbol(msg.product_id)
        book = self._book_of(symbol, "l2update")
        if book is None or not book.ready:
            return  # not ready: updates before the snapshot that answers a resubscription
        bids, asks = book.bids, book.asks
        for side, price, size in msg.changes:
            if not (0.0 < price < INF and 0.0 <= size < INF):
                self._update(orjson.loads(frame), ts_recv, stream)  # raises BadValue
                return
            if size == 0.0:
                (bids if side == "buy" else asks).pop(price)
            else:  # no checksum: the book keeps no text
                (bids if side == "buy" else asks).put(price, size, None, None)
        self._publish(symbol, book, self.exchange_time(msg.time), ts_recv, stream)

    def exchange_time(self, text: str) -> float:
        """`rfc3339_epoch(text)`, the same float, with the whole second looked up only when
        it changes: the feed's `.ffffffZ` form within the last second seen costs a prefix
        test and one float() (0.11 against 0.22 us on the recording's times, compiled)."""
        second = self.second  # "" until a time was parsed
        if len(text) == 27 and text[26] == "Z" and text[25] != "Z" and second and \
                text.startswith(second):
            return self.second_epoch + float(text[19:26])
        ts = rfc3339_epoch(text)  # parsed (or refused) as everywhere
        if len(text) >= 19:
            self.second = text[:19]
            self.second_epoch = rfc3339_epoch(self.second)
        return ts

    def _update(self, msg: dict, ts_recv: float, stream: Stream) -> None:
        """{"type":"l2update","product_id":"BTC-USD","changes":[["buy","22356.27","0.00"]],
        "time":"2022-08-04T15:25:05.010758Z"} (`buy` = bid side, size 0 removes)"""
        symbol = self.symbol(msg["product_id"])
        book = self._book_of(symbol, "l2update")
        if book is None or not book.ready:
            return
        book.apply_sided_levels(msg["changes"], "buy")
        self._publish(symbol, book, rfc3339_epoch(msg["time"]), ts_recv, stream)

    def _publish(self, symbol: str, book: L2Book, ts_event: float, ts_recv: float,
                 stream: Stream) -> None:
        top = book.changed_top(self.depth)  # lists kept until a change reaches them
        if top is None:
            self.out.book_seen(symbol, ts_event, ts_recv)
            return  # the last record published still holds
        bids, asks = top
        if bids and asks and bids[0][0] >= asks[0][0]:  # crossed (inline: the common path)
            fault = crossed_reason(bids, asks)
            self._resync(symbol, fault, stream)
            return
        book.ts_event = ts_event
        self.out.book(BOOK_RECORD("coinbase", symbol, ts_event, ts_recv, bids, asks, None))

    def _resync(self, symbol: str, reason: str, stream: Stream) -> None:
        """Drop the book and renew its level 2 subscription: the answer is a fresh snapshot."""
        book = self.books.get(symbol)
        if book is None:
            return  # trades only: nothing to rebuild
        self.resync(symbol, reason)
        if self.session is not None:
            product = [to_native(symbol)]
            for kind in ("unsubscribe", "subscribe"):
                self.session.send_soon(stream, orjson.dumps(
                    {"type": kind, "product_ids": product, "channels": [BOOK_CHANNEL]}).decode())

    # -- trades, tickers, heartbeats -------------------------------------------------------

    def _match(self, msg: dict, ts_recv: float, stream: Stream) -> None:
        """{"type":"match","trade_id":10,"sequence":50,"maker_order_id":"..",
        "taker_order_id":"..","time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD",
        "size":"5.23512","price":"400.23","side":"sell"} (`last_match` first: the latest
        trade before we subscribed)"""
        product = msg["product_id"]
        trade_id = msg["trade_id"]
        last = self.last_trade.get(product)
        if last is not None:
            if trade_id <= last:
                return  # already published (a `last_match` after renewing a subscription)
            if trade_id != last + 1:
                self._resync(self.symbol(product), f"trade ids jump from {last} to "
                                                    f"{trade_id}: messages were lost", stream)
        self.last_trade[product] = trade_id
        self.out.trade(Trade("coinbase", self.symbol(product), rfc3339_epoch(msg["time"]), ts_recv,
                             float(msg["price"]), float(msg["size"]), TAKER_SIDE[msg["side"]],
                             str(trade_id)))

    def _heartbeat(self, msg: dict, stream: Stream) -> None:
        """{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",
        "time":"2014-11-07T08:19:28.464459Z"}"""
        product = msg["product_id"]
        last = self.last_trade.get(product)
        announced = msg.get("last_trade_id")
        if last is not None and announced is not None and announced > last:
            self.last_trade[product] = announced  # those trades are gone: do not report twice
            self._resync(self.symbol(product), f"heartbeat announces trade {announced}, "
                                                f"last received {last}", stream)

    def _ticker(self, msg: dict, ts_recv: float) -> None:
        """{"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775",
        "open_24h":"14.6647","volume_24h":"94381.28","low_24h":"14.3691","high_24h":"16.55",
        "volume_30d":"2295579.57","best_bid":"14.7550","best_bid_size":"1.2",
        "best_ask":"14.8060","best_ask_size":"0.5","side":"buy",
        "time":"2021-04-17T16:43:30.244075Z","trade_id":881613,"last_size":"0.04"}"""
        product = msg["product_id"]
        sequence = msg.get("sequence")
        if sequence is not None:
            if sequence <= self.ticker_sequence.get(product, -1):
                return  # older than the ticker already published
            self.ticker_sequence[product] = sequence
        stamp = msg.get("time")
        bid_size = msg.get("best_bid_size")  # absent in older feeds
        ask_size = msg.get("best_ask_size")
        self.out.ticker(Ticker("coinbase", self.symbol(product),
                               rfc3339_epoch(stamp) if stamp else ts_recv, ts_recv,
                               float(msg["price"]), float(msg["best_bid"]),
                               float(bid_size) if bid_size is not None else None,
                               float(msg["best_ask"]),
                               float(ask_size) if ask_size is not None else None,
                               float(msg["volume_24h"]), None))

    # -- trade history (exchanges.history) ------------------------------------------------

    history_ids = True  # `trade_id` rises by 1 per product
    history_reach = "`/products/{id}/trades`: the last 1,000 trades, by id"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return (f"https://api.exchange.coinbase.com/products/{to_native(symbol)}/trades"
                f"?limit=1000")

    def history_trades(self, symbol: str, body: list, ts_recv: float) -> list[Trade]:
        """[{"time":"2022-08-04T15:25:05.010758Z","trade_id":10,"price":"22356.27",
        "size":"0.01","side":"sell"}, ...] newest first; `side` is the maker's."""
        return [Trade("coinbase", symbol, rfc3339_epoch(t["time"]), ts_recv, float(t["price"]),
                      float(t["size"]), BUY if t["side"] == "sell" else SELL,
                      str(t["trade_id"])) for t in body]


CONNECTOR = Coinbase
