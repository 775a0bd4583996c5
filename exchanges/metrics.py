"""The process's Prometheus metrics, declared once, served by the `/metrics` view.

Built on prometheus-client. Two kinds:

- Events counted where they happen, off the hot path or rare on it (a DLQ frame, a resync,
  a reconnect): `metrics.inc(name, **labels)` on a counter declared in `COUNTERS`. A name not
  declared there is created on first use (with the labels of that call), so a call site added
  elsewhere still counts; declare it here to give it its help text.
- Per-frame and per-record figures (frames, records, connection state, ages, buffered bytes)
  are plain integers and floats kept by the sessions and publishers themselves and read only
  when Prometheus scrapes (`SourcesCollector`): the hot path pays an attribute increment, not
  a lock. Latency histograms are observed for one drain every `SAMPLE_EVERY` seconds at
  most per exchange (`Sampler`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               PlatformCollector, ProcessCollector, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["metrics", "REGISTRY", "CONTENT_TYPE", "FRAME_TO_ACK", "EVENT_DELAY",
           "AGENT_BATCH", "SAMPLE_EVERY", "INGEST_BUFFER_LIMIT", "Sampler", "SourcesCollector"]

disable_created_metrics()  # no `_created` series: Prometheus does not use them
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
# The text exposition format, as CONTENT_TYPE_LATEST without its charset (aiohttp sets that).
CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";", 1)[0] + "; version=0.0.4"

# name -> (help, label names)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kcs_dlq_frames_total": ("Frames that could not be parsed, sent to ws.dlq", ("exchange",)),
    "kcs_book_resyncs_total": ("Books dropped and resynced (sequence gap, checksum, crossed)",
                               ("exchange", "reason")),
    "kcs_reconnects_total": ("WebSocket connections lost and reconnected", ("exchange",)),
    "kcs_validation_rejections_total": (
        "Frames or books rejected by validation (unparseable, gap, checksum, crossed, stale)",
        ("exchange", "reason")),
    "kcs_silent_feeds_total": ("Connections closed by the silence watchdog", ("exchange",)),
    "kcs_stale_books_total": ("Books older than the one before them, skipped", ("exchange",)),
    "kcs_produce_errors_total": ("Records Kafka did not take after the producer's retries", ()),
    "kcs_refused_records_total": ("Market-data records a worker could not decode or fold, "
                                  "sent to ws.dlq", ("topic",)),
}

# Latency: 100 us .. 10 s; event delay (ts_recv - ts_event, clocks of two machines): 1 ms ..
# a day, since replayed recordings are years old and a lagging exchange clock is the question.
FRAME_TO_ACK = Histogram(
    "kcs_frame_to_ack_seconds", "Frame received -> Kafka acknowledgement of its records",
    ["exchange"], registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5,
             1.0, 2.5, 10.0))
EVENT_DELAY = Histogram(
    "kcs_event_delay_seconds", "ts_recv - ts_event of published records (our clock minus the "
    "exchange's)", ["exchange"], registry=REGISTRY,
    buckets=(-1.0, 0.0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
             3600.0, 86400.0))
AGENT_BATCH = Histogram(
    "kcs_agent_batch_seconds", "Time an agent spent on one batch of records", ["agent"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

SAMPLE_EVERY = 0.01  # s: at most 100 latency observations per second per exchange
# What `kcs_ingest_buffer_bytes` is compared with: the Java client's buffer.memory default,
# where a Java producer would start blocking. aiokafka has no such limit; the alert is the
# warning that the broker does not keep up.
INGEST_BUFFER_LIMIT = 32 * 1024 * 1024


class Sampler:
    """One exchange's latency histograms, observed for one drain every SAMPLE_EVERY seconds
    at most (the publisher checks `next_at`: one comparison per drain on the hot path)."""

    __slots__ = ("ack", "delay", "next_at")

    def __init__(self, exchange: str) -> None:
        self.ack = FRAME_TO_ACK.labels(exchange)
        self.delay = EVENT_DELAY.labels(exchange)
        self.next_at = 0.0

    def observe(self, ts_recv: float, ts_event: float) -> None:
        """Called when the drain's last record is acknowledged (`ts_event`: the exchange
        time of the last record queued, 0 for none)."""
        self.ack.observe(time.time() - ts_recv)
        if ts_event > 0.0:
            self.delay.observe(ts_recv - ts_event)


class _Metrics:
    """`inc(name, **labels)` over prometheus-client counters declared once (see COUNTERS)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.counters: dict[str, Counter] = {}
        # (name, *labels) -> the labelled series: prometheus-client's `labels()` validates
        # and locks on every call (2-3.5 us, most of a resync's `Publisher.error`); a series
        # is never removed, so it is looked up once.
        self.labelled: dict[tuple[Any, ...], Any] = {}
        self.lock = threading.Lock()
        for name, (help_text, labels) in COUNTERS.items():
            self._declare(name, help_text, labels)

    def _declare(self, name: str, help_text: str, labels: Iterable[str]) -> Counter:
        counter = Counter(name, help_text, list(labels), registry=self.registry)
        self.counters[name] = counter
        return counter

    def counter(self, name: str, labels: Iterable[str] = ()) -> Counter:
        counter = self.counters.get(name)
        if counter is None:
            with self.lock:
                counter = self.counters.get(name) or self._declare(
                    name, f"{name} (declare it in exchanges/metrics.py)", sorted(labels))
        return counter

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.series(name, **labels).inc(value)

    def series(self, name: str, **labels: str) -> Any:
        """The counter's series of these labels (its `inc()` counts): for a caller that
        counts the same series often and keeps it."""
        key = (name, *labels.items())
        series = self.labelled.get(key)
        if series is None:
            counter = self.counter(name, labels)
            series = self.labelled[key] = counter.labels(**labels) if labels else counter
        return series

    def touch(self, name: str, **labels: str) -> None:
        """Create a labelled series at 0, so a rate over it exists before the first event."""
        self.counter(name, labels).labels(**labels)

    def get(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` that has these labels (and maybe others)."""
        counter = self.counters.get(name)
        if counter is None:
            return 0.0
        wanted = labels.items()
        return sum(sample.value for family in counter.collect() for sample in family.samples
                   if sample.name == name and all(sample.labels.get(k) == v
                                                  for k, v in wanted))

    def render(self) -> bytes:
        return generate_latest(self.registry)


metrics = _Metrics(REGISTRY)


class SourcesCollector(Collector):
    """Reads, at scrape time, what sessions, publishers and the app keep as plain numbers.

    `sources()` returns the live objects; each is asked for `(kind, labels, value)` tuples by
    its `metric_samples(now)` method, where kind is a name in FAMILIES.
    """

    FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
        # name: (counter|gauge, help, labels)
        "kcs_frames": ("counter", "WebSocket frames read", ("exchange",)),
        "kcs_records": ("counter", "Records published, by type (trade, book, ticker)",
                        ("exchange", "type")),
        "kcs_connection_up": ("gauge", "1 while the stream's WebSocket is connected",
                              ("exchange", "stream")),
        "kcs_last_frame_age_seconds": ("gauge", "Seconds since the stream's last frame",
                                       ("exchange", "stream")),
        "kcs_book_age_seconds": ("gauge", "Now minus the exchange time (ts_event) of the "
                                 "market's last published book", ("exchange", "symbol")),
        "kcs_ingest_buffer_bytes": ("gauge", "Bytes handed to the ingest producer and not yet "
                                    "acknowledged by Kafka", ()),
        "kcs_ingest_buffer_limit_bytes": ("gauge", "The ingest buffer's alert limit", ()),
        "kcs_consumer_lag": ("gauge", "Messages between the committed offset and the "
                             "high-water mark, per assigned partition", ("topic", "partition")),
        "kcs_premium_ratio": ("gauge", "Korean premium: KRW price / (global price x USDT-KRW) "
                              "per asset, Korean and global exchange (this worker's keys)",
                              ("asset", "korean", "global")),
        "kcs_bbo_price": ("gauge", "Consolidated best bid/ask per asset and quote currency "
                          "(this worker's keys)", ("asset", "quote", "side")),
    }

    def __init__(self, sources: Callable[[], Iterable[Any]]) -> None:
        self.sources = sources

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        families = []
        for name, (kind, help_text, labels) in self.FAMILIES.items():
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            families.append(cls(name, help_text, labels=list(labels)))
        return families

    def collect(self) -> Iterator[Metric]:
        families = {f.name: f for f in self._families()}
        now = time.time()
        for source in self.sources():
            for name, labels, value in source.metric_samples(now):
                if value is not None and not math.isnan(value):
                    families[name].add_metric(labels, value)
        return iter(families.values())
