"""Parsing benchmark: decode + normalize per exchange, against a decode-only baseline.

    python bench/parse.py [--seconds 0.5]

For each exchange, the received frames of its recording (../shared/replays where the
connector speaks the recorded protocol, else the fixture recording in tests/fixtures/replays)
are fed to a fresh connector, pass after pass, for at least --seconds: that is
decode + normalize (the connector's `on_frame`, books and checksums included, records built).
The baseline, measured in the same run on the same frames, is decode only: `orjson.loads`
(after gzip inflation for HTX, whose frames are all gzip). The ratio is normalize time over
decode time: 1.0 would be parsing for free.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from app.subscriptions import RECORDING_NAMES, from_recordings  # noqa: E402
from exchanges import CONNECTORS, EXCHANGES  # noqa: E402
from exchanges.base import Stream  # noqa: E402
from exchanges.publisher import Publisher  # noqa: E402
from exchanges.replay import Recording, load_recordings  # noqa: E402

SHARED = ROOT.parent / "shared" / "replays"
FIXTURES = ROOT / "tests" / "fixtures" / "replays"
# Recordings in ../shared/replays made with a protocol our connector does not speak.
NOT_SPOKEN = {"bithumb"}  # the legacy pubwss feed; we speak the current API


class OfflineSession:
    """Stands in for the network: a benchmark pass never waits for a snapshot or a socket."""

    def spawn(self, coro: Any) -> None:
        coro.close()

    def send_soon(self, stream: Stream, message: Any) -> None:
        pass


def recordings_by_exchange() -> dict[str, tuple[Recording, str]]:
    found: dict[str, tuple[Recording, str]] = {}
    for source, directory in (("fixture", FIXTURES), ("recorded", SHARED)):
        if not directory.is_dir():
            continue
        for prefix, recording in load_recordings(directory).items():
            name = RECORDING_NAMES.get(prefix, prefix)
            if source == "recorded" and name in NOT_SPOKEN:
                continue
            if any(c.received for c in recording.connections):
                found[name] = (recording, source)  # a real recording wins over a fixture
    return found


def preload_snapshots(name: str, connector: Any, recording: Recording) -> None:
    """Binance books start from a REST snapshot: load the recorded ones before a pass."""
    if name != "binance":
        return
    for response in recording.rest:
        if "/depth?" in response.url:
            native = response.url.split("symbol=")[1].split("&")[0]
            symbol = connector.unified.get(native)
            if symbol in connector.books:
                snapshot = orjson.loads(response.body)
                connector._load(symbol, snapshot, [], 0.0)


def normalize_pass(name: str, recording: Recording, frames: list[tuple[Any, Stream]],
                   settings: Any) -> tuple[float, int]:
    subs = from_recordings({name: recording}).get(name) or from_recordings(
        {next(k for k, v in RECORDING_NAMES.items() if v == name): recording})[name]
    out = Publisher(name)
    connector = CONNECTORS[name](subs, out, settings)
    connector.session = OfflineSession()  # type: ignore[assignment]
    connector.connections()
    preload_snapshots(name, connector, recording)
    out.pending.clear()
    on_frame = connector.on_frame
    pending = out.pending
    errors = 0
    started = time.perf_counter()
    for frame, stream in frames:
        try:
            on_frame(frame, 1.0, stream)
        except Exception:  # noqa: BLE001 - counted: a benchmark pass must not stop
            errors += 1
        if len(pending) > 4096:
            pending.clear()
    elapsed = time.perf_counter() - started
    pending.clear()
    return elapsed, errors


def decode_pass(name: str, frames: list[tuple[Any, Stream]]) -> float:
    # Same loop shape as normalize_pass (try per frame): fixtures hold malformed frames.
    loads = orjson.loads
    inflate = gzip.decompress
    started = time.perf_counter()
    if name == "htx":
        for frame, _ in frames:
            try:
                loads(inflate(frame))
            except Exception:  # noqa: BLE001
                pass
    else:
        for frame, _ in frames:
            try:
                loads(frame)
            except Exception:  # noqa: BLE001
                pass
    return time.perf_counter() - started


def measure(seconds: float) -> list[tuple[str, str, int, float, float, int]]:
    settings = load_settings({})
    rows = []
    available = recordings_by_exchange()
    for name in EXCHANGES:
        if name not in available or name not in CONNECTORS:
            continue
        recording, source = available[name]
        frames = [(data, Stream(conn.url, [], []))
                  for conn in recording.connections for _, data in conn.received]
        norm_times, dec_times, errors = [], [], 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(norm_times) < 3:
            elapsed, errors = normalize_pass(name, recording, frames, settings)
            norm_times.append(elapsed)
            dec_times.append(decode_pass(name, frames))
        norm = statistics.median(norm_times)
        dec = statistics.median(dec_times)
        rows.append((name, source, len(frames), len(frames) / dec, len(frames) / norm, errors))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per exchange, at least")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # resyncs in edge-case fixtures would log every pass
    rows = measure(args.seconds)
    print(f"{'exchange':<10} {'frames':>7} {'source':<9} {'decode-only msg/s':>18} "
          f"{'normalize msg/s':>16} {'ratio':>6}")
    ratios = []
    for name, source, count, dec, norm, errors in rows:
        ratio = dec / norm
        ratios.append(ratio)
        flag = f"  ({errors} frames raised: DLQ path)" if errors else ""
        print(f"{name:<10} {count:>7} {source:<9} {dec:>18,.0f} {norm:>16,.0f} "
              f"{ratio:>5.2f}x{flag}")
    if ratios:
        print(f"average ratio: {statistics.mean(ratios):.2f}x over {len(ratios)} exchanges")


if __name__ == "__main__":
    main()
