"""The cross-exchange agent's input: each market's newest top of book and trade of a batch.

Pure computation (no Faust): the market-data agent folds every trade and book of its batch
here (one pass over the market-data topics serves market state, features and this), and
`agents/cross_exchange.py` sends one compact update per market, keyed by the base asset.
An update is `{"m": market, "b": [bid, bid_size, ask, ask_size, ts_recv],
"t": [price, ts_recv]}` ("b"/"t" only once seen); see docs/features.md ("Premium", "BBO").
"""

from __future__ import annotations

from typing import Any

__all__ = ["fold_for_assets"]


def fold_for_assets(latest: dict[str, dict[str, Any]], market: str, is_book: bool,
                    record: Any) -> None:
    """Keep the newest (by ts_recv, later wins a tie) book and trade of a market in a batch:
    a book as its decoded dict, a trade as a records.Trade or TradeRow."""
    update = latest.get(market)
    if update is None:
        update = latest[market] = {"m": market}
    if is_book:
        ts = record["ts_recv"]
        old = update.get("b")
        if old is None or ts >= old[4]:
            bids, asks = record["bids"], record["asks"]
            update["b"] = [bids[0][0] if bids else None, bids[0][1] if bids else None,
                           asks[0][0] if asks else None, asks[0][1] if asks else None, ts]
    else:
        ts = record.ts_recv
        old = update.get("t")
        if old is None or ts >= old[1]:
            update["t"] = [record.price, ts]
