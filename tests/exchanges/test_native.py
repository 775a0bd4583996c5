"""The compiled connector modules (exchanges/_native.py) answer exactly as the pure ones.

Every recorded session (tests/fixtures/replays and ../shared/replays), then the same frames
fuzzed as in test_fuzz.py, go through every connector twice, in two processes: once with the
mypyc-compiled modules, once with `KORCOIN_PURE_PYTHON=1`. What each frame produced must be
the same bytes on both: every trade, book and ticker record, every DLQ frame with its reason
and every `ws.error` event (its `ts_recv`, our clock, aside), every message sent back to the
venue and every task spawned. Also: a compiled build whose sources changed since it was built
is never run (stale: the pure modules run, with one warning), and the switch forces them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = (ROOT / "tests" / "fixtures" / "replays", ROOT.parent / "shared" / "replays")
FUZZED_PER_RECORDING = 600  # fuzzed frames per recording (test_fuzz.py's mutations)


def run_everything() -> dict[str, Any]:
    """In the child process: every recording's frames through its connector, as the
    session's per-frame protection handles them; what each frame produced, in order."""
    from bench.parse import OfflineSession, preload_snapshots
    from config.settings import load_settings
    from exchanges import CONNECTORS, _native
    from exchanges.base import Stream
    from exchanges.publisher import Publisher
    from records import ERROR_TOPIC
    from replay.recordings import load_recordings
    from replay.subscriptions import RECORDING_NAMES, from_recordings
    from tests.exchanges.test_fuzz import fuzzed_frames
    from tests.support import coroutine_name

    sent: list[Any] = []

    class Recorder(OfflineSession):
        def spawn(self, coro: Any) -> None:
            sent.append(["spawn", coroutine_name(coro)])
            coro.close()

        def send_soon(self, stream: Stream, message: Any) -> None:
            sent.append(["send", stream.url, message])

        def reconnect_soon(self, stream: Stream, reason: str) -> None:
            sent.append(["reconnect", stream.url, reason])

    def entry(pending: tuple) -> Any:
        topic, key, value, headers = pending[:4]
        value = value[0] if type(value) is tuple else value  # a trade's (bytes, Trade)
        if topic == ERROR_TOPIC:  # its ts_recv is the wall clock of the run
            event = orjson.loads(value)
            event.pop("ts_recv")
            value = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        return [topic, key.decode(errors="replace"), value.decode(errors="replace"),
                [[k, v.decode(errors="replace")] for k, v in headers or ()]]

    results: dict[str, Any] = {"state": _native.state(), "runs": {}}
    for directory in RECORDINGS:
        if not directory.is_dir():
            continue
        for prefix, recording in sorted(load_recordings(directory).items()):
            name = RECORDING_NAMES.get(prefix, prefix)
            if name not in CONNECTORS:
                continue
            subs = from_recordings({prefix: recording}).get(name)
            if not subs:
                continue
            out = Publisher(name)
            connector = CONNECTORS[name](subs, out, load_settings({}))
            connector.session = Recorder()  # type: ignore[assignment]
            streams = connector.connections()
            preload_snapshots(name, connector, recording)
            frames = [(ts, data) for conn in recording.connections for ts, data in conn.received]
            recorded = len(frames)
            rng = random.Random(f"native-{prefix}")
            fuzzed = fuzzed_frames(name, [data for _, data in frames], rng)
            frames += [(frames[-1][0], f) for f in fuzzed[:FUZZED_PER_RECORDING]] if frames else []
            stream = streams[0] if streams else Stream("wss://x", [], [])
            produced: list[Any] = []
            for ts_recv, frame in frames:
                sent.clear()
                mark = len(out.pending)
                try:  # the session's per-frame protection (exchanges/session.py `_read`)
                    connector.on_frame(frame, ts_recv, stream)
                    out.encode(mark)
                except Exception as exc:  # noqa: BLE001 - what escapes goes to the DLQ path
                    del out.pending[mark:]
                    out.reject(frame, exc, ts_recv)
                    sent.append(["raised", type(exc).__name__, str(exc),
                                 getattr(exc, "reason", None)])
                produced.append([entry(p) for p in out.pending[mark:]] + sent)
                out.pending.clear()
            results["runs"][f"{directory.name}/{prefix}"] = [produced[:recorded],
                                                             produced[recorded:]]
    return results


def run_child(env: dict[str, str], cwd: Path = ROOT) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(cwd), **env},
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout)


def test_compiled_and_pure_modules_publish_the_same_bytes() -> None:
    compiled = run_child({"KORCOIN_PURE_PYTHON": ""})
    if compiled["state"] != "compiled":
        pytest.skip(f"the compiled modules are not here ({compiled['state']}): "
                    "python exchanges/_native.py build")
    pure = run_child({"KORCOIN_PURE_PYTHON": "1"})
    assert pure["state"].startswith("pure"), pure["state"]
    assert compiled["runs"].keys() == pure["runs"].keys()
    frames = outputs = fuzzed = 0
    for run, (recorded, fuzz) in pure["runs"].items():
        ours, our_fuzz = compiled["runs"][run]
        # the recorded sessions: every frame's output identical, byte for byte
        assert len(ours) == len(recorded), run
        for i, (mine, theirs) in enumerate(zip(ours, recorded, strict=True)):
            assert mine == theirs, f"{run} frame {i}: compiled {mine} != pure {theirs}"
            outputs += len(theirs)
        frames += len(recorded)
        # fuzzed frames: identical up to the first frame either path refuses differently.
        # There both must refuse it (the same raw frame to the DLQ; the exception text may
        # differ), or the compiled path alone refuses a value of the wrong JSON type (its
        # type checks: "str object expected; got float") that the pure path let through.
        # Past that frame the two books may differ, so the run's comparison ends there.
        for i, (mine, theirs) in enumerate(zip(our_fuzz, fuzz, strict=True)):
            fuzzed += 1
            if mine == theirs:
                continue
            mine_raised = [x for x in mine if x[0] == "raised"]
            theirs_raised = [x for x in theirs if x[0] == "raised"]
            assert mine_raised, f"{run} fuzzed frame {i}: compiled {mine} != pure {theirs}"
            if theirs_raised:
                assert mine[0][:3] == theirs[0][:3], f"{run} fuzzed frame {i}: other DLQ frame"
            else:
                assert mine_raised[0][1] == "TypeError" and \
                    " object expected; got " in mine_raised[0][2], (run, i, mine, theirs)
            break
    assert frames > 5_000 and outputs > frames // 2 and fuzzed > 1_000
    print(f"{len(pure['runs'])} recordings, {frames} frames, {outputs} outputs identical; "
          f"{fuzzed} fuzzed frames compared")


def _state_in(checkout: Path, env: dict[str, str] | None = None) -> tuple[str, str, str]:
    """The state, the file `exchanges.book` came from, and stderr, in a fresh process."""
    code = ("import exchanges, exchanges.book as b, exchanges._native as n; "
            "print(n.state()); print(b.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(checkout),
                                          "KORCOIN_PURE_PYTHON": "", **(env or {})},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    state, origin = done.stdout.split("\n")[:2]
    return state, origin, done.stderr


def test_a_stale_build_is_never_run_and_the_switch_forces_pure(tmp_path: Path) -> None:
    from exchanges import _native

    if not _native.built() or _native.state() != "compiled":
        pytest.skip(f"the compiled modules are not here ({_native.state()})")
    # a copy of the packages with their build, to edit a source without touching ours
    for package in ("exchanges", "records", "config"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))

    state, origin, stderr = _state_in(tmp_path)
    assert state == "compiled" and not origin.endswith(".py"), (state, origin)
    assert "stale" not in stderr

    state, origin, _ = _state_in(tmp_path, {"KORCOIN_PURE_PYTHON": "1"})
    assert state == "pure: KORCOIN_PURE_PYTHON is set" and origin.endswith("book.py")

    book = tmp_path / "exchanges" / "book.py"
    book.write_text(book.read_text() + "\n# edited after the build\n")
    state, origin, stderr = _state_in(tmp_path)
    assert state.startswith("pure: the compiled modules are stale"), state
    assert origin.endswith("book.py")
    assert stderr.count("RuntimeWarning") == 1, stderr  # one warning
    # every compiled module comes from its source then, not only the one edited
    done = subprocess.run([sys.executable, "-c", "import exchanges.kraken as k; "
                           "print(k.__file__)"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert done.stdout.strip().endswith("kraken.py"), done

    # a partial build (one extension missing, the others left from an earlier build): none
    # of those left behind is imported, the pure modules run
    for extension in (tmp_path / "exchanges").glob("okx.*.so"):
        extension.unlink()
    state, origin, _ = _state_in(tmp_path)
    assert state.startswith("pure: not built"), state
    assert origin.endswith("book.py"), origin


if __name__ == "__main__":  # the child process of the tests above
    sys.path.insert(0, str(ROOT))
    import logging

    logging.disable(logging.WARNING)  # resyncs are expected in the edge-case recordings
    sys.stdout.buffer.write(orjson.dumps(run_everything()))
