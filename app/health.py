"""Is this worker ready, and how are its feeds: the answer of `/health/` and `/ready/`.

Ready means: the worker has joined its consumer group (no rebalance under way), its tables
are recovered, its ingest service has started, and every stream of every feed it owns is
connected, or, when replaying, has served every recorded frame (`finished`: a replay's end is
not an outage). Anything else answers 503 with the reasons in `problems`, so a load balancer or
an orchestrator never sends traffic to, or counts as up, a worker that would answer stale data.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["feed_report", "health_report"]


def _age(ts: float, now: float) -> float | None:
    """Seconds since `ts`, or None when it never happened (0.0)."""
    return round(max(now - ts, 0.0), 3) if ts else None


def feed_report(session: Any, now: float) -> dict[str, Any]:
    """One feed (an exchange's session): each stream's state (`connecting` before its first
    connection, `connected`, `down` while it reconnects, `finished` once a replay has served
    all of it), the age of its last frame, and the age of the newest exchange time
    (`ts_event`) the feed published."""
    streams = []
    for stream in session.streams:
        up = session.connected.get(id(stream))
        state = "finished" if id(stream) in session.finished else \
            "connected" if up else "down" if up is False else "connecting"
        streams.append({"url": stream.url, "state": state, "symbols": len(stream.symbols),
                        "last_frame_age": _age(stream.last_frame, now)})
    states = {s["state"] for s in streams} - {"finished"}
    state = "finished" if not states and streams else \
        "connected" if states == {"connected"} else \
        "degraded" if "connected" in states else "down" if "down" in states else "connecting"
    last_frame = max((stream.last_frame for stream in session.streams), default=0.0)
    return {
        "state": state,
        "connected": sum(s["state"] == "connected" for s in streams),
        "frames": session.frames,
        "last_frame_age": _age(last_frame, now),
        "last_event_age": _age(session.connector.out.last_event, now),
        "streams": streams,
    }


def health_report(app: Any, ingest: Any, now: float | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 200 when ready, 503 with the reasons otherwise."""
    now = time.time() if now is None else now
    problems = []
    if app.rebalancing:
        problems.append("the consumer group is rebalancing")
    if app.in_recovery or not app.tables.recovery.completed.is_set():
        problems.append("the tables are being recovered")
    if not ingest.started:
        problems.append("ingest has not started")
    feeds = {session.connector.name: feed_report(session, now) for session in ingest.sessions}
    problems += [f"feed {name} is {feed['state']}" for name, feed in sorted(feeds.items())
                 if feed["state"] not in ("connected", "finished")]
    body = {
        "status": "unavailable" if problems else "ok",
        "problems": problems,
        "worker": str(app.conf.canonical_url),
        "rebalancing": bool(app.rebalancing),
        "ingest": feeds,
    }
    return (503 if problems else 200), body
