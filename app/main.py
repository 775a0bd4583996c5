"""The worker: `faust -A app worker` runs ingest, agents, tables and web views.

Importing this module builds the Faust app (agents/application.py) and registers the agents,
tables, views and the ingest service on it; it starts nothing and contacts no broker. When a
worker starts, before Faust starts anything (`start_kafka`): with `KCS_BROKER` unset the
embedded broker (Tansu, memory only) is started and the app pointed at it; then Kafka is
waited for and the topics are created.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from agents import cross_exchange, ingest_control, market_data, output, topics  # noqa: F401
from agents.application import App, app, settings
from agents.faust_internals import set_broker_url
from agents.market_state import market_state
from app import kafka, monitoring
from app.embedded import EmbeddedBroker, wipe_tables
from app.ingest import IngestService, bootstrap_servers, new_producer, tune_gc
from app.views import register_views
from history.service import HistoryService

__all__ = ["app", "settings", "ingest", "history_service", "embedded_broker", "broker_url"]

try:  # uvloop when installed (it is a dependency); the CLI's `-L` option also works
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:  # pragma: no cover
    pass

log = logging.getLogger(__name__)

embedded_broker: EmbeddedBroker | None = None
# The Kafka this worker uses: KCS_BROKER, or the embedded broker's once it has started.
broker_url = settings.broker


async def start_kafka(app: App) -> None:
    """Before Faust starts: start the embedded broker (KCS_BROKER unset), wait for Kafka,
    and create the topics.

    The topics must exist, with leaders, before Faust's consumer subscribes to them and
    before the first record is produced: created while both happen, their partitions
    can answer NotLeaderForPartition until the producer's delivery timeout, and those
    records would be lost.
    """
    global embedded_broker, broker_url
    if settings.embedded and embedded_broker is None:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        embedded_broker = EmbeddedBroker(log_path=Path(settings.data_dir) / "embedded-broker.log")
        embedded_broker.start()
        # The broker starts empty: tables kept from an earlier run would not match it.
        wipe_tables(app.conf.tabledir)
        print(f"kor-coin-stream: embedded Kafka broker (Tansu) listening on {embedded_broker.url}",
              file=sys.stderr, flush=True)
        broker_url = embedded_broker.url
        set_broker_url(app, broker_url)
    ingest.broker_url = broker_url
    bootstrap = bootstrap_servers(broker_url)
    await kafka.wait_until_reachable(broker_url, bootstrap)
    counts = await kafka.ensure_topics(
        bootstrap, topics.CREATED_BEFORE_START, settings.partitions,
        settings.replication_factor,
        partitions_of={topics.INGEST_SHARDS: settings.ingest_partitions})
    # an existing control topic keeps its count: the shards' partitions follow it
    ingest.control_partitions = counts[topics.INGEST_SHARDS]
    if ingest.control_partitions != settings.ingest_partitions:
        log.warning("%s has %d partitions, not KCS_INGEST_PARTITIONS=%d: it was created "
                    "with that count", topics.INGEST_SHARDS, ingest.control_partitions,
                    settings.ingest_partitions)
    # The embedded broker's offsets restart at 0 with each run: the archive tells its files
    # apart by the run (history/archive.py).
    history_service.connect(bootstrap, f"tansu{int(time.time())}" if embedded_broker else "kafka")


async def check_contract(app: App) -> None:
    """With a schema registry (KCS_SCHEMA_REGISTRY), before Faust starts: the schemas are
    checked and registered (records/registry.py) and the codec with their ids is handed to
    ingest and the agents; a worker whose schemas the registry refuses does not start."""
    if not settings.schema_registry:
        return
    from records.registry import SchemaContractError, preflight

    try:
        codec = await preflight(settings.schema_registry, topics.SCHEMA_TOPICS)
    except SchemaContractError as exc:
        log.critical("refusing to start: %s", exc)
        raise
    from history import schema as history_schema  # pyarrow loads only with a registry set

    output.codec = ingest.codec = history_schema.codec = codec


ingest = app.service(IngestService(app, settings, broker_url, loop=None))
# The archive and the warm store, each in its own consumer group (KCS_ARCHIVE, KCS_WARM_DSN).
history_service = app.service(HistoryService(settings, loop=None))
app.start_hooks.append(start_kafka)
app.start_hooks.append(check_contract)
# every worker: ingest allocates per frame, the agents per record
app.started_hooks.append(lambda _: tune_gc())
# The derived topics' producer: the ingest producer's settings (acks, linger, partitioner).
output.configure(lambda: new_producer(settings, broker_url, client="derived"))
register_views(app, market_state, ingest)

# Prometheus: the ingest service's figures, consumer lag, premium and BBO (app/monitoring.py).
monitoring.register(app, ingest, cross_exchange.premium_table, cross_exchange.bbo_table)


async def _ingest_revoked(sender: object, revoked: object, **_: object) -> None:
    await ingest.on_partitions_revoked(revoked)


async def _ingest_assigned(sender: object, assigned: object, **_: object) -> None:
    await ingest.on_partitions_assigned(assigned)


# The group decides which worker runs which ingest shard (KCS_INGEST=auto): app/shards.py.
app.on_partitions_revoked.connect(_ingest_revoked)
app.on_partitions_assigned.connect(_ingest_assigned)
ingest_control.on_command(ingest.apply_command)
ingest_control.on_control(ingest.on_control)
