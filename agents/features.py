"""Rolling trade features per market, exact in event time, in the `features` table.

The agent of `agents/market_data.py` folds each trade of a market (`exchange:BASE-QUOTE`)
with `fold_trade` into the rolling windows here, the candles (`agents/candles.py`) and the
signals (`agents/signals.py`); it takes records in batches and, per market and batch, reads
the tables once (`load`), publishes once (`publish`) and writes once (`save`), which is what
keeps it far above the ~2,400 table writes per second a worker manages.

Window semantics. t is the newest ts_event (the exchange's time) among the market's trades
folded so far. The window W ending at t holds the trades with `t - W < ts_event <= t`: a trade
exactly at t - W is out, one a nanosecond later is in. Late and out-of-order trades count in
every window they fall in, whenever they arrive; a trade with ts_event <= t - 15 min when it
arrives can never be in a window again and is only counted in `late`. For W in 1m, 5m, 15m:
- `volume_W`, `buy_volume_W`, `sell_volume_W`: sums of amounts (base currency), all trades,
  taker buys, taker sells;
- `vwap_W`: sum(price * amount) / volume_W (null when the window is empty);
- `pressure_W`: buy_volume_W / sell_volume_W (null when sell_volume_W is 0);
- `trades_W`: the number of trades;
- `momentum_W`: last_price / (price of the window's first trade) - 1, where first and last
  are by (ts_event, arrival order) and `last_price` is the price of the last trade by that
  order, i.e. at t (null when the window is empty).
Also: exchange, symbol, ts (= t), last_price, n (trades folded), late, updated (the newest
ts_recv). These values are a function of the set of trades folded (their arrival order only
breaks ties of equal ts_event), so a replay computes the same numbers whatever the batching.

Storage. Exactness at the window's start needs every trade until it leaves the 15-minute
window, so each market's trades are kept in fixed 5-second event-time buckets in the table
`feature_windows` (key `exchange:BASE-QUOTE|<bucket>`), trades with the same ts_event merged
into one entry. A batch rewrites only the buckets it touched (usually the newest) and
deletes those that left the 15-minute window; the `features` table (key
`exchange:BASE-QUOTE`) holds the features plus the list of live buckets. A window sum adds
whole buckets' cached sums and the entries of the one bucket the window's start cuts.

Restarts. Each market's state records the offset of the last trade folded (a market lives in
one partition of one topic), each bucket the highest offset it holds; trades that Kafka
delivers again after a crash (at-least-once) are skipped where already folded, so the
tables after a restart equal a run without the crash. The in-memory copy of the buckets is
trusted only while its offset equals the table's, else it is reloaded from the table; the
first save after such a load rewrites every entry of the market (see `agents/tables.py`).

Topic `features`, key `exchange:BASE-QUOTE`: the features above, once per batch per market
whose trades changed them. View: `GET /features/{exchange}/{symbol}/`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Any

from faust.web import Request, Response, View

from agents import output, signals
from agents.candles import (
    GRACE,
    HISTORY,
    INTERVALS,
    Candles,
    candle_record,
    candle_topics,
    history_table,
)
from agents.tables import raw_key_table
from app import app
from app.views import routed_value
from records import BUY
from records.derived import Candle, Signal
from records.derived import Features as FeaturesRecord

__all__ = ["Windows", "Bucket", "Market", "WINDOWS", "BUCKET", "HORIZON", "features_table",
           "windows_table", "features_topic", "load", "fold_trade", "publish", "save"]

WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
HORIZON = max(WINDOWS.values())
# Seconds of event time per stored bucket: small enough that a busy market's bucket stays a
# few kB (it is rewritten every batch), large enough that 15 minutes are few buckets to sum.
BUCKET = 5.0

# An entry merges the trades of one market with the same ts_event.
TS, BUY_VOL, SELL_VOL, NOTIONAL, COUNT, FIRST, LAST = range(7)


class Bucket:
    """The entries of one market's 5-second span of event time, sorted by ts_event."""

    __slots__ = ("entries", "times", "hi", "sums")

    def __init__(self, entries: list[list[float]] | None = None, hi: int = -1) -> None:
        self.entries = entries if entries is not None else []
        self.times = [e[TS] for e in self.entries]
        self.hi = hi  # the highest source offset folded in
        self.sums: tuple[float, float, float, int] | None = None  # buy, sell, notional, count

    def add(self, ts: float, price: float, amount: float, side: int) -> None:
        times, entries = self.times, self.entries
        if times and ts == times[-1]:
            e = entries[-1]
        elif not times or ts > times[-1]:
            e = [ts, 0.0, 0.0, 0.0, 0, price, price]
            times.append(ts)
            entries.append(e)
        else:  # out of order
            i = bisect_left(times, ts)
            if times[i] == ts:
                e = entries[i]
            else:
                e = [ts, 0.0, 0.0, 0.0, 0, price, price]
                times.insert(i, ts)
                entries.insert(i, e)
        if side == BUY:
            e[BUY_VOL] += amount
        else:
            e[SELL_VOL] += amount
        e[NOTIONAL] += price * amount
        e[COUNT] += 1
        e[LAST] = price
        self.sums = None

    def totals(self, start: int = 0) -> tuple[float, float, float, int]:
        """Sums of the entries from index `start` on."""
        if start == 0 and self.sums is not None:
            return self.sums
        buy = sell = notional = 0.0
        count = 0
        for e in self.entries[start:] if start else self.entries:
            buy += e[BUY_VOL]
            sell += e[SELL_VOL]
            notional += e[NOTIONAL]
            count += e[COUNT]
        if start == 0:
            self.sums = (buy, sell, notional, count)
        return buy, sell, notional, count

    def value(self) -> dict[str, Any]:
        return {"hi": self.hi, "e": self.entries}


class Windows:
    """Exact rolling windows over one market's trades (see the module docstring)."""

    __slots__ = ("t", "offset", "n", "late", "since", "buckets", "dirty", "removed")

    def __init__(self, t: float = -math.inf, offset: int = -1, n: int = 0, late: int = 0,
                 buckets: dict[int, Bucket] | None = None, since: float = math.inf) -> None:
        self.t = t
        self.since = since  # the oldest ts_event ever folded: how much history there is
        self.offset = offset  # the source offset of the last trade folded
        self.n = n
        self.late = late
        self.buckets = buckets if buckets is not None else {}
        self.dirty: set[int] = set()  # buckets to write
        self.removed: set[int] = set()  # buckets to delete

    def fold(self, ts: float, price: float, amount: float, side: int, offset: int) -> bool:
        """Fold one trade; False when it is too late for every window."""
        self.offset = offset
        self.n += 1
        if ts <= self.t - HORIZON:
            self.late += 1
            return False
        if ts > self.t:
            self.t = ts
        if ts < self.since:
            self.since = ts
        index = math.floor(ts / BUCKET)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
            self.removed.discard(index)
        if offset > bucket.hi:  # else folded into this bucket before a crash
            bucket.add(ts, price, amount, side)
            bucket.hi = offset
            self.dirty.add(index)
        return True

    def evict(self) -> None:
        """Forget the buckets whose every trade is out of the longest window."""
        edge = self.t - HORIZON
        for index in [i for i, b in self.buckets.items() if not b.times or b.times[-1] <= edge]:
            del self.buckets[index]
            self.dirty.discard(index)
            self.removed.add(index)

    def volume(self, width: float) -> float:
        """The volume of the window of `width` seconds ending at t."""
        return self.volumes(width, width)[0]

    def volumes(self, short: float, long: float) -> tuple[float, float]:
        """The volumes of the windows of `short` and `long` (>= short) seconds ending at t,
        in one pass."""
        lo_short, lo_long = self.t - short, self.t - long
        volume_short = volume_long = 0.0
        for bucket in self.buckets.values():
            times = bucket.times
            if times[-1] <= lo_long:
                continue
            b, s, _, _ = bucket.totals(0 if times[0] > lo_long else
                                       bisect_right(times, lo_long))
            volume_long += b + s
            if times[-1] > lo_short:
                b, s, _, _ = bucket.totals(0 if times[0] > lo_short else
                                           bisect_right(times, lo_short))
                volume_short += b + s
        return volume_short, volume_long

    def features(self) -> dict[str, Any]:
        t = self.t
        order = sorted(self.buckets)
        out: dict[str, Any] = {"ts": t if t != -math.inf else None}
        last_price = None
        if order:
            last_price = self.buckets[order[-1]].entries[-1][LAST]
        out["last_price"] = last_price
        for label, width in WINDOWS.items():
            lo = t - width
            buy = sell = notional = 0.0
            count = 0
            first = None
            for index in order:
                bucket = self.buckets[index]
                times = bucket.times
                if times[-1] <= lo:
                    continue
                if times[0] > lo:
                    start = 0
                else:
                    start = bisect_right(times, lo)
                if first is None:
                    first = bucket.entries[start][FIRST]
                b, s, q, c = bucket.totals(start)
                buy += b
                sell += s
                notional += q
                count += c
            volume = buy + sell
            out["volume_" + label] = volume
            out["buy_volume_" + label] = buy
            out["sell_volume_" + label] = sell
            out["vwap_" + label] = notional / volume if volume > 0.0 else None
            out["pressure_" + label] = buy / sell if sell > 0.0 else None
            out["trades_" + label] = count
            out["momentum_" + label] = (last_price / first - 1.0
                                        if first is not None and last_price is not None
                                        else None)
        return out


features_table = raw_key_table("features",
                               "Rolling trade features and open candles per exchange:BASE-QUOTE")
windows_table = raw_key_table("feature_windows",
                              "The trades of the feature windows, per market and 5 s bucket")
features_topic = app.topic("features", key_type=str, key_serializer="raw",
                           value_serializer="raw")
output.declare(features_topic, signals.signals_topic, *candle_topics.values())

# Table-only fields, not published
PRIVATE = ("offset", "buckets", "spike", "checked", "candles", "since")


class Market:
    """Everything the agent keeps in memory for one market between batches."""

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
    windows = Windows(state["ts"] if state and state["ts"] is not None else -math.inf,
                      offset, state["n"] if state else 0, state["late"] if state else 0,
                      buckets, state["since"] if state and state["since"] is not None
                      else math.inf)
    market = Market(key, windows, Candles(INTERVALS, GRACE, state and state["candles"]),
                    bool(state and state["spike"]), state["checked"] if state else -1,
                    state["updated"] if state else 0.0)
    if state:
        market.restored = True
    _markets[key] = market
    return market


def _evaluate(market: Market) -> dict[str, Any]:
    """The market's features after a batch."""
    market.windows.evict()
    features = {"exchange": market.exchange, "symbol": market.symbol}
    features.update(market.windows.features())
    features.update(n=market.windows.n, late=market.windows.late, updated=market.updated)
    return features


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
        for label in INTERVALS:
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
        history_table[history_key] = history[-HISTORY:]
    candles.closed.clear()
    features_table[key] = {**features, "offset": windows.offset, "candles": candles.state(),
                           "since": windows.since if windows.since != math.inf else None,
                           "buckets": sorted(windows.buckets), "spike": market.spike,
                           "checked": market.checked}
    # Deleted last: a crash before this leaves an orphan key, never a listed bucket missing.
    for index in windows.removed:
        del windows_table[f"{key}|{index}"]
    windows.removed.clear()


def fold_trade(market: Market, trade: dict[str, Any], offset: int) -> None:
    """Fold one trade (decoded records.Trade at `offset` of its partition) into a market,
    unless a run before a restart already did."""
    windows, candles = market.windows, market.candles
    if offset <= windows.offset and offset <= candles.offset:
        return  # folded before a restart: Kafka delivered it again
    ts, price, amount = trade["ts_event"], trade["price"], trade["amount"]
    if offset > windows.offset:
        windows.fold(ts, price, amount, trade["side"], offset)
        if trade["ts_recv"] > market.updated:
            market.updated = trade["ts_recv"]
        signal = signals.large_trade(market.exchange, market.symbol, trade, signals.THRESHOLDS)
        if signal is not None:
            market.signals.append(signal)
        if math.floor(windows.t / signals.SPIKE_CHECK) > market.checked:
            check_spike(market)  # t entered a new 5-second span
    if offset > candles.offset:
        candles.offset = offset
        candles.fold(ts, price, amount)


def check_spike(market: Market) -> None:
    """The volume-spike check at the market's t (see agents/signals.py)."""
    windows = market.windows
    market.checked = math.floor(windows.t / signals.SPIKE_CHECK)
    if windows.since > windows.t - HORIZON:  # less than 15 minutes of history: no spike
        market.spike = False
        return
    volume_1m, volume_15m = windows.volumes(WINDOWS["1m"], HORIZON)
    spike, average = signals.volume_spike(volume_1m, volume_15m, signals.SPIKE_FACTOR)
    if spike and not market.spike:
        market.signals.append({
            "type": "volume_spike", "exchange": market.exchange, "symbol": market.symbol,
            "ts": windows.t, "volume_1m": volume_1m, "average": average,
            "factor": signals.SPIKE_FACTOR, "ratio": volume_1m / average})
    market.spike = spike


async def publish(market: Market, sent: list[Any]) -> dict[str, Any]:
    """Send the market's closed candles, signals and features (their delivery futures go to
    `sent`); returns the features, to save once the records are delivered."""
    features = _evaluate(market)
    raw_key = market.key.encode()
    encode = output.codec.encode
    for label, candle in market.candles.closed:
        topic = candle_topics[label].get_topic_name()
        sent.append(await output.send(topic, raw_key, encode(topic, Candle.of(candle_record(
            market.exchange, market.symbol, label, INTERVALS[label], candle)))))
    for signal in market.signals:
        sent.append(await output.send("signals", raw_key, encode("signals", Signal.of(signal))))
    market.signals.clear()
    sent.append(await output.send("features", raw_key,
                                  encode("features", FeaturesRecord.of(features))))
    return features


@app.page("/features/{exchange}/{symbol}/")
async def features_view(view: View, request: Request, exchange: str, symbol: str) -> Response:
    key = f"{exchange.lower()}:{symbol.upper()}"
    return await routed_value(app, view, request, features_table, key, f"features for {key}",
                              lambda state: {k: v for k, v in state.items() if k not in PRIVATE})
