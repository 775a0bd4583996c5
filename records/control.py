"""Typed records of the control and event topics (JSON always, see records/codec.py), and of
the per-exchange connection topics (`ws.connect_success.<exchange>`, `ws.metrics.<exchange>`,
Avro when a schema registry is set).

Every field is always present, None (null) where unknown. Times are float epoch seconds:
`ts_recv` is ours (these events have no exchange time).
"""

from __future__ import annotations

from dataclasses import dataclass

from records.derived import _FromMapping

__all__ = ["ErrorEvent", "ConnectSuccess", "WsMetrics", "BackpressureEvent",
           "BatchPerformance", "WsCommand"]


@dataclass(slots=True)
class ErrorEvent(_FromMapping):
    """Topic `ws.error`, key `exchange:BASE-QUOTE` (or the exchange): a book integrity
    failure and its resync, or a refused command."""

    exchange: str
    symbol: str | None  # null for an error that is not about one market
    kind: str  # "resync", "crossed", "gap", "checksum", "stale", "command", ...
    reason: str
    command_id: str | None  # the refused `ws.command`'s id; null otherwise
    ts_recv: float
    # kind `trade_gap` (trades that could not be backfilled): the last trade published before
    # the gap, and what is known of the missing range; null for other kinds.
    after_id: str | None = None
    from_id: str | None = None
    to_id: str | None = None
    from_ts: float | None = None
    to_ts: float | None = None
    command: str | None = None  # kind `command`: the refused command's text


@dataclass(slots=True)
class ConnectSuccess(_FromMapping):
    """Topic `ws.connect_success.<exchange>`, key the exchange: a (re)connection whose
    subscriptions were taken (its first frame arrived), or a `ws.command` applied."""

    exchange: str
    region: str  # korea, asia, north-america, europe
    url: str | None  # the WebSocket URL; null for a command that needed no connection
    symbols: list[str]
    channels: list[str]
    attempt: int  # the stream's connections so far (1 = the first); 0 for a command
    commands: list[str]  # ids of the `ws.command`s this connection applies
    worker: str  # the worker's web URL
    ts_recv: float


@dataclass(slots=True)
class WsMetrics(_FromMapping):
    """Topic `ws.metrics.<exchange>`, key the exchange: one connection's figures, every
    `KCS_METRICS_INTERVAL` seconds."""

    exchange: str
    url: str
    frames: int  # this connection's, since its shard started
    reconnects: int
    last_frame_age: float | None  # seconds; null before the first frame
    records: dict[str, int]  # the exchange's records queued since start: trade, book, ticker
    resyncs: float  # the exchange's books dropped and resynced since start
    dlq_frames: float
    latency_p50: float | None  # ts_recv - ts_event (s) over the last interval; null: none
    latency_p99: float | None
    interval: float
    worker: str
    ts_recv: float


@dataclass(slots=True)
class BackpressureEvent(_FromMapping):
    """Topic `ws.backpressure.events`, key the exchange (drops) or the app id (water marks):
    the ingest buffer crossed its high or low water mark, or dropped records."""

    event: str  # "high_water", "low_water", "dropped"
    exchange: str | None  # drops: whose records; null for a water mark (the whole buffer)
    type: str | None  # drops: "trade", "book", "ticker"
    count: int | None  # drops: records dropped now
    total: int | None  # drops: records of this exchange and type dropped since start
    queued: dict[str, int] | None  # drops: records still waiting, per type
    buffered_bytes: int
    limit: int  # KCS_INGEST_BUFFER_BYTES
    high: int  # the high water mark (bytes)
    low: int  # the low water mark (bytes)
    app_id: str
    worker: str
    ts_recv: float


@dataclass(slots=True)
class BatchPerformance(_FromMapping):
    """Topic `monitoring.batch.performance`, key the agent: one agent batch's figures."""

    agent: str  # "market-data", "cross-exchange"
    records: int
    markets: int  # keys folded: markets, or assets for cross-exchange
    duration: float  # seconds from the batch's arrival to its tables written
    records_per_s: float | None
    oldest_record_age: float | None  # seconds: now - the oldest record's time
    worker: str
    ts_recv: float


@dataclass(slots=True)
class WsCommand(_FromMapping):
    """Topic `ws.command`, key the exchange: subscribe or unsubscribe at run time."""

    op: str  # "subscribe" or "unsubscribe"
    exchange: str
    symbols: list[str]
    channels: list[str]  # "trades", "book", "ticker" (the sender may leave it out: all three)
    id: str
