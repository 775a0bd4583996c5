"""Faust agents and their tables. Importing this package registers them on `app.app`."""

from agents import market_state  # noqa: F401
from agents import signals  # noqa: F401
from agents import candles  # noqa: F401
from agents import features  # noqa: F401
from agents import market_data  # noqa: F401
from agents import cross_exchange  # noqa: F401
from agents import ingest_control  # noqa: F401
