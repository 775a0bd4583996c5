"""Which symbols and channels each exchange is subscribed to.

Read from a TOML file (`[exchange]` then `"BASE-QUOTE" = ["trades", "book", "ticker"]`). When
replaying with no file named, the subscriptions are the ones recorded with the recordings
(the `configuration:` line of each `EX.0` file), so a replay works with no configuration.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

from config.settings import Settings
from config import DEFAULT_SUBSCRIPTIONS
from exchanges.base import CHANNELS, Subscriptions
from exchanges.symbols import split

__all__ = ["load_subscriptions", "DEFAULT_FILE"]

log = logging.getLogger(__name__)

DEFAULT_FILE = DEFAULT_SUBSCRIPTIONS


def _validated(exchange: str, table: dict[str, list[str]]) -> Subscriptions:
    out: Subscriptions = {}
    for symbol, channels in table.items():
        split(symbol)  # raises on a symbol not in BASE-QUOTE form
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"[{exchange}] {symbol}: unknown channels {sorted(unknown)}; "
                             f"use {list(CHANNELS)}")
        out[symbol.upper()] = set(channels)
    return out


def load_subscriptions(settings: Settings) -> dict[str, Subscriptions]:
    """The subscriptions of `KCS_SUBSCRIPTIONS`, else of `config/subscriptions.toml` (when
    replaying with no file named, the app takes `replay.subscriptions.from_recordings`)."""
    path = Path(settings.subscriptions) if settings.subscriptions else DEFAULT_FILE
    with open(path, "rb") as f:
        document = tomllib.load(f)
    return {exchange.lower(): _validated(exchange, table) for exchange, table in document.items()}
