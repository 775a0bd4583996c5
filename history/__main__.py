"""`python -m history ...`: the history's commands.

    python -m history replay --from 2026-11-23 --to 2026-11-30 --broker kafka://host:9092
        [--archive DIR] [--types trades,books,tickers] [--exchanges upbit,binance]
        [--speed 0] [--partitions N]
    python -m history archive      # the archive and warm store as their own process (role)
    python -m history retention    # drop the warm store's expired partitions once

Settings (`KCS_*`) are read as the worker reads them: `--archive` defaults to
KCS_ARCHIVE_DIR (else `<KCS_DATA_DIR>/archive`), `--partitions` to KCS_PARTITIONS.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from config.settings import load_settings


def _bootstrap(url: str) -> str:
    return ",".join(part.split("://", 1)[-1].rstrip("/") for part in url.split(";") if part)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m history")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="publish archived records to a cluster")
    replay.add_argument("--from", dest="start", required=True, help="ISO time or epoch s")
    replay.add_argument("--to", dest="end", required=True, help="ISO time or epoch s")
    replay.add_argument("--broker", required=True, help="kafka://host:9092[;host2:9092]")
    replay.add_argument("--archive", default=None)
    replay.add_argument("--types", default="trades,books,tickers")
    replay.add_argument("--exchanges", default="")
    replay.add_argument("--speed", type=float, default=0.0)
    replay.add_argument("--partitions", type=int, default=settings.partitions)
    commands.add_parser("archive", help="run the archive and warm store consumers")
    commands.add_parser("retention", help="drop the warm store's expired partitions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.command == "replay":
        from history.replay import replay as run_replay
        from history.service import archive_dir

        start = float(args.start) if args.start.replace(".", "").isdigit() else args.start
        end = float(args.end) if args.end.replace(".", "").isdigit() else args.end
        exchanges = {e.strip() for e in args.exchanges.split(",") if e.strip()} or None
        sent = asyncio.run(run_replay(
            _bootstrap(args.broker), start, end, args.archive or archive_dir(settings),
            [t.strip() for t in args.types.split(",") if t.strip()], exchanges, args.speed,
            args.partitions))
        print(f"replayed {sent} records", file=sys.stderr)
        return 0
    if args.command == "retention":
        import psycopg

        from history.service import retention_days
        from history.warm import apply_retention

        if not settings.warm_dsn:
            parser.error("KCS_WARM_DSN is not set")
        with psycopg.connect(settings.warm_dsn) as conn:
            dropped = apply_retention(conn, retention_days(settings))
        print(f"dropped {len(dropped)} partitions: {' '.join(dropped)}", file=sys.stderr)
        return 0
    if not settings.broker:
        parser.error("KCS_BROKER is not set (the archive role reads a running cluster)")
    return asyncio.run(_archive_role(settings))


async def _archive_role(settings) -> int:  # type: ignore[no-untyped-def]
    from history.service import HistoryService

    if settings.schema_registry:  # the worker's Avro topics: decode through the registry
        from history import schema as history_schema
        from records.registry import reader_codec

        history_schema.codec = await reader_codec(settings.schema_registry)

    service = HistoryService(settings)
    service.connect(_bootstrap(settings.broker), "kafka")
    await service.start()
    try:
        await asyncio.gather(*service.tasks)
    finally:
        await service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
