"""HTX (formerly Huobi), spot: trades, order books and tickers from `wss://api.huobi.pro/ws`.

Every server frame is binary gzip: it is inflated with a hard cap on the result
(`settings.max_inflated_bytes`, see `exchanges.codecs`) before the JSON is parsed. Client
messages are text JSON. The server sends `{"ping": ts}` about every 5 s and closes the socket
after missed answers, so each one is answered `{"pong": ts}` at once.

Topics are `market.<btcusdt>.<channel>` with native symbols in lower case, which cannot be
split without the market list: the subscribed ones are mapped.

Books, two ways (`Htx.book_channel`):
- `depth.step0` (default, and what the recordings hold): every push is a whole book of up
  to 150 levels per side, so there is nothing to chain; the top N are published, and a
  crossed book is reported (`resync` -> `ws.error`) and skipped, the next push replacing it.
- `mbp.150`: incremental updates chained by `seqNum`/`prevSeqNum`. After `sub`, a `req` on
  the same connection returns a snapshot with its `seqNum`; updates are buffered until it
  arrives, the ones it already contains are dropped, and from then on every update's
  `prevSeqNum` must be the book's `seqNum`. A gap or a crossed book drops the book
  (`resync`) and asks for a new snapshot with another `req`.

Docs: not re-checked online on 2026-11-30 (as in ../shared/EXCHANGES.md §8). Trade history:
`/market/history/trade?size=2000` (the last 2,000 trades, by time; `trade-id` is the
socket's `tradeId`).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import orjson

from exchanges.base import Connector, Stream, Subscriptions
from exchanges.book import L2Book, check_levels, crossed
from exchanges.codecs import inflate_gzip
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Htx", "to_native"]

URL = "wss://api.huobi.pro/ws"
TAKER_SIDE = {"buy": BUY, "sell": SELL}  # `direction` is the taker's side
CHANNELS = {"trades": "trade.detail", "ticker": "ticker"}  # book: Htx.book_channel


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return (base + quote).lower()


class Htx(Connector):
    name = "htx"
    listing_url = "https://api.huobi.pro/v1/common/symbols"
    # `sub` / `unsub` per topic on the open socket (docs, EXCHANGES.md §8); an incremental
    # book added asks its snapshot (`req`) on its first update, as after any gap
    live_changes = "delta"

    @classmethod
    def listed(cls, body: dict) -> set[str]:
        """{"status":"ok","data":[{"base-currency":"btc","quote-currency":"usdt",..},..]}"""
        return {unified(m["base-currency"], m["quote-currency"]) for m in body["data"]}
    book_channel = "depth.step0"  # or "mbp.150"

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        self.unified.update({to_native(s): s for s in added})
        for symbol in removed:
            self.buffers.pop(symbol, None)
            self.requested.discard(symbol)

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"unsub": "market.btcusdt.trade.detail", "id": 7}, {"sub": .., "id": 8}"""
        messages: list[str | bytes] = []
        for op, change in (("unsub", removed), ("sub", added)):
            for channel in ("book", "trades", "ticker"):
                name = self.book_channel if channel == "book" else CHANNELS[channel]
                messages += [orjson.dumps({op: f"market.{to_native(s)}.{name}",
                                           "id": next(self.ids)}).decode()
                             for s in sorted(change) if channel in change[s]]
        return messages

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        self.unified = {to_native(s): s for s in self.subscriptions}  # btcusdt -> BTC-USDT
        self.cap = self.settings.max_inflated_bytes
        self.ids = itertools.count(1)
        # mbp: updates waiting for their snapshot, per symbol, and snapshots requested
        self.buffers: dict[str, list[dict]] = {}
        self.requested: set[str] = set()

    def connections(self) -> list[Stream]:
        subs = []
        symbols = []
        for channel in ("book", "trades", "ticker"):
            name = self.book_channel if channel == "book" else CHANNELS[channel]
            for symbol in sorted(self.symbols_with(channel)):
                subs.append(f"market.{to_native(symbol)}.{name}")
                symbols.append(symbol)
                if channel == "book" and name.startswith("mbp."):
                    self.books[symbol] = L2Book()
        if not subs:
            return []
        messages = [orjson.dumps({"sub": topic, "id": next(self.ids)}).decode()
                    for topic in subs]
        # mbp books: the docs' procedure asks for a snapshot on the same connection, after
        # subscribing; sent with the subscriptions, so again after every reconnect
        messages += [orjson.dumps({"req": f"market.{to_native(s)}.{self.book_channel}",
                                   "id": next(self.ids)}).decode() for s in sorted(self.books)]
        return [Stream(URL, messages, sorted(set(symbols)))]

    async def on_open(self, stream: Stream) -> None:
        self.requested.update(s for s in stream.symbols if s in self.books)

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        for symbol in stream.symbols:
            self.buffers.pop(symbol, None)
            self.requested.discard(symbol)

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        if type(frame) is not bytes:
            raise ValueError("HTX sends gzip binary frames; got text")
        msg = orjson.loads(inflate_gzip(frame, self.cap))
        ch = msg.get("ch")
        if ch is None:
            self._control(msg, ts_recv, stream)
            return
        _, native, kind, *_ = ch.split(".")  # market.btcusdt.trade.detail
        symbol = self.subscribed(native)
        tick = msg["tick"]
        if kind == "trade":
            # tick: {"id":137005445109,"ts":1630994963173,"data":[{"id":1370054451093592..,
            #  "ts":1630994963173,"tradeId":102523573486,"amount":0.006754,"price":52648.62,
            #  "direction":"buy"}]}   (the long `id` is deprecated and overflows int64)
            out = self.out
            for t in tick["data"]:
                out.trade(Trade("htx", symbol, t["ts"] / 1000.0, ts_recv, float(t["price"]),
                                float(t["amount"]), TAKER_SIDE[t["direction"]],
                                str(t["tradeId"])))
        elif kind == "depth":
            self._full_book(symbol, msg, tick, ts_recv)
        elif kind == "mbp":
            self._mbp_update(symbol, tick, msg["ts"] / 1000.0, ts_recv, stream)
        elif kind == "ticker":
            # tick: {"open":..,"high":..,"low":..,"close":..,"amount":<base volume 24h>,
            #  "vol":<quote turnover 24h>,"count":..,"bid":..,"bidSize":..,"ask":..,
            #  "askSize":..,"lastPrice":..,"lastSize":..}
            self.out.ticker(Ticker("htx", symbol, msg["ts"] / 1000.0, ts_recv,
                                   float(tick.get("lastPrice", tick["close"])),
                                   float(tick["bid"]), float(tick["bidSize"]),
                                   float(tick["ask"]), float(tick["askSize"]),
                                   float(tick["amount"]), float(tick["vol"])))
        else:
            raise ValueError(f"unknown channel {ch!r}")

    def _control(self, msg: dict, ts_recv: float, stream: Stream) -> None:
        """Heartbeats, acks, snapshot answers and errors (frames without `ch`)."""
        ping = msg.get("ping")
        if ping is not None:  # {"ping":1492420473027} -> {"pong":1492420473027}
            if self.session is not None:
                self.session.send_soon(stream, f'{{"pong":{ping}}}')
            return
        if msg.get("status") != "ok":
            # {"status":"error","err-code":"bad-request","err-msg":"invalid topic ..",..}
            raise ValueError(f"error from HTX: {msg.get('err-code')}: {msg.get('err-msg')}")
        rep = msg.get("rep")
        if rep is not None:
            self._mbp_snapshot(self.subscribed(rep.split(".")[1]), msg["data"], ts_recv, stream)
        # else: a sub/unsub ack {"id":1,"status":"ok","subbed":"market..","ts":..}

    def _full_book(self, symbol: str, msg: dict, tick: dict, ts_recv: float) -> None:
        """{"ch":"market.btcusdt.depth.step0","ts":1618678069870,"tick":{"bids":[[9.121E-7,
        92730.24],..],"asks":[[9.28E-7,4342.25],..],"version":100264..,"ts":1618678069812}}
        A whole book, best first; prices and sizes are JSON numbers."""
        depth = self.depth
        bids = [(float(p), float(s)) for p, s in tick["bids"][:depth]]
        asks = [(float(p), float(s)) for p, s in tick["asks"][:depth]]
        check_levels(bids, asks)
        fault = crossed(bids, asks)
        if fault is not None:
            self.resync(symbol, fault)
            return
        self.out.book(OrderBook("htx", symbol, tick.get("ts", msg["ts"]) / 1000.0, ts_recv,
                                bids, asks, tick.get("version")))

    # -- mbp.150: incremental books -----------------------------------------------------

    def _request_snapshot(self, symbol: str, stream: Stream) -> None:
        self.requested.add(symbol)
        if self.session is not None:
            topic = f"market.{to_native(symbol)}.{self.book_channel}"
            self.session.send_soon(stream, orjson.dumps(
                {"req": topic, "id": next(self.ids)}).decode())

    def _mbp_update(self, symbol: str, tick: dict, ts_event: float, ts_recv: float,
                    stream: Stream) -> None:
        """{"ch":"market.btcusdt.mbp.150","ts":1573199608679,"tick":{"seqNum":100020146795,
        "prevSeqNum":100020146794,"asks":[[645.14,26.755973959140651643]]}}
        Sizes are absolute, 0 deletes; a side without changes may be missing."""
        book = self.books.get(symbol)
        if book is None:
            if "book" not in self.subscriptions.get(symbol, ()):
                return  # unsubscribed on the open socket: in flight before the venue took it
            raise ValueError(f"book for {symbol}, which has no book subscription")
        tick["ts"] = ts_event
        if not book.ready:
            self.buffers.setdefault(symbol, []).append(tick)
            if symbol not in self.requested:
                self._request_snapshot(symbol, stream)
            return
        if tick["prevSeqNum"] != book.sequence:
            self.resync(symbol, f"gap: book at seqNum {book.sequence}, update has prevSeqNum "
                                f"{tick['prevSeqNum']}")
            self.buffers[symbol] = [tick]
            self._request_snapshot(symbol, stream)
            return
        self._mbp_apply(symbol, book, tick, ts_recv, stream)

    def _mbp_apply(self, symbol: str, book: L2Book, tick: dict, ts_recv: float,
                   stream: Stream) -> bool:
        for p, s in tick.get("bids", ()):
            book.set_bid(float(p), float(s))
        for p, s in tick.get("asks", ()):
            book.set_ask(float(p), float(s))
        book.sequence = tick["seqNum"]
        book.ts_event = tick["ts"]
        if book.is_crossed():
            self.resync(symbol, f"crossed book: bid {book.best_bid()} >= ask {book.best_ask()}")
            self.buffers[symbol] = []
            self._request_snapshot(symbol, stream)
            return False
        top = book.changed_top(self.depth)
        if top is None:
            self.out.book_seen(symbol, book.ts_event, ts_recv)
        else:
            self.out.book(OrderBook("htx", symbol, book.ts_event, ts_recv, top[0], top[1],
                                    book.sequence))
        return True

    def _mbp_snapshot(self, symbol: str, data: dict, ts_recv: float, stream: Stream) -> None:
        """The answer to `req`: {"id":"id3","rep":"market.btcusdt.mbp.150","status":"ok",
        "data":{"seqNum":100020142010,"bids":[[618.37,71.594]],"asks":[[618.38,1.2]]}}"""
        book = self.books.get(symbol)
        if book is None:
            if "book" not in self.subscriptions.get(symbol, ()):
                return  # unsubscribed on the open socket: in flight before the venue took it
            raise ValueError(f"snapshot for {symbol}, which has no book subscription")
        self.requested.discard(symbol)
        if book.ready:
            return  # an extra answer: the book is already proven by its chain of updates
        buffered = [t for t in self.buffers.pop(symbol, []) if t["seqNum"] > data["seqNum"]]
        if buffered and buffered[0]["prevSeqNum"] > data["seqNum"]:
            # older than the first update we hold: nothing lines up; ask again
            self.buffers[symbol] = buffered
            self.resync(symbol, f"snapshot {data['seqNum']} older than the buffered updates "
                                f"(first prevSeqNum {buffered[0]['prevSeqNum']})")
            self._request_snapshot(symbol, stream)
            return
        book.clear()
        for p, s in data["bids"]:
            book.set_bid(float(p), float(s))
        for p, s in data["asks"]:
            book.set_ask(float(p), float(s))
        book.sequence = data["seqNum"]
        book.ready = True
        # The snapshot carries no time: it is as of the first update it does not contain.
        book.ts_event = buffered[0]["ts"] if buffered else ts_recv
        if not self._mbp_apply(symbol, book, {"seqNum": data["seqNum"], "ts": book.ts_event},
                               ts_recv, stream):
            return
        for i, tick in enumerate(buffered):
            if tick["prevSeqNum"] != book.sequence:
                self.resync(symbol, f"gap after snapshot {book.sequence}: next update has "
                                    f"prevSeqNum {tick['prevSeqNum']}")
                self.buffers[symbol] = buffered[i:]
                self._request_snapshot(symbol, stream)
                return
            if not self._mbp_apply(symbol, book, tick, ts_recv, stream):
                return

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/market/history/trade`: the last 2,000 trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return f"https://api.huobi.pro/market/history/trade?symbol={to_native(symbol)}&size=2000"

    def history_trades(self, symbol: str, body: dict, ts_recv: float) -> list[Trade]:
        """{"status":"ok","data":[{"id":..,"ts":..,"data":[{"id":..,"trade-id":102523573486,
        "price":52648.62,"amount":0.006754,"direction":"buy","ts":1630994963173}]}]}
        (`trade-id` is the socket's `tradeId`; `direction` the taker's side)"""
        if body.get("status") != "ok":
            raise ValueError(f"htx trade history: {body.get('err-msg')}")
        return [Trade("htx", symbol, t["ts"] / 1000.0, ts_recv, float(t["price"]),
                      float(t["amount"]), TAKER_SIDE[t["direction"]], str(t["trade-id"]))
                for group in body["data"] for t in group["data"]]


CONNECTOR = Htx
