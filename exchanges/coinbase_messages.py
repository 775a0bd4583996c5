"""Coinbase's typed book update (exchanges.codecs), apart from `exchanges/coinbase.py`
because that module is compiled with mypyc, which builds classes without msgspec's class
keywords (`tag=`, `gc=False`; docs/normalization.md, "Compiled modules").

Only `l2update` is typed: 98% of the feed, its prices and sizes text, which the lax decoder
(`strict=False`) reads as floats in C, equal to `float(text)` (tests/exchanges/
test_coinbase_messages.py). Every other message type, and any frame that does not fit
exactly (a field of another type, an unknown field, a number beyond a float's range), fails
to decode and takes the connector's untyped path, which parses it as before (orjson), so
what is refused, and why, does not change. Snapshots stay untyped: the book's C side parses
their text itself (`load_text`), faster than typed floats put into a dict of levels (the
recording's 10 snapshots: 1.63 against 1.86 ms a pass, compiled). Unknown fields are refused
rather than skipped because msgspec skips them without checking what orjson checks (a number
beyond a float's range, which orjson refuses).
"""

from __future__ import annotations

import msgspec

__all__ = ["Update", "decode_message"]


class Update(msgspec.Struct, tag_field="type", tag="l2update", forbid_unknown_fields=True,
             gc=False):
    product_id: str
    changes: list[tuple[str, float, float]]  # (side, price, size): `buy` = bid, size 0 removes
    time: str


decode_message = msgspec.json.Decoder(Update, strict=False).decode
