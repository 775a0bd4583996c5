"""Market-data records a worker cannot fold: to `ws.dlq`, counted, and the worker goes on.

A value the codec cannot read (not JSON or Avro of its topic's record, a trade whose fields
have the wrong types), a record without a key, or a book or ticker whose fold raises (a field
missing or of the wrong type) used to stop the fold task and with it the worker, and every
restart stopped at the same record. Such a record now goes to `ws.dlq` as the ingest's
unparseable frames do (README, "Topics and records"): its exact bytes as the value, key the
exchange of its topic, headers `exchange`, `reason`, `ts_recv` (when it was refused), `url`
(empty) and `source` (`topic/partition@offset`). The rest of its run is folded, and the run is
acked once its derived records and these are delivered. A schema registry that does not
answer is not the record's fault (`records.codec.RegistryUnavailable`): the worker stops as
before, and reads the record again when restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from agents import output
from records import DLQ_TOPIC, dlq_headers

__all__ = ["refuse", "refused_observers"]

# Called with the source topic of each record refused; the app layer plugs its counter in
# (app/monitoring.py), so agents know nothing of Prometheus.
refused_observers: list[Callable[[str], None]] = []


async def refuse(topic: str, partition: int, offset: int, value: bytes, exc: BaseException,
                 sent: list[asyncio.Future[Any]]) -> None:
    """Send one refused record to `ws.dlq` (its delivery future goes to `sent`)."""
    exchange = topic.partition(".")[2]  # `<kind>-data.<exchange>`, also without a key
    for observe in refused_observers:
        observe(topic)
    headers = [*dlq_headers(exchange, f"{type(exc).__name__}: {exc}", time.time()),
               ("source", f"{topic}/{partition}@{offset}".encode())]
    sent.append(await output.send(DLQ_TOPIC, exchange.encode(), value, headers=headers))
