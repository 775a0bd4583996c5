"""Shipped configuration files (package data, so they are found after `pip install` too)."""

from pathlib import Path

DEFAULT_SUBSCRIPTIONS = Path(__file__).resolve().parent / "subscriptions.toml"
