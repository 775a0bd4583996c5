"""The alert rules (docker/prometheus/alerts.yml) are valid and do what their unit tests say,
checked by Prometheus's own promtool (Debian package `prometheus`, installed by .ci/run)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import REPO

RULES = REPO / "docker" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None,
                                reason="promtool not installed (Debian package prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL or "promtool", *args], cwd=RULES, capture_output=True,
                          text=True, timeout=60)


def test_rules_are_valid_and_include_every_alert() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout
    text = (RULES / "alerts.yml").read_text()
    for alert in ("FeedConnectionDown", "ValidationErrorRateHigh", "IngestLatencyHigh",
                  "IngestBufferFull", "BookStale", "DLQBurst", "RecordsRefused",
                  "WorkerDown"):
        assert f"alert: {alert}\n" in text
        assert f"alertname: {alert}\n" in (RULES / "alerts_test.yml").read_text()


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
