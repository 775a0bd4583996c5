"""The Faust app object, its settings, and nothing that starts anything.

Agents, tables, topics and views register on `app` when their modules are imported; no
broker is contacted and none is started. With `KCS_BROKER` unset the app is built with a
placeholder broker URL, and the app layer (`app/main.py`) starts the embedded broker from
`app.start_hooks` when a worker starts, then points the app at it
(`faust_internals.set_broker_url`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from agents import faust_internals, output
from config.logs import log_format, logging_config
from config.settings import Settings, SettingsError, load_settings

__all__ = ["app", "settings", "App", "TANSU_PROFILE", "EMBEDDED_PLACEHOLDER"]

# The one settings object of the process (reading the environment has no side effects).
# Bad settings stop the process here, before anything starts, naming each refused value.
try:
    settings: Settings = load_settings()
except SettingsError as exc:
    raise SystemExit(f"kor-coin-stream: {exc}") from None

# The broker URL until the embedded broker has started (`.invalid` never resolves).
EMBEDDED_PLACEHOLDER = "kafka://embedded-broker.invalid:9092"

# Measured with Faust on Tansu, the embedded broker (see the README's "Embedded broker").
TANSU_PROFILE = {
    # Tansu holds every JoinGroup for half the session timeout: 6 s makes a rebalance 3 s.
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    # Tansu reports the end offset of a topic as the last batch's base offset + 1; with one
    # record per batch that is right, and Faust's changelog recovery depends on it.
    "producer_max_batch_size": 1,
}


class App(faust.App):
    """Faust's app with two lists the app layer fills: `start_hooks` (awaited, in order,
    before Faust starts anything: start or wait for Kafka, create topics) and
    `started_hooks` (called once the worker has started)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_hooks: list[Callable[[App], Awaitable[None]]] = []
        self.started_hooks: list[Callable[[App], None]] = []

    async def on_first_start(self) -> None:
        for hook in self.start_hooks:
            await hook(self)
        await super().on_first_start()

    async def on_shutdown(self) -> None:
        # After the agents (children of the app) have stopped: one stopped earlier could
        # still send, and `output.send` would start a new producer that nobody stops.
        await super().on_shutdown()
        await output.stop()

    async def on_started(self) -> None:
        await super().on_started()
        _stop_debug_records()
        for hook in self.started_hooks:
            hook(self)


def _stop_debug_records() -> None:
    """Faust animates its start-up spinner by putting the root logger at DEBUG whenever the
    log level is WARN or above (its default) and never puts it back: every debug call of
    aiokafka then builds a record only for the handlers to drop it, on the hot path. The
    spinner is done once the worker has started; the handlers' own levels still apply."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "SpinnerHandler":
            root.removeHandler(handler)
    levels = [h.level for h in root.handlers if h.level]
    if root.level == logging.DEBUG and levels and min(levels) > logging.DEBUG:
        root.setLevel(min(levels))


faust_internals.install(settings.fetch_max_wait_ms)

app = App(
    settings.app_id,
    broker=EMBEDDED_PLACEHOLDER if settings.embedded else settings.broker,
    store="rocksdb://",
    datadir=settings.data_dir,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    web_port=settings.web_port,
    web_bind=settings.web_bind,
    canonical_url=settings.canonical_url,
    consumer_auto_offset_reset="earliest",
    # Room for a few batches of the cross-exchange agent (the market-data topics bypass the
    # streams: agents/faust_internals.py delivers them in runs); with Faust's 4096 the
    # consumer blocked on every record while a batch was folded.
    stream_buffer_maxsize=32768,
    consumer_max_fetch_size=settings.fetch_partition_bytes,
    # JSON lines or text, written by a listener thread (config/logs.py).
    logging_config=logging_config(log_format(settings.log_format)),
    Worker=faust_internals.Worker,  # stops in under 5 s (see faust_internals)
    **(TANSU_PROFILE if settings.profile == "tansu" else {}),
)
