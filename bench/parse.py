"""Parsing benchmark: decode + normalize per exchange, against the decode-only floor and cryptofeed.

    python bench/parse.py [--seconds 0.5] [--rounds 3] [--cryptofeed PATH | --no-cryptofeed]

For each exchange, the received frames of its recording (../shared/replays where the
connector speaks the recorded protocol, else the fixture recording in tests/fixtures/replays)
are fed to a fresh connector, pass after pass, for at least --seconds: that is
decode + normalize (the connector's `on_frame`, books and checksums included, records built).
The floor, measured in the same run on the same frames, is decode only: `orjson.loads`
(after gzip inflation for HTX, whose frames are all gzip). Printed per exchange: messages
per second of both, us/KB: microseconds of the whole `on_frame` (decode + normalize, as the
issue's "microseconds per KB of payload" means) per KB of the frames' bytes as received, and
/floor: that time over the decode-only time (1.0 would be normalizing for free; a typed
decoder that skips fields can go below it), with its geometric mean. Every figure is in CPU
time of the process (`time.process_time`), so the other work of a shared machine does not
count as ours.

cryptofeed beside ours: when `../shared/peer/cryptofeed-speed` (or --cryptofeed) runs here
(it needs Python 3.13 and builds its environments on first use), it replays the same
../shared/replays recordings through cryptofeed in its own process. The run alternates
rounds, cryptofeed's then ours, --rounds times, and takes each side's median over the rounds,
so both see the same machine load. cryptofeed's msg/s are its messages over the CPU time of
its timed handler loop, read from the harness's summaries (median of its repeats).
`ours/cf` is our msg/s over cryptofeed's, shown only where both parsed the same recording.
Ours runs with the garbage collector tuned as in every worker
(`app.ingest.tune_gc`); cryptofeed's harness keeps Python's default.

Compiled and pure: "ours" is the connector modules as this process imports them, compiled
with mypyc (exchanges/_native.py) when built and current; the first line says which. When
they are compiled, each round also runs the same passes in a child process with
`KORCOIN_PURE_PYTHON=1` (a process imports one or the other), and `pure msg/s` and
`comp/pure` (the compiled modules' speed over the pure ones') are printed beside them.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.ingest import tune_gc  # noqa: E402
from config.settings import load_settings  # noqa: E402
from replay.subscriptions import RECORDING_NAMES, from_recordings  # noqa: E402
from exchanges import CONNECTORS, EXCHANGES, _native  # noqa: E402
from exchanges.base import Stream  # noqa: E402
from exchanges.publisher import Publisher  # noqa: E402
from replay.recordings import Recording, load_recordings  # noqa: E402

SHARED = ROOT.parent / "shared" / "replays"
PEER = ROOT.parent / "shared" / "peer" / "cryptofeed-speed"
FIXTURES = ROOT / "tests" / "fixtures" / "replays"
# Recordings in ../shared/replays made with a protocol our connector does not speak.
NOT_SPOKEN = {"bithumb"}  # the legacy pubwss feed; we speak the current API
# Passes are timed in CPU time, not wall time: on a shared machine a pass preempted by other
# work would otherwise count that work as ours (or cryptofeed's).
process_time = time.process_time


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
                connector._load(symbol, snapshot, [], 1.0)


def normalize_pass(name: str, recording: Recording, frames: list[tuple[Any, int]],
                   settings: Any) -> tuple[float, int]:
    subs = from_recordings({name: recording}).get(name) or from_recordings(
        {next(k for k, v in RECORDING_NAMES.items() if v == name): recording})[name]
    out = Publisher(name)
    connector = CONNECTORS[name](subs, out, settings)
    connector.session = OfflineSession()  # type: ignore[assignment]
    connector.connections()
    # One Stream per recorded connection, new each pass: what a connector keeps per socket
    # (sequence numbers, channel ids, confirmed flags) lives as long as that connection.
    streams = [Stream(conn.url, [], []) for conn in recording.connections]
    timed = [(frame, streams[i]) for frame, i in frames]
    preload_snapshots(name, connector, recording)
    out.pending.clear()
    on_frame = connector.on_frame
    pending = out.pending
    errors = 0
    started = process_time()
    for frame, stream in timed:
        try:
            on_frame(frame, 1.0, stream)
        except Exception:  # noqa: BLE001 - counted: a benchmark pass must not stop
            errors += 1
        if len(pending) > 4096:
            pending.clear()
    elapsed = process_time() - started
    pending.clear()
    return elapsed, errors


def decode_pass(name: str, frames: list[tuple[Any, int]]) -> float:
    # Same loop shape as normalize_pass (try per frame): fixtures hold malformed frames.
    loads = orjson.loads
    inflate = gzip.decompress
    started = process_time()
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
    return process_time() - started


class Exchange:
    """One exchange's frames and what each round measured on them."""

    def __init__(self, name: str, recording: Recording, source: str) -> None:
        self.name = name
        self.recording = recording
        self.source = source
        # (frame, index of its recorded connection), connection by connection
        self.frames = [(data, i) for i, conn in enumerate(recording.connections)
                       for _, data in conn.received]
        self.kilobytes = sum(len(data if type(data) is bytes else data.encode())
                             for data, _ in self.frames) / 1024
        self.normalize: list[float] = []  # seconds per pass, one median per round
        self.decode: list[float] = []
        self.cryptofeed: list[float] = []  # cryptofeed's msg/s, one per round
        self.pure: list[float] = []  # seconds per pass of the pure modules (child process)
        self.errors = 0

    @property
    def cryptofeed_name(self) -> str | None:
        """The recording's name for cryptofeed-speed, when it is the shared recording."""
        return self.recording.exchange.upper() if self.source == "recorded" else None


def exchanges_to_measure() -> list[Exchange]:
    available = recordings_by_exchange()
    return [Exchange(name, *available[name]) for name in EXCHANGES
            if name in available and name in CONNECTORS]


def measure_round(exchanges: list[Exchange], seconds: float) -> None:
    """Normalize and decode passes alternated for at least `seconds` per exchange; the
    medians are appended to each exchange's figures."""
    settings = load_settings({})
    for ex in exchanges:
        norm_times, dec_times = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(norm_times) < 3:
            elapsed, ex.errors = normalize_pass(ex.name, ex.recording, ex.frames, settings)
            norm_times.append(elapsed)
            dec_times.append(decode_pass(ex.name, ex.frames))
        ex.normalize.append(statistics.median(norm_times))
        ex.decode.append(statistics.median(dec_times))


def pure_round(exchanges: list[Exchange], seconds: float) -> str | None:
    """One round of the same passes with the pure-Python modules, in a child process (this
    one runs the compiled ones); their medians are appended to `pure`. Returns why it could
    not run, or None."""
    try:
        done = subprocess.run([sys.executable, __file__, "--pure-child", "--seconds",
                               str(seconds)], capture_output=True, timeout=1800,
                              env={**os.environ, _native.PURE_ENV: "1"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return f"exited {done.returncode}: {done.stderr.decode().strip()[-300:]}"
    figures = orjson.loads(done.stdout)
    for ex in exchanges:
        if ex.name in figures:
            ex.pure.append(figures[ex.name])
    return None


def pure_child(seconds: float) -> None:
    """--pure-child: one round, its normalize medians as JSON on stdout."""
    exchanges = exchanges_to_measure()
    measure_round(exchanges, seconds)
    sys.stdout.buffer.write(orjson.dumps({ex.name: ex.normalize[0] for ex in exchanges}))


def cryptofeed_round(script: Path, exchanges: list[Exchange]) -> str | None:
    """One cryptofeed-speed run over the shared recordings; its msg/s are appended to the
    exchanges' figures. Returns why it could not run, or None."""
    names = {ex.cryptofeed_name: ex for ex in exchanges if ex.cryptofeed_name}
    with tempfile.TemporaryDirectory(prefix="kcs-cryptofeed-") as out:
        try:
            done = subprocess.run([str(script), str(SHARED), *names], capture_output=True,
                                  text=True, timeout=1800, env={**os.environ, "OUT": out})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{script}: {exc}"
        if done.returncode != 0:
            return f"{script} exited {done.returncode}: {done.stderr.strip()[-300:]}"
        read_summaries(Path(out), names)
    return None


def read_summaries(summaries: Path, names: dict[str, Exchange]) -> None:
    for name, ex in names.items():
        # the harness's own CPU time of its timed handler loop (median of its repeats)
        try:
            summary = orjson.loads((summaries / f"{name}.summary.json").read_bytes())
            cpu = summary["timing"]["replay"]["cpu_s"]["median"]
            ex.cryptofeed.append(summary["messages_replayed"] / cpu)
        except (OSError, KeyError, TypeError, ValueError, ZeroDivisionError):
            continue  # that exchange failed in cryptofeed: no figure


def geometric_mean(values: list[float]) -> float:
    return math.exp(statistics.mean(math.log(v) for v in values))


def report(exchanges: list[Exchange], rounds: int, cryptofeed_note: str | None,
           pure_note: str | None) -> None:
    state = _native.state()
    print(f"connector modules: {'compiled (mypyc)' if state == 'compiled' else state}")
    pure_shown = any(ex.pure for ex in exchanges)
    pure_head = f" {'pure msg/s':>11} {'comp/pure':>9}" if pure_shown else ""
    print(f"{'exchange':<9} {'frames':>6} {'source':<8} {'KB':>7} {'decode msg/s':>13} "
          f"{'ours msg/s':>11} {'us/KB':>7} {'/floor':>7} {'cryptofeed msg/s':>17} "
          f"{'ours/cf':>8}{pure_head}")
    floor_ratios, cf_ratios, pure_floor, speedups = [], [], [], []
    for ex in exchanges:
        count = len(ex.frames)
        norm, dec = statistics.median(ex.normalize), statistics.median(ex.decode)
        ratio = norm / dec
        floor_ratios.append(ratio)
        us_per_kb = norm * 1e6 / ex.kilobytes
        cf_text, vs_text = "", ""
        if ex.cryptofeed:
            cf = statistics.median(ex.cryptofeed)
            cf_ratios.append(count / norm / cf)
            cf_text, vs_text = f"{cf:,.0f}", f"{count / norm / cf:.2f}x"
        pure_text = ""
        if ex.pure:
            pure = statistics.median(ex.pure)
            pure_floor.append(pure / dec)
            speedups.append(pure / norm)
            pure_text = f" {count / pure:>11,.0f} {pure / norm:>8.2f}x"
        elif pure_shown:
            pure_text = f" {'':>11} {'':>9}"
        flag = f"  ({ex.errors} frames raised: DLQ path)" if ex.errors else ""
        print(f"{ex.name:<9} {count:>6} {ex.source:<8} {ex.kilobytes:>7,.0f} "
              f"{count / dec:>13,.0f} {count / norm:>11,.0f} {us_per_kb:>7.1f} "
              f"{ratio:>6.2f}x {cf_text:>17} {vs_text:>8}{pure_text}{flag}")
    if floor_ratios:
        print(f"ours/decode floor, geometric mean: {geometric_mean(floor_ratios):.2f}x over "
              f"{len(floor_ratios)} exchanges (medians of {rounds} rounds)")
    if pure_floor:
        print(f"pure/decode floor, geometric mean: {geometric_mean(pure_floor):.2f}x; "
              f"compiled/pure speed: geometric mean {geometric_mean(speedups):.2f}x, "
              f"min {min(speedups):.2f}x, max {max(speedups):.2f}x")
    if cf_ratios:
        print(f"ours/cryptofeed msg/s: min {min(cf_ratios):.2f}x, geometric mean "
              f"{geometric_mean(cf_ratios):.2f}x over {len(cf_ratios)} exchanges")
    if cryptofeed_note:
        print(f"cryptofeed: not measured ({cryptofeed_note})")
    if pure_note:
        print(f"pure modules: not measured ({pure_note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per exchange and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--cryptofeed", type=Path, default=PEER,
                        help="the cryptofeed-speed script (default: ../shared/peer/)")
    parser.add_argument("--no-cryptofeed", action="store_true", help="ours and the floor only")
    parser.add_argument("--no-pure", action="store_true",
                        help="compiled modules only (no pure-Python child process)")
    parser.add_argument("--pure-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # resyncs in edge-case fixtures would log every pass
    tune_gc()  # the collector as every worker runs it (app/main.py)
    if args.pure_child:
        pure_child(args.seconds)
        return
    exchanges = exchanges_to_measure()
    note = "--no-cryptofeed" if args.no_cryptofeed else None
    if note is None and not args.cryptofeed.exists():
        note = f"{args.cryptofeed} not found"
    pure_note = "--no-pure" if args.no_pure else None
    if _native.state() != "compiled":
        pure_note = "ours are the pure modules"
    for _ in range(max(1, args.rounds)):
        if note is None:
            note = cryptofeed_round(args.cryptofeed, exchanges)
        if pure_note is None:
            pure_note = pure_round(exchanges, args.seconds)
        measure_round(exchanges, args.seconds)
    report(exchanges, max(1, args.rounds), note,
           None if pure_note == "ours are the pure modules" else pure_note)


if __name__ == "__main__":
    main()
