"""The subscriptions recorded with recordings (the `configuration:` line of each `EX.0`), so a
replay works with no configuration."""

from __future__ import annotations

import logging

from exchanges.base import Subscriptions
from exchanges.symbols import split
from replay.recordings import Recording

__all__ = ["from_recordings", "RECORDING_NAMES"]

log = logging.getLogger(__name__)

# Recording file prefixes that differ from our exchange names.
RECORDING_NAMES = {"huobi": "htx"}
# Channel names used in recordings (cryptofeed's) -> ours.
RECORDED_CHANNELS = {"trades": "trades", "l2_book": "book", "book": "book", "ticker": "ticker"}


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
