"""Market state: the latest trade, top of book and depth of one market, folded record by record.

Pure computation (no Faust, no settings): the fields and their meaning are in
docs/features.md ("Market state"); `agents/market_state.py` keeps the states in a table.
"""

from __future__ import annotations

from typing import Any

from records.derived import MarketState

__all__ = ["apply_event", "apply_trades", "new_state"]


def new_state(key: str) -> dict[str, Any]:
    """The state of a market (`exchange:BASE-QUOTE`) before its first record: every field
    of `records.derived.MarketState`, null until its first event."""
    exchange, _, symbol = key.partition(":")
    return MarketState(exchange, symbol).as_dict()


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
                levels: int = 5) -> None:
    """Fold one market-data record (decoded JSON) into a market's state; depth over the
    top `levels` levels per side (KCS_BOOK_LEVELS in a worker)."""
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


def apply_trades(state: dict[str, Any], trades: list[Any]) -> None:
    """`apply_event(state, "trade", t)` for each of a market's trades (records.Trade or
    TradeRow, read by attribute), in order, at once: the last trade's fields and the newest
    times."""
    if not trades:
        return
    last = trades[-1]
    state["last_price"] = last.price
    state["last_amount"] = last.amount
    state["last_side"] = last.side
    state["last_trade_ts"] = last.ts_event
    state["last_trade_id"] = last.trade_id
    ts_recv = max([t.ts_recv for t in trades])
    ts_event = max([t.ts_event for t in trades])
    state["ts_recv"] = max(state.get("ts_recv") or 0.0, ts_recv)
    previous = state.get("ts_event")
    state["ts_event"] = max(previous, ts_event) if previous else ts_event
