"""Trading signals: large trades and volume spikes.

Pure computation (no Faust, no settings; thresholds and factor are arguments): the signal
rules are in docs/features.md ("Signals"); `compute/features.py` applies them per trade.
"""

from __future__ import annotations

from typing import Any

__all__ = ["parse_thresholds", "large_trade", "volume_spike", "SPIKE_CHECK",
           "TRAILING_MINUTES"]

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


def large_trade(exchange: str, symbol: str, trade: Any,
                thresholds: dict[str, float]) -> dict[str, Any] | None:
    """The large-trade signal of one trade (a records.Trade or TradeRow), or None."""
    threshold = thresholds.get(symbol.rpartition("-")[2])
    if threshold is None:
        return None
    notional = trade.price * trade.amount
    if notional < threshold:
        return None
    return {"type": "large_trade", "exchange": exchange, "symbol": symbol,
            "ts": trade.ts_event, "price": trade.price, "amount": trade.amount,
            "side": trade.side, "notional": notional, "threshold": threshold,
            "trade_id": trade.trade_id}


def volume_spike(volume_1m: float, volume_15m: float, factor: float,
                 history: bool = True) -> tuple[bool, float]:
    """(is the last minute a spike, the trailing average volume per minute); `history`:
    the market has trades at least 15 minutes older than t."""
    average = (volume_15m - volume_1m) / TRAILING_MINUTES
    return history and average > 0.0 and volume_1m > factor * average, average
