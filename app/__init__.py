"""kor-coin-stream's application package.

`faust -A app worker` asks this package for `app`; it is built on first use by `app.main`
(which may start the embedded broker), so importing a submodule such as `app.embedded` or
`app.subscriptions` has no side effects.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings, load_settings

__all__ = ["app", "settings"]

# The one settings object of the process (reading the environment has no side effects).
settings: Settings = load_settings()


def __getattr__(name: str) -> Any:
    if name in ("app", "ingest", "embedded_broker"):
        from app import main

        return getattr(main, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
