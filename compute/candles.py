"""OHLCV candles of one market, closed in event time with a grace period for late trades.

Pure computation (no Faust, no settings; intervals and grace are arguments): the candle rules
are in docs/features.md ("Candles"); `agents/features.py` folds them and keeps them in tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["Candles", "parse_intervals", "candle_record"]

# A candle is a list (compact in the table): these are its fields' positions.
START, OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME, TRADES, OPEN_TS, CLOSE_TS = range(10)
_floor = math.floor
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Tick(NamedTuple):
    """One trade's fields the candles read (`Candles.fold`)."""

    ts_event: float
    price: float
    amount: float


def parse_intervals(text: str) -> dict[str, float]:
    """`"1m,5m"` -> {"1m": 60.0, "5m": 300.0}."""
    intervals: dict[str, float] = {}
    for label in (p.strip() for p in text.split(",")):
        if not label:
            continue
        if label[-1:] not in UNITS or not label[:-1].isdigit() or int(label[:-1]) <= 0:
            raise ValueError(f"KCS_CANDLE_INTERVALS: {label!r} is not <n>s|m|h|d")
        intervals[label] = float(int(label[:-1]) * UNITS[label[-1]])
    if not intervals:
        raise ValueError("KCS_CANDLE_INTERVALS is empty")
    return intervals


class Candles:
    """The open candles of one market, every interval; closed ones go to `closed`."""

    __slots__ = ("intervals", "grace", "open", "t", "offset", "late", "closed", "due")

    def __init__(self, intervals: dict[str, float], grace: float,
                 state: dict[str, Any] | None = None) -> None:
        self.intervals = intervals
        self.grace = grace
        state = state or {}
        self.t: float = state.get("t", -math.inf)
        self.offset: int = state.get("offset", -1)
        self.late: int = state.get("late", 0)
        saved = state.get("open", {})
        self.open: dict[str, dict[float, list[float]]] = {
            label: {c[START]: c for c in saved.get(label, [])} for label in intervals}
        self.closed: list[tuple[str, list[float]]] = []  # (label, candle), in closing order
        self.due = -math.inf  # no open candle closes before t reaches this

    def state(self) -> dict[str, Any]:
        return {"t": self.t, "offset": self.offset, "late": self.late,
                "open": {label: list(c.values()) for label, c in self.open.items()}}

    def fold(self, ts: float, price: float, amount: float) -> None:
        self.fold_trades([_Tick(ts, price, amount)])

    def fold_trades(self, trades: Iterable[Any]) -> None:
        """Fold trades (a records.Trade or TradeRow: their ts_event, price and amount) in order,
        with the per-candle lookups hoisted out of the loop: a market's trades of a run are
        folded at once (compute/features.py)."""
        t, grace, due, late = self.t, self.grace, self.due, self.late
        lanes = [(interval, self.open[label]) for label, interval in self.intervals.items()]
        for trade in trades:
            ts, price, amount = trade.ts_event, trade.price, trade.amount
            if ts > t:
                t = ts
            for interval, candles in lanes:
                start = _floor(ts / interval) * interval
                end = start + interval + grace
                if end <= t:
                    late += 1
                    continue
                c = candles.get(start)
                if c is None:
                    candles[start] = [start, price, price, price, price, amount, price * amount,
                                      1, ts, ts]
                    if end < due:
                        due = end
                    continue
                if price > c[HIGH]:
                    c[HIGH] = price
                elif price < c[LOW]:
                    c[LOW] = price
                if ts < c[OPEN_TS]:
                    c[OPEN], c[OPEN_TS] = price, ts
                if ts >= c[CLOSE_TS]:
                    c[CLOSE], c[CLOSE_TS] = price, ts
                c[VOLUME] += amount
                c[QUOTE_VOLUME] += price * amount
                c[TRADES] += 1
            if t >= due:
                self.t = t
                self.close_due()
                due = self.due
        self.t, self.due, self.late = t, due, late

    def close_due(self) -> None:
        """Move every candle with end + grace <= t to `closed`, oldest first."""
        t, grace = self.t, self.grace
        due = math.inf
        for label, interval in self.intervals.items():
            candles = self.open[label]
            for start in sorted(candles):
                if start + interval + grace > t:
                    due = min(due, start + interval + grace)
                    break
                self.closed.append((label, candles.pop(start)))
        self.due = due


def candle_record(exchange: str, symbol: str, label: str, interval: float,
                  c: list[float]) -> dict[str, Any]:
    return {"exchange": exchange, "symbol": symbol, "interval": label, "start": c[START],
            "end": c[START] + interval, "open": c[OPEN], "high": c[HIGH], "low": c[LOW],
            "close": c[CLOSE], "volume": c[VOLUME], "quote_volume": c[QUOTE_VOLUME],
            "trades": c[TRADES]}
