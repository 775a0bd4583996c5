"""Shared fixtures: a real broker per test session, and workers that clean up after tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.embedded import EmbeddedBroker  # noqa: E402
from tests.support import KARAPACE, REPLAYS, Worker, start_broker  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A fresh Tansu broker on a free loopback port, shared by the session's tests.
    Tests use their own topics' contents only through their own app ids and exchanges."""
    broker = start_broker(tmp_path_factory.mktemp("broker"))
    yield broker
    broker.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker for one test, for tests that assert on whole topics."""
    broker = start_broker(tmp_path)
    yield broker
    broker.stop()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Append started workers here; they are stopped after the test."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def replays() -> Path:
    if not REPLAYS.is_dir():
        pytest.skip(f"recordings not found at {REPLAYS}")
    return REPLAYS


@pytest.fixture(scope="session")
def schema_registry(broker: EmbeddedBroker) -> Iterator[str]:
    """A real Confluent-compatible schema registry: `KCS_TEST_SCHEMA_REGISTRY`, else Karapace
    started on the session's broker (`../shared/karapace/start-karapace`); skips when
    neither is available. Subjects outlive tests: tests use topics of their own."""
    url = os.environ.get("KCS_TEST_SCHEMA_REGISTRY", "")
    if url:
        yield url.rstrip("/")
        return
    if not KARAPACE.is_file():
        pytest.skip(f"no schema registry: KCS_TEST_SCHEMA_REGISTRY is unset and {KARAPACE} "
                    f"is missing")
    done = subprocess.run([str(KARAPACE), broker.url.split("://", 1)[1]], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"no schema registry: {KARAPACE} failed: {done.stderr[-2000:]}")
    url, pid = done.stdout.split()[:2]
    yield url
    subprocess.run(["kill", pid], check=False)
