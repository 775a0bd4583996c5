"""Routing helpers for table views: a view of one key is answered by the worker that owns
the key's partition (Faust's router proxies the request); a view of every key asks every
worker that owns partitions of the table for its local keys and merges the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View

__all__ = ["routed", "routed_value", "gather_all"]


async def routed(app: faust.App, view: View, request: Request, table: Any, key: str,
                 local: Callable[[], Response]) -> Response:
    """Answer locally when this worker owns `key`, else proxy to the worker that does."""
    try:
        return await app.router.route_req(table.name, key, view.web, request)
    except SameNode:
        return local()


async def routed_value(app: faust.App, view: View, request: Request, table: Any, key: Any,
                       what: str, shown: Callable[[Any], Any] = lambda value: value) -> Response:
    """The table's value for `key` from the worker that owns it, or 404 naming `what`."""

    def local() -> Response:
        value = table.get(key)
        if value is None:
            return view.json({"error": f"no {what}"}, status=404)
        return view.json(shown(value))

    return await routed(app, view, request, table, key, local)


async def gather_all(app: faust.App, view: View, request: Request, table: Any,
                     local: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Merge `local()` of this worker with the `?local=1` answers of every other owner."""
    result = local()
    if request.query.get("local"):
        return result
    me = str(app.conf.canonical_url).rstrip("/")
    hosts = [str(h).rstrip("/") for h in app.router.table_metadata(table.name)]
    others = [h for h in hosts if h != me]

    async def ask(host: str) -> dict[str, Any]:
        url = f"{host}{request.path}?local=1"
        async with app.http_client.get(url) as response:
            return await response.json()

    for answer in await asyncio.gather(*(ask(h) for h in others), return_exceptions=True):
        if isinstance(answer, dict):
            result.update(answer)
    return result
