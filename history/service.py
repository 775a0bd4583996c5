"""The history inside a worker: a Faust (mode) service running the archive's and the warm
store's consumers, each in its own consumer group so that the partitions spread over the
workers and the feature agents' consumer never waits for them, and the warm store's
retention job on a schedule.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from typing import TYPE_CHECKING

from mode import Service

if TYPE_CHECKING:
    from history.consume import SinkConsumer
    from history.warm import WarmStore

__all__ = ["HistoryService", "TOPICS", "archive_dir"]

log = logging.getLogger(__name__)

# Every topic the history keeps (see history.schema).
TOPICS = r"^(trade-data|orderbook-data|ticker-data|candles)\..+"


def archive_dir(settings: Any) -> str:
    """KCS_ARCHIVE_DIR, or `<KCS_DATA_DIR>/archive`."""
    return settings.archive_dir or f"{settings.data_dir.rstrip('/')}/archive"


def retention_days(settings: Any) -> dict[str, float]:
    raw = settings.warm_retention_raw
    return {"trades": raw, "book_tops": raw, "tickers": raw,
            "candles_1m": settings.warm_retention_1m, "candles_1h": settings.warm_retention_1h}


class HistoryService(Service):
    def __init__(self, settings: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.archive = settings.archive.strip().lower()
        if self.archive not in ("on", "off"):
            raise ValueError(f"KCS_ARCHIVE={settings.archive!r}: use on or off")
        self.settings = settings
        self.consumers: list[SinkConsumer] = []
        self.warm: WarmStore | None = None
        self.tasks: list[asyncio.Task] = []

    def connect(self, bootstrap: str, source: str) -> None:
        """Point the sinks at Kafka (known only once the worker starts: the embedded broker
        starts then); `source` names the broker run in archive file names. pyarrow and
        psycopg are imported here, not when the worker imports this module."""
        from history.archive import Archive
        from history.consume import SinkConsumer
        from history.warm import WarmStore

        settings = self.settings
        self.consumers = []
        if self.archive == "on":
            archive = Archive(archive_dir(settings), source,
                              roll_bytes=settings.archive_roll_bytes,
                              roll_seconds=settings.archive_roll_seconds)
            self.consumers.append(SinkConsumer(archive, bootstrap, f"{settings.app_id}-archive",
                                               TOPICS, settings.fetch_max_wait_ms))
        if settings.warm_dsn:
            self.warm = WarmStore(settings.warm_dsn)
            self.consumers.append(SinkConsumer(self.warm, bootstrap, f"{settings.app_id}-warm",
                                               TOPICS, settings.fetch_max_wait_ms))

    async def on_started(self) -> None:
        self.tasks = [asyncio.ensure_future(self._run(c)) for c in self.consumers]
        if self.warm is not None:
            self.tasks.append(asyncio.ensure_future(self._retention()))

    async def _run(self, consumer: SinkConsumer) -> None:
        while True:  # a consumer that fails is restarted: its sink resumes without loss
            try:
                await consumer.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("history %s consumer failed; restarting in 5 s",
                              consumer.sink.name)
                for topic, partition in consumer.sink.pending():
                    consumer.sink.drop(topic, partition)  # read again after the restart
                await asyncio.sleep(5.0)

    async def _retention(self) -> None:
        """Drop expired warm partitions now and every KCS_WARM_RETENTION_INTERVAL seconds."""
        import psycopg

        from history.warm import apply_retention

        days = retention_days(self.settings)
        while True:
            try:
                def run() -> list[str]:
                    with psycopg.connect(self.settings.warm_dsn, connect_timeout=5) as conn:
                        return apply_retention(conn, days)
                dropped = await asyncio.to_thread(run)
                if dropped:
                    log.info("warm store retention dropped %s", ", ".join(dropped))
            except Exception as exc:  # noqa: BLE001  (retried at the next run)
                log.warning("warm store retention failed (%s)", exc)
            await asyncio.sleep(self.settings.warm_retention_interval)

    async def on_stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
        retention = self.tasks[len(self.consumers):]
        for task in retention:
            task.cancel()
        runs = self.tasks[:len(self.consumers)]
        if runs:
            await asyncio.wait(runs, timeout=15.0)
        await asyncio.gather(*retention, return_exceptions=True)
        if self.warm is not None:
            await asyncio.to_thread(self.warm.close)
