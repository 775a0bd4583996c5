"""The Faust application: `faust -A app worker` runs ingest, agents, tables and web views.

With `KCS_BROKER` unset, importing this module starts the embedded broker (Tansu, memory
only) and points the app at it, with the settings that broker needs; with `KCS_BROKER` set,
nothing here knows or cares what the Kafka cluster runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import faust

from app import kafka, settings
from app.embedded import EmbeddedBroker, wipe_tables

__all__ = ["app", "settings", "embedded_broker"]

try:  # uvloop when installed (it is a dependency); the CLI's `-L` option also works
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:  # pragma: no cover
    pass

log = logging.getLogger(__name__)

embedded_broker: EmbeddedBroker | None = None

# Measured with Faust on Tansu, the embedded broker (see the README's "Embedded broker").
TANSU_PROFILE = {
    # Tansu holds every JoinGroup for half the session timeout: 6 s makes a rebalance 3 s.
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    # Tansu reports the end offset of a topic as the last batch's base offset + 1; with one
    # record per batch that is right, and Faust's changelog recovery depends on it.
    "producer_max_batch_size": 1,
}

if settings.embedded:
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    embedded_broker = EmbeddedBroker(log_path=Path(settings.data_dir) / "embedded-broker.log")
    embedded_broker.start()
    # The broker starts empty: tables kept from an earlier run would not match it.
    wipe_tables(settings.data_dir, settings.app_id)
    print(f"kor-coin-stream: embedded Kafka broker (Tansu) listening on {embedded_broker.url}",
          file=sys.stderr, flush=True)
    broker_url = embedded_broker.url
else:
    broker_url = settings.broker
profile = TANSU_PROFILE if settings.profile == "tansu" else {}

kafka.install(settings.fetch_max_wait_ms)


class App(faust.App):
    async def on_first_start(self) -> None:
        """Before Faust starts: wait for Kafka, and create the market-data topics.

        The topics must exist, with leaders, before Faust's consumer subscribes to them and
        before the first record is produced: created while both happen, their partitions
        can answer NotLeaderForPartition until the producer's delivery timeout, and those
        records would be lost.
        """
        from agents.output import declared_topic_names
        from app.ingest import bootstrap_servers, control_topics, market_data_topics

        bootstrap = bootstrap_servers(broker_url)
        await kafka.wait_until_reachable(broker_url, bootstrap)
        await kafka.ensure_topics(bootstrap, market_data_topics() + declared_topic_names() +
                                  control_topics(settings.app_id),
                                  settings.partitions, settings.replication_factor)
        await super().on_first_start()

    async def on_stop(self) -> None:
        from agents import output

        await output.stop()
        await super().on_stop()

    async def on_started(self) -> None:
        await super().on_started()
        _stop_debug_records()
        tune_gc()  # every worker: ingest allocates per frame, the agents per record


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


app = App(
    settings.app_id,
    broker=broker_url,
    store="rocksdb://",
    datadir=settings.data_dir,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    web_port=settings.web_port,
    web_bind=settings.web_bind,
    canonical_url=settings.canonical_url,
    consumer_auto_offset_reset="earliest",
    # Room for three batches of the market-data agent (agents/market_data.py): with Faust's
    # 4096 the consumer blocks on every record while a batch is folded (~10% fewer trades/s).
    stream_buffer_maxsize=32768,
    **profile,
)

from app.ingest import IngestService, tune_gc  # noqa: E402  (needs `app`)

ingest = app.service(IngestService(app, settings, broker_url, loop=None))


async def _ingest_revoked(sender: object, revoked: object, **_: object) -> None:
    await ingest.on_partitions_revoked(revoked)


async def _ingest_assigned(sender: object, assigned: object, **_: object) -> None:
    await ingest.on_partitions_assigned(assigned)


# The group decides which worker runs which ingest shard (KCS_INGEST=auto): app/shards.py.
app.on_partitions_revoked.connect(_ingest_revoked)
app.on_partitions_assigned.connect(_ingest_assigned)

import agents  # noqa: E402,F401  (registers agents and tables on `app`)
from agents.market_state import market_state  # noqa: E402
from app.views import register_views  # noqa: E402

register_views(app, market_state, ingest)
