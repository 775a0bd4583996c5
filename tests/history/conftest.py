"""A PostgreSQL database of its own for each warm-store test, on the server at
127.0.0.1:5432 (`.ci/run` makes sure it runs), dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

SERVER = os.environ.get("KCS_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")


@pytest.fixture
def warm_dsn() -> Iterator[str]:
    name = f"kcs_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {SERVER!r} is not reachable: {exc}")
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield psycopg.conninfo.make_conninfo(SERVER, dbname=name)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
