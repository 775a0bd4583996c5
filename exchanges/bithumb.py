"""Bithumb (Korea): trades, order books and tickers from `wss://ws-api.bithumb.com/websocket/v1`.

This is Bithumb's current ("v1", Upbit-compatible) public API, not the legacy
`pubwss.bithumb.com` feed. One socket carries every market: one request lists all codes at
once and replaces the socket's whole subscription set (there is no unsubscribe and no
acknowledgement). Bithumb publishes no per-connection subscription cap (unconfirmed;
a probe ran all 493 markets on one socket), so we keep one connection.
We ask for the `DEFAULT` format (the documented long keys). Frames arrive as binary UTF-8 JSON;
permessage-deflate is optional (negotiated only when offered, since 2026-08-12) and not
offered. WebSocket pings from the session (every 20 s; the idle close comes at 60-120 s) keep
the socket alive, so no application heartbeat is sent.

Books: every order book message is the whole top-15 book, with no sequence number and no
checksum, so there is nothing to chain. Zero levels (sizes print with 4 decimals) and
zero-padded units are dropped; a crossed or unordered book is dropped with `resync()` and the
next message replaces it.
Symbols are quote first: `KRW-BTC` is our `BTC-KRW`.

Docs re-checked 2026-11-30 (search tool, apidocs.bithumb.com "기본 정보"): the public
stream is `wss://ws-api.bithumb.com/websocket/v1` (v1 response spec: ticker, trade,
orderbook; private streams moved to `/websocket/v2/private`); connections are limited to
10 per second per IP. The legacy `pubwss` feed is not spoken. Trade history:
`/v1/trades/ticks` (Upbit's shape; the last 500 trades, by time).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from exchanges.bithumb_messages import BookMessage, TickerMessage, TradeMessage, decode_message
from exchanges.book import snapshot_fault
from exchanges.base import Connector, Stream
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

__all__ = ["Bithumb", "to_native", "to_unified"]

URL = "wss://ws-api.bithumb.com/websocket/v1"
# `ask_bid` is the side of the order that took liquidity: BID = buy taker (Upbit's
# semantics; Bithumb's own wording is unconfirmed; docs/normalization.md, "Taker side").
TAKER_SIDE = {"BID": BUY, "ASK": SELL}
# Our channel -> Bithumb's request type.
KINDS = (("trades", "trade"), ("book", "orderbook"), ("ticker", "ticker"))


def to_native(symbol: str) -> str:
    """`BTC-KRW` -> `KRW-BTC`."""
    base, quote = split(symbol)
    return f"{quote}-{base}"


def to_unified(code: str) -> str:
    """`KRW-BTC` -> `BTC-KRW`."""
    quote, sep, base = code.partition("-")
    if not sep or not quote or not base:
        raise ValueError(f"not a Bithumb market code: {code!r}")
    return unified(base, quote)


class Bithumb(Connector):
    name = "bithumb"
    stale_after = 300.0  # quiet KRW markets' books can go minutes unchanged
    # A new request replaces the socket's set on the wire (probe, ccxt) but no Bithumb doc
    # says so (EXCHANGES.md §2): a change reconnects with the new set.
    live_changes = "reconnect"
    listing_url = "https://api.bithumb.com/v1/market/all"

    def to_unified(self, native: str) -> str:
        return to_unified(native)

    @classmethod
    def listed(cls, body: list) -> set[str]:
        """[{"market":"KRW-BTC","korean_name":"비트코인","english_name":"Bitcoin"},..]"""
        return {to_unified(m["market"]) for m in body}

    def connections(self) -> list[Stream]:
        request: list[dict] = [{"ticket": str(uuid.uuid4())}]
        symbols: set[str] = set()
        for channel, kind in KINDS:
            wanted = sorted(self.symbols_with(channel))
            if wanted:
                symbols.update(wanted)
                entry: dict = {"type": kind, "codes": [to_native(s) for s in wanted]}
                if kind == "trade":
                    # camelCase: the snake-case spelling is silently ignored
                    entry["isOnlyRealtime"] = True
                request.append(entry)
        if not symbols:
            return []
        request.append({"format": "DEFAULT"})
        return [Stream(URL, [orjson.dumps(request).decode()], sorted(symbols))]

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        self.typed_frame(frame, ts_recv, stream)

    def decode_message(self, frame: bytes | str) -> Any:
        return decode_message(frame)

    message_handlers = {TradeMessage: "_trade", BookMessage: "_book",
                        TickerMessage: "_ticker"}
    answer_starts = ('{"status"', '{"error"')

    def on_answer(self, msg: object, stream: Stream) -> bool:
        if type(msg) is not dict or msg.get("type") in ("trade", "orderbook", "ticker"):
            return False
        if "error" in msg:
            # {"error":{"name":"WRONG_FORMAT","message":...}}; the server closes the socket next
            raise ValueError(f"bithumb error: {msg['error']}")
        # anything else ({"status":"UP"} after a text PING, new message types) carries no data
        return True

    def _trade(self, msg: TradeMessage, ts_recv: float) -> None:
        """{"type":"trade","code":"KRW-BTC","trade_price":116208000,"trade_volume":0.0009,
        "ask_bid":"BID","trade_date":"2026-09-23","trade_time":"12:18:33",
        "trade_timestamp":1790133513739,"sequential_id":1079953210371761700,
        "timestamp":1790133514039,"stream_type":"REALTIME"}

        `trade_date`/`trade_time` are KST strings; `trade_timestamp` (ms) is the same instant.
        `sequential_id` may come as a number or a string: str() gives the same text for both.
        """
        self.out.trade(Trade("bithumb", self.symbol(msg.code), msg.trade_timestamp / 1000.0,
                             ts_recv, msg.trade_price, msg.trade_volume,
                             TAKER_SIDE[msg.ask_bid], str(msg.sequential_id)))

    def _book(self, msg: BookMessage, ts_recv: float) -> None:
        """{"type":"orderbook","code":"KRW-ETH","total_ask_size":369.9832,
        "total_bid_size":287.0216,"orderbook_units":[{"ask_price":3715000,"bid_price":3714000,
        "ask_size":8.4592,"bid_size":3.012}, ...],"level":1,"timestamp":1790133505546514,
        "stream_type":"SNAPSHOT"}

        Units pair the i-th ask with the i-th bid, best first. `timestamp` is in MICROseconds.
        """
        depth = self.depth
        # A size under 0.0001 prints as 0, and short sides are padded with price-0 units.
        # One pass over the units, each field read once and untyped: see
        # `codecs.priced_levels` (compiled, a typed read is unboxed and boxed again).
        bids: list[tuple[float, float]] = []
        asks: list[tuple[float, float]] = []
        for u in msg.orderbook_units:
            price: Any = u.bid_price
            size: Any = u.bid_size
            if price and size and len(bids) < depth:
                bids.append((price, size))
            price = u.ask_price
            size = u.ask_size
            if price and size and len(asks) < depth:
                asks.append((price, size))
        symbol = self.symbol(msg.code)
        fault = snapshot_fault(bids, asks)
        if fault is not None:
            self.resync(symbol, fault)
            return
        self.out.book(OrderBook("bithumb", symbol, msg.timestamp / 1_000_000.0, ts_recv,
                                bids, asks, None))

    def _ticker(self, msg: TickerMessage, ts_recv: float) -> None:
        """{"type":"ticker","code":"KRW-BTC","trade_price":116380000,
        "acc_trade_volume_24h":267.27,"acc_trade_price_24h":30947007404.59,...,
        "timestamp":1790133796484,"stream_type":"REALTIME"} (fields as Upbit's; no best bid/ask)
        """
        self.out.ticker(Ticker("bithumb", self.symbol(msg.code), msg.timestamp / 1000.0,
                               ts_recv, msg.trade_price, None, None, None, None,
                               msg.acc_trade_volume_24h, msg.acc_trade_price_24h))

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/v1/trades/ticks`: the last 500 trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return f"https://api.bithumb.com/v1/trades/ticks?market={to_native(symbol)}&count=500"

    def history_trades(self, symbol: str, body: list, ts_recv: float) -> list[Trade]:
        """Upbit's shape: [{"market":"KRW-BTC","timestamp":1790133513739,
        "trade_price":116208000,"trade_volume":0.0009,"ask_bid":"BID",
        "sequential_id":1079953210371761700}, ...] newest first."""
        return [Trade("bithumb", symbol, t["timestamp"] / 1000.0, ts_recv,
                      float(t["trade_price"]), float(t["trade_volume"]),
                      TAKER_SIDE[t["ask_bid"]], str(t["sequential_id"])) for t in body]


CONNECTOR = Bithumb
