"""`python -m history archive` as its own process beside workers that write Avro: it reads
the Confluent-framed records through the registry and archives the same values."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.embedded import EmbeddedBroker
from records import Trade
from records.registry import preflight
from tests.e2e.test_features_e2e import create_topics, produce
from tests.history.test_history_e2e import archived
from tests.support import REPO, wait_for

pytestmark = pytest.mark.e2e

TOPIC = "trade-data.binance"


def test_archive_role_decodes_the_registry_framed_trades(
        fresh_broker: EmbeddedBroker, schema_registry: str, tmp_path: Path) -> None:
    bootstrap = fresh_broker.url.split("://", 1)[1]
    codec = asyncio.run(preflight(schema_registry, [TOPIC]))
    trades = [Trade("binance", f"S{i % 7}-USDT", 1_764_460_000.0 + i * 0.01,
                    1_764_460_000.1 + i * 0.01, 100.0 + i / 8, 0.25 + i % 5,
                    1 if i % 3 else -1, str(i)) for i in range(600)]
    values = [codec.encode(TOPIC, t) for t in trades]
    assert all(v[:1] == b"\x00" for v in values)  # Avro, Confluent-framed
    asyncio.run(create_topics(bootstrap, [TOPIC]))
    asyncio.run(produce(bootstrap, [(TOPIC, f"binance:{t.symbol}".encode(), v)
                                    for t, v in zip(trades, values, strict=True)]))

    root = tmp_path / "archive"
    env = {**os.environ, "KCS_BROKER": fresh_broker.url, "KCS_SCHEMA_REGISTRY": schema_registry,
           "KCS_ARCHIVE_DIR": str(root), "KCS_ARCHIVE_ROLL_SECONDS": "0.5",
           "KCS_APP_ID": "kcs-test-archive-role", "KCS_WARM_DSN": ""}
    role = subprocess.Popen([sys.executable, "-m", "history", "archive"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(archived(root, "trades", "trade_id")) >= len(trades), timeout=90)
    finally:
        role.terminate()
        output = role.communicate(timeout=30)[0].decode(errors="replace")
    rows = archived(root, "trades", "trade_id, price, amount, side, ts_event")
    assert sorted(rows, key=lambda r: int(r[0])) == \
        [(t.trade_id, t.price, t.amount, t.side, t.ts_event) for t in trades], output[-3000:]
