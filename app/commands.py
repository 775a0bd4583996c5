"""`ws.command`: subscribe and unsubscribe markets at run time.

A command is JSON, keyed by the exchange:
`{"op": "subscribe"|"unsubscribe", "exchange": "upbit", "symbols": ["BTC-KRW"],
"channels": ["trades", "book", "ticker"], "id": "..."}` (`channels` defaults to all three).
`parse_command` refuses anything else with the reason, and `applied` computes the shard's
new subscription set; the ingest service applies it to the live feed and keeps it in Kafka.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from exchanges.base import CHANNELS, Subscriptions
from exchanges.symbols import split

__all__ = ["Command", "CommandError", "parse_command", "applied"]

OPS = ("subscribe", "unsubscribe")


class CommandError(ValueError):
    def __init__(self, command_id: Any, reason: str) -> None:
        super().__init__(reason)
        self.command_id = command_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Command:
    op: str
    exchange: str
    symbols: tuple[str, ...]
    channels: tuple[str, ...]
    id: Any


def parse_command(value: bytes | str, exchanges: Collection[str]) -> Command:
    """The command in `value`, or CommandError naming what is wrong (and the id, if any)."""
    try:
        command = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise CommandError(None, f"not JSON: {exc}") from None
    if not isinstance(command, dict):
        raise CommandError(None, "a command is a JSON object")
    command_id = command.get("id")
    op = command.get("op")
    if op not in OPS:
        raise CommandError(command_id, f"op {op!r}: use one of {list(OPS)}")
    exchange = command.get("exchange")
    if not isinstance(exchange, str) or exchange.lower() not in exchanges:
        raise CommandError(command_id, f"exchange {exchange!r} is not one this app ingests: "
                                       f"{sorted(exchanges)}")
    symbols = command.get("symbols")
    if not isinstance(symbols, list) or not symbols:
        raise CommandError(command_id, "symbols: a non-empty list of BASE-QUOTE markets")
    for symbol in symbols:
        try:
            if not isinstance(symbol, str):
                raise ValueError("not a string")
            split(symbol)
        except ValueError as exc:
            raise CommandError(command_id, f"symbol {symbol!r} is not a BASE-QUOTE market "
                                           f"({exc})") from None
    channels = command.get("channels", list(CHANNELS))
    if not isinstance(channels, list) or not channels or \
            any(c not in CHANNELS for c in channels):
        raise CommandError(command_id, f"channels {channels!r}: a non-empty list of "
                                       f"{list(CHANNELS)}")
    return Command(op, exchange.lower(), tuple(s.upper() for s in symbols), tuple(channels),
                   command_id)


def applied(subscriptions: Subscriptions, command: Command) -> Subscriptions:
    """The subscription set after the command (a new dict; the old one is left alone)."""
    result = {symbol: set(channels) for symbol, channels in subscriptions.items()}
    for symbol in command.symbols:
        if command.op == "subscribe":
            result.setdefault(symbol, set()).update(command.channels)
        else:
            left = result.get(symbol, set()) - set(command.channels)
            if left:
                result[symbol] = left
            else:
                result.pop(symbol, None)
    return result
