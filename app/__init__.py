"""kor-coin-stream's application package.

`faust -A app worker` asks this package for `app`; it is built on first use by `app.main`
(which starts nothing: the embedded broker starts with a worker), so importing a submodule
such as `app.embedded` or `app.subscriptions` has no side effects.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "settings"]


def __getattr__(name: str) -> Any:
    if name in ("app", "settings", "ingest", "embedded_broker", "broker_url"):
        from app import main

        return getattr(main, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
