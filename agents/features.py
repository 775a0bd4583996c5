"""The `features`, `feature_windows` and `candles` tables, and the features view.

The agent of `agents/market_data.py` folds each trade of a market (`exchange:BASE-QUOTE`)
into its rolling windows, candles and signals (compute/features.py); it takes records in
batches and, per market and batch, reads the tables once (`load`), publishes once
(`publish`) and writes once (`save`), which is what keeps it far above the ~2,400 table
writes per second a worker manages. Definitions: docs/features.md.

Storage. Each market's trades are kept in fixed 5-second event-time buckets in the table
`feature_windows` (key `exchange:BASE-QUOTE|<bucket>`). A batch rewrites only the buckets it
touched and deletes those that left the 15-minute window; the `features` table (key
`exchange:BASE-QUOTE`) holds the features, the open candles and the list of live buckets;
`candles` (key `exchange:BASE-QUOTE|<interval>`) the last KCS_CANDLE_HISTORY closed candles.

Restarts. Each market's state records the offset of the last trade folded (a market lives in
one partition of one topic), each bucket the highest offset it holds; trades that Kafka
delivers again after a crash (at-least-once) are skipped where already folded, so the
tables after a restart equal a run without the crash. The in-memory copy of the buckets is
trusted only while its offset equals the table's, else it is reloaded from the table; the
first save after such a load rewrites every entry of the market (see `agents/tables.py`).

Topics `features`, `candles.<interval>`, `signals` (agents/topics.py), key
`exchange:BASE-QUOTE`. Views: `GET /features/{exchange}/{symbol}/`,
`GET /candles/{exchange}/{symbol}/?interval=1m&limit=N`.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.web import Request, Response, View

from agents import output, topics
from agents.application import app, settings
from agents.tables import raw_key_table
from agents.views import routed, routed_value
from compute.candles import candle_record
from compute.features import PRIVATE, FeatureRules, Market, evaluate, restore, stored
from compute.signals import parse_thresholds
from compute.windows import Bucket

__all__ = ["RULES", "features_table", "windows_table", "history_table", "load", "publish",
           "save"]

RULES = FeatureRules(intervals=topics.CANDLE_INTERVALS, grace=settings.candle_grace,
                     history=settings.candle_history,
                     thresholds=parse_thresholds(settings.large_trade_notional),
                     spike_factor=settings.spike_factor)

features_table = raw_key_table("features",
                               "Rolling trade features and open candles per exchange:BASE-QUOTE")
windows_table = raw_key_table("feature_windows",
                              "The trades of the feature windows, per market and 5 s bucket")
# Keyed `exchange:BASE-QUOTE|<interval>`, written only when a candle closes, always in the
# partition of the market's source events: the worker owning the market's key holds it.
# The open candles live in the market's `features` entry (written every batch anyway).
history_table = raw_key_table("candles", "Closed candles per exchange:BASE-QUOTE|interval")

_markets: dict[str, Market] = {}  # the in-memory copies, checked against the tables


def load(key: str) -> Market:
    """The market's state as the tables hold it; call within the partition of its event."""
    state = features_table.get(key)
    cached = _markets.get(key)
    offset = state["offset"] if state else -1
    candle_offset = state["candles"]["offset"] if state else -1
    if cached is not None and cached.windows.offset == offset and \
            cached.candles.offset == candle_offset:
        return cached
    buckets: dict[int, Bucket] = {}
    if state:
        for index in state["buckets"]:
            saved = windows_table.get(f"{key}|{index}")
            if saved is not None:
                buckets[index] = Bucket(saved["e"], saved["hi"])
    market = _markets[key] = restore(key, state, buckets, RULES)
    return market


def save(market: Market, features: dict[str, Any]) -> None:
    """Write the market's tables; call within the partition of its event. Buckets are
    written before the state that lists them, so a crash in between leaves them ahead of the
    state (their `hi` says so), never behind."""
    key, windows, candles = market.key, market.windows, market.candles
    if market.restored:
        # After a restart the local store may hold writes whose changelog records were never
        # sent (a kill -9 before the producer sent them, with the source offsets not yet
        # committed); the re-read trades are then skipped as folded, so rewrite everything
        # once: the changelog, and any worker restoring from it, gets them too.
        market.restored = False
        windows.dirty.update(windows.buckets)
        for label in RULES.intervals:
            history = history_table.get(f"{key}|{label}")
            if history:
                history_table[f"{key}|{label}"] = history
    for index in windows.dirty:
        windows_table[f"{key}|{index}"] = windows.buckets[index].value()
    windows.dirty.clear()
    for label, candle in candles.closed:
        history_key = f"{key}|{label}"
        history = history_table.get(history_key) or []
        if history and history[-1][0] >= candle[0]:  # closed before a crash already
            continue
        history.append(candle)
        history_table[history_key] = history[-RULES.history:]
    candles.closed.clear()
    features_table[key] = stored(market, features)
    # Deleted last: a crash before this leaves an orphan key, never a listed bucket missing.
    for index in windows.removed:
        del windows_table[f"{key}|{index}"]
    windows.removed.clear()


async def publish(market: Market, sent: list[Any]) -> dict[str, Any]:
    """Send the market's closed candles, signals and features (their delivery futures go to
    `sent`); returns the features, to save once the records are delivered."""
    features = evaluate(market)
    raw_key = market.key.encode()
    for label, candle in market.candles.closed:
        sent.append(await output.send(
            topics.candle_topic(label), raw_key,
            orjson.dumps(candle_record(market.exchange, market.symbol, label,
                                       RULES.intervals[label], candle))))
    for signal in market.signals:
        sent.append(await output.send(topics.SIGNALS, raw_key, orjson.dumps(signal)))
    market.signals.clear()
    sent.append(await output.send(topics.FEATURES, raw_key, orjson.dumps(features)))
    return features


@app.page("/features/{exchange}/{symbol}/")
async def features_view(view: View, request: Request, exchange: str, symbol: str) -> Response:
    key = f"{exchange.lower()}:{symbol.upper()}"
    return await routed_value(app, view, request, features_table, key, f"features for {key}",
                              lambda state: {k: v for k, v in state.items() if k not in PRIVATE})


@app.page("/candles/{exchange}/{symbol}/")
async def candles_view(view: View, request: Request, exchange: str, symbol: str) -> Response:
    """Closed candles, oldest first (the last `limit`, default 100), and the open ones."""
    key = f"{exchange.lower()}:{symbol.upper()}"
    intervals = RULES.intervals
    label = request.query.get("interval", next(iter(intervals)))
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if label not in intervals or limit < 0:
        return view.json({"error": f"interval must be one of {list(intervals)}, limit >= 0"},
                         status=400)
    interval = intervals[label]

    def local() -> Response:
        state = features_table.get(key)  # the open candles live there
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

    # routed like the market's features
    return await routed(app, view, request, features_table, key, local)
