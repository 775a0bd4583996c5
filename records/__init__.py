"""Normalized market-data records and the topic names they travel on (fields, keys and
their meaning: docs/normalization.md).

Every record carries `exchange` (lower case), `symbol` in the unified `BASE-QUOTE` form
(`BTC-KRW`), `ts_event` (the exchange's time) and `ts_recv` (our receive time), both float
epoch seconds. Records are slotted dataclasses so that orjson serializes them directly,
without an intermediate dict, on the ingest hot path. The Kafka key of every market-data
record is `exchange:BASE-QUOTE` (see `market_key`). The derived records are in
`records.derived`, the control and event records in `records.control`, their Avro schemas
in `records/schemas/`, and the one codec every producer and consumer uses in
`records.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.exchanges import EXCHANGES

__all__ = [
    "Trade",
    "OrderBook",
    "Ticker",
    "BUY",
    "SELL",
    "market_key",
    "trade_topic",
    "book_topic",
    "ticker_topic",
    "DLQ_TOPIC",
    "dlq_headers",
    "ERROR_TOPIC",
    "EXCHANGES",
]

# EXCHANGES: every exchange kor-coin-stream speaks (config/exchanges.py, where the settings
# check KCS_INGEST against it).

BUY = 1  # the taker bought (lifted the ask)
SELL = -1  # the taker sold (hit the bid)

DLQ_TOPIC = "ws.dlq"  # unparseable frames: value = raw bytes, reason etc. in headers
ERROR_TOPIC = "ws.error"  # book integrity failures and resyncs


def dlq_headers(exchange: str, reason: str, ts_recv: float, url: str = ""
                ) -> list[tuple[str, bytes]]:
    """The headers every `ws.dlq` record carries (README, "Topics and records"): the
    exchange, the reason (at most 1,000 characters), when it was received or refused, and
    the feed's URL (empty for a record a worker refused)."""
    return [("exchange", exchange.encode()),
            ("reason", reason[:1000].encode(errors="replace")),
            ("ts_recv", repr(ts_recv).encode()), ("url", url.encode())]


def trade_topic(exchange: str) -> str:
    return f"trade-data.{exchange}"


def book_topic(exchange: str) -> str:
    return f"orderbook-data.{exchange}"


def ticker_topic(exchange: str) -> str:
    return f"ticker-data.{exchange}"


def market_key(exchange: str, symbol: str) -> bytes:
    return f"{exchange}:{symbol}".encode()


@dataclass(slots=True)
class Trade:
    exchange: str
    symbol: str
    ts_event: float
    ts_recv: float
    price: float
    amount: float  # in base currency
    side: int  # BUY (+1) or SELL (-1): the taker's side
    trade_id: str


@dataclass(slots=True)
class OrderBook:
    """The top `depth` levels per side after one change: best first, `[price, size]` pairs."""

    exchange: str
    symbol: str
    ts_event: float
    ts_recv: float
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    sequence: int | None  # the exchange's update id where it has one


@dataclass(slots=True)
class Ticker:
    """The exchange's own summary; fields it does not publish are None."""

    exchange: str
    symbol: str
    ts_event: float
    ts_recv: float
    last: float | None
    bid: float | None
    bid_size: float | None
    ask: float | None
    ask_size: float | None
    volume_24h: float | None  # base currency, rolling 24 h or the exchange's trading day
    quote_volume_24h: float | None

