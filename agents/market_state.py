"""The `market_state` table: the state of every market (compute/market_state.py), keyed
`exchange:BASE-QUOTE` like the source topics, so each worker keeps the state of the markets
whose partitions it owns. The agent of agents/market_data.py folds every market-data record
into it and, once per batch, publishes the new state of every market the batch changed on
topic `market-state` and writes it here. Fields: docs/features.md ("Market state").
"""

from __future__ import annotations

from typing import Any

from agents.application import settings
from agents.tables import raw_key_table
from compute.market_state import new_state

__all__ = ["market_state", "load", "LEVELS"]

LEVELS = settings.book_levels

# Keys serialized raw: the same bytes, hence the same partition, as the source topics' keys
# (Faust routes table views by the serialized key; see agents/tables.py).
market_state = raw_key_table("market_state",
                             "Latest trade and top of book per exchange:BASE-QUOTE")


def load(key: str) -> dict[str, Any]:
    """The market's state as the table holds it; call within the partition of its event."""
    return market_state.get(key) or new_state(key)
