"""Shared fixtures: a real broker per test session, and workers that clean up after tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.embedded import EmbeddedBroker  # noqa: E402
from tests.support import REPLAYS, Worker, start_broker  # noqa: E402


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
