"""Bithumb's typed messages (exchanges.codecs), apart from `exchanges/bithumb.py` because that
module is compiled with mypyc, which builds classes without msgspec's class keywords
(`tag=`, `gc=False`) and with annotations msgspec cannot read (docs/normalization.md,
"Compiled modules")."""

from __future__ import annotations

import msgspec

from exchanges.codecs import Amount

__all__ = ["TradeMessage", "BookUnit", "BookMessage", "TickerMessage", "decode_message"]


# Typed DEFAULT-format messages (exchanges.codecs), tagged by `type`, only the fields read.
# Prices and sizes are JSON numbers (an int becomes a float); book units are bounded >= 0 in
# the decoder (0 is padding), so a unit is a finite float pair once decoded.


class TradeMessage(msgspec.Struct, tag_field="type", tag="trade", gc=False):
    code: str
    trade_timestamp: float
    trade_price: float
    trade_volume: float
    ask_bid: str
    sequential_id: int | str


class BookUnit(msgspec.Struct, gc=False):
    ask_price: Amount
    bid_price: Amount
    ask_size: Amount
    bid_size: Amount


class BookMessage(msgspec.Struct, tag_field="type", tag="orderbook", gc=False):
    code: str
    timestamp: float  # MICROseconds
    orderbook_units: list[BookUnit]


class TickerMessage(msgspec.Struct, tag_field="type", tag="ticker", gc=False):
    code: str
    timestamp: float
    trade_price: float
    acc_trade_volume_24h: float | None = None
    acc_trade_price_24h: float | None = None


decode_message = msgspec.json.Decoder(TradeMessage | BookMessage | TickerMessage).decode
