"""Market state: the latest trade and top of book of every market, in the `market_state` table.

Keyed `exchange:BASE-QUOTE` like the source topics, so each worker keeps the state of the
markets whose partitions it owns. Every field of `records.derived.MarketState` is always
present, null until the first event of its kind:
- trades: last_price, last_amount, last_side, last_trade_ts, last_trade_id;
- top of book: best_bid, best_bid_size, best_ask, best_ask_size, spread (ask - bid), mid
  ((bid + ask) / 2), microprice (size-weighted mid: (bid * ask_size + ask * bid_size) /
  (bid_size + ask_size), which leans toward the side with less size);
- depth, from order books only, over the top N levels (`KCS_BOOK_LEVELS`, default 5):
  bid_volume, ask_volume (sums of sizes, base currency), imbalance ((bid_volume -
  ask_volume) / (bid_volume + ask_volume), in [-1, 1]; null when both are 0);
- times: last_trade_ts, book_ts, ticker_ts (ts_event of the newest trade, book, ticker),
  ts_event (the newest of those) and ts_recv (our receive time of the newest event);
  volume_24h from the ticker.
Top of book comes from order books; an exchange's ticker fills it only for markets without
a book subscription.

The agent of agents/market_data.py folds every market-data record into this state and, once
per batch, publishes the new state of every market the batch changed on topic `market-state`
(key `exchange:BASE-QUOTE`, value the `MarketState` record of the state above, through the
codec) and writes it here.
"""

from __future__ import annotations

from typing import Any


from agents import output
from agents.tables import raw_key_table
from app import app, settings
from app.kafka import RawSchema
from exchanges import EXCHANGES
from records import book_topic, ticker_topic, trade_topic
from records.derived import MarketState, field_names

FIELDS = field_names(MarketState)

__all__ = ["market_state", "market_data_topic", "market_state_topic", "apply_event", "load",
           "LEVELS"]

LEVELS = settings.book_levels

market_data_topic = app.topic(
    *[name for ex in EXCHANGES for name in (trade_topic(ex), book_topic(ex), ticker_topic(ex))],
    schema=RawSchema(key_type=str, key_serializer="raw", value_serializer="raw"),
)

# Keys serialized raw: the same bytes, hence the same partition, as the source topics' keys
# (Faust routes table views by the serialized key; see agents/tables.py).
market_state = raw_key_table("market_state",
                             "Latest trade and top of book per exchange:BASE-QUOTE")
market_state_topic = app.topic("market-state", key_type=str, key_serializer="raw",
                               value_serializer="raw")
output.declare(market_state_topic)


def _set_top(state: dict[str, Any], bid: float | None, bid_size: float | None,
             ask: float | None, ask_size: float | None) -> None:
    state["best_bid"], state["best_bid_size"] = bid, bid_size
    state["best_ask"], state["best_ask_size"] = ask, ask_size
    if bid is not None and ask is not None:
        state["spread"] = ask - bid
        state["mid"] = (ask + bid) / 2.0
        if bid_size and ask_size:  # both known and positive
            state["microprice"] = (bid * ask_size + ask * bid_size) / (bid_size + ask_size)
        else:
            state["microprice"] = None
    else:
        state["spread"] = state["mid"] = state["microprice"] = None


def _set_depth(state: dict[str, Any], bids: list[list[float]], asks: list[list[float]],
               levels: int) -> None:
    bid_volume = sum(level[1] for level in bids[:levels])
    ask_volume = sum(level[1] for level in asks[:levels])
    state["bid_volume"], state["ask_volume"] = bid_volume, ask_volume
    total = bid_volume + ask_volume
    state["imbalance"] = (bid_volume - ask_volume) / total if total > 0.0 else None


def apply_event(state: dict[str, Any], kind: str, record: dict[str, Any],
                levels: int = LEVELS) -> None:
    """Fold one market-data record (decoded JSON) into a market's state."""
    if kind == "trade":
        state["last_price"] = record["price"]
        state["last_amount"] = record["amount"]
        state["last_side"] = record["side"]
        state["last_trade_ts"] = record["ts_event"]
        state["last_trade_id"] = record["trade_id"]
    elif kind == "book":
        bids, asks = record["bids"], record["asks"]
        _set_top(state, bids[0][0] if bids else None, bids[0][1] if bids else None,
                 asks[0][0] if asks else None, asks[0][1] if asks else None)
        _set_depth(state, bids, asks, levels)
        state["book_ts"] = record["ts_event"]
    else:
        state["volume_24h"] = record.get("volume_24h")
        state["ticker_ts"] = record["ts_event"]
        if state.get("book_ts") is None and (record.get("bid") is not None or
                                       record.get("ask") is not None):
            _set_top(state, record.get("bid"), record.get("bid_size"), record.get("ask"),
                     record.get("ask_size"))
    state["ts_recv"] = max(state.get("ts_recv") or 0.0, record["ts_recv"])
    state["ts_event"] = max(state.get("ts_event") or record["ts_event"], record["ts_event"])


def load(key: str) -> dict[str, Any]:
    """The market's state as the table holds it; call within the partition of its event."""
    state = market_state.get(key)
    if not state:
        exchange, _, symbol = key.partition(":")
        return MarketState(exchange, symbol).as_dict()
    if len(state) != len(FIELDS):  # written before every field was kept: complete it
        state = MarketState.of(state).as_dict()
    return state
