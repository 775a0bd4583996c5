"""Bybit (v5, spot): trades, order books and tickers from `wss://stream.bybit.com/v5/public/spot`.

Topics are `publicTrade.BTCUSDT`, `orderbook.50.BTCUSDT` and `tickers.BTCUSDT`; a subscribe
request may hold at most 10 of them for spot, so requests are split. Frames are text JSON.
Bybit expects a client `{"op":"ping"}` about every 20 s.

Books: after subscribing, a `snapshot`, then `delta`s with absolute sizes (size "0" deletes).
Any new snapshot replaces the book, and so does a message with `u == 1` (the service
restarted). Between those, each delta's update id `u` must be the previous `u` + 1: a delta
that does not chain, or a delta before any snapshot, cannot be proven to apply, so the book
is dropped (`resync`, visible on `ws.error`) and the topic is resubscribed (unsubscribe +
subscribe), which makes Bybit send a fresh snapshot. (The v5 docs promise consecutive `u`
only for `orderbook.full`; Bybit's older docs call the depth-N `u` "normally continuous" and
client SDKs rely on it. Were it not, it would show as resyncs on `ws.error`, never as a
wrong book.)
Native symbols (`BTCUSDT`) cannot be split without the market list, so the subscribed ones
are mapped.

Docs re-checked 2026-11-30 (search tool, Bybit's orderbook pages): a new snapshot resets the
local book, and `u` = 1 (sent after a service restart) must overwrite it; `u` is "normally
continuous". Spot depths 1/50/200/1000. Trade history: `/v5/market/recent-trade` (the last
60 spot trades, by time).
"""

from __future__ import annotations

import orjson
from typing import TYPE_CHECKING

from exchanges.base import Connector, Stream, Subscriptions
from exchanges.book import L2Book
from exchanges.bybit_messages import Data, Message, decode_message
from exchanges.codecs import DecodeError, ValidationError, refused
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Bybit", "to_native", "book_depth"]

URL = "wss://stream.bybit.com/v5/public/spot"
MAX_ARGS = 10  # topics per subscribe request (spot, docs)
MAX_TOPICS = 300  # per connection: keeps the args well under the 21,000-character cap
BOOK_DEPTHS = (50, 200, 1000)  # spot depths with deltas (depth 1 is snapshots only)
TAKER_SIDE = {"Buy": BUY, "Sell": SELL}  # `S` is the taker's side


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return (base + quote).upper()


def book_depth(levels: int) -> int:
    """The smallest Bybit book depth that covers `levels` published levels."""
    for depth in BOOK_DEPTHS:
        if depth >= levels:
            return depth
    return BOOK_DEPTHS[-1]


class Bybit(Connector):
    name = "bybit"
    # `op` subscribe / unsubscribe on the open socket (EXCHANGES.md, docs)
    live_changes = "delta"
    listing_url = "https://api.bybit.com/v5/market/instruments-info?category=spot"
    ping_interval = 20.0
    ping_message = '{"req_id":"hb","op":"ping"}'

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        self.unified = {to_native(s): s for s in self.subscriptions}  # BTCUSDT -> BTC-USDT
        self.book_topic = f"orderbook.{book_depth(self.depth)}."
        self.resubscribing: set[str] = set()  # books waiting for the snapshot we asked for

    @classmethod
    def listed(cls, body: dict) -> set[str]:
        """{"retCode":0,"result":{"category":"spot","list":[{"symbol":"BTCUSDT",
        "baseCoin":"BTC","quoteCoin":"USDT","status":"Trading",..}]}} (spot: one page)"""
        return {unified(m["baseCoin"], m["quoteCoin"]) for m in body["result"]["list"]}

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        self.unified.update({to_native(s): s for s in added})
        self.resubscribing.difference_update(removed)

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"req_id":"live-1","op":"unsubscribe"|"subscribe","args":[<= 10 topics]}"""
        messages: list[str | bytes] = []
        for op, change in (("unsubscribe", removed), ("subscribe", added)):
            topics = [t for symbol, channels in sorted(change.items())
                      for t in self._topics(to_native(symbol), channels)]
            for i in range(0, len(topics), MAX_ARGS):
                messages.append(orjson.dumps({"req_id": f"live-{op}-{i // MAX_ARGS + 1}",
                                              "op": op, "args": topics[i:i + MAX_ARGS]}).decode())
        return messages

    def _topics(self, native: str, channels: set[str]) -> list[str]:
        topics = []
        if "book" in channels:
            topics.append(self.book_topic + native)
        if "trades" in channels:
            topics.append("publicTrade." + native)
        if "ticker" in channels:
            topics.append("tickers." + native)
        return topics

    def connections(self) -> list[Stream]:
        topics: list[tuple[str, str]] = []
        for native, symbol in sorted(self.unified.items()):
            channels = self.subscriptions[symbol]
            topics.extend((symbol, t) for t in self._topics(native, channels))
            if "book" in channels:
                self.books[symbol] = L2Book()
        streams = []
        for i in range(0, len(topics), MAX_TOPICS):
            chunk = [t for _, t in topics[i:i + MAX_TOPICS]]
            requests = [orjson.dumps({"req_id": f"sub-{j // MAX_ARGS + 1}", "op": "subscribe",
                                      "args": chunk[j:j + MAX_ARGS]}).decode()
                        for j in range(0, len(chunk), MAX_ARGS)]
            symbols = sorted({s for s, _ in topics[i:i + MAX_TOPICS]})
            streams.append(Stream(URL, requests, symbols))
        return streams

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        self.resubscribing.difference_update(stream.symbols)  # the new socket subscribes anew

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        try:
            msg = decode_message(frame)
        except ValidationError as exc:
            raise refused(exc) from None
        except DecodeError:
            orjson.loads(frame)  # not JSON: refused with orjson's error, as on every venue
            raise
        topic = msg.topic
        if topic is None:
            # acks and pongs: {"success":true,"ret_msg":"pong","conn_id":"..","op":"ping"}
            if msg.success is False:
                raise ValueError(f"request failed: {msg.ret_msg} ({msg})")
            if msg.op is not None:
                return
            raise ValueError(f"unexpected message: {orjson.loads(frame)}")
        data = msg.data
        if data is None:
            raise ValueError(f"no data on {topic}")
        if topic.startswith("orderbook."):
            if type(data) is not Data or data.s is None or data.u is None or data.b is None \
                    or data.a is None or msg.type is None or msg.ts is None:
                raise ValueError(f"not a book message on {topic}")
            self._book(msg, data, ts_recv, stream)
        elif topic.startswith("publicTrade."):
            # {"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50",
            #  "i":"2100000000007764263","BT":false,"seq":7961638750}
            # T: fill time (ms), S: taker side, v: size (base), p: price, i: trade id
            if type(data) is not list:
                raise ValueError(f"not a trade list on {topic}")
            out = self.out
            for t in data:
                out.trade(Trade("bybit", self.subscribed(t.s), t.T / 1000.0, ts_recv, t.p, t.v,
                                TAKER_SIDE[t.S], t.i))
        elif topic.startswith("tickers."):
            # {"symbol":"BTCUSDT","lastPrice":"21109.77","volume24h":"6780.866843",
            #  "turnover24h":"141946527.22907118",...}  spot tickers carry no best bid/ask;
            # volume24h is base volume, turnover24h quote volume
            if type(data) is not Data or data.symbol is None or msg.ts is None or \
                    None in (data.lastPrice, data.volume24h, data.turnover24h):
                raise ValueError(f"not a ticker on {topic}")
            self.out.ticker(Ticker("bybit", self.subscribed(data.symbol), msg.ts / 1000.0,
                                   ts_recv, data.lastPrice, None, None, None, None,
                                   data.volume24h, data.turnover24h))
        else:
            raise ValueError(f"unknown topic {topic!r}")

    def _book(self, msg: Message, data: Data, ts_recv: float, stream: Stream) -> None:
        """{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1672304484978,
        "data":{"s":"BTCUSDT","b":[["16493.50","0.006"]],"a":[["16611.00","0"]],
        "u":18521289,"seq":7961638724},"cts":1672304484976}
        b: bids, a: asks ([price, size] text); u: update id; ts: system time, cts: matching
        engine time (ms)."""
        symbol = self.subscribed(data.s)  # type: ignore[arg-type]
        book = self.books.get(symbol)
        topic: str = msg.topic  # type: ignore[assignment]
        if book is None:
            if "book" not in self.subscriptions.get(symbol, ()):
                return  # unsubscribed on the open socket: in flight before the venue took it
            raise ValueError(f"book for {symbol}, which has no book subscription")
        u = data.u
        if msg.type == "snapshot" or u == 1:  # u == 1: the service restarted
            book.load_text_levels(data.b, data.a)  # type: ignore[arg-type]
            book.ready = True
            self.resubscribing.discard(symbol)
        elif not book.ready:
            if symbol not in self.resubscribing:  # else: in flight before our resubscription
                self._resubscribe(symbol, topic, stream, "delta before any snapshot")
            return
        elif u != book.sequence + 1:  # type: ignore[operator]
            self._resubscribe(symbol, topic, stream,
                              f"gap: book at u={book.sequence}, delta has u={u}")
            return
        else:
            book.apply_text_levels(data.b, data.a)  # type: ignore[arg-type]
        book.sequence = u
        if book.is_crossed():
            self._resubscribe(symbol, topic, stream,
                              f"crossed book: bid {book.best_bid()} >= ask {book.best_ask()}")
            return
        book.ts_event = (msg.ts if msg.cts is None else msg.cts) / 1000.0  # type: ignore[operator]
        top = book.changed_top(self.depth)
        if top is None:
            self.out.book_seen(symbol, book.ts_event, ts_recv)
        else:
            self.out.book(OrderBook("bybit", symbol, book.ts_event, ts_recv, top[0], top[1], u))

    def _resubscribe(self, symbol: str, topic: str, stream: Stream, reason: str) -> None:
        """Drop the book and ask for a fresh snapshot: unsubscribe, then subscribe again."""
        self.resync(symbol, reason)
        self.restart_book(symbol, stream)

    def restart_book(self, symbol: str, stream: Stream) -> None:
        """A fresh snapshot for one book: unsubscribe, then subscribe again."""
        self.resubscribing.add(symbol)
        topic = self.book_topic + to_native(symbol)
        if self.session is not None:
            for op in ("unsubscribe", "subscribe"):  # sent in this order (tasks run FIFO)
                self.session.send_soon(stream, orjson.dumps(
                    {"req_id": "resync", "op": op, "args": [topic]}).decode())

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/v5/market/recent-trade`: the last 60 spot trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return (f"https://api.bybit.com/v5/market/recent-trade?category=spot"
                f"&symbol={to_native(symbol)}&limit=60")

    def history_trades(self, symbol: str, body: dict, ts_recv: float) -> list[Trade]:
        """{"retCode":0,"result":{"category":"spot","list":[{"execId":"2100000000007764263",
        "symbol":"BTCUSDT","price":"16578.50","size":"0.001","side":"Buy",
        "time":"1672304486865","isBlockTrade":false}]}} (`side`: the taker's)"""
        if body.get("retCode") != 0:
            raise ValueError(f"bybit trade history: {body.get('retMsg')}")
        return [Trade("bybit", symbol, int(t["time"]) / 1000.0, ts_recv, float(t["price"]),
                      float(t["size"]), TAKER_SIDE[t["side"]], t["execId"])
                for t in body["result"]["list"]]


CONNECTOR = Bybit
