"""Web views on Faust's web server: health, metrics and market state, answered by any worker
(table views are routed by agents/views.py's helpers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from agents.views import gathered, routed_value
from exchanges import _native
from app.health import health_report
from exchanges.metrics import CONTENT_TYPE, metrics

__all__ = ["register_views", "STATUS_PAGE"]

STATUS_PAGE = Path(__file__).resolve().parent / "static" / "status.html"


def shard_report(ingest: Any) -> dict[str, Any]:
    """Which ingest shards this worker runs (KCS_INGEST=auto: the group decides)."""
    return {"ingest_mode": ingest.settings.ingest,
            "owned_shards": sorted(n for n, s in ingest.shards.items() if s.state == "running"),
            "shards": {name: shard.describe() for name, shard in sorted(ingest.shards.items())},
            "buffered_bytes": ingest.budget.used,
            # "compiled", or why the pure-Python connector modules run (a stale build runs
            # about 1.2x slower; README "Development")
            "connectors": _native.state()}


def register_views(app: faust.App, market_state: Any, ingest: Any) -> None:
    @app.page("/health/")
    async def health(view: View, request: Request) -> Response:
        status, body = health_report(app, ingest)
        return view.json(body | shard_report(ingest), status=status)

    @app.page("/ready/")
    async def ready(view: View, request: Request) -> Response:
        status, body = health_report(app, ingest)
        return view.json(body | shard_report(ingest), status=status)

    async def prometheus(view: View, request: Request) -> Response:
        return view.bytes(metrics.render(), content_type=CONTENT_TYPE)

    # Prometheus scrapes /metrics by default; /metrics/ is Faust's style for every other view.
    app.page("/metrics")(prometheus)
    app.page("/metrics/")(prometheus)

    @app.page("/status/")
    async def status(view: View, request: Request) -> Response:
        """The status page: plain HTML + JS that refreshes itself from the views below."""
        return view.bytes(STATUS_PAGE.read_bytes(), content_type="text/html")

    @app.page("/")
    async def root(view: View, request: Request) -> Response:
        return view.bytes(STATUS_PAGE.read_bytes(), content_type="text/html")

    @app.page("/markets/")
    async def markets(view: View, request: Request) -> Response:
        return await gathered(app, view, request, market_state,
                              lambda: {k: v for k, v in market_state.items()})

    @app.page("/market/{exchange}/{symbol}/")
    async def market(view: View, request: Request, exchange: str, symbol: str) -> Response:
        key = f"{exchange.lower()}:{symbol.upper()}"
        return await routed_value(app, view, request, market_state, key, f"market {key}")
