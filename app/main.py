"""The worker: `faust -A app worker` runs ingest, agents, tables and web views.

Importing this module builds the Faust app (agents/application.py) and registers the agents,
tables, views and the ingest service on it; it starts nothing and contacts no broker. When a
worker starts, before Faust starts anything (`start_kafka`): with `KCS_BROKER` unset the
embedded broker (Tansu, memory only) is started and the app pointed at it; then Kafka is
waited for and the topics are created.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agents import cross_exchange, market_data, output, topics  # noqa: F401  (register)
from agents.application import App, app, settings
from agents.faust_internals import set_broker_url
from agents.market_state import market_state
from app import kafka
from app.embedded import EmbeddedBroker, wipe_tables
from app.ingest import IngestService, bootstrap_servers, new_producer, tune_gc
from app.views import register_views

__all__ = ["app", "settings", "ingest", "embedded_broker", "broker_url"]

try:  # uvloop when installed (it is a dependency); the CLI's `-L` option also works
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:  # pragma: no cover
    pass

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
    await kafka.ensure_topics(bootstrap, topics.CREATED_BEFORE_START, settings.partitions,
                              settings.replication_factor)


ingest = app.service(IngestService(app, settings, broker_url, loop=None))
app.start_hooks.append(start_kafka)
# every worker: ingest allocates per frame, the agents per record
app.started_hooks.append(lambda _: tune_gc())
# The derived topics' producer: the ingest producer's settings (acks, linger, partitioner).
output.configure(lambda: new_producer(settings, broker_url, client="derived"))
register_views(app, market_state, ingest)
