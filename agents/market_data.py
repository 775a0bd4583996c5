"""The one agent over the market-data topics: market state from every record, and features,
candles and signals from every trade.

One pass, because per record Faust's stream machinery costs more than the folds themselves:
a second agent over the trade topics would pay it twice. Records come in batches; each
market's entries are read once per batch (inside its partition), folded in plain Python, and
at the end of the batch its derived records are sent (`market-state`, `features`,
`candles.<interval>`, `signals`), their delivery awaited, and its tables written once
(`market_state`, `features`, the touched `feature_windows` buckets, `candles` when one
closed, `recent_trades`). Sending before writing makes a crash in between send a record
twice, never lose it.
"""

from __future__ import annotations

import time
from typing import Any


from agents import cross_exchange, features, market_state, output, recent_trades, topics
from agents.application import app
from agents.batching import in_partition_of, report_batch
from compute.cross_exchange import fold_for_assets
from compute.features import Market, fold_trade
from compute.market_state import apply_event
from records.derived import MarketState

__all__ = ["process_market_data", "BATCH_MAX", "BATCH_WITHIN"]

# Batches larger than agents/batching.py's: each costs a few table writes per market, and on
# the embedded broker Faust's producer sends each changelog record in its own request (a few
# thousand a second for the whole worker); 0.25 s is the most a record waits for its batch.
BATCH_MAX = 10_000
BATCH_WITHIN = 0.25

KINDS = {"trade-data": "trade", "orderbook-data": "book", "ticker-data": "ticker"}


@app.agent(topics.market_data_topic, name="market-data")
async def process_market_data(stream: Any) -> None:
    kind_of: dict[str, str] = {}
    decode, encode = output.codec.decode, output.codec.encode  # set before agents start
    levels, rules = market_state.LEVELS, features.RULES
    async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
        started = time.monotonic()
        oldest = float("inf")  # the oldest record's ts_recv
        states: dict[str, list[Any]] = {}  # key -> [state, an event of the key]
        markets: dict[str, Market] = {}
        by_asset: dict[str, dict[str, Any]] = {}  # the cross-exchange agent's input
        recent: dict[str, list[dict[str, Any]]] = {}  # key -> the batch's trades
        for event in events:
            key = event.key
            entry = states.get(key)
            if entry is None:
                with in_partition_of(event):  # a key is read from its partition's store
                    entry = states[key] = [market_state.load(key), event]
            else:
                entry[1] = event
            topic = event.message.topic
            kind = kind_of.get(topic)
            if kind is None:
                kind = kind_of[topic] = KINDS[topic.partition(".")[0]]
            record = decode(topic, event.value)
            if record["ts_recv"] < oldest:
                oldest = record["ts_recv"]
            apply_event(entry[0], kind, record, levels)
            if kind != "ticker":
                fold_for_assets(by_asset, key, kind == "book", record)
            if kind == "trade":
                trades = recent.get(key)
                if trades is None:
                    trades = recent[key] = []
                trades.append(record)
                market = markets.get(key)
                if market is None:
                    with in_partition_of(event):
                        market = markets[key] = features.load(key)
                fold_trade(market, record, event.message.offset, rules)
        sent = [await output.send(topics.MARKET_STATE, key.encode(),
                                  encode(topics.MARKET_STATE, MarketState.of(state)))
                for key, (state, _) in states.items()]
        results = {key: await features.publish(market, sent) for key, market in markets.items()}
        await output.flush(sent)
        await cross_exchange.send_by_asset(by_asset)
        for key, (state, event) in states.items():
            with in_partition_of(event):
                market_state.market_state[key] = state
                if key in results:
                    features.save(markets[key], results[key])
                if key in recent:
                    recent_trades.extend(key, recent[key])
        await report_batch("market-data", len(events), len(states), started, oldest)

