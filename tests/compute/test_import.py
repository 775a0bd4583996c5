"""The computations import with no broker, no Faust and no settings patched."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO

CHECK = """
import sys
import compute
import compute.bbo, compute.candles, compute.cross_exchange, compute.features
import compute.market_state, compute.premium, compute.signals, compute.windows
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"faust", "aiokafka", "app", "agents"})
print("loaded:", loaded)
"""


def test_import_compute_starts_nothing() -> None:
    # KCS_BROKER unset: a module that built the worker would start the embedded broker
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []", done.stdout
    assert "embedded Kafka broker" not in done.stderr


def test_import_the_worker_starts_no_broker() -> None:
    """Even the whole app (agents registered, views, ingest service) is only built on import:
    the embedded broker starts with a worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    check = ("import app.main\n"
             "assert app.main.embedded_broker is None\n"
             "print(app.main.app.conf.broker)\n")
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "embedded-broker.invalid" in done.stdout
    assert "embedded Kafka broker" not in done.stderr
