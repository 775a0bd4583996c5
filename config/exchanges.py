"""Every exchange kor-coin-stream speaks (the names used in topic names, keys and settings),
in the order of the product's promise; each has its connector in exchanges/<name>.py.

Here, below `records`, so that the settings can refuse an unknown exchange (`KCS_INGEST`)
without importing anything else of the project; `records.EXCHANGES` is this tuple.
"""

from __future__ import annotations

__all__ = ["EXCHANGES", "CHANNELS_PER_MARKET", "SHARD_MARKETS"]

EXCHANGES = ("upbit", "bithumb", "coinone", "korbit", "binance", "bybit", "okx", "htx",
             "coinbase", "kraken", "bitfinex")

# A market takes at most this many subscriptions on a connection: trades, book, ticker.
CHANNELS_PER_MARKET = 3

# Markets per ingest shard (app/shards.py), where the venue caps what one connection may carry
# (../shared/EXCHANGES.md, from the venues' docs): the cap in subscriptions divided by the
# channels a market may take, so a shard never goes past the cap whatever its markets ask.
# None: the venue publishes no cap (its probes carried every market on one socket), one shard.
# `KCS_SHARD_MARKETS` overrides these.
SHARD_MARKETS: dict[str, int | None] = {
    "binance": 1024 // CHANNELS_PER_MARKET,  # 1024 streams per connection
    "bitfinex": 25 // CHANNELS_PER_MARKET,  # 25 channel subscriptions per connection
    # 21,000 characters of `args` per connection: 78 a market at most (topics of a 12-letter
    # symbol, quoted: orderbook.50.X, publicTrade.X, tickers.X)
    "bybit": 21_000 // 78,
    "upbit": None,  # unpublished; 855 codes served on one socket (probe)
    "bithumb": None,  # unpublished; 493 codes served (probe)
    "coinone": None,  # unpublished; 363 topics served (probe)
    "korbit": None,  # unpublished; every pair (193) served (probe)
    "okx": None,  # no count: 64 KB of args per request, 480 requests an hour per connection
    "htx": None,  # unpublished for spot
    "coinbase": None,  # none per connection (limits are per IP and per product)
    "kraken": None,  # none published (dynamic message rate)
}
