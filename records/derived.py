"""Typed records of the derived topics: what the agents publish.

Every field is always present: a value that is not known yet is None (null), never left
out, so every record of a topic has the same field set (the Avro schemas in
`records/schemas/` say when each field is null). Times are float epoch seconds: `ts_event`
is the exchange's time, `ts_recv` ours. The agents keep their table values as dicts; `of()`
builds the record from such a dict at the topic's boundary, None for what it lacks.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

__all__ = ["MarketState", "Features", "Candle", "Signal", "Premium", "PremiumLeg", "Bbo",
           "BboQuote", "field_names", "dumps_as_is"]


@cache  # `fields()` walks the class's fields anew on every call (1.2 us for ErrorEvent)
def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@cache
def _wire_names(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute, name on the wire) of each field: `global_` is `global`."""
    return tuple((name, name.rstrip("_")) for name in field_names(cls))


def _plain(value: Any) -> Any:
    if isinstance(value, _FromMapping):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _of(cls: type, values: dict[str, Any]) -> Any:
    # Not `super().of()` in the subclasses: a slotted dataclass is a new class, which the
    # zero-argument super() of its methods does not know.
    return cls(**{name: values.get(name) for name in field_names(cls)})


_PLAIN_TYPES = (str, int, float, bool, type(None))


def _plain_type(hint: Any) -> bool:
    """Whether values of `hint` are JSON values as they are (no record inside)."""
    if hint in _PLAIN_TYPES:
        return True
    origin = typing.get_origin(hint)
    if origin in (list, dict, tuple, typing.Union, types.UnionType):
        return all(arg is ... or _plain_type(arg) for arg in typing.get_args(hint))
    return False


@cache
def dumps_as_is(cls: type) -> bool:
    """Whether orjson's own encoding of a `cls` record (a dataclass: its fields by name, in
    order) is what `as_dict` gives: the generic `as_dict`, no field renamed, and no field
    whose type can hold a record. Such records skip `as_dict` in the codec (an ErrorEvent:
    3.5 -> 0.9 us)."""
    if getattr(cls, "as_dict", None) is not _FromMapping.as_dict:
        return False
    hints = typing.get_type_hints(cls)
    return all(not name.endswith("_") and _plain_type(hints[name])
               for name in field_names(cls))


class _FromMapping:
    __slots__ = ()

    @classmethod
    def of(cls, values: dict[str, Any]) -> Any:
        """The record of `values`' fields of this record; None for every field it lacks."""
        return _of(cls, values)

    def as_dict(self) -> dict[str, Any]:
        """The record as the codec writes it: field names as on the wire (`global_` is
        `global`), nested records as dicts."""
        return {wire: _plain(getattr(self, name)) for name, wire in _wire_names(type(self))}


@dataclass(slots=True)
class MarketState(_FromMapping):
    """Topic `market-state`, key `exchange:BASE-QUOTE`: one market's state after a batch."""

    exchange: str
    symbol: str
    ts_event: float | None = None  # the newest exchange time of any event folded
    ts_recv: float | None = None  # our receive time of the newest event folded
    last_price: float | None = None  # null until the first trade
    last_amount: float | None = None
    last_side: int | None = None
    last_trade_ts: float | None = None
    last_trade_id: str | None = None
    best_bid: float | None = None  # null until the first book (or ticker, with no book)
    best_bid_size: float | None = None
    best_ask: float | None = None
    best_ask_size: float | None = None
    spread: float | None = None
    mid: float | None = None
    microprice: float | None = None
    bid_volume: float | None = None  # null until the first book
    ask_volume: float | None = None
    imbalance: float | None = None
    book_ts: float | None = None
    ticker_ts: float | None = None  # null until the first ticker
    volume_24h: float | None = None


@dataclass(slots=True)
class Features(_FromMapping):
    """Topic `features`, key `exchange:BASE-QUOTE`: rolling trade features (docs in
    agents/features.py), once per batch per market whose trades changed them."""

    exchange: str
    symbol: str
    ts_event: float | None = None  # t: the newest trade time folded
    ts_recv: float | None = None  # the newest receive time folded
    last_price: float | None = None
    n: int | None = None
    late: int | None = None
    volume_1m: float | None = None
    buy_volume_1m: float | None = None
    sell_volume_1m: float | None = None
    vwap_1m: float | None = None
    pressure_1m: float | None = None
    trades_1m: int | None = None
    momentum_1m: float | None = None
    volume_5m: float | None = None
    buy_volume_5m: float | None = None
    sell_volume_5m: float | None = None
    vwap_5m: float | None = None
    pressure_5m: float | None = None
    trades_5m: int | None = None
    momentum_5m: float | None = None
    volume_15m: float | None = None
    buy_volume_15m: float | None = None
    sell_volume_15m: float | None = None
    vwap_15m: float | None = None
    pressure_15m: float | None = None
    trades_15m: int | None = None
    momentum_15m: float | None = None

    @classmethod
    def of(cls, values: dict[str, Any]) -> Features:
        # The table keeps t as `ts` and the newest receive time as `updated`.
        record: Features = _of(cls, values)
        record.ts_event, record.ts_recv = values.get("ts"), values.get("updated")
        return record


@dataclass(slots=True)
class Candle(_FromMapping):
    """Topics `candles.<interval>`, key `exchange:BASE-QUOTE`: one closed candle."""

    exchange: str
    symbol: str
    interval: str
    start: float
    end: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int

    @classmethod
    def of(cls, values: dict[str, Any]) -> Candle:
        record: Candle = _of(cls, values)
        record.trades = int(record.trades)  # the open candle keeps its count as a float
        return record


@dataclass(slots=True)
class Signal(_FromMapping):
    """Topic `signals`, key `exchange:BASE-QUOTE`: a `large_trade` or a `volume_spike`; the
    fields of the other type are null."""

    type: str
    exchange: str
    symbol: str
    ts_event: float
    price: float | None = None  # large_trade
    amount: float | None = None
    side: int | None = None
    notional: float | None = None
    threshold: float | None = None
    trade_id: str | None = None
    volume_1m: float | None = None  # volume_spike
    average: float | None = None
    factor: float | None = None
    ratio: float | None = None

    @classmethod
    def of(cls, values: dict[str, Any]) -> Signal:
        record: Signal = _of(cls, values)
        record.ts_event = values.get("ts_event", values.get("ts"))
        return record


@dataclass(slots=True)
class PremiumLeg(_FromMapping):
    market: str  # exchange:BASE-QUOTE
    price: float
    source: str  # "book" (mid) or "trade" (last price)


@dataclass(slots=True)
class Premium(_FromMapping):
    """Topic `premium`, key the asset: the Korean premium of one asset."""

    asset: str
    ts_recv: float  # our receive time of the newest price used
    rate: PremiumLeg
    reference: str
    krw: dict[str, PremiumLeg]
    global_: dict[str, PremiumLeg]
    premium: dict[str, dict[str, float]]
    headline: dict[str, float]

    @classmethod
    def of(cls, values: dict[str, Any]) -> Premium:
        def leg(value: dict[str, Any]) -> PremiumLeg:
            return PremiumLeg.of(value)

        return cls(asset=values["asset"], ts_recv=values["ts"], rate=leg(values["rate"]),
                   reference=values["reference"],
                   krw={k: leg(v) for k, v in values["krw"].items()},
                   global_={k: leg(v) for k, v in values["global"].items()},
                   premium=values["premium"], headline=values["headline"])


@dataclass(slots=True)
class BboQuote(_FromMapping):
    bid: float | None
    bid_size: float | None
    bid_exchange: str | None
    ask: float | None
    ask_size: float | None
    ask_exchange: str | None
    crossed: bool
    exchanges: list[str]


@dataclass(slots=True)
class Bbo(_FromMapping):
    """Topic `bbo`, key the asset: the consolidated best bid and offer per quote currency."""

    asset: str
    ts_recv: float  # our receive time of the newest book of the asset's markets
    quotes: dict[str, BboQuote]

    @classmethod
    def of(cls, values: dict[str, Any]) -> Bbo:
        return cls(asset=values["asset"], ts_recv=values["ts"],
                   quotes={k: BboQuote.of(v) for k, v in values["quotes"].items()})
