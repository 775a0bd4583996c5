"""Exchange connectors: one module per exchange, on the shared session mechanism.

`CONNECTORS` maps each exchange's name (as used in topic names, keys and settings) to its
connector class. An exchange module `exchanges/<name>.py` declares its class as `CONNECTOR`;
adding the module is all it takes to register it.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from exchanges.base import Connector
from records import EXCHANGES

__all__ = ["CONNECTORS", "EXCHANGES"]

CONNECTORS: dict[str, type[Connector]] = {
    name: import_module(f"exchanges.{name}").CONNECTOR
    for name in EXCHANGES
    if find_spec(f"exchanges.{name}") is not None
}
