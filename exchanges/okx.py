"""OKX (v5): trades, `books` order books (400 levels) and tickers from the public feed.

One socket (`wss://ws.okx.com:8443/ws/v5/public`) carries every market; subscriptions are
`{"channel": .., "instId": "BTC-USDT"}` args. Instrument ids are already `BASE-QUOTE`, so
only spot instruments are subscribed (derivative ids like `BTC-USD-SWAP` are not markets in
our sense and are skipped with a warning).

Books: a `snapshot` then `update`s with absolute sizes (size "0" deletes). Every message is
proven two ways, whichever the server still sends: `prevSeqId` must equal the previous
`seqId`, and the CRC32 `checksum` of the top 25 levels, computed over the ORIGINAL price and
size strings, must match (OKX retires the checksum in 2026: absent or 0 means "not sent",
and the sequence chaining alone is relied on). A gap, a checksum mismatch or a crossed book
drops the book (`resync`, visible on `ws.error`) and resubscribes the instrument's `books`
channel (unsubscribe + subscribe), whose first answer is a fresh snapshot.

Heartbeat: OKX closes a socket with no traffic for 30 s, so the text `ping` is sent every
20 s; its `pong` answer is not JSON and is skipped before parsing.
"""

from __future__ import annotations

import logging
import zlib

import orjson

from exchanges.base import Connector, Stream
from exchanges.book import L2Book
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

__all__ = ["Okx", "checksum", "to_native", "to_unified"]

log = logging.getLogger(__name__)

URL = "wss://ws.okx.com:8443/ws/v5/public"
CHANNELS = {"trades": "trades", "book": "books", "ticker": "tickers"}
MAX_ARGS = 100  # per subscribe request; OKX caps a request at 64 KB of args
CHECKSUM_LEVELS = 25
TAKER_SIDE = {"buy": BUY, "sell": SELL}  # `side` is the taker's side
# acknowledgements and connection-count reports that need no action
QUIET_EVENTS = frozenset({"subscribe", "unsubscribe", "channel-conn-count"})


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return f"{base}-{quote}"


def to_unified(inst_id: str) -> str:
    """`BTC-USDT` -> `BTC-USDT`; derivative ids (`BTC-USD-SWAP`) raise ValueError."""
    base, quote = split(inst_id)
    return unified(base, quote)


def checksum(book: L2Book) -> int:
    """OKX's CRC32 of the top 25 levels: `bidPx:bidSz:askPx:askSz:...` over the original text,
    interleaved level by level (the longer side continues alone), as a signed 32-bit int."""
    bids = book.text_bids(CHECKSUM_LEVELS)
    asks = book.text_asks(CHECKSUM_LEVELS)
    parts: list[str | None] = []
    for (_, bid_price, bid_size), (_, ask_price, ask_size) in zip(bids, asks, strict=False):
        parts += (bid_price, bid_size, ask_price, ask_size)
    for _, price, size in bids[len(asks):] or asks[len(bids):]:  # the longer side's rest
        parts += (price, size)
    crc = zlib.crc32(":".join(parts).encode())  # type: ignore[arg-type]
    return crc - 0x100000000 if crc & 0x80000000 else crc


def _number(text: str) -> float | None:
    return float(text) if text else None  # OKX sends "" for a value it does not have


class Okx(Connector):
    name = "okx"
    ping_interval = 20.0
    ping_message = "ping"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # instId -> unified symbol, subscribed spot markets (`self.unified`, see Connector)
        for symbol in self.subscriptions:
            try:
                self.unified[to_native(symbol)] = to_unified(to_native(symbol))
            except ValueError:
                log.warning("okx: %s is not a spot BASE-QUOTE market; not subscribed", symbol)
        self.resubscribing: set[str] = set()  # books waiting for the snapshot we asked for

    def connections(self) -> list[Stream]:
        args = []
        for inst_id, symbol in sorted(self.unified.items()):
            for channel in sorted(self.subscriptions[symbol]):
                if channel in CHANNELS:
                    args.append({"channel": CHANNELS[channel], "instId": inst_id})
            if "book" in self.subscriptions[symbol]:
                self.books[symbol] = L2Book()
        if not args:
            return []
        requests = [orjson.dumps({"op": "subscribe", "args": args[i:i + MAX_ARGS]}).decode()
                    for i in range(0, len(args), MAX_ARGS)]
        return [Stream(URL, requests, sorted(self.unified.values()))]

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        self.resubscribing.difference_update(stream.symbols)  # the new socket subscribes anew

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        if frame == "pong" or frame == b"pong":
            return  # the answer to our text `ping`
        msg = orjson.loads(frame)
        arg = msg.get("arg")
        data = msg.get("data")
        if data is None:
            # {"event":"subscribe","arg":{..},"connId":".."}; errors carry `code` and `msg`
            event = msg.get("event")
            if event in QUIET_EVENTS:
                return
            if event == "notice":  # e.g. a service upgrade will close this socket soon
                log.warning("okx: notice %s: %s", msg.get("code"), msg.get("msg"))
                return
            raise ValueError(f"unexpected message: {msg}")
        channel = arg["channel"]
        symbol = self.subscribed(arg["instId"])
        if channel == "books":
            self._book(symbol, msg, data[0], ts_recv, stream)
        elif channel == "trades":
            # {"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306",
            #  "side":"buy","ts":"1630048897897","count":"3"}  (aggregated per taker order)
            out = self.out
            for t in data:
                out.trade(Trade("okx", symbol, int(t["ts"]) / 1000.0, ts_recv, float(t["px"]),
                                float(t["sz"]), TAKER_SIDE[t["side"]], t["tradeId"]))
        elif channel == "tickers":
            # {"instId":"BTC-USDT","last":"9999.99","askPx":..,"askSz":..,"bidPx":..,
            #  "bidSz":..,"vol24h":"2222","volCcy24h":"2222","ts":"1597026383085",...}
            # spot: vol24h is base volume, volCcy24h quote volume
            for t in data:
                self.out.ticker(Ticker("okx", symbol, int(t["ts"]) / 1000.0, ts_recv,
                                       _number(t["last"]), _number(t["bidPx"]),
                                       _number(t["bidSz"]), _number(t["askPx"]),
                                       _number(t["askSz"]), _number(t["vol24h"]),
                                       _number(t["volCcy24h"])))
        else:
            raise ValueError(f"unknown channel {channel!r}")

    def _book(self, symbol: str, msg: dict, data: dict, ts_recv: float, stream: Stream) -> None:
        """{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update",
        "data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],
        "ts":"1597026383085","checksum":-855196043,"prevSeqId":123455,"seqId":123456}]}
        Levels are [price, size, deprecated "0", order count], all text."""
        book = self.books.get(symbol)
        if book is None:
            raise ValueError(f"book for {symbol}, which has no book subscription")
        if msg.get("action") == "snapshot":
            book.load_text_levels(data["bids"], data["asks"])
            book.ready = True
            self.resubscribing.discard(symbol)
        elif not book.ready:
            if symbol not in self.resubscribing:  # else: in flight before our resubscription
                self._resubscribe(symbol, stream, "update before any snapshot")
            return
        else:
            previous = data.get("prevSeqId")
            if previous is not None and book.sequence is not None and previous != book.sequence:
                self._resubscribe(symbol, stream, f"gap: book at seqId {book.sequence}, update "
                                                  f"has prevSeqId {previous}")
                return
            book.apply_text_levels(data["bids"], data["asks"])
        book.sequence = data.get("seqId")
        expected = data.get("checksum")
        if expected:  # absent or 0: OKX no longer sends it; the seqId chain is the proof
            actual = checksum(book)
            if actual != expected:
                self._resubscribe(symbol, stream, f"checksum mismatch: got {actual}, "
                                                  f"OKX says {expected}")
                return
        if book.is_crossed():
            self._resubscribe(symbol, stream, f"crossed book: bid {book.best_bid()} >= ask "
                                              f"{book.best_ask()}")
            return
        book.ts_event = int(data["ts"]) / 1000.0
        depth = self.depth
        if book.top_changed(depth):
            self.out.book(OrderBook("okx", symbol, book.ts_event, ts_recv, book.top_bids(depth),
                                    book.top_asks(depth), book.sequence))

    def _resubscribe(self, symbol: str, stream: Stream, reason: str) -> None:
        """Drop the book and ask for a fresh snapshot: unsubscribe, then subscribe again."""
        self.resync(symbol, reason)
        self.resubscribing.add(symbol)
        if self.session is not None:
            args = [{"channel": "books", "instId": to_native(symbol)}]
            for op in ("unsubscribe", "subscribe"):  # sent in this order (tasks run FIFO)
                self.session.send_soon(stream, orjson.dumps({"op": op, "args": args}).decode())


CONNECTOR = Okx
