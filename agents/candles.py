"""OHLCV candles per market, closed in event time with a grace period for late trades.

Intervals come from `KCS_CANDLE_INTERVALS` (default "1m"; e.g. "1m,5m,1h"), the grace period
from `KCS_CANDLE_GRACE` (default 5 s). The candles are folded by the features agent
(`agents/features.py`) from the same trades, in the order of the market's source partition.

Semantics, for an interval I and grace G, per market:
- The candle starting at `s = floor(ts_event / I) * I` covers trades with ts_event in [s, s+I).
- t is the newest ts_event of the market's trades folded so far (including the current one).
  A candle closes as soon as t >= s + I + G; it is then written to the candle history,
  published once to `candles.<interval>`, and never changes again.
- A trade whose candle is closed (s + I + G <= t, t including the trade itself) is late: it
  is counted in `late` and left out. Otherwise it joins its candle, even after newer candles
  opened: several candles may be open during the grace period.
- open/close are the prices of the first/last trade by (ts_event, arrival order); high/low
  the extremes; volume the sum of amounts (base currency); quote_volume the sum of
  price * amount; trades the count. Intervals without trades have no candle.
- A candle of a market that stops trading closes with the market's next trade (event time
  only advances with the market's own trades).

Tables: `candles` (key `exchange:BASE-QUOTE|<interval>`: the last KCS_CANDLE_HISTORY closed
candles, oldest first, written only when a candle closes); the open candles are part of the
market's `features` entry. Topic `candles.<interval>`, key `exchange:BASE-QUOTE`,
value JSON: exchange, symbol, interval, start, end, open, high, low, close, volume,
quote_volume, trades. View: `GET /candles/{exchange}/{symbol}/?interval=1m&limit=N`.
"""

from __future__ import annotations

import math
from typing import Any

from faust.web import Request, Response, View

from agents.tables import raw_key_table
from app import app, settings
from app.views import routed

__all__ = ["Candles", "parse_intervals", "INTERVALS", "history_table",
           "candle_topics", "candle_record", "GRACE", "HISTORY"]

# A candle is a list (compact in the table): these are its fields' positions.
START, OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME, TRADES, OPEN_TS, CLOSE_TS = range(10)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


INTERVALS = parse_intervals(settings.candle_intervals)
GRACE = settings.candle_grace
HISTORY = settings.candle_history


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
        t = self.t = ts if ts > self.t else self.t
        grace = self.grace
        for label, interval in self.intervals.items():
            start = math.floor(ts / interval) * interval
            if start + interval + grace <= t:
                self.late += 1
                continue
            candles = self.open[label]
            c = candles.get(start)
            if c is None:
                candles[start] = [start, price, price, price, price, amount, price * amount, 1,
                                  ts, ts]
                if start + interval + grace < self.due:
                    self.due = start + interval + grace
                continue
            if price > c[HIGH]:
                c[HIGH] = price
            if price < c[LOW]:
                c[LOW] = price
            if ts < c[OPEN_TS]:
                c[OPEN], c[OPEN_TS] = price, ts
            if ts >= c[CLOSE_TS]:
                c[CLOSE], c[CLOSE_TS] = price, ts
            c[VOLUME] += amount
            c[QUOTE_VOLUME] += price * amount
            c[TRADES] += 1
        if t >= self.due:
            self.close_due()

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


# Keyed `exchange:BASE-QUOTE|<interval>`, written only when a candle closes, always in the
# partition of the market's source events: the worker owning the market's key holds it.
# The open candles live in the market's `features` entry (written every batch anyway).
history_table = raw_key_table("candles", "Closed candles per exchange:BASE-QUOTE|interval")
candle_topics = {label: app.topic(f"candles.{label}", key_type=str, key_serializer="raw",
                                  value_serializer="raw") for label in INTERVALS}


@app.page("/candles/{exchange}/{symbol}/")
async def candles_view(view: View, request: Request, exchange: str, symbol: str) -> Response:
    """Closed candles, oldest first (the last `limit`, default 100), and the open ones."""
    key = f"{exchange.lower()}:{symbol.upper()}"
    label = request.query.get("interval", next(iter(INTERVALS)))
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if label not in INTERVALS or limit < 0:
        return view.json({"error": f"interval must be one of {list(INTERVALS)}, limit >= 0"},
                         status=400)
    interval = INTERVALS[label]

    def local() -> Response:
        from agents.features import features_table  # the open candles live there

        state = features_table.get(key)
        if state is None:
            return view.json({"error": f"no candles for {key}"}, status=404)
        history = history_table.get(f"{key}|{label}") or []
        exchange_, _, symbol_ = key.partition(":")
        closed = history[-limit:] if limit else []
        return view.json({
            "exchange": exchange_, "symbol": symbol_, "interval": label,
            "candles": [candle_record(exchange_, symbol_, label, interval, c) for c in closed],
            "open": [candle_record(exchange_, symbol_, label, interval, c)
                     for c in sorted(state["candles"]["open"].get(label, []))],
        })

    from agents.features import features_table  # routed like the market's features

    return await routed(app, view, request, features_table, key, local)
