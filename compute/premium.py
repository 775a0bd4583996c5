"""The Korean premium of an asset, and the per-market quote state it is computed from.

Pure functions (no Faust, no settings): the definitions (quote, price of a market, premium,
headline) are in docs/features.md ("Quotes", "Premium"); `agents/cross_exchange.py` feeds
them and keeps the results in tables.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KOREAN_EXCHANGES", "GLOBAL_QUOTES", "apply_update", "price_of", "market_parts",
           "is_korean_krw", "compute_premium", "premium_changed"]

KOREAN_EXCHANGES = frozenset({"upbit", "bithumb", "coinone", "korbit"})
GLOBAL_QUOTES = ("USDT", "USD")  # in order of preference on one exchange

Quote = dict[str, Any]


def apply_update(quote: Quote, update: dict[str, Any]) -> bool:
    """Fold a compact update into a market's quote; True when the quote changed.

    `update["b"]` = [bid, bid_size, ask, ask_size, ts_recv] (a side is None when empty),
    `update["t"]` = [price, ts_recv]; either may be absent.
    """
    changed = False
    book = update.get("b")
    if book is not None and book[4] >= quote.get("book_ts", float("-inf")):
        new = {"bid": book[0], "bid_size": book[1], "ask": book[2], "ask_size": book[3],
               "book_ts": book[4]}
        if any(quote.get(k) != v for k, v in new.items()):
            quote.update(new)
            changed = True
    trade = update.get("t")
    if trade is not None and trade[1] >= quote.get("trade_ts", float("-inf")):
        if quote.get("last") != trade[0] or quote.get("trade_ts") != trade[1]:
            quote["last"], quote["trade_ts"] = trade[0], trade[1]
            changed = True
    return changed


def price_of(quote: Quote | None) -> tuple[float, str] | None:
    """(price, "book" | "trade"): the mid of a two-sided book, else the last trade."""
    if not quote:
        return None
    bid, ask = quote.get("bid"), quote.get("ask")
    if bid is not None and ask is not None:
        return (bid + ask) / 2.0, "book"
    last = quote.get("last")
    if last is not None:
        return last, "trade"
    return None


def market_parts(market: str) -> tuple[str, str, str]:
    """`upbit:BTC-KRW` -> ("upbit", "BTC", "KRW")."""
    exchange, _, symbol = market.partition(":")
    base, _, quote = symbol.partition("-")
    return exchange, base, quote


def is_korean_krw(market: str) -> bool:
    exchange, _, quote = market_parts(market)
    return quote == "KRW" and exchange in KOREAN_EXCHANGES


def _leg(market: str, priced: tuple[float, str]) -> dict[str, Any]:
    return {"market": market, "price": priced[0], "source": priced[1]}


def compute_premium(asset: str, markets: dict[str, Quote], rate: Quote | None,
                    rate_market: str, reference: str) -> dict[str, Any] | None:
    """The premium record of `asset` from the quotes of its markets and the rate market's."""
    rate_priced = price_of(rate)
    if rate_priced is None or rate_priced[0] == 0.0:
        return None
    krw: dict[str, dict[str, Any]] = {}
    glob: dict[str, tuple[int, dict[str, Any]]] = {}
    for market, quote in markets.items():
        exchange, _, quote_ccy = market_parts(market)
        priced = price_of(quote)
        if priced is None:
            continue
        if exchange in KOREAN_EXCHANGES:
            if quote_ccy == "KRW":
                krw[exchange] = _leg(market, priced)
        elif quote_ccy in GLOBAL_QUOTES and priced[0] != 0.0:
            rank = GLOBAL_QUOTES.index(quote_ccy)
            if exchange not in glob or rank < glob[exchange][0]:
                glob[exchange] = (rank, _leg(market, priced))
    if not krw or not glob:
        return None
    rate_price = rate_priced[0]
    global_legs = {g: leg for g, (_, leg) in sorted(glob.items())}
    premium = {
        k: {g: krw[k]["price"] / (leg["price"] * rate_price) for g, leg in global_legs.items()}
        for k in sorted(krw)
    }
    headline = {k: row[reference] for k, row in premium.items() if reference in row}
    ts = max(_ts(markets[leg["market"]], leg["source"])
             for leg in (*krw.values(), *global_legs.values()))
    return {
        "asset": asset,
        "rate": _leg(rate_market, rate_priced),
        "reference": reference,
        "krw": {k: krw[k] for k in sorted(krw)},
        "global": global_legs,
        "premium": premium,
        "headline": headline,
        "ts": max(ts, _ts(rate, rate_priced[1])),  # type: ignore[arg-type]
    }


def _ts(quote: Quote, source: str) -> float:
    return float(quote["book_ts"] if source == "book" else quote["trade_ts"])


def premium_changed(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """True when a price or premium differs (a newer `ts` alone is no change)."""
    if old is None or new is None:
        return old is not new
    return any(old.get(k) != new.get(k) for k in new if k != "ts")
