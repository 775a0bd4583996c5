"""Start-up preflight against a Confluent-compatible schema registry, and the codec it yields.

Before a worker produces or consumes anything (`KCS_SCHEMA_REGISTRY` set):
1. every schema file of records/schemas/ exists, parses, and has a `doc` on every field;
2. the registry is reachable: while it is not, the worker says so and retries, as it does
   for Kafka;
3. for every Avro topic the worker uses, the subject `<topic>-value` (TopicNameStrategy)
   either already has this schema (its id is taken), or the registry finds it compatible
   under its compatibility level and registers it; otherwise the worker refuses to start
   with a message naming the topic, the subject and the fields at fault.
The ids found are handed to `records.codec.Codec` once: no registry call per record.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from schema_registry.client import AsyncSchemaRegistryClient, SchemaRegistryClient
from schema_registry.client.schema import AvroSchema

from records.codec import (
    AVRO_FAMILIES,
    JSON_TOPICS,
    SCHEMAS_DIR,
    Codec,
    is_avro,
    load_schema,
    schema_file,
    subject,
)

__all__ = ["preflight", "reader_codec", "check_schema_files", "SchemaContractError",
           "incompatible_fields"]

log = logging.getLogger(__name__)

CONCURRENT_REQUESTS = 8


class SchemaContractError(RuntimeError):
    """A schema file or a registered subject that the worker must not start with."""


def _undocumented(schema: Any, where: str) -> list[str]:
    """Fields without a `doc`, nested records included, as dotted paths."""
    missing: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            missing += _undocumented(branch, where)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            for field in schema.get("fields", []):
                path = f"{where}.{field['name']}" if where else field["name"]
                if not field.get("doc"):
                    missing.append(path)
                missing += _undocumented(field["type"], path)
        elif kind == "array":
            missing += _undocumented(schema["items"], where)
        elif kind == "map":
            missing += _undocumented(schema["values"], where)
    return missing


def check_schema_files(directory: Path = SCHEMAS_DIR) -> dict[str, str]:
    """Every schema file of the contract exists, parses and documents every field;
    returns file name -> text. Raises SchemaContractError naming the file and the field."""
    texts: dict[str, str] = {}
    names = set(AVRO_FAMILIES.values()) | {n for n in JSON_TOPICS.values() if n}
    for name in sorted(names):
        try:
            texts[name] = load_schema(name, directory)[0]
        except ValueError as exc:
            raise SchemaContractError(str(exc)) from None
        missing = _undocumented(json.loads(texts[name]), "")
        if missing:
            raise SchemaContractError(f"schema file {directory / (name + '.avsc')}: field(s) "
                                      f"without a doc: {', '.join(missing)}")
    return texts


def incompatible_fields(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """What makes `new` unable to read records written with `old`, or `old` unable to read
    `new`'s (top-level fields): a field only one side has and that has no default there."""
    new_fields = {f["name"]: f for f in new.get("fields", [])}
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    problems = [f"field {name!r} added without a default" for name, f in new_fields.items()
                if name not in old_fields and "default" not in f]
    problems += [f"field {name!r} removed, and it has no default" for name, f in
                 old_fields.items() if name not in new_fields and "default" not in f]
    problems += [f"field {name!r} changed type from {json.dumps(old_fields[name]['type'])} "
                 f"to {json.dumps(f['type'])}" for name, f in new_fields.items()
                 if name in old_fields and f["type"] != old_fields[name]["type"]]
    return problems


async def _wait_until_reachable(client: AsyncSchemaRegistryClient, url: str,
                                retry_initial: float, retry_max: float) -> str:
    """The registry's global compatibility level, once it answers."""
    delay = retry_initial
    while True:
        try:
            return await client.get_compatibility()
        except Exception as exc:  # httpx raises several types for "cannot connect"
            log.error("Schema registry at %s is not reachable (%s); retrying in %.0f s",
                      url, exc or type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, retry_max)


async def _subject_id(client: AsyncSchemaRegistryClient, topic: str, text: str,
                      level: str) -> int:
    name = subject(topic)
    schema = AvroSchema(text)
    found = await client.check_version(name, schema)
    if found is not None:
        return int(found.schema_id)
    latest = await client.get_schema(name)
    if latest is not None:
        verdict = await client.test_compatibility(name, schema, verbose=True)
        if not (verdict.get("is_compatible") if isinstance(verdict, dict) else verdict):
            fields = incompatible_fields(json.loads(text), latest.schema.raw_schema)
            messages = verdict.get("messages", []) if isinstance(verdict, dict) else []
            raise SchemaContractError(
                f"topic {topic}: schema {schema_file(topic)}.avsc is not compatible with the "
                f"latest version registered under subject {name} (compatibility "
                f"{level}): {'; '.join(fields) or 'see the registry'}"
                + (f" (registry: {'; '.join(map(str, messages))})" if messages else ""))
    return int(await client.register(name, schema))


async def preflight(url: str, topics: Iterable[str], directory: Path = SCHEMAS_DIR,
                    retry_initial: float = 1.0, retry_max: float = 30.0) -> Codec:
    """Check the contract against the registry at `url` for `topics` (the Avro ones among
    them) and return the codec with their schema ids."""
    texts = check_schema_files(directory)
    for name in ("httpx", "schema_registry"):  # one INFO line per request and per 404
        logging.getLogger(name).setLevel(logging.WARNING)
    client = AsyncSchemaRegistryClient(url)
    level = await _wait_until_reachable(client, url, retry_initial, retry_max)
    avro_topics = sorted(t for t in set(topics) if is_avro(t))
    # A few subjects at a time: ~60 subjects one after the other took a minute on a busy
    # machine (each is 2-4 requests).
    limit = asyncio.Semaphore(CONCURRENT_REQUESTS)

    async def check(topic: str) -> int:
        async with limit:
            return await _subject_id(client, topic, texts[schema_file(topic)], level)

    ids = dict(zip(avro_topics, await asyncio.gather(*map(check, avro_topics)), strict=True))
    log.info("schema registry %s (compatibility %s): %d Avro topics checked", url, level,
             len(ids))
    return Codec(ids, fetch_schema=_fetcher(url), directory=directory)


async def reader_codec(url: str, directory: Path = SCHEMAS_DIR, retry_initial: float = 1.0,
                       retry_max: float = 30.0) -> Codec:
    """The codec of a process that only reads the Avro topics (`python -m history archive`):
    it registers nothing; each writer schema is fetched by its id from the registry at `url`
    and read into this version's schema for the topic. Waits until the registry answers, as
    the worker's preflight does, so a reader started first does not decode with JSON."""
    check_schema_files(directory)
    await _wait_until_reachable(AsyncSchemaRegistryClient(url), url, retry_initial, retry_max)
    return Codec(fetch_schema=_fetcher(url), directory=directory)


def _fetcher(url: str) -> Callable[[int], str]:
    fetcher = SchemaRegistryClient(url)

    def fetch_schema(schema_id: int) -> str:
        found = fetcher.get_by_id(schema_id)
        if found is None:
            raise LookupError(f"schema id {schema_id} is not in the registry at {url}")
        return json.dumps(found.raw_schema)

    return fetch_schema
