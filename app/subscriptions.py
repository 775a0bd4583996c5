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
from exchanges.replay import Recording
from exchanges.symbols import split

__all__ = ["load_subscriptions", "DEFAULT_FILE", "RECORDING_NAMES"]

log = logging.getLogger(__name__)

DEFAULT_FILE = DEFAULT_SUBSCRIPTIONS
# Recording file prefixes that differ from our exchange names.
RECORDING_NAMES = {"huobi": "htx"}
# Channel names used in recordings (cryptofeed's) -> ours.
RECORDED_CHANNELS = {"trades": "trades", "l2_book": "book", "book": "book", "ticker": "ticker"}


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


def load_subscriptions(settings: Settings,
                       recordings: dict[str, Recording] | None = None) -> dict[str, Subscriptions]:
    if recordings is not None and not settings.subscriptions:
        return from_recordings(recordings)
    path = Path(settings.subscriptions) if settings.subscriptions else DEFAULT_FILE
    with open(path, "rb") as f:
        document = tomllib.load(f)
    return {exchange.lower(): _validated(exchange, table) for exchange, table in document.items()}


def from_recordings(recordings: dict[str, Recording]) -> dict[str, Subscriptions]:
    result: dict[str, Subscriptions] = {}
    for name, recording in recordings.items():
        subs: Subscriptions = {}
        for recorded_channel, symbols in recording.configuration.items():
            channel = RECORDED_CHANNELS.get(recorded_channel)
            if channel is None:
                continue
            for symbol in symbols:
                try:
                    split(symbol)
                except ValueError:  # e.g. futures ids (BTC-USD-22K27) in the OKX recording
                    log.warning("%s: %s is not a BASE-QUOTE market: not subscribed", name, symbol)
                    continue
                subs.setdefault(symbol.upper(), set()).add(channel)
        if subs:
            result[RECORDING_NAMES.get(name, name)] = subs
    return result
