"""History: the Parquet archive of every record, the PostgreSQL warm store, a reader for
researchers, and replay of archived records through the features.

    import history
    df = history.trades("upbit", "BTC-KRW", "2026-11-30", "2026-12-01")

The reader functions (`trades`, `books`, `tickers`, `candles`) load pandas on first use,
not when a worker imports the package for its archive service.
"""

from __future__ import annotations

from typing import Any

__all__ = ["trades", "books", "tickers", "candles"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from history import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'history' has no attribute {name!r}")
