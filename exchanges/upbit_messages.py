"""Upbit's typed messages (exchanges.codecs), apart from `exchanges/upbit.py` as every typed
venue's are: the others' modules are compiled with mypyc, which builds classes without
msgspec's class keywords (`tag=`, `gc=False`); Upbit's is not (it ran no faster compiled,
exchanges/_native.py), but may be without moving its messages (docs/normalization.md,
"Compiled modules")."""

from __future__ import annotations

import msgspec

from exchanges.codecs import Amount

__all__ = ["TradeMessage", "BookUnit", "BookMessage", "TickerMessage", "decode_message"]


# Typed SIMPLE-format messages (exchanges.codecs), tagged by `ty`, with only the fields read.
# Book units are bounded in the decoder: a price or size is a float (an int becomes one;
# a bool, text, or a number beyond a float's range does not fit), 0 or more; 0 is padding.


class TradeMessage(msgspec.Struct, tag_field="ty", tag="trade", gc=False):
    cd: str
    ttms: float
    tp: float
    tv: float
    ab: str
    sid: int | str


class BookUnit(msgspec.Struct, gc=False):
    ap: Amount
    bp: Amount
    as_: Amount = msgspec.field(name="as")
    bs: Amount


class BookMessage(msgspec.Struct, tag_field="ty", tag="orderbook", gc=False):
    cd: str
    tms: float
    obu: list[BookUnit]


class TickerMessage(msgspec.Struct, tag_field="ty", tag="ticker", gc=False):
    cd: str
    tms: float
    tp: float
    atv24h: float | None = None
    atp24h: float | None = None


decode_message = msgspec.json.Decoder(TradeMessage | BookMessage | TickerMessage).decode
