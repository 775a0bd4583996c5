"""Fuzzing every connector's `on_frame` through the session's per-frame protection: random
bytes, truncated real frames, and real frames with one value replaced by NaN, infinity, a
negative, zero, a huge or a wrongly typed one. Nothing escapes except to the DLQ path, no
published record carries a non-finite, negative or (where meaningless) zero price or size,
and every record published serializes (the project's encoder, `Publisher.encode`)."""

from __future__ import annotations

import gzip
import json
import math
import random
from typing import Any

import orjson
import pytest

from config.settings import load_settings
from bench.parse import OfflineSession, preload_snapshots, recordings_by_exchange
from exchanges import CONNECTORS, EXCHANGES
from exchanges.base import Stream
from exchanges.publisher import Publisher
from records import OrderBook, Ticker, Trade
from replay.subscriptions import RECORDING_NAMES, from_recordings

RECORDINGS = recordings_by_exchange()
BAD_VALUES: list[Any] = ["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1", "-0.5", "0",
                         "0.0", "", "abc", -1, -0.5, 0, 0.0, 1e308, 2 ** 70, -(2 ** 70), 10 ** 30,
                         None, True, False, [], {}, "1e308", [1, 2], {"a": 1}]
MUTATED_PER_FRAME = 6
MIN_FUZZED = 3000  # fuzzed frames per venue, at least


def leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every scalar in a decoded JSON document."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in leaves(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in leaves(v, (*path, i))]
    return [path]


def replaced(document: Any, path: tuple, value: Any) -> Any:
    document = orjson.loads(orjson.dumps(document))  # a deep copy
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


def fuzzed_frames(name: str, frames: list[Any], rng: random.Random) -> list[Any]:
    gz = name == "htx"
    out: list[Any] = []
    for frame in frames:
        raw = gzip.decompress(frame) if gz else (frame.encode() if isinstance(frame, str)
                                                   else frame)
        out.append(raw[:rng.randrange(len(raw))] if raw else b"")  # truncated
        out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))  # noise
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        paths = leaves(document)
        if not paths or paths == [()]:
            continue
        for _ in range(MUTATED_PER_FRAME):
            mutated = replaced(document, rng.choice(paths), rng.choice(BAD_VALUES))
            out.append(json.dumps(mutated).encode())  # json: ints over 64 bits too
    if gz:
        return [gzip.compress(f, mtime=0) for f in out]  # the same bytes in every run
    return [f.decode(errors="replace") if rng.random() < 0.5 else f for f in out]


def check(record: Any) -> None:
    """No non-finite, negative or meaningless zero price or size in a published record."""
    def real(x: Any) -> bool:
        return type(x) in (float, int) and math.isfinite(x) and x > 0

    if isinstance(record, Trade):
        assert real(record.price) and real(record.amount), record
        assert real(record.ts_event), record
    elif isinstance(record, OrderBook):
        for price, size in (*record.bids, *record.asks):
            assert real(price) and real(size), record
    elif isinstance(record, Ticker):
        for x in (record.last, record.bid, record.ask):
            assert x is None or real(x), record
        for x in (record.bid_size, record.ask_size, record.volume_24h, record.quote_volume_24h):
            assert x is None or (type(x) in (float, int) and math.isfinite(x) and x >= 0), record


@pytest.mark.parametrize("name", EXCHANGES)
def test_fuzzed_frames_never_publish_a_bad_value_or_an_unencodable_record(name: str) -> None:
    assert name in RECORDINGS, f"no recorded or fixture frames for {name}"
    recording, _source = RECORDINGS[name]
    prefix = next((k for k, v in RECORDING_NAMES.items() if v == name), name)
    subs = from_recordings({recording.exchange: recording}).get(name) or from_recordings(
        {prefix: recording})[name]
    out = Publisher(name)
    connector = CONNECTORS[name](subs, out, load_settings({}))
    connector.session = OfflineSession()  # type: ignore[assignment]
    streams = connector.connections()
    preload_snapshots(name, connector, recording)
    rng = random.Random(f"fuzz-{name}")
    real = [data for conn in recording.connections for _, data in conn.received]
    # the real session first (books get built), then the fuzzed frames interleaved with it
    fuzzed: list[Any] = []
    while len(fuzzed) < MIN_FUZZED:  # venues with few fixture frames get more rounds
        fuzzed += fuzzed_frames(name, real, rng)
    frames = real + [f for batch in zip(fuzzed, real * (len(fuzzed) // len(real) + 1),
                                        strict=False) for f in batch]
    stream = streams[0] if streams else Stream("wss://x", [], [])
    published = rejected = 0
    for frame in frames:
        mark = len(out.pending)
        try:  # exactly the session's per-frame protection (exchanges/session.py `_read`)
            connector.on_frame(frame, 1_700_000_000.0, stream)
            records = [entry[2] for entry in out.pending[mark:]]
            out.encode(mark)
        except Exception as exc:  # noqa: BLE001 - what escapes goes to the DLQ path
            del out.pending[mark:]
            out.reject(frame, exc, 1_700_000_000.0)
            rejected += 1
            continue
        for record in records:
            check(record)
            published += 1
        for entry in out.pending[mark:]:
            # bytes, or a trade's (bytes, Trade) for the outbox's checkpoint
            value = entry[2][0] if type(entry[2]) is tuple else entry[2]
            assert type(value) is bytes
        if len(out.pending) > 10_000:
            out.pending.clear()
    assert published > 0 and rejected > 0
    print(f"{name}: {len(frames)} frames, {published} records published, {rejected} to the DLQ")
