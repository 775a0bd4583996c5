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
The buckets a batch touched are written together: up to `GROUP_ENTRIES` entries in one
record under the key of the first of them (`{"g": [[bucket, hi, entries], ...]}`), and the
`features` entry maps each bucket kept in another bucket's record (`grouped`); a bucket
alone in its record keeps the one-bucket form (`{"hi": ..., "e": ...}`), which is what a
live market's batch writes. A batch caught up from a backlog spans minutes of a market's
event time, and every record is a changelog record: on the embedded broker each is its own
produce request, one at a time per changelog partition (bench/features.py). A record is
deleted once no live bucket is kept in it.

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

from faust.web import Request, Response, View

from agents import output, topics
from agents.application import app, settings
from agents.tables import raw_key_table
from agents.views import routed, routed_value
from compute.candles import candle_record
from compute.features import PRIVATE, FeatureRules, Market, evaluate, restore, stored
from compute.signals import parse_thresholds
from compute.windows import Bucket
from records.derived import Candle, Signal
from records.derived import Features as FeaturesRecord

__all__ = ["RULES", "features_table", "windows_table", "history_table", "load", "publish",
           "save"]

RULES = FeatureRules(intervals=topics.CANDLE_INTERVALS, grace=settings.candle_grace,
                     history=settings.candle_history,
                     thresholds=parse_thresholds(settings.large_trade_notional),
                     spike_factor=settings.spike_factor)

features_table = raw_key_table("features",
                               "Rolling trade features and open candles per exchange:BASE-QUOTE")
# A market's entry reaches the changelog only after its buckets and closed candles written
# before it (agents/faust_internals.py, ChangelogLanes): recovered, it never lists a bucket
# or implies a candle that the other changelogs lack.
features_table.barrier = True
windows_table = raw_key_table("feature_windows",
                              "The trades of the feature windows, per market and 5 s bucket")
# Keyed `exchange:BASE-QUOTE|<interval>`, written only when a candle closes, always in the
# partition of the market's source events: the worker owning the market's key holds it.
# The open candles live in the market's `features` entry (written every batch anyway).
history_table = raw_key_table("candles", "Closed candles per exchange:BASE-QUOTE|interval")

_markets: dict[str, Market] = {}  # the in-memory copies, checked against the tables
# Per market, the buckets kept in another bucket's record: bucket -> that record's bucket
# (the `features` entry's `grouped`), and the records holding live buckets; valid with the
# in-memory copy in `_markets`.
_grouped: dict[str, dict[int, int]] = {}
_records: dict[str, set[int]] = {}
# Entries of the buckets written together in one record, at most (a bucket alone may hold
# more): about 150 kB of JSON, far under Kafka's default 1 MB record limit.
GROUP_ENTRIES = 2048


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
    grouped: dict[int, int] = {}
    if state:
        grouped = {index: record for index, record in state.get("grouped", ())}
        read: dict[int, dict[int, Bucket]] = {}  # record -> its buckets
        for index in state["buckets"]:
            record = grouped.get(index, index)
            held = read.get(record)
            if held is None:
                held = read[record] = _read_record(windows_table.get(f"{key}|{record}"),
                                                   record)
            bucket = held.get(index)
            if bucket is not None:
                buckets[index] = bucket
    _grouped[key] = grouped
    _records[key] = {grouped.get(index, index) for index in buckets}
    market = _markets[key] = restore(key, state, buckets, RULES)
    return market


def _read_record(saved: dict[str, Any] | None, record: int) -> dict[int, Bucket]:
    """The buckets of a `feature_windows` record (written at bucket `record`)."""
    if saved is None:
        return {}
    if "g" in saved:
        return {index: Bucket(entries, hi) for index, hi, entries in saved["g"]}
    return {record: Bucket(saved["e"], saved["hi"])}


def _write_buckets(key: str, market: Market) -> None:
    """Write the market's dirty buckets, grouped (see the module docstring)."""
    windows = market.windows
    buckets = windows.buckets
    grouped = _grouped.setdefault(key, {})
    dirty = sorted(windows.dirty)
    windows.dirty.clear()
    chunks: list[list[int]] = []
    size = GROUP_ENTRIES
    for index in dirty:
        entries = len(buckets[index].entries)
        if size + entries > GROUP_ENTRIES and (not chunks or chunks[-1]):
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += entries
    before = dict(grouped)
    for chunk in chunks:
        record = chunk[0]
        # The record is rewritten: every live bucket the `features` entry written before
        # says it holds stays in it (also one written again in a later record: until the
        # new entry is written, a crash leaves the old one, and it must find its buckets).
        members = sorted({*chunk, *(index for index, at in before.items()
                                    if at == record and index in buckets)})
        for index in chunk:
            if index == record:
                grouped.pop(index, None)
            else:
                grouped[index] = record
        if len(members) == 1:
            windows_table[f"{key}|{record}"] = buckets[record].value()
        else:
            windows_table[f"{key}|{record}"] = {"g": [
                [index, buckets[index].hi, buckets[index].entries] for index in members]}


def _drop_records(key: str, market: Market) -> None:
    """Delete the records that hold no live bucket any more (after the `features` entry
    that stopped listing them)."""
    windows = market.windows
    grouped = _grouped.setdefault(key, {})
    # an evicted bucket is never in `windows.buckets` (compute/windows.py), so the loop below
    # forgets it: its record goes with the others no live bucket is in
    windows.removed.clear()
    for index in [i for i in grouped if i not in windows.buckets]:
        del grouped[index]
    live = {grouped.get(index, index) for index in windows.buckets}
    for record in _records.get(key, set()) - live:
        del windows_table[f"{key}|{record}"]
    _records[key] = live


def save(market: Market, features: dict[str, Any]) -> None:
    """Write the market's tables; call within the partition of its event. Buckets are
    written before the state that lists them, so a crash in between leaves them ahead of the
    state (their `hi` says so), never behind."""
    key, windows, candles = market.key, market.windows, market.candles
    # Each key is written once per batch: a key written again while its record is still in
    # flight can, after a kill -9, be set back to that record by recovery (see
    # `agents/faust_internals.py`, `Consumer._fold_run`).
    closed: dict[str, list[list[float]]] = {}
    for label, candle in candles.closed:
        closed.setdefault(label, []).append(candle)
    candles.closed.clear()
    rewrite = market.restored
    if rewrite:
        # After a restart the local store may hold writes whose changelog records were never
        # sent (a kill -9 before the producer sent them, with the source offsets not yet
        # committed); the re-read trades are then skipped as folded, so rewrite everything
        # once: the changelog, and any worker restoring from it, gets them too.
        market.restored = False
        windows.dirty.update(windows.buckets)
        for label in RULES.intervals:
            closed.setdefault(label, [])  # rewritten below
    _write_buckets(key, market)
    for label, new in closed.items():
        history_key = f"{key}|{label}"
        history = history_table.get(history_key) or []
        length = len(history)
        for candle in new:
            if history and history[-1][0] >= candle[0]:  # closed before a crash already
                continue
            history.append(candle)
        if len(history) > length or (rewrite and history):
            history_table[history_key] = history[-RULES.history:]
    entry = stored(market, features)
    grouped = _grouped.get(key)
    if grouped:
        entry["grouped"] = sorted(grouped.items())
    features_table[key] = entry
    # Deleted last: a crash before this leaves an orphan key, never a listed bucket missing.
    _drop_records(key, market)


async def publish(market: Market, sent: list[Any]) -> dict[str, Any]:
    """Send the market's closed candles, signals and features (their delivery futures go to
    `sent`); returns the features, to save once the records are delivered."""
    features = evaluate(market)
    raw_key = market.key.encode()
    encode = output.codec.encode
    for label, candle in market.candles.closed:
        topic = topics.candle_topic(label)
        sent.append(await output.send(topic, raw_key, encode(topic, Candle.of(candle_record(
            market.exchange, market.symbol, label, RULES.intervals[label], candle)))))
    for signal in market.signals:
        sent.append(await output.send(topics.SIGNALS, raw_key,
                                      encode(topics.SIGNALS, Signal.of(signal))))
    market.signals.clear()
    sent.append(await output.send(topics.FEATURES, raw_key,
                                  encode(topics.FEATURES, FeaturesRecord.of(features))))
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
