"""The hot view of recent trades: the last `KCS_RECENT_TRADES` trades of each market, kept
as a bounded ring in the `recent_trades` table (key `exchange:BASE-QUOTE`, value: trades as
published, oldest first), written by the market-data agent once per market per batch.

View: `GET /trades/{exchange}/{symbol}/?limit=N` (default 100, at most the ring's size),
answered by any worker (routed to the owner of the market's partition).
"""

from __future__ import annotations

from faust.web import Request, Response, View
from msgspec.structs import asdict

from agents.application import app, settings
from agents.tables import raw_key_table
from agents.views import routed
from records.codec import TradeRow

__all__ = ["recent_trades", "extend", "RING"]

RING = settings.recent_trades

recent_trades = raw_key_table("recent_trades", "the last trades of each market, oldest first")


def extend(key: str, trades: list[TradeRow]) -> None:
    """Append a batch's trades of one market to its ring (inside the key's partition)."""
    ring = recent_trades.get(key) or []
    # Trades read again after a restart (at least once) are in the ring already.
    seen = {trade["trade_id"] for trade in ring}
    ring.extend(asdict(trade) for trade in trades[-RING:] if trade.trade_id not in seen)
    recent_trades[key] = ring[-RING:]


@app.page("/trades/{exchange}/{symbol}/")
async def trades_view(view: View, request: Request, exchange: str, symbol: str) -> Response:
    key = f"{exchange.lower()}:{symbol.upper()}"
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if not 0 <= limit <= RING:
        return view.json({"error": f"limit must be 0 to {RING} (KCS_RECENT_TRADES)"},
                         status=400)

    def local() -> Response:
        ring = recent_trades.get(key)
        if ring is None:
            return view.json({"error": f"no trades for {key}"}, status=404)
        exchange_, _, symbol_ = key.partition(":")
        return view.json({"exchange": exchange_, "symbol": symbol_,
                          "trades": ring[-limit:] if limit else []})

    return await routed(app, view, request, recent_trades, key, local)
