"""The unified symbol form `BASE-QUOTE` (upper case) and the asset aliases exchanges use.

Each exchange module maps between this form and its own (`KRW-BTC`, `BTCUSDT`, `XBT/USD`...);
what is common to all of them lives here.
"""

from __future__ import annotations

__all__ = ["ASSET_ALIASES", "asset", "unified", "split"]

# Exchange-specific asset codes -> the common code.
ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


def asset(code: str) -> str:
    code = code.upper()
    return ASSET_ALIASES.get(code, code)


def unified(base: str, quote: str) -> str:
    return f"{asset(base)}-{asset(quote)}"


def split(symbol: str) -> tuple[str, str]:
    """`BTC-KRW` -> (`BTC`, `KRW`); raises ValueError on anything else."""
    base, sep, quote = symbol.partition("-")
    if not sep or not base or not quote or "-" in quote:
        raise ValueError(f"not a BASE-QUOTE symbol: {symbol!r}")
    return base, quote
