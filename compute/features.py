"""One market's trade features: rolling windows, candles and signals folded trade by trade.

Pure computation (no Faust, no settings; the rules' parameters are a `FeatureRules`): the
definitions are in docs/features.md. `agents/features.py` loads a `Market` from its tables,
folds a batch's trades with `fold_trades`, and publishes and saves what `evaluate` returns.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from compute import signals
from compute.candles import Candles
from compute.windows import HORIZON, WINDOWS, Bucket, Windows

__all__ = ["FeatureRules", "Market", "fold_trade", "fold_trades", "check_spike", "evaluate",
           "restore", "stored", "PRIVATE"]

# Table-only fields of a market's `features` entry, not published
PRIVATE = ("offset", "buckets", "spike", "checked", "candles", "since", "grouped")


@dataclass(frozen=True, slots=True)
class FeatureRules:
    """The parameters of the features (from KCS_CANDLE_*, KCS_LARGE_TRADE_NOTIONAL and
    KCS_SPIKE_FACTOR in a worker)."""

    intervals: dict[str, float]  # candle label -> seconds
    grace: float  # seconds a candle stays open after its end
    history: int  # closed candles kept per market and interval
    thresholds: dict[str, float]  # large trade: quote currency -> notional
    spike_factor: float


class Market:
    """Everything kept in memory for one market between batches."""

    __slots__ = ("key", "exchange", "symbol", "windows", "candles", "spike", "checked",
                 "updated", "signals", "restored")

    def __init__(self, key: str, windows: Windows, candles: Candles, spike: bool,
                 checked: int, updated: float) -> None:
        self.key = key
        self.exchange, _, self.symbol = key.partition(":")
        self.windows = windows
        self.candles = candles
        self.spike = spike  # the volume-spike condition held at the last check
        self.checked = checked  # floor(t / SPIKE_CHECK) at the last spike check
        self.updated = updated
        self.signals: list[dict[str, Any]] = []
        self.restored = False  # read from the tables: the next save rewrites every entry


def evaluate(market: Market) -> dict[str, Any]:
    """The market's features after a batch."""
    market.windows.evict()
    features = {"exchange": market.exchange, "symbol": market.symbol}
    features.update(market.windows.features())
    features.update(n=market.windows.n, late=market.windows.late, updated=market.updated)
    return features


def fold_trade(market: Market, trade: Any, offset: int, rules: FeatureRules) -> None:
    """Fold one trade (a records.Trade or a records.codec.TradeRow, read by attribute, at
    `offset` of its partition) into a market, unless a run before a restart already did."""
    fold_trades(market, [trade], [offset], rules)


def fold_trades(market: Market, trades: list[Any], offsets: list[int],
                rules: FeatureRules) -> None:
    """Fold a market's trades (as `fold_trade` reads them, at increasing `offsets` of their
    partition), in order, skipping those a run before a restart already folded: the same as
    `fold_trade` on each, with the per-market lookups done once."""
    windows, candles = market.windows, market.candles
    if not trades:
        return
    # The offsets increase: the trades a run before a restart folded are a prefix.
    first = bisect_right(offsets, windows.offset)
    exchange, symbol = market.exchange, market.symbol
    threshold = rules.thresholds.get(symbol.rpartition("-")[2])
    span = signals.SPIKE_CHECK
    # Below this t cannot enter a new span (a millisecond of margin against rounding in
    # floor(t / span)): the exact test runs only from there.
    next_check = (market.checked + 1) * span - 1e-3
    updated = market.updated
    fold_window = windows.fold
    for i in range(first, len(trades)):
        trade = trades[i]
        price, amount = trade.price, trade.amount
        fold_window(trade.ts_event, price, amount, trade.side, offsets[i])
        if trade.ts_recv > updated:
            updated = trade.ts_recv
        if threshold is not None and price * amount >= threshold:
            market.signals.append(signals.large_trade(exchange, symbol, trade,
                                                      rules.thresholds))
        if windows.t >= next_check and math.floor(windows.t / span) > market.checked:
            check_spike(market, rules.spike_factor)  # t entered a new 5-second span
            next_check = (market.checked + 1) * span - 1e-3
    market.updated = updated
    first = bisect_right(offsets, candles.offset)
    if first < len(trades):
        candles.fold_trades(trades[first:] if first else trades)
        candles.offset = offsets[-1]


def check_spike(market: Market, factor: float) -> None:
    """The volume-spike check at the market's t (docs/features.md, "Signals")."""
    windows = market.windows
    market.checked = math.floor(windows.t / signals.SPIKE_CHECK)
    if windows.since > windows.t - HORIZON:  # less than 15 minutes of history: no spike
        market.spike = False
        return
    volume_1m, volume_15m = windows.volumes(WINDOWS["1m"], HORIZON)
    spike, average = signals.volume_spike(volume_1m, volume_15m, factor)
    if spike and not market.spike:
        market.signals.append({
            "type": "volume_spike", "exchange": market.exchange, "symbol": market.symbol,
            "ts": windows.t, "volume_1m": volume_1m, "average": average,
            "factor": factor, "ratio": volume_1m / average})
    market.spike = spike


def restore(key: str, state: dict[str, Any] | None, buckets: dict[int, Bucket],
            rules: FeatureRules) -> Market:
    """A market as its `features` entry (`state`, None for a new market) and its saved
    buckets describe it."""
    windows = Windows(state["ts"] if state and state["ts"] is not None else -math.inf,
                      state["offset"] if state else -1, state["n"] if state else 0,
                      state["late"] if state else 0, buckets,
                      state["since"] if state and state["since"] is not None else math.inf)
    market = Market(key, windows, Candles(rules.intervals, rules.grace, state and state["candles"]),
                    bool(state and state["spike"]), state["checked"] if state else -1,
                    state["updated"] if state else 0.0)
    market.restored = bool(state)
    return market


def stored(market: Market, features: dict[str, Any]) -> dict[str, Any]:
    """The market's `features` entry: the published features plus the table-only fields."""
    windows = market.windows
    return {**features, "offset": windows.offset, "candles": market.candles.state(),
            "since": windows.since if windows.since != math.inf else None,
            "buckets": sorted(windows.buckets), "spike": market.spike,
            "checked": market.checked}
