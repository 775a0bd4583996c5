"""The consolidated best bid and offer of an asset per quote currency, across exchanges.

Pure function (no Faust, no settings): the definition is in docs/features.md ("BBO");
`agents/cross_exchange.py` feeds it the quotes of every market of the asset (see
`compute/premium.py`) and keeps the result in a table.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compute_bbo", "bbo_changed"]


def compute_bbo(asset: str, markets: dict[str, dict[str, Any]], clock: float,
                max_age: float) -> dict[str, Any] | None:
    bids: dict[str, tuple[float, float, str]] = {}
    asks: dict[str, tuple[float, float, str]] = {}
    fresh: dict[str, list[str]] = {}
    for market, quote in markets.items():
        book_ts = quote.get("book_ts")
        if book_ts is None or clock - book_ts > max_age:
            continue
        exchange, _, symbol = market.partition(":")
        ccy = symbol.partition("-")[2]
        bid, ask = quote.get("bid"), quote.get("ask")
        if bid is None and ask is None:
            continue
        fresh.setdefault(ccy, []).append(exchange)
        if bid is not None:
            candidate = (-bid, -quote["bid_size"], exchange)
            if ccy not in bids or candidate < bids[ccy]:
                bids[ccy] = candidate
        if ask is not None:
            candidate = (ask, -quote["ask_size"], exchange)
            if ccy not in asks or candidate < asks[ccy]:
                asks[ccy] = candidate
    if not fresh:
        return None
    quotes: dict[str, dict[str, Any]] = {}
    for ccy in sorted(fresh):
        row: dict[str, Any] = {"bid": None, "bid_size": None, "bid_exchange": None,
                               "ask": None, "ask_size": None, "ask_exchange": None}
        if ccy in bids:
            neg_price, neg_size, exchange = bids[ccy]
            row.update(bid=-neg_price, bid_size=-neg_size, bid_exchange=exchange)
        if ccy in asks:
            price, neg_size, exchange = asks[ccy]
            row.update(ask=price, ask_size=-neg_size, ask_exchange=exchange)
        row["crossed"] = (row["bid"] is not None and row["ask"] is not None
                          and row["bid"] >= row["ask"])
        row["exchanges"] = sorted(fresh[ccy])
        quotes[ccy] = row
    return {"asset": asset, "quotes": quotes, "ts": clock}


def bbo_changed(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """True when any quote differs (a newer `ts` alone is no change)."""
    if old is None or new is None:
        return old is not new
    return old.get("quotes") != new.get("quotes")
