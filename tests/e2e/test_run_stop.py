"""Run, rerun, stop, as a user does: `make run` again and again in one checkout, each stopped
by Ctrl-C (SIGINT to the whole process group) or SIGTERM.

A copy of the checkout (the repository's `.venv` linked into it, so `make run` installs
nothing) runs `make run` with the recordings replayed. Each run must answer a `/market/...`
view with replayed data; the second and later runs start on the tables the first left in
`data/v1/tables` (the embedded broker starts empty, so those must be wiped, exactly them).
Each stop must end make, the worker and the embedded broker (which runs in its own process
group) in under 5 s.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.embedded import free_port
from tests.support import REPO, http_json, wait_for

pytestmark = pytest.mark.e2e

STOP_LIMIT = 5.0  # seconds, README "Run, rerun, stop"
IGNORED = shutil.ignore_patterns(".venv", ".git", "data", "__pycache__", ".pytest_cache",
                                 ".ruff_cache", "*.egg-info", ".env")


def checkout_copy(dest: Path) -> Path:
    shutil.copytree(REPO, dest, ignore=IGNORED)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def processes(port: int, pgid: int) -> list[int]:
    """Live processes of the process group `pgid`, and those of an embedded broker listening
    on `port` (found by their command line: it runs in a group of its own)."""
    needle = f"tcp://127.0.0.1:{port}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            state, group = stat[0], int(stat[3])
            if state != "Z" and (group == pgid or needle in cmdline):
                pids.append(int(entry.name))
    return pids


def status(url: str) -> int | None:
    try:
        return http_json(url, timeout=2)[0]
    except ValueError:  # a 500 page of a worker still starting is not JSON
        return None


def run_once(clone: Path, env: dict[str, str], web_port: int, log: Path, sig: int) -> float:
    """`make run` until a replayed market answers; then `sig` to its process group. Returns
    the seconds from the signal until make, the worker and the broker were all gone."""
    with open(log, "wb") as out:
        # `-o`: the linked .venv is the repository's, kept up to date by `make test`; never
        # rebuild it from inside the copy
        make = subprocess.Popen(["make", "-o", ".venv/.installed", "run"], cwd=clone, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{web_port}/market/upbit/LAMB-KRW/"
        wait_for(lambda: make.poll() is not None or status(url) == 200, timeout=120)
        assert make.poll() is None, f"make run exited:\n{log.read_text()[-4000:]}"
        state = http_json(url)[1]
        assert state["exchange"] == "upbit" and state["symbol"] == "LAMB-KRW"
        found = re.search(r"listening on kafka://127\.0\.0\.1:(\d+)", log.read_text())
        assert found, "the embedded broker's address is not printed"
        port = int(found.group(1))
        assert len(processes(port, make.pid)) >= 3, "make, the worker and the broker"

        started = time.monotonic()
        os.killpg(make.pid, sig)
        while (make.poll() is None or processes(port, make.pid)) and \
                time.monotonic() - started < 30:
            time.sleep(0.05)
        took = time.monotonic() - started
        assert not processes(port, make.pid), "processes of make run are left over"
        return took
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        make.wait()


def test_make_run_three_times_then_ctrl_c_each_and_sigterm(tmp_path: Path,
                                                             replays: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if not (REPO / ".venv" / ".installed").exists():
        pytest.skip("no .venv in the repository (run `make test`)")
    clone = checkout_copy(tmp_path / "clone")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    env.update({"KCS_REPLAY": str(replays), "KCS_WEB_PORT": str(port),
                "KCS_WEB_BIND": "127.0.0.1", "KCS_WEB_HOST": "127.0.0.1"})
    took = []
    for run, sig in enumerate([signal.SIGINT, signal.SIGINT, signal.SIGINT, signal.SIGTERM]):
        took.append(run_once(clone, env, port, tmp_path / f"run{run}.log", sig))
        if run == 0:
            assert any((clone / "data" / "v1" / "tables").iterdir()), "no tables were kept"
    print(f"stopped in {', '.join(f'{t:.1f}' for t in took)} s")
    for run, seconds in enumerate(took):
        log = (tmp_path / f"run{run}.log").read_text()
        assert "ConsistencyError" not in log, f"run {run}:\n{log[-4000:]}"
        assert seconds < STOP_LIMIT, f"run {run} took {seconds:.1f} s to stop:\n{log[-3000:]}"
