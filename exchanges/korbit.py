"""Korbit (now "Digital X"): trades, order books and tickers from Korbit's v2 public WebSocket.

`wss://ws-api.korbit.co.kr/v2/public` (the Digital X host serves the same paths). A request is
always a JSON array of request objects; we send one per channel, each listing every symbol.
Success is acknowledged only for requests with a `requestId` (`{"requestId":1,
"status":"success"}`, ignored); failures (`"status":"fail"`, with a `code`) and server errors
(`"status":"error"`, a `message` only) raise so they land on the DLQ.
Korbit publishes no connection or subscription limits (unconfirmed; a probe
ran all 193 pairs in one request), so we keep one connection. The server sends WebSocket
protocol pings (answered by the library); there is no application heartbeat.
Frames are text JSON. Symbols are lower-case `base_quote`: `btc_krw` is our `BTC-KRW`.

Books: every order book message is the full top 30 per side (asks ascending, bids
descending), with no sequence number and no checksum, so it replaces the book. Public
messages may be dropped under load; the next complete message heals that. Zero levels are
dropped, a crossed or unordered book is dropped with `resync()`. A suspended pair sends a
book with empty sides, which is published as it is.
Trades: each (re)subscription starts with a snapshot of recent trades; those already
published (by `tradeId`) are not published again.

Docs checked 2026-11-30 against Korbit's own API docs (docs.korbit.co.kr, Korean edition,
"WebSocket API" and "거래지원 목록 조회", found through the search tool): the URL, the request
array, the ticker/orderbook/trade messages (orderbook: at most 30 levels, full each time;
`snapshot: true` first after a subscribe), the `status` control messages and the note that
public messages may be dropped under load are as implemented. Trade history:
`/v2/trades?symbol=btc_krw&limit=500` (the last 500 trades, by time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from exchanges.book import snapshot_fault
from exchanges.base import Connector, Stream, Subscriptions
from exchanges.codecs import priced_levels
from exchanges.korbit_messages import BookMessage, TickerMessage, TradeMessage, decode_message
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Korbit", "to_native", "to_unified"]

URL = "wss://ws-api.korbit.co.kr/v2/public"
# Our channel -> Korbit's request type.
KINDS = (("trades", "trade"), ("book", "orderbook"), ("ticker", "ticker"))


def to_native(symbol: str) -> str:
    """`BTC-KRW` -> `btc_krw`."""
    base, quote = split(symbol)
    return f"{base}_{quote}".lower()


def to_unified(native: str) -> str:
    """`btc_krw` -> `BTC-KRW`."""
    base, sep, quote = native.partition("_")
    if not sep or not base or not quote or "_" in quote:
        raise ValueError(f"not a Korbit symbol: {native!r}")
    return unified(base, quote)


class Korbit(Connector):
    name = "korbit"
    stale_after = 300.0  # quiet KRW markets' books can go minutes unchanged
    # `method` subscribe / unsubscribe on the open socket (EXCHANGES.md §4, docs)
    live_changes = "delta"
    listing_url = "https://api.korbit.co.kr/v2/currencyPairs"

    def to_unified(self, native: str) -> str:
        return to_unified(native)

    @classmethod
    def listed(cls, body: dict | list) -> set[str]:
        """{"success":true,"data":[{"symbol":"btc_krw","status":"launched"},..]} (docs:
        `status` launched or stopped). A stopped pair is still listed: subscribing to it is
        valid and its feed resumes when trading does."""
        pairs = body["data"] if isinstance(body, dict) else body
        return {to_unified(p["symbol"]) for p in pairs}

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """[{"method":"unsubscribe"|"subscribe","type":"trade","symbols":["btc_krw"]},..]"""
        request: list[dict] = []
        for method, change in (("unsubscribe", removed), ("subscribe", added)):
            for channel, kind in KINDS:
                wanted = sorted(s for s, channels in change.items() if channel in channels)
                if wanted:
                    request.append({"method": method, "type": kind,
                                    "symbols": [to_native(s) for s in wanted],
                                    "requestId": len(request) + 1})
        return [orjson.dumps(request).decode()] if request else []

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        self.last_trade_id: dict[str, int] = {}  # symbol -> highest `tradeId` published

    def connections(self) -> list[Stream]:
        request: list[dict] = []
        symbols: set[str] = set()
        for channel, kind in KINDS:
            wanted = sorted(self.symbols_with(channel))
            if wanted:
                symbols.update(wanted)
                request.append({"method": "subscribe", "type": kind,
                                "symbols": [to_native(s) for s in wanted],
                                "requestId": len(request) + 1})
        if not symbols:
            return []
        return [Stream(URL, [orjson.dumps(request).decode()], sorted(symbols))]

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        self.typed_frame(frame, ts_recv, stream)

    def decode_message(self, frame: bytes | str) -> Any:
        return decode_message(frame)

    message_handlers = {TradeMessage: "_trades", BookMessage: "_book",
                        TickerMessage: "_ticker"}
    answer_starts = ('{"requestId"', '{"status"')

    def on_answer(self, msg: object, stream: Stream) -> bool:
        if type(msg) is not dict or msg.get("type") in ("trade", "orderbook", "ticker"):
            return False
        status = msg.get("status")
        if status == "fail":
            # {"status":"fail","code":"INVALID_SYMBOL","message":"...","requestId":2}
            raise ValueError(f"korbit error {msg.get('code')}: {msg.get('message')}")
        if status == "error":  # {"status":"error","message":"..."}: no request named
            raise ValueError(f"korbit error: {msg.get('message')}")
        # anything else ({"requestId":1,"status":"success"}, new types) carries no data
        return True

    def _trades(self, msg: TradeMessage, ts_recv: float) -> None:
        """{"symbol":"btc_krw","timestamp":1790134328085,"type":"trade","snapshot":true,
        "data":[{"timestamp":1790134317520,"price":"116439000","qty":"0.0067",
        "isBuyerTaker":false,"tradeId":25441720}]}

        `isBuyerTaker` true = the buyer took liquidity. The envelope `timestamp` is the send
        time; each trade's own `timestamp` is when it happened (the snapshot above is a trade
        from 10 s before it was sent).
        """
        symbol = self.symbol(msg.symbol)
        # The first message after every (re)subscribe is a snapshot of recent trades, which
        # may have been published already. `tradeId` grows per pair (not contiguously), so a
        # trade at or below the highest id published is a repeat. Compare with the id from
        # before this message, so the order of trades inside `data` does not matter.
        last = self.last_trade_id.get(symbol, -1)
        newest = last
        trade = self.out.trade
        for t in msg.data:
            trade_id = t.tradeId
            if trade_id <= last:
                continue
            if trade_id > newest:
                newest = trade_id
            trade(Trade("korbit", symbol, t.timestamp / 1000.0, ts_recv, t.price, t.qty,
                        BUY if t.isBuyerTaker else SELL, str(trade_id)))
        self.last_trade_id[symbol] = newest

    def _book(self, msg: BookMessage, ts_recv: float) -> None:
        """{"symbol":"btc_krw","timestamp":1790134242857,"type":"orderbook","snapshot":true,
        "data":{"timestamp":1790134242563,"asks":[{"price":"116506000","qty":"0.27522"}, ...],
        "bids":[{"price":"116455000","qty":"0.00499"}, ...]}}

        `data.timestamp` is the book's time, the envelope's is the send time. Levels are
        checked by the decoder (finite, 0 or more); zero levels are left out.
        """
        symbol = self.symbol(msg.symbol)
        data = msg.data
        depth = self.depth
        bids = priced_levels(data.bids, depth)
        asks = priced_levels(data.asks, depth)
        fault = snapshot_fault(bids, asks)
        if fault is not None:
            self.resync(symbol, fault)
            return
        self.out.book(OrderBook("korbit", symbol, data.timestamp / 1000.0, ts_recv, bids,
                                asks, None))

    def _ticker(self, msg: TickerMessage, ts_recv: float) -> None:
        """{"symbol":"btc_krw","timestamp":1790134313071,"type":"ticker","snapshot":true,
        "data":{"open":"115370000","high":"116765000","low":"114412000","close":"116463000",
        "volume":"39.25266763","quoteVolume":"4549864965.49708","bestAskPrice":"116477000",
        "bestBidPrice":"116426000","lastTradedAt":1790134282264,...}}

        No best bid/ask sizes; `data` has no time of its own, so the envelope's is used.
        """
        data = msg.data
        self.out.ticker(Ticker("korbit", self.symbol(msg.symbol), msg.timestamp / 1000.0,
                               ts_recv, data.close, data.bestBidPrice, None, data.bestAskPrice,
                               None, data.volume, data.quoteVolume))

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/v2/trades`: the last 500 trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return f"https://api.korbit.co.kr/v2/trades?symbol={to_native(symbol)}&limit=500"

    def history_trades(self, symbol: str, body: dict, ts_recv: float) -> list[Trade]:
        """{"success":true,"data":[{"timestamp":1700000000000,"price":"100","qty":"1",
        "isBuyerTaker":false,"tradeId":25441720}, ...]}"""
        if not body.get("success"):
            raise ValueError(f"korbit trade history: {body}")
        return [Trade("korbit", symbol, t["timestamp"] / 1000.0, ts_recv, float(t["price"]),
                      float(t["qty"]), BUY if t["isBuyerTaker"] else SELL, str(t["tradeId"]))
                for t in body["data"]]


CONNECTOR = Korbit
