"""Health that means something, with real workers, a real broker and a real local WebSocket
server (the replay server, started and stopped by the test):

- `/health/` and `/ready/` answer 503 while a feed the worker owns is down, 200 once every
  feed is up, and 503 again when it goes down; they list each feed's state, last frame age
  and last exchange-time age.
- A view of every key (`/markets/`) gathered from several workers says when one did not
  answer (502, `X-KCS-Missing`, `missing`) instead of passing a partial answer off as whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from agents.views import GATHER_TIMEOUT, MISSING_HEADER
from app.embedded import EmbeddedBroker, free_port, stop_process
from exchanges import _native
from tests.support import REPO, Worker, copy_recordings, http_json, wait_for

pytestmark = pytest.mark.e2e


def health(worker: Worker, path: str = "/health/") -> tuple[int, dict]:
    return http_json(worker.url + path, timeout=5)


def replay_server(directory: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "replay", "serve", str(directory), "--port",
             str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def test_health_is_503_while_a_feed_is_down_and_200_once_all_are_up(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path,
        workers: list[Worker]) -> None:
    recordings = copy_recordings(tmp_path / "recordings", "UPBIT", source=replays)
    subscriptions = tmp_path / "subscriptions.toml"
    subscriptions.write_text('[upbit]\n"LAMB-KRW" = ["trades", "book"]\n')
    port = free_port()  # the replay server's, not started yet: the feed cannot connect
    worker = Worker(fresh_broker.url, tmp_path, replay=f"http://127.0.0.1:{port}",
                    subscriptions=subscriptions, ingest="upbit",
                    backoff_initial=0.1, backoff_max=0.5)
    workers.append(worker)
    worker.start(healthy=False)

    for path in ("/health/", "/ready/"):
        status, body = health(worker, path)
        assert status == 503, body
        assert body["status"] == "unavailable"
        assert body["problems"] == ["feed upbit is down"], body
        feed = body["ingest"]["upbit"]
        assert feed["state"] == "down" and feed["connected"] == 0
        assert [s["state"] for s in feed["streams"]] == ["down"]
        assert feed["last_frame_age"] is None and feed["last_event_age"] is None

    server = replay_server(recordings, port, tmp_path / "replay.log")
    try:
        wait_for(lambda: health(worker)[0] == 200, timeout=60)
        status, body = health(worker, "/ready/")
        assert status == 200 and body["status"] == "ok" and body["problems"] == []
        assert body["connectors"] == _native.state()  # the same build as this test's
        assert body["connectors"] == "compiled" or body["connectors"].startswith("pure: ")
        feed = body["ingest"]["upbit"]
        assert feed["state"] == "connected" and feed["connected"] == 1
        # the recorded frames arrive: their ages are known (the exchange time is of 2021)
        wait_for(lambda: health(worker)[1]["ingest"]["upbit"]["last_event_age"])
        feed = health(worker)[1]["ingest"]["upbit"]
        assert feed["frames"] > 0 and 0 <= feed["last_frame_age"] < 60
        assert feed["last_event_age"] > 86400 * 365
    finally:
        stop_process(server, grace=5.0)

    wait_for(lambda: health(worker)[0] == 503, timeout=30)
    assert health(worker)[1]["problems"] == ["feed upbit is down"]


def owners(worker: Worker, table: str) -> set[str]:
    """The workers that own partitions of `table`, as `worker`'s router sees them (Faust's
    `/router/`: host -> {changelog topic: partitions})."""
    with urllib.request.urlopen(f"{worker.url}/router/", timeout=5) as response:
        routes = json.loads(response.read())
    return {host for host, topics in routes.items()
            if any(topic.endswith(f"-{table}-changelog") and parts
                   for topic, parts in topics.items())}


def test_a_gathered_view_says_which_worker_did_not_answer(
        fresh_broker: EmbeddedBroker, tmp_path: Path, workers: list[Worker]) -> None:
    a = Worker(fresh_broker.url, tmp_path, ingest="none")
    b = Worker(fresh_broker.url, tmp_path, ingest="none")
    workers += [a, b]
    a.start()
    b.start()
    # both own partitions of market_state, as A's router sees it
    wait_for(lambda: len(owners(a, "market_state")) == 2 and health(a)[0] == 200, timeout=60)
    status, body = http_json(a.url + "/markets/")
    assert status == 200 and body == {}

    assert b.process is not None
    os.kill(b.process.pid, signal.SIGSTOP)  # B is there but does not answer
    try:
        request = urllib.request.Request(a.url + "/markets/")
        try:
            urllib.request.urlopen(request, timeout=GATHER_TIMEOUT + 10)
            raise AssertionError("a partial answer was returned as complete")
        except urllib.error.HTTPError as exc:

            assert exc.code == 502
            assert exc.headers[MISSING_HEADER] == b.url
            answer = json.loads(exc.read())
            assert answer["missing"] == [b.url] and answer["partial"] == {}
            assert "did not answer" in answer["error"]
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
