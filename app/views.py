"""Web views on Faust's web server: health, metrics and market state, answered by any worker
(table views are routed by agents/views.py's helpers).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from agents.views import gathered, routed_value
from app.health import health_report
from exchanges.metrics import metrics

__all__ = ["register_views"]


def register_views(app: faust.App, market_state: Any, ingest: Any) -> None:
    @app.page("/health/")
    async def health(view: View, request: Request) -> Response:
        status, body = health_report(app, ingest)
        return view.json(body, status=status)

    @app.page("/ready/")
    async def ready(view: View, request: Request) -> Response:
        status, body = health_report(app, ingest)
        return view.json(body, status=status)

    @app.page("/metrics/")
    async def prometheus(view: View, request: Request) -> Response:
        return view.text(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/markets/")
    async def markets(view: View, request: Request) -> Response:
        return await gathered(app, view, request, market_state,
                              lambda: {k: v for k, v in market_state.items()})

    @app.page("/market/{exchange}/{symbol}/")
    async def market(view: View, request: Request, exchange: str, symbol: str) -> Response:
        key = f"{exchange.lower()}:{symbol.upper()}"
        return await routed_value(app, view, request, market_state, key, f"market {key}")
