"""Bitfinex (WebSocket v2): trades, checksummed P0 order books and tickers from `api-pub`.

Each socket first sends `conf` with flags SEQ_ALL (65536: every channel message ends with a
per-connection sequence number) and OB_CHECKSUM (131072: a CRC32 of the top 25 levels after
book changes), then at most 25 channel subscriptions (the documented per-connection limit).
Messages are arrays routed by `chanId`, learned from the `subscribed` events.

Integrity: the sequence number must rise by exactly 1 on the connection (heartbeats
included); a gap means lost messages, so every book on the connection is dropped (`resync`)
and resubscribed (unsubscribe + subscribe), which brings a fresh snapshot. A checksum that
differs, or a crossed book, does the same for that book. Checksums are defined over the
numbers exactly as Bitfinex wrote them, and Bitfinex sends JSON numbers, so a book frame's
number tokens are cut from the raw text beside orjson's decode (which gives the structure
and the floats, correctly rounded as `float(text)` is), each checked against the decoded
shape: the book's `load_counted` and `apply_counted` (exchanges/book.py, in C where built).
A token with whitespace around it would be kept as written and fail its checksum (the book
is resynced). When the server confirmed OB_CHECKSUM, a book update is published only once the
checksum that follows it has verified; without it (recordings made with flags 65536 only),
after every sequenced update. Snapshots are complete and published at once.

Trades: the snapshot (recent trades) and `te` ("trade executed") updates are published,
`tu` ("trade updated", the same trade again with its fill data) is ignored, and a trade id
already published is never published again (a resubscription starts with a snapshot). The
sign of the amount is the taker's side. Symbols are `t` + pair: `tBTCUSD`, or with a colon
when an asset code is longer than 3 letters (`tTESTBTC:TESTUSD`); Bitfinex names USDT `UST`.

Docs: not re-checked online on 2026-11-30 (as in ../shared/EXCHANGES.md §11). The sequence
numbers are per connection, not per symbol: a gap drops every book of that connection.
Trade history: `/v2/trades/{sym}/hist?start=&sort=1` (by time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from exchanges.base import Connector, Stream, Subscriptions
from exchanges.book import L2Book, crossed_reason, interleaved_crc32
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Bitfinex", "book_checksum", "to_native", "to_unified"]

URL = "wss://api-pub.bitfinex.com/ws/2"
SEQ_ALL = 65536
OB_CHECKSUM = 131072
MAX_CHANNELS = 25  # subscriptions per connection (docs)
BOOK_LENGTHS = (25, 100, 250)  # accepted `len` values that cover the 25-level checksum
CHECKSUM_LEVELS = 25
# Bitfinex's own asset codes -> the common ones (and back for subscribing).
ASSETS = {"UST": "USDT", "BCHN": "BCH"}
NATIVE_ASSETS = {common: code for code, common in ASSETS.items()}


def to_native(symbol: str) -> str:
    """`BTC-USD` -> `tBTCUSD`; `TESTBTC-TESTUSD` -> `tTESTBTC:TESTUSD`; `BTC-USDT` -> `tBTCUST`."""
    base, quote = split(symbol)
    base, quote = NATIVE_ASSETS.get(base, base), NATIVE_ASSETS.get(quote, quote)
    if len(base) == 3 and len(quote) == 3:
        return f"t{base}{quote}"
    return f"t{base}:{quote}"


def to_unified(native: str) -> str:
    """`tBTCUST` -> `BTC-USDT`; `tTESTBTC:TESTUSD` -> `TESTBTC-TESTUSD`."""
    pair = native[1:] if native.startswith("t") else native
    base, sep, quote = pair.partition(":")
    if not sep:
        if len(pair) != 6:
            raise ValueError(f"not a Bitfinex trading pair: {native!r}")
        base, quote = pair[:3], pair[3:]
    return unified(ASSETS.get(base, base), ASSETS.get(quote, quote))


def book_checksum(book: L2Book) -> int:
    """Signed CRC32 of `bidPrice:bidAmount:askPrice:askAmount:...` over the top 25 levels
    (ask amounts negative, as sent); a side that runs out is skipped: the book's
    `interleaved_crc32` (C where built; through `text()` the compiled module paid 36 us a
    checksum at 25 levels a side, seven updates' worth)."""
    return interleaved_crc32(book, CHECKSUM_LEVELS)


class _Connection:
    """What one socket's frames are checked against: its sequence and its `conf` answer."""

    __slots__ = ("sequence", "checksummed")

    def __init__(self) -> None:
        self.sequence = -1  # the last sequence number received (-1: none yet)
        self.checksummed = False  # the server confirmed OB_CHECKSUM


class _Channel:
    """One subscribed channel on one connection."""

    __slots__ = ("kind", "symbol", "stream", "dirty")

    def __init__(self, kind: str, symbol: str, stream: Stream) -> None:
        self.kind = kind  # "trades", "book" or "ticker"
        self.symbol = symbol
        self.stream = stream
        self.dirty = False  # book changed since the last verified checksum


class Bitfinex(Connector):
    name = "bitfinex"
    listing_url = "https://api-pub.bitfinex.com/v2/conf/pub:list:pair:exchange"
    # `subscribe` per channel, `unsubscribe` by chanId on the open socket (docs, §11)
    live_changes = "delta"

    @classmethod
    def listed(cls, body: list) -> set[str]:
        """[["BTCUSD","AAVE:USD","ETHBTC",..]] (trading pairs without the `t`)"""
        symbols = set()
        for pair in body[0]:
            try:
                symbols.add(to_unified("t" + pair))
            except ValueError:
                continue  # a pair name we cannot read is no market we subscribe
        return symbols

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        self.book_length = next((n for n in BOOK_LENGTHS if n >= self.depth), BOOK_LENGTHS[-1])
        self.channels: dict[int, _Channel] = {}  # chanId -> channel (chanIds are per socket)
        self.leaving: set[int] = set()  # chanIds being unsubscribed: their frames are ignored
        self.sockets: dict[int, _Connection] = {}  # id(stream) -> its sequence and conf
        self.last_trade: dict[str, int] = {}  # symbol -> highest trade id published
        self.natives = {to_native(s): s for s in self.subscriptions}

    # -- connections -----------------------------------------------------------------------

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        self.natives.update({to_native(s): s for s in added})

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"event":"unsubscribe","chanId":17470} per channel removed (its frames still in
        flight are ignored, `leaving`), then {"event":"subscribe",..} per channel added."""
        messages: list[str | bytes] = []
        for chan_id, channel in sorted(self.channels.items()):
            if channel.kind in removed.get(channel.symbol, ()) and chan_id not in self.leaving:
                self.leaving.add(chan_id)
                messages.append(orjson.dumps({"event": "unsubscribe", "chanId": chan_id}).decode())
        messages += [self._subscribe(kind, symbol) for kind in ("ticker", "book", "trades")
                     for symbol in sorted(added) if kind in added[symbol]]
        return messages

    def _subscribe(self, kind: str, symbol: str) -> str:
        message = {"event": "subscribe", "channel": kind, "symbol": to_native(symbol)}
        if kind == "book":
            message.update(prec="P0", freq="F0", len=str(self.book_length))
        return orjson.dumps(message).decode()

    def connections(self) -> list[Stream]:
        wanted = [(kind, symbol) for kind in ("ticker", "book", "trades")
                  for symbol in sorted(self.symbols_with(kind))]
        for symbol in self.symbols_with("book"):
            self.books.setdefault(symbol, L2Book())
        conf = orjson.dumps({"event": "conf", "flags": SEQ_ALL + OB_CHECKSUM}).decode()
        streams = []
        for i in range(0, len(wanted), MAX_CHANNELS):
            chunk = wanted[i:i + MAX_CHANNELS]
            messages = [conf] + [self._subscribe(kind, symbol) for kind, symbol in chunk]
            streams.append(Stream(URL, messages, sorted({symbol for _, symbol in chunk})))
        return streams

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        self.sockets.pop(id(stream), None)
        for chan_id in [c for c, channel in self.channels.items() if channel.stream is stream]:
            del self.channels[chan_id]
            self.leaving.discard(chan_id)

    def _resubscribe(self, chan_id: int, channel: _Channel, reason: str) -> None:
        """Drop a book and subscribe it again: the server answers with a fresh snapshot."""
        self.resync(channel.symbol, reason)
        self.leaving.add(chan_id)
        if self.session is not None:
            self.session.send_soon(channel.stream, orjson.dumps(
                {"event": "unsubscribe", "chanId": chan_id}).decode())
            self.session.send_soon(channel.stream, self._subscribe("book", channel.symbol))

    # -- frames ----------------------------------------------------------------------------

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        msg = orjson.loads(frame)
        if type(msg) is not list:
            if type(msg) is dict:
                self._event(msg, stream)
                return
            raise ValueError(f"not a Bitfinex message: {msg!r}")
        # [chanId, payload, sequence]: check the connection's sequence before anything else
        sequence = msg[-1]
        if type(sequence) is not int:
            raise ValueError(f"sequence number {sequence!r}")
        socket = self._socket(stream)
        last = socket.sequence
        socket.sequence = sequence
        if last >= 0 and sequence != last + 1:
            self._gap(stream, last, sequence)
        payload = msg[1]
        if type(payload) is str and payload == "hb":
            return  # heartbeats can precede their channel's `subscribed` event
        chan_id = msg[0]
        channel = self.channels.get(chan_id)
        if channel is None:
            if chan_id in self.leaving:
                return  # still in flight when we unsubscribed
            raise ValueError(f"message for unknown channel {chan_id}")
        kind = channel.kind
        if kind == "book":
            if chan_id not in self.leaving:
                self._book(msg, frame if isinstance(frame, str) else frame.decode(), chan_id,
                           channel, ts_recv, socket.checksummed)
        elif kind == "trades":
            if type(payload) is list:
                self._trades(channel.symbol, payload, ts_recv)
            elif payload == "te":
                self._trades(channel.symbol, [msg[2]], ts_recv)
            elif payload != "tu":
                raise ValueError(f"trades message {payload!r}")
        else:
            self._ticker(channel.symbol, payload, ts_recv)

    def _socket(self, stream: Stream) -> _Connection:
        socket = self.sockets.get(id(stream))
        if socket is None:
            socket = self.sockets[id(stream)] = _Connection()
        return socket

    def _gap(self, stream: Stream, last: int, sequence: int) -> None:
        """Messages were lost on this connection: no book on it can be trusted."""
        for chan_id, channel in list(self.channels.items()):
            if channel.stream is stream and channel.kind == "book" and \
                    chan_id not in self.leaving:
                self._resubscribe(chan_id, channel, f"sequence gap: {last} then {sequence}")

    def _event(self, msg: dict, stream: Stream) -> None:
        """{"event":"subscribed","channel":"book","chanId":17082,"symbol":"tBTCUSD",..}"""
        event = msg.get("event")
        if event == "subscribed":
            symbol = self.natives.get(msg["symbol"]) or to_unified(msg["symbol"])
            self.channels[msg["chanId"]] = _Channel(msg["channel"], symbol, stream)
        elif event == "unsubscribed":
            chan_id = msg["chanId"]
            self.leaving.discard(chan_id)
            self.channels.pop(chan_id, None)
        elif event == "conf":
            self._socket(stream).checksummed = bool(msg.get("flags", 0) & OB_CHECKSUM) and \
                msg.get("status") == "OK"
        elif event == "info":
            if msg.get("code") in (20051, 20061) and stream.ws is not None:
                # restarting, or maintenance over: reconnect, which resubscribes everything
                self.spawn(stream.ws.close())
        elif event == "error":
            raise ValueError(f"bitfinex error {msg.get('code')}: {msg.get('msg')}")
        # pong and anything informative: nothing to do

    # -- books -----------------------------------------------------------------------------

    def _book(self, msg: list, text: str, chan_id: int, channel: _Channel, ts_recv: float,
              checksummed: bool) -> None:
        """Snapshot: [17082,[[7254.7,3,3.3],[7254.6,2,-5.5],..],SEQ]; update:
        [17082,[7254.5,0,1],SEQ] (COUNT 0 deletes: from the bids if AMOUNT is 1, from the
        asks if -1; AMOUNT > 0 is a bid); checksum: [17082,"cs",-1476734512,SEQ]."""
        book = self.books[channel.symbol]
        payload = msg[1]
        if type(payload) is not list:
            if type(payload) is not str or payload != "cs":
                raise ValueError(f"book message {payload!r}")
            if not book.ready:
                return
            computed = book_checksum(book)
            if computed != msg[2]:
                self._resubscribe(chan_id, channel, f"checksum mismatch: computed {computed}, "
                                                    f"bitfinex sent {msg[2]}")
            elif channel.dirty:
                channel.dirty = False
                self._publish(chan_id, channel, book, ts_recv)
            return
        if not payload or type(payload[0]) is list:  # a snapshot
            book.load_counted(text, payload)  # cleared first; refused: left empty
            book.ready = True
            self._publish(chan_id, channel, book, ts_recv)
            return
        if not book.ready:
            return
        book.apply_counted(text, payload)
        if not checksummed:
            self._publish(chan_id, channel, book, ts_recv)
        else:
            channel.dirty = True  # published once the next checksum proves it

    def _publish(self, chan_id: int, channel: _Channel, book: L2Book, ts_recv: float) -> None:
        top = book.changed_top(self.depth)  # lists kept until a change reaches them
        if top is None:
            self.out.book_seen(channel.symbol, ts_recv, ts_recv)
            return  # the last record published still holds
        bids, asks = top
        if bids and asks and bids[0][0] >= asks[0][0]:  # crossed (inline: the common path)
            fault = crossed_reason(bids, asks)
            self._resubscribe(chan_id, channel, fault)
            return
        self.out.book(OrderBook("bitfinex", channel.symbol, ts_recv, ts_recv, bids, asks, None))

    # -- trades and tickers ----------------------------------------------------------------

    def _trades(self, symbol: str, trades: list, ts_recv: float) -> None:
        """[ID, MTS, AMOUNT, PRICE] per trade, newest first, e.g.
        [401597393,1574694475039,-0.005,7245.3]: a negative amount is a taker sell."""
        last = self.last_trade.get(symbol, -1)
        newest = last
        out = self.out
        for i in range(len(trades) - 1, -1, -1):  # oldest first
            trade = trades[i]
            if type(trade) is not list or len(trade) != 4:
                raise ValueError(f"trade {trade!r}")
            trade_id = trade[0]
            if type(trade_id) is not int:
                raise ValueError(f"trade id {trade_id!r}")
            if trade_id <= last:
                continue  # published before (snapshot after a resubscription)
            if trade_id > newest:
                newest = trade_id
            amount = trade[2]
            out.trade(Trade("bitfinex", symbol, trade[1] / 1000.0, ts_recv, float(trade[3]),
                            abs(amount), BUY if amount > 0 else SELL, str(trade_id)))
        self.last_trade[symbol] = newest

    def _ticker(self, symbol: str, t: list, ts_recv: float) -> None:
        """[BID,BID_SIZE,ASK,ASK_SIZE,DAILY_CHANGE,DAILY_CHANGE_RELATIVE,LAST_PRICE,VOLUME,
        HIGH,LOW], e.g. [236.62,9.0029,236.88,7.1138,-1.02,-0.0043,236.52,5191.36,250.01,220.05]
        """
        self.out.ticker(Ticker("bitfinex", symbol, ts_recv, ts_recv, float(t[6]), float(t[0]),
                               float(t[1]), float(t[2]), float(t[3]), float(t[7]), None))

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/v2/trades/{sym}/hist?start=`: by time, as far back as needed"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return (f"https://api-pub.bitfinex.com/v2/trades/{to_native(symbol)}/hist"
                f"?start={int(last_ts * 1000)}&limit=10000&sort=1")

    def history_trades(self, symbol: str, body: list, ts_recv: float) -> list[Trade]:
        """[[ID, MTS, AMOUNT, PRICE], ...]; the sign of AMOUNT is the taker's side."""
        return [Trade("bitfinex", symbol, mts / 1000.0, ts_recv, float(price), abs(amount),
                      BUY if amount > 0 else SELL, str(trade_id))
                for trade_id, mts, amount, price in body]


CONNECTOR = Bitfinex
