"""The one agent over the market-data topics: market state from every record, and features,
candles and signals from every trade.

One pass, in runs. Faust's per-event machinery (a message, an event, a stream step, an ack
per record) cost more than the folds themselves, so the consumer hands this module each
fetch's records of one source partition as a run of consecutive offsets
(`agents/faust_internals.py`, `deliver_in_runs`), already inside that partition's table
context. A run is folded market by market: each market's entries are read once, its records
folded in plain Python, then its derived records are sent (`market-state`, `features`,
`candles.<interval>`, `signals`, and the cross-exchange agent's by-asset updates), their
delivery awaited, and its tables written once
(`market_state`, `features`, the touched `feature_windows` buckets, `candles` when one
closed, `recent_trades`). Sending before writing makes a crash in between send a record
twice, never lose it. The consumer acks the run once the changelog records of those writes
are delivered, so a committed offset never has table state missing from the changelogs.

The Faust agent stays: it subscribes the topics (Faust's group assigns their partitions and
recovers the tables of those partitions) and names the work in `faust agents`; its stream
receives nothing.
"""

from __future__ import annotations

import asyncio
import time
from operator import attrgetter, itemgetter
from typing import Any

from agents import (cross_exchange, dead_letters, features, market_state, output, recent_trades,
                    topics)
from agents.application import app
from agents.batching import report_batch
from agents.faust_internals import deliver_in_runs
from compute.cross_exchange import fold_for_assets
from compute.features import Market, fold_trades
from compute.market_state import apply_event, apply_trades
from records.derived import MarketState

__all__ = ["process_market_data", "fold_run", "KINDS"]

KINDS = {"trade-data": "trade", "orderbook-data": "book", "ticker-data": "ticker"}


@app.agent(topics.market_data_topic, name="market-data")
async def process_market_data(stream: Any) -> None:
    """Subscribes the market-data topics; their records go to `fold_run` instead."""
    async for _ in stream:  # pragma: no cover  (nothing is delivered here)
        pass


_kinds: dict[str, str] = {}  # topic -> kind
_keys: dict[bytes, str] = {}  # raw key -> key
ts_recv_of = itemgetter("ts_recv")  # a decoded book's or ticker's
trade_ts_recv_of = attrgetter("ts_recv")  # a TradeRow's


async def fold_run(tp: Any, records: list[Any], event: Any) -> None:
    """Fold one run (consecutive offsets of one partition of one market-data topic); called
    inside the partition's table context."""
    started = time.monotonic()
    topic = tp.topic
    kind = _kinds.get(topic)
    if kind is None:
        kind = _kinds[topic] = KINDS[topic.partition(".")[0]]
    decode, encode = output.codec.decode, output.codec.encode
    if kind == "trade":  # a TradeRow: no dict, fields by attribute (records/codec.py)
        decode = output.codec.decode_trade
    # The run's values per market, in offset order (a market lives in one partition), decoded
    # market by market just before they are folded: a run's decoded records (30,000 dicts)
    # do not fit the CPU's caches, and every pass over all of them missed on each record
    # (about 0.4 us per record and pass, bench/features.py); a market's fit.
    values: dict[bytes, list[bytes]] = {}
    offsets: dict[bytes, list[int]] = {}
    for record in records:
        raw = record.key
        rows = values.get(raw)
        if rows is None:
            rows = values[raw] = []
            offsets[raw] = []
        rows.append(record.value)
        offsets[raw].append(record.offset)
    oldest = float("inf")  # the oldest record's ts_recv
    states: dict[str, dict[str, Any]] = {}
    by_asset: dict[str, dict[str, Any]] = {}  # the cross-exchange agent's input
    levels, rules = market_state.LEVELS, features.RULES
    is_trade, is_book = kind == "trade", kind == "book"
    markets: dict[str, Market] = {}
    recent: dict[str, list[Any]] = {}  # the trades the ring keeps, per market
    ring = recent_trades.RING
    sent: list[asyncio.Future[Any]] = []  # delivery futures, awaited before the tables
    for raw, encoded in values.items():
        if raw is None:  # a market-data record is keyed by its market
            for value, offset in zip(encoded, offsets[raw], strict=True):
                await dead_letters.refuse(topic, tp.partition, offset, value,
                                          ValueError("a record without a key"), sent)
            continue
        key = _keys.get(raw)
        if key is None:
            key = _keys[raw] = raw.decode("utf-8", "replace")
        try:
            rows = [decode(topic, value) for value in encoded]
        except Exception:  # a value the codec cannot read (agents/dead_letters.py)
            rows, encoded, offsets[raw] = await _decode_each(decode, tp, encoded,
                                                             offsets[raw], sent)
            if not rows:
                continue
        state = states[key] = market_state.load(key)
        if is_trade:  # a TradeRow's fields are checked by its decode
            first = min(map(trade_ts_recv_of, rows))
            apply_trades(state, rows)
            market = markets[key] = features.load(key)
            fold_trades(market, rows, offsets[raw], rules)
            # The newest trade by ts_recv (the later of equals) is all fold_for_assets keeps.
            fold_for_assets(by_asset, key, False, max(reversed(rows), key=trade_ts_recv_of))
            recent[key] = rows[-ring:]
        else:
            before = dict(state)
            try:
                for row in rows:
                    apply_event(state, kind, row, levels)
                if is_book:
                    for row in rows:
                        fold_for_assets(by_asset, key, True, row)
                first = min(map(ts_recv_of, rows))
            except Exception:  # a record whose fold raises (agents/dead_letters.py)
                state.clear()
                state.update(before)
                by_asset.pop(key, None)
                first = await _fold_each(state, kind, key, rows, encoded, offsets[raw],
                                         by_asset, levels, tp, sent)
        if first < oldest:
            oldest = first
    sent.extend([await output.send(topics.MARKET_STATE, key.encode(),
                                   encode(topics.MARKET_STATE, MarketState.of(state)))
                 for key, state in states.items()])
    results = {key: await features.publish(market, sent) for key, market in markets.items()}
    await cross_exchange.send_by_asset(by_asset, sent)
    await output.flush(sent)
    for key, state in states.items():
        market_state.market_state[key] = state
        if key in results:
            features.save(markets[key], results[key])
    for key, rows in recent.items():
        recent_trades.extend(key, rows)
    await report_batch("market-data", len(records), len(states), started, oldest)


async def _decode_each(decode: Any, tp: Any, encoded: list[bytes],
                       offsets: list[int], sent: list[asyncio.Future[Any]]
                       ) -> tuple[list[Any], list[bytes], list[int]]:
    """A market's values decoded one at a time, those that fail refused: (rows, their
    values, their offsets)."""
    rows, kept, at = [], [], []
    for value, offset in zip(encoded, offsets, strict=True):
        try:
            row = decode(tp.topic, value)
        except ConnectionError:  # records.codec.RegistryUnavailable: not the record's fault
            raise
        except Exception as exc:
            await dead_letters.refuse(tp.topic, tp.partition, offset, value, exc, sent)
            continue
        rows.append(row)
        kept.append(value)
        at.append(offset)
    return rows, kept, at


async def _fold_each(state: dict[str, Any], kind: str, key: str, rows: list[Any],
                     encoded: list[bytes], offsets: list[int],
                     by_asset: dict[str, dict[str, Any]], levels: int, tp: Any,
                     sent: list[asyncio.Future[Any]]) -> float:
    """A market's books or tickers folded one at a time, each on a copy that is kept only
    if its fold succeeds, those that fail refused; returns the oldest ts_recv folded."""
    first = float("inf")
    for row, value, offset in zip(rows, encoded, offsets, strict=True):
        # fold_for_assets replaces what an update holds, never changes it: a shallow copy
        trial, update = dict(state), dict(by_asset.get(key) or {"m": key})
        try:
            apply_event(trial, kind, row, levels)
            if kind == "book":
                fold_for_assets({key: update}, key, True, row)
            ts_recv = float(row["ts_recv"])
        except Exception as exc:
            await dead_letters.refuse(tp.topic, tp.partition, offset, value, exc, sent)
            continue
        state.update(trial)
        if kind == "book":
            by_asset[key] = update
        first = min(first, ts_recv)
    return first


deliver_in_runs(topics.SOURCE_TOPICS, fold_run)
