"""Exchange connectors: one module per exchange, on the shared session mechanism.

`CONNECTORS` maps each exchange's name (as used in topic names, keys and settings) to its
connector class. An exchange module `exchanges/<name>.py` declares its class as `CONNECTOR`;
adding the module is all it takes to register it.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from exchanges import _native

_native.install()  # compiled or pure connector modules: before the first of them is imported

from exchanges.base import Connector  # noqa: E402
from records import EXCHANGES  # noqa: E402

__all__ = ["CONNECTORS", "EXCHANGES", "REGIONS"]

# Where each exchange is (the `region` field of connection logs).
REGIONS = {"upbit": "korea", "bithumb": "korea", "coinone": "korea", "korbit": "korea",
           "binance": "asia", "bybit": "asia", "okx": "asia", "htx": "asia",
           "coinbase": "north-america", "kraken": "north-america", "bitfinex": "europe"}

CONNECTORS: dict[str, type[Connector]] = {
    name: import_module(f"exchanges.{name}").CONNECTOR
    for name in EXCHANGES
    if find_spec(f"exchanges.{name}") is not None
}
