"""Coinone (Korea): trades, order books and tickers from `wss://stream.coinone.co.kr`.

One socket carries every KRW pair. Each subscribe message names one channel and one topic
(`{"quote_currency":"KRW","target_currency":"BTC"}`), so a stream sends one message per
channel and market. Coinone limits connections (20 per IP) but publishes no cap on topics per
connection (a probe ran 363 topics on one socket), so we keep one connection.
The server never pings: the client sends `{"request_type":"PING"}` every 20 s (the docs close
a session 30 min after the last PING; ccxt pings every 20 s) and the `PONG` is ignored.
Frames are text JSON; acks (`CONNECTED`, `SUBSCRIBED`, `PONG`...) carry no data, an `ERROR`
raises so it lands on the DLQ.

Books: every ORDERBOOK message is the whole visible book (16 levels a side observed); asks
come worst-first, bids best-first. There is no checksum and no delta: the book is replaced on
each message. Its `id` (ms time + 3-digit counter) grows with every new book but is not
contiguous, so gaps cannot be seen, only reordering: a book whose `id` is not newer than the
last one published is stale and skipped (see `_book`).

Docs re-checked 2026-11-30 (search tool: docs.coinone.co.kr references as cited by ccxt
4.5, public WS `wss://stream.coinone.co.kr`, 20 s keepalive): nothing contradicts this
module; no stored page documents a change since the fixtures were written. Trade history:
`/public/v2/trades/{quote}/{base}?size=200` (the last 200 trades, by time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from exchanges.book import snapshot_fault
from exchanges.codecs import priced_levels
from exchanges.base import Connector, Stream, Subscriptions
from exchanges.coinone_messages import (BookData, BookMessage, TickerData, TickerMessage,
                                        TradeData, TradeMessage, decode_message)
from exchanges.metrics import metrics
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Coinone", "to_native", "to_unified"]

URL = "wss://stream.coinone.co.kr"
# Our channel -> Coinone's channel name.
CHANNELS = (("trades", "TRADE"), ("book", "ORDERBOOK"), ("ticker", "TICKER"))
# `is_seller_maker` -> taker side, by its literal meaning: true = the seller's order rested,
# so the buyer took liquidity. Unconfirmed: ccxt and other clients map true to "sell"
# (docs/normalization.md, "Taker side").
TAKER_SIDE = {True: BUY, False: SELL}


def to_native(symbol: str) -> dict[str, str]:
    """`BTC-KRW` -> `{"quote_currency":"KRW","target_currency":"BTC"}` (a subscription topic)."""
    base, quote = split(symbol)
    return {"quote_currency": quote, "target_currency": base}


def to_unified(topic: dict[str, str]) -> str:
    """A topic, or a message's `data` (which repeats the topic keys) -> `BTC-KRW`."""
    return unified(topic["target_currency"], topic["quote_currency"])


class Coinone(Connector):
    name = "coinone"
    stale_after = 300.0  # quiet KRW markets' books can go minutes unchanged
    # SUBSCRIBE / UNSUBSCRIBE per channel and topic on the open socket (EXCHANGES.md §3:
    # on the wire, UNSUBSCRIBE in the official docs unconfirmed)
    live_changes = "delta"
    listing_url = "https://api.coinone.co.kr/public/v2/markets/KRW"
    ping_interval = 20.0
    ping_message = '{"request_type":"PING"}'

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        self._symbols: dict[tuple[str, str], str] = {}  # (target, quote) -> unified, memoized
        self.last_book_id: dict[str, int] = {}  # symbol -> `id` of the last book published

    def connections(self) -> list[Stream]:
        messages: list[str | bytes] = []
        symbols: set[str] = set()
        for channel, native in CHANNELS:
            for symbol in sorted(self.symbols_with(channel)):
                symbols.add(symbol)
                messages.append(orjson.dumps({"request_type": "SUBSCRIBE", "channel": native,
                                              "topic": to_native(symbol),
                                              "format": "DEFAULT"}).decode())
        if not symbols:
            return []
        return [Stream(URL, messages, sorted(symbols))]

    @classmethod
    def listed(cls, body: dict) -> set[str]:
        """{"result":"success","markets":[{"quote_currency":"KRW","target_currency":"BTC",
        ..}]}"""
        return {to_unified(m) for m in body["markets"]}

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"request_type":"UNSUBSCRIBE"|"SUBSCRIBE","channel":"TRADE","topic":{..}}"""
        return [orjson.dumps({"request_type": request, "channel": native,
                              "topic": to_native(symbol), "format": "DEFAULT"}).decode()
                for request, change in (("UNSUBSCRIBE", removed), ("SUBSCRIBE", added))
                for channel, native in CHANNELS
                for symbol in sorted(change) if channel in change[symbol]]

    def _symbol(self, data: TradeData | BookData | TickerData) -> str:
        key = (data.target_currency, data.quote_currency)
        symbol = self._symbols.get(key)
        if symbol is None:
            symbol = self._symbols[key] = unified(*key)
        return symbol

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        self.typed_frame(frame, ts_recv, stream)

    def decode_message(self, frame: bytes | str) -> Any:
        return decode_message(frame)

    message_handlers = {TradeMessage: "_trade", BookMessage: "_book",
                        TickerMessage: "_ticker"}
    answer_starts = tuple(f'{{"response_type":"{kind}"'
                          for kind in ("SUBSCRIBED", "PONG", "CONNECTED", "ERROR"))

    def on_answer(self, msg: object, stream: Stream) -> bool:
        # Acks (CONNECTED, SUBSCRIBED, PONG...), errors, channels not subscribed (CHART).
        if type(msg) is not dict:
            return False
        response = msg.get("response_type")
        if response == "DATA" and msg.get("channel") in ("TRADE", "ORDERBOOK", "TICKER"):
            return False
        if response == "ERROR":
            # {"response_type":"ERROR","error_code":160012,"message":"Invalid Topic"}
            raise ValueError(f"coinone error {msg.get('error_code')}: {msg.get('message')}")
        # anything else (CONNECTED, SUBSCRIBED, PONG, unknown control messages) has no data
        return True

    def _trade(self, msg: TradeMessage, ts_recv: float) -> None:
        """{"quote_currency":"KRW","target_currency":"BTC","id":"1790134177835001",
        "timestamp":1790134177835,"price":"116460000","qty":"0.00483595","is_seller_maker":true}
        """
        data = msg.data
        self.out.trade(Trade("coinone", self._symbol(data), data.timestamp / 1000.0, ts_recv,
                             data.price, data.qty, TAKER_SIDE[data.is_seller_maker],
                             str(data.id)))

    def _book(self, msg: BookMessage, ts_recv: float) -> None:
        """{"quote_currency":"KRW","target_currency":"BTC","timestamp":1790134177753,
        "id":"1790134177753001","asks":[{"price":"116650000","qty":"0.01198956"}, ...,
        {"price":"116460000","qty":"0.0232"}],"bids":[{"price":"116450000","qty":"0.0118"}, ...]}

        asks are worst-first (the best ask is last), bids best-first. Levels are checked by
        the decoder (finite, 0 or more); zero levels are left out.
        """
        data = msg.data
        symbol = self._symbol(data)
        book_id = data.id
        # Every message is a whole book, so only the newest one matters. Messages can still
        # arrive out of order (and the `id`s are not contiguous, so a gap is invisible):
        # publishing an older book after a newer one would roll the top of book back to a
        # state that no longer exists. Such a book is stale: skip it and count it. An equal
        # id is the same book again. Ids are times, so this holds across reconnects too.
        last = self.last_book_id.get(symbol)
        if last is not None and book_id <= last:
            metrics.inc("kcs_stale_books_total", exchange="coinone")
            metrics.inc("kcs_validation_rejections_total", exchange="coinone", reason="stale")
            return
        depth = self.depth
        bids = priced_levels(data.bids, depth)
        asks = priced_levels(data.asks[::-1], depth)  # worst-first on the wire
        # An order check also catches asks arriving best-first one day: reversing them would
        # publish the worst ask as the best; refuse rather than guess.
        fault = snapshot_fault(bids, asks)
        if fault is not None:
            self.resync(symbol, fault)
            return
        self.last_book_id[symbol] = book_id
        self.out.book(OrderBook("coinone", symbol, data.timestamp / 1000.0, ts_recv, bids,
                                asks, book_id))

    def _ticker(self, msg: TickerMessage, ts_recv: float) -> None:
        """{"quote_currency":"KRW","target_currency":"BTC","timestamp":1790133796484,
        "quote_volume":"30947007404.5912","target_volume":"267.27610034","last":"116380000",
        "ask_best_price":"116400000","ask_best_qty":"0.00562817",
        "bid_best_price":"116370000","bid_best_qty":"8.60554308","id":"1790133796484001",...}

        `target_volume` is in base currency, `quote_volume` in KRW.
        """
        data = msg.data
        self.out.ticker(Ticker("coinone", self._symbol(data), data.timestamp / 1000.0,
                               ts_recv, data.last, data.bid_best_price, data.bid_best_qty,
                               data.ask_best_price, data.ask_best_qty, data.target_volume,
                               data.quote_volume))

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/public/v2/trades/{quote}/{base}`: the last 200 trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        topic = to_native(symbol)
        return (f"https://api.coinone.co.kr/public/v2/trades/{topic['quote_currency']}/"
                f"{topic['target_currency']}?size=200")

    def history_trades(self, symbol: str, body: dict, ts_recv: float) -> list[Trade]:
        """{"result":"success","transactions":[{"id":"1790134177835001",
        "timestamp":1790134177835,"price":"116460000","qty":"0.00483595",
        "is_seller_maker":true}, ...]}"""
        if body.get("result") != "success":
            raise ValueError(f"coinone trade history: {body}")
        return [Trade("coinone", symbol, t["timestamp"] / 1000.0, ts_recv, float(t["price"]),
                      float(t["qty"]), TAKER_SIDE[t["is_seller_maker"]], str(t["id"]))
                for t in body["transactions"]]


CONNECTOR = Coinone
