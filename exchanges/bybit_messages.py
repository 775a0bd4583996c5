"""Bybit's typed messages (exchanges.codecs), apart from `exchanges/bybit.py` because that
module is compiled with mypyc, which builds classes without msgspec's class keywords
(`gc=False`) and with annotations msgspec cannot read (docs/normalization.md, "Compiled
modules")."""

from __future__ import annotations

import msgspec

__all__ = ["TradeItem", "Data", "Message", "decode_message"]


# Typed messages (exchanges.codecs), only the fields read. One `Message` type holds data and
# control messages alike (no exception per ack); `data` is a list for trades, an object for
# books and tickers. Lax (`strict=False`): trade and ticker figures are text, read as floats
# by the decoder; book levels stay text (the book keeps them).
class TradeItem(msgspec.Struct, gc=False):
    T: float  # noqa: N815 - Bybit's names
    s: str
    S: str  # noqa: N815
    v: float
    p: float
    i: str


class Data(msgspec.Struct, gc=False):
    # orderbook
    s: str | None = None
    b: list[tuple[str, str]] | None = None
    a: list[tuple[str, str]] | None = None
    u: int | None = None
    # tickers
    symbol: str | None = None
    lastPrice: float | None = None  # noqa: N815
    volume24h: float | None = None
    turnover24h: float | None = None


class Message(msgspec.Struct, gc=False):
    topic: str | None = None
    type: str | None = None
    ts: float | None = None
    cts: float | None = None
    data: list[TradeItem] | Data | None = None
    success: bool | None = None
    op: str | None = None
    ret_msg: str | None = None


decode_message = msgspec.json.Decoder(Message, strict=False).decode
