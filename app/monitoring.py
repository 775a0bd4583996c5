"""What this worker reports to Prometheus beyond the ingest counters: consumer lag, and the
Korean premium and consolidated BBO of the assets whose table partitions it holds.

Read at scrape time (exchanges.metrics.SourcesCollector), from the worker's own tables: each
asset is reported by exactly one worker, the one that owns its partition.
"""

from __future__ import annotations

from typing import Any

from agents import faust_internals
from agents.batching import batch_observers
from agents.dead_letters import refused_observers
from exchanges.metrics import AGENT_BATCH, REGISTRY, SourcesCollector, metrics

__all__ = ["WorkerSamples", "register"]


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


class WorkerSamples:
    def __init__(self, app: Any, premium_table: Any, bbo_table: Any) -> None:
        self.app = app
        self.premium_table = premium_table
        self.bbo_table = bbo_table

    def metric_samples(self, now: float) -> list[tuple[str, tuple[str, ...], float]]:
        samples: list[tuple[str, tuple[str, ...], float]] = [
            ("kcs_consumer_lag", (topic, str(partition)), float(lag))
            for topic, partition, lag in faust_internals.consumer_lag(self.app)]
        for key, value in list(self.premium_table.items()):
            if not value:
                continue
            for korean, row in value.get("premium", {}).items():
                for glob, ratio in row.items():
                    samples.append(("kcs_premium_ratio", (_text(key), korean, glob), ratio))
        for key, value in list(self.bbo_table.items()):
            if not value:
                continue
            for quote, row in value.get("quotes", {}).items():
                for side in ("bid", "ask"):
                    if row.get(side) is not None:
                        samples.append(("kcs_bbo_price", (_text(key), quote, side), row[side]))
        return samples


def register(app: Any, ingest: Any, premium_table: Any, bbo_table: Any) -> None:
    """Export the ingest service's and this worker's figures (once per process)."""
    worker = WorkerSamples(app, premium_table, bbo_table)
    for agent in ("market-data", "cross-exchange"):
        batch_observers[agent] = AGENT_BATCH.labels(agent).observe
    refused_observers.append(
        lambda topic: metrics.inc("kcs_refused_records_total", topic=topic))
    REGISTRY.register(SourcesCollector(lambda: [ingest, worker]))
