"""Routing helpers for table views: a view of one key is answered by the worker that owns
the key's partition (Faust's router proxies the request); a view of every key asks every
worker that owns partitions of the table for its local keys and merges the answers, and
says so (502, `X-KCS-Missing`) when a worker did not answer instead of passing a partial
answer off as complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View

__all__ = ["routed", "routed_value", "gather_all", "gathered", "GATHER_TIMEOUT",
           "MISSING_HEADER"]


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


# How long a view of every key waits for each other worker's part (s).
GATHER_TIMEOUT = 5.0
MISSING_HEADER = "X-KCS-Missing"


async def gather_all(app: faust.App, view: View, request: Request, table: Any,
                     local: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Merge `local()` of this worker with the `?local=1` answers of every other owner of
    the table's partitions. Returns the merged values and the workers (their URLs) that did
    not answer in `GATHER_TIMEOUT` seconds, or answered with an error."""
    result = local()
    if request.query.get("local"):
        return result, []
    me = str(app.conf.canonical_url).rstrip("/")
    hosts = [str(h).rstrip("/") for h in app.router.table_metadata(table.name)]
    others = sorted({h for h in hosts if h != me})
    timeout = aiohttp.ClientTimeout(total=GATHER_TIMEOUT)

    async def ask(host: str) -> dict[str, Any]:
        url = f"{host}{request.path}?local=1"
        async with app.http_client.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"{url}: HTTP {response.status}")
            return await response.json()

    missing = []
    answers = await asyncio.gather(*(ask(h) for h in others), return_exceptions=True)
    for host, answer in zip(others, answers, strict=True):
        if isinstance(answer, dict):
            result.update(answer)
        else:
            missing.append(host)
    return result, missing


async def gathered(app: faust.App, view: View, request: Request, table: Any,
                   local: Callable[[], dict[str, Any]]) -> Response:
    """A view of every key of `table` (sorted by key). When a worker that owns some of its
    partitions did not answer, the answer is not passed off as complete: 502, the header
    `X-KCS-Missing` (the workers' URLs, comma-separated) and the body
    `{"error", "missing": [...], "partial": {what the others answered}}`."""
    values, missing = await gather_all(app, view, request, table, local)
    values = dict(sorted(values.items()))
    if not missing:
        return view.json(values)
    return view.json({"error": f"{len(missing)} worker(s) did not answer: the answer is partial",
                      "missing": missing, "partial": values},
                     status=502, headers={MISSING_HEADER: ",".join(missing)})
