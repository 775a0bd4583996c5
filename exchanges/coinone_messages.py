"""Coinone's typed messages (exchanges.codecs), apart from `exchanges/coinone.py` because that
module is compiled with mypyc, which builds classes without msgspec's class keywords
(`tag=`, `gc=False`) and with annotations msgspec cannot read (docs/normalization.md,
"Compiled modules")."""

from __future__ import annotations

from typing import Literal

import msgspec

from exchanges.codecs import Amount

__all__ = ["TradeData", "Level", "BookData", "TickerData",
           "TradeMessage", "BookMessage", "TickerMessage", "decode_message"]


# Typed DATA messages (exchanges.codecs), tagged by `channel`, only the fields read. Prices
# and sizes are text: the decoder is lax (`strict=False`), so it reads them as floats itself.
class TradeData(msgspec.Struct, gc=False):
    quote_currency: str
    target_currency: str
    id: str | int
    timestamp: float
    price: float
    qty: float
    is_seller_maker: bool


class Level(msgspec.Struct, gc=False):
    price: Amount
    qty: Amount


class BookData(msgspec.Struct, gc=False):
    quote_currency: str
    target_currency: str
    id: int  # text on the wire
    timestamp: float
    asks: list[Level]
    bids: list[Level]


class TickerData(msgspec.Struct, gc=False):
    quote_currency: str
    target_currency: str
    timestamp: float
    last: float
    bid_best_price: float
    bid_best_qty: float
    ask_best_price: float
    ask_best_qty: float
    target_volume: float
    quote_volume: float


class TradeMessage(msgspec.Struct, tag_field="channel", tag="TRADE", gc=False):
    response_type: Literal["DATA"]
    data: TradeData


class BookMessage(msgspec.Struct, tag_field="channel", tag="ORDERBOOK", gc=False):
    response_type: Literal["DATA"]
    data: BookData


class TickerMessage(msgspec.Struct, tag_field="channel", tag="TICKER", gc=False):
    response_type: Literal["DATA"]
    data: TickerData


decode_message = msgspec.json.Decoder(TradeMessage | BookMessage | TickerMessage,
                                      strict=False).decode
