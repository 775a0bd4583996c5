"""`faust -A app <subcommand>` works for the commands that only describe the app, and none of
them starts the embedded broker (it starts with a worker only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


@pytest.mark.parametrize("command, shows", [
    (["agents"], "@market-data"),
    (["tables"], "feature_windows"),
    (["models"], "Models"),
    (["--help"], "worker"),
])
def test_describing_commands_work_and_start_no_broker(tmp_path: Path, command: list[str],
                                                      shows: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    env["KCS_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "faust", "-A", "app", *command], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert shows in output
    assert "Traceback" not in output
    assert "embedded Kafka broker" not in output
    assert not (tmp_path / "data" / "embedded-broker.log").exists()
