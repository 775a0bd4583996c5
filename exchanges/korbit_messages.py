"""Korbit's typed messages (exchanges.codecs), apart from `exchanges/korbit.py` because that
module is compiled with mypyc, which builds classes without msgspec's class keywords
(`tag=`, `gc=False`) and with annotations msgspec cannot read (docs/normalization.md,
"Compiled modules")."""

from __future__ import annotations

import msgspec

from exchanges.codecs import Amount

__all__ = ["TradeItem", "TradeMessage", "Level", "BookData",
           "BookMessage", "TickerData", "TickerMessage", "decode_message"]


# Typed messages (exchanges.codecs), tagged by `type`, only the fields read. Prices and sizes
# are text: the decoder is lax (`strict=False`), so it reads them as floats itself.
class TradeItem(msgspec.Struct, gc=False):
    timestamp: float
    price: float
    qty: float
    isBuyerTaker: bool  # noqa: N815 - Korbit's names
    tradeId: int  # noqa: N815


class TradeMessage(msgspec.Struct, tag_field="type", tag="trade", gc=False):
    symbol: str
    data: list[TradeItem]


class Level(msgspec.Struct, gc=False):
    price: Amount
    qty: Amount


class BookData(msgspec.Struct, gc=False):
    timestamp: float
    asks: list[Level]
    bids: list[Level]


class BookMessage(msgspec.Struct, tag_field="type", tag="orderbook", gc=False):
    symbol: str
    data: BookData


class TickerData(msgspec.Struct, gc=False):
    close: float
    bestBidPrice: float  # noqa: N815
    bestAskPrice: float  # noqa: N815
    volume: float
    quoteVolume: float  # noqa: N815


class TickerMessage(msgspec.Struct, tag_field="type", tag="ticker", gc=False):
    symbol: str
    timestamp: float
    data: TickerData


decode_message = msgspec.json.Decoder(TradeMessage | BookMessage | TickerMessage,
                                      strict=False).decode
