"""Upbit (Korea): trades, order books and tickers from `wss://api.upbit.com/websocket/v1`.

One socket carries every market; a request lists all codes at once and replaces the
socket's whole subscription set. We ask for the `SIMPLE` format (short keys, smaller frames).
Frames arrive as binary UTF-8 JSON. Every order book message is a whole top-N book, so there
is nothing to chain: a bad book is skipped and the next one replaces it.
Symbols are quote first: `KRW-BTC` is our `BTC-KRW`.

Docs re-checked 2026-11-30 (search tool, docs.upbit.com v1.6.4 orderbook reference and the
changelog of 2025-07-02): feed URL and `orderbook_units` as written here; a code may ask
`KRW-BTC.N` units with N in 1/5/15/30 only, 30 when not given (we ask none: 30); a KRW-only
`level` groups prices (we keep the default 0).
Trade history: `/v1/trades/ticks` (the last 500 trades by time; `sequential_id` is unique
but not contiguous).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from exchanges.base import Connector, Stream
from exchanges.book import crossed
from exchanges.codecs import ValidationError, refused
from exchanges.symbols import split, unified
from exchanges.upbit_messages import BookMessage, TickerMessage, TradeMessage, decode_message
from records import BUY, SELL, OrderBook, Ticker, Trade

__all__ = ["Upbit", "to_native", "to_unified"]

URL = "wss://api.upbit.com/websocket/v1"
TAKER_SIDE = {"BID": BUY, "ASK": SELL}  # `ab` is the side of the order that took liquidity
# DEFAULT-format names of the fields we read -> their SIMPLE abbreviations.
SIMPLE_KEYS = {"type": "ty", "code": "cd", "timestamp": "tms", "trade_timestamp": "ttms",
               "trade_price": "tp", "trade_volume": "tv", "ask_bid": "ab", "sequential_id": "sid",
               "orderbook_units": "obu", "ask_price": "ap", "bid_price": "bp", "ask_size": "as",
               "bid_size": "bs", "acc_trade_volume_24h": "atv24h",
               "acc_trade_price_24h": "atp24h"}


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return f"{quote}-{base}"


def to_unified(code: str) -> str:
    quote, _, base = code.partition("-")
    return unified(base, quote)


def _simple(message: dict) -> dict:
    """A DEFAULT-format message re-keyed to SIMPLE, so one parser reads both."""
    out = {SIMPLE_KEYS.get(k, k): v for k, v in message.items()}
    if "obu" in out:
        out["obu"] = [{SIMPLE_KEYS.get(k, k): v for k, v in unit.items()} for unit in out["obu"]]
    return out


class Upbit(Connector):
    name = "upbit"
    # "There is no unsubscribe": each request replaces the socket's whole set (docs.upbit.com
    # WebSocket best practice, EXCHANGES.md §1): the full new request is sent on the socket.
    live_changes = "replace"
    listing_url = "https://api.upbit.com/v1/market/all"
    stale_after = 300.0  # quiet KRW markets' books can go minutes unchanged

    def to_unified(self, native: str) -> str:
        return to_unified(native)

    @classmethod
    def listed(cls, body: list) -> set[str]:
        """[{"market":"KRW-BTC","korean_name":"비트코인","english_name":"Bitcoin"},..]"""
        return {to_unified(m["market"]) for m in body}

    def connections(self) -> list[Stream]:
        request: list[dict] = [{"ticket": str(uuid.uuid4())}, {"format": "SIMPLE"}]
        kinds = (("trades", "trade"), ("book", "orderbook"), ("ticker", "ticker"))
        symbols: set[str] = set()
        for channel, kind in kinds:
            wanted = self.symbols_with(channel)
            if wanted:
                symbols.update(wanted)
                request.append({"type": kind, "codes": [to_native(s) for s in wanted],
                                "is_only_realtime": kind == "trade"})
        if not symbols:
            return []
        return [Stream(URL, [orjson.dumps(request).decode()], sorted(symbols))]

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        self.typed_frame(frame, ts_recv, stream)

    def decode_message(self, frame: bytes | str) -> Any:
        return decode_message(frame)

    message_handlers = {TradeMessage: "_trade", BookMessage: "_book",
                        TickerMessage: "_ticker"}

    def _trade(self, msg: TradeMessage, ts_recv: float) -> None:
        self.out.trade(Trade("upbit", self.symbol(msg.cd), msg.ttms / 1000.0, ts_recv, msg.tp,
                             msg.tv, TAKER_SIDE[msg.ab], str(msg.sid)))

    def _ticker(self, msg: TickerMessage, ts_recv: float) -> None:
        self.out.ticker(Ticker("upbit", self.symbol(msg.cd), msg.tms / 1000.0, ts_recv,
                               msg.tp, None, None, None, None, msg.atv24h, msg.atp24h))

    def on_untyped(self, msg: object, exc: ValidationError, ts_recv: float,
                   stream: Stream) -> None:
        """Not a SIMPLE data message: a DEFAULT-format one, a heartbeat answer, an error, or
        a data message with a value that does not fit (refused)."""
        if type(msg) is not dict:
            raise ValueError(f"unexpected message: {msg!r}")
        kind = msg.get("ty")
        if kind in ("trade", "orderbook", "ticker"):
            raise refused(exc) from None
        if kind is None and "type" in msg:
            # DEFAULT format (long keys): re-keyed to SIMPLE, decoded typed
            self.on_frame(orjson.dumps(_simple(msg)), ts_recv, stream)
        elif kind is None and msg.get("status") == "UP":
            return  # heartbeat answer
        elif kind is None:
            raise ValueError(f"unexpected message: {msg.get('error') or msg}")
        else:
            raise ValueError(f"unknown message type {kind!r}")

    def _book(self, msg: BookMessage, ts_recv: float) -> None:
        """Sample (SIMPLE): {"ty":"orderbook","cd":"KRW-BTC","tms":1790134742106,
        "obu":[{"ap":1.16539E8,"bp":1.16538E8,"as":0.02054761,"bs":0.08120946}, ...]}
        Units are checked by the decoder (finite floats, 0 or more)."""
        depth = self.depth
        units = msg.obu
        # Sides shorter than the book are padded with zero units: drop those.
        bids = [(u.bp, u.bs) for u in units if u.bs and u.bp][:depth]
        asks = [(u.ap, u.as_) for u in units if u.as_ and u.ap][:depth]
        symbol = self.symbol(msg.cd)
        fault = crossed(bids, asks)
        if fault is not None:
            self.resync(symbol, fault)
            return
        self.out.book(OrderBook("upbit", symbol, msg.tms / 1000.0, ts_recv, bids, asks, None))

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/v1/trades/ticks`: the last 500 trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return f"https://api.upbit.com/v1/trades/ticks?market={to_native(symbol)}&count=500"

    def history_trades(self, symbol: str, body: list, ts_recv: float) -> list[Trade]:
        """[{"market":"KRW-BTC","timestamp":1730336862000,"trade_price":100473000.0,
        "trade_volume":0.0001,"ask_bid":"BID","sequential_id":17303368620000000}, ...]
        newest first; `timestamp` is the trade's time, as `ttms` on the socket."""
        return [Trade("upbit", symbol, t["timestamp"] / 1000.0, ts_recv, t["trade_price"],
                      t["trade_volume"], TAKER_SIDE[t["ask_bid"]], str(t["sequential_id"]))
                for t in body]


CONNECTOR = Upbit
