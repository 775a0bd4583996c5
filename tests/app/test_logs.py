"""Structured logs (config/logs.py): JSON lines with the connection logging schema's fields, or
text; through a queue and a listener thread; a bad KCS_LOG_FORMAT is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from config.logs import log_format
from tests.support import REPO

SCRIPT = """
import logging, logging.config, sys, threading
from config.logs import logging_config
config = logging_config(sys.argv[1])
config.pop("merge")
config["root"]["level"] = "INFO"
logging.config.dictConfig(config)
log = logging.getLogger("exchanges.session")
log.info("upbit: connected to %s", "wss://x", extra={"exchange": "upbit", "region": "korea",
         "request_type": "websocket", "phase": "connected"})
log.debug("not shown")
try:
    1 / 0
except ZeroDivisionError:
    log.warning("trouble", exc_info=True)
print("threads:", sorted(t.name for t in threading.enumerate()), file=sys.stdout)
"""


def run(kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, kind], cwd=REPO, capture_output=True,
                          text=True, timeout=30)


def test_json_lines_carry_the_connection_fields() -> None:
    result = run("json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) == 2  # DEBUG dropped
    first, second = lines
    assert first["message"] == "upbit: connected to wss://x"
    assert (first["level"], first["logger"]) == ("INFO", "exchanges.session")
    assert {k: first[k] for k in ("exchange", "region", "request_type", "phase")} == {
        "exchange": "upbit", "region": "korea", "request_type": "websocket",
        "phase": "connected"}
    assert first["time"][:2] == "20"
    assert second["level"] == "WARNING" and "ZeroDivisionError" in second["message"]
    assert "Thread" in result.stdout  # the listener thread writes


def test_text_for_a_terminal() -> None:
    result = run("text")
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert "[INFO] exchanges.session: upbit: connected to wss://x" in first
    assert "exchange=upbit" in first and "phase=connected" in first


def test_format_setting() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    assert log_format("", Tty()) == "text"
    assert log_format("", open(__file__)) == "json"
    assert log_format(" JSON ") == "json"
    with pytest.raises(ValueError, match="KCS_LOG_FORMAT='yaml'"):
        log_format("yaml")
