"""Every exchange kor-coin-stream speaks (the names used in topic names, keys and settings),
in the order of the product's promise; each has its connector in exchanges/<name>.py.

Here, below `records`, so that the settings can refuse an unknown exchange (`KCS_INGEST`)
without importing anything else of the project; `records.EXCHANGES` is this tuple.
"""

from __future__ import annotations

__all__ = ["EXCHANGES"]

EXCHANGES = ("upbit", "bithumb", "coinone", "korbit", "binance", "bybit", "okx", "htx",
             "coinbase", "kraken", "bitfinex")
