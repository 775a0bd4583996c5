"""Faust agents and their tables. Importing this package registers them on `app.app`."""

from agents import market_state  # noqa: F401
