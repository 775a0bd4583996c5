"""Trading signals on the `signals` topic: volume spikes and large trades.

Both are computed by the features agent (`agents/features.py`), which sees every trade and the
rolling windows; this module holds their definitions, settings and the topic.

Topic `signals`, key `exchange:BASE-QUOTE`, value JSON with `type` and:

- `large_trade`: one per trade whose notional `price * amount` (in the quote currency of the
  symbol) is at least the threshold for that quote currency in `KCS_LARGE_TRADE_NOTIONAL`
  (`QUOTE=amount,...`, e.g. `KRW=100000000,USDT=100000,BTC=2`). Markets quoted in a currency
  absent from the map never signal. Fields: exchange, symbol, ts (the trade's ts_event),
  price, amount, side, notional, threshold, trade_id. Emitted when the trade is folded.
- `volume_spike`: the last minute's volume `volume_1m` above `KCS_SPIKE_FACTOR` (k) times the
  trailing average `(volume_15m - volume_1m) / 14`, the mean volume per minute over the 14
  minutes before the last one (windows as in `agents/features.py`, at the market's event time
  t). It needs 15 minutes of history (the market's oldest trade folded is at or before
  t - 15 min, else the average would be diluted by minutes with no data yet) and a positive
  trailing average. Checked every 5 s of event time: when a trade moves t into a new span
  `floor(t / 5)` (with the windows at that t, the trade included), so the result depends
  only on the trades, not on batching; emitted on the rising edge only: once when the condition
  becomes true, again only after a check found it false. Fields:
  exchange, symbol, ts (t), volume_1m, average, factor, ratio (volume_1m / average).

Delivery is at least once: a worker killed between sending a signal and saving its tables
sends it again after the restart.
"""

from __future__ import annotations

from typing import Any

from app import app, settings

__all__ = ["signals_topic", "parse_thresholds", "large_trade", "volume_spike", "THRESHOLDS",
           "SPIKE_FACTOR", "SPIKE_CHECK", "TRAILING_MINUTES"]

TRAILING_MINUTES = 14  # the 15-minute window minus the last minute
# Seconds of event time between spike checks: a check sums the 15-minute window (about 180
# buckets), too much to do for every trade of a quiet market; a minute-scale signal loses
# nothing by being checked every 5 s.
SPIKE_CHECK = 5.0


def parse_thresholds(text: str) -> dict[str, float]:
    """`"KRW=1e8, USDT=100000"` -> {"KRW": 1e8, "USDT": 100000.0}."""
    thresholds: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        quote, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"KCS_LARGE_TRADE_NOTIONAL: {part!r} is not QUOTE=amount")
        thresholds[quote.strip().upper()] = float(value)
    return thresholds


THRESHOLDS = parse_thresholds(settings.large_trade_notional)
SPIKE_FACTOR = settings.spike_factor

signals_topic = app.topic("signals", key_type=str, key_serializer="raw",
                          value_serializer="raw")


def large_trade(exchange: str, symbol: str, trade: dict[str, Any],
                thresholds: dict[str, float]) -> dict[str, Any] | None:
    """The large-trade signal of one trade (decoded records.Trade), or None."""
    threshold = thresholds.get(symbol.rpartition("-")[2])
    if threshold is None:
        return None
    notional = trade["price"] * trade["amount"]
    if notional < threshold:
        return None
    return {"type": "large_trade", "exchange": exchange, "symbol": symbol,
            "ts": trade["ts_event"], "price": trade["price"], "amount": trade["amount"],
            "side": trade["side"], "notional": notional, "threshold": threshold,
            "trade_id": trade["trade_id"]}


def volume_spike(volume_1m: float, volume_15m: float, factor: float,
                 history: bool = True) -> tuple[bool, float]:
    """(is the last minute a spike, the trailing average volume per minute); `history`:
    the market has trades at least 15 minutes older than t."""
    average = (volume_15m - volume_1m) / TRAILING_MINUTES
    return history and average > 0.0 and volume_1m > factor * average, average
