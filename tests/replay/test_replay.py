"""Tests for exchanges.replay against the real recordings in ../shared/replays."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections import defaultdict

import aiohttp
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.protocol import State

from exchanges.replay import (
    HttpResponse,
    Recorder,
    Recording,
    ReplayServer,
    WsConnection,
    load_recordings,
    replay_url,
)

from tests.support import REPLAYS  # the shared recordings directory (../shared/replays)

pytestmark = pytest.mark.asyncio

if not REPLAYS.is_dir():
    pytest.skip(f"recordings folder {REPLAYS} is missing", allow_module_level=True)

RECEIVED_LINE = re.compile(r"^\d+(?:\.\d+)?: ", re.MULTILINE)
UPBIT_WS = "wss://api.upbit.com/websocket/v1"


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return load_recordings(REPLAYS)


@pytest_asyncio.fixture
async def server(recordings: dict[str, Recording]):
    replay = ReplayServer(recordings)
    await replay.start()
    yield replay
    await replay.stop()


async def expect_silence(ws, seconds: float = 0.3) -> None:
    """No frame arrives within `seconds` and the connection stays open."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), seconds)
    assert ws.state is State.OPEN


# --- parsing ----------------------------------------------------------------------------------


async def test_every_exchange_and_every_received_frame_is_parsed(recordings):
    files = [
        p for p in REPLAYS.iterdir() if re.fullmatch(r"[A-Z]+\.(0|(ws|http)\.\d+\.\d+)", p.name)
    ]
    assert {p.name.split(".")[0].lower() for p in files} == recordings.keys()
    assert {"binance", "upbit", "huobi", "kraken", "okx"} <= recordings.keys()

    # independent count: `TS: DATA` lines per (exchange, C), rotations summed
    expected: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for path in files:
        prefix, kind, *numbers = path.name.split(".")
        if kind == "ws":
            text = path.read_text(encoding="utf-8")
            expected[prefix.lower()][int(numbers[0])] += len(RECEIVED_LINE.findall(text))
    for exchange, recording in recordings.items():
        counts = [count for _, count in sorted(expected[exchange].items())]
        assert [len(c.received) for c in recording.connections] == counts, exchange
    assert sum(len(c.received) for c in recordings["kraken"].connections) == 16 + 20 + 1469


async def test_frame_types_and_content(recordings):
    upbit = recordings["upbit"].connections[0]
    assert upbit.url == UPBIT_WS
    assert all(isinstance(data, bytes) for _, data in upbit.received)
    first = json.loads(upbit.received[0][1])
    assert (first["ty"], first["cd"]) == ("trade", "KRW-LAMB")
    assert '"format":"SIMPLE"' in upbit.sent[0][1]

    binance = recordings["binance"].connections[0]
    assert binance.url.startswith("wss://stream.binance.com:9443/stream?streams=nknusdt@depth")
    assert all(isinstance(data, str) for _, data in binance.received)
    assert json.loads(binance.received[0][1])["data"]["U"] == 499869750

    # Huobi frames are gzip-compressed JSON
    huobi = recordings["huobi"].connections[0]
    assert all(isinstance(data, bytes) for _, data in huobi.received)
    assert all(json.loads(gzip.decompress(data)) for _, data in huobi.received)
    assert len(huobi.sent) == 21

    timestamps = [upbit.opened_at, upbit.sent[0][0]] + [ts for ts, _ in upbit.received]
    assert timestamps == sorted(timestamps)


async def test_rest_bodies_and_configuration(recordings):
    upbit = recordings["upbit"]
    assert "WAVES-KRW" in upbit.configuration["trades"]
    markets = json.loads(upbit.rest[0].body)  # UTF-8 body with Korean names
    assert any(m["korean_name"] == "비트코인" for m in markets)

    binance = recordings["binance"]
    assert [r.url.rsplit("/", 1)[-1] for r in binance.rest] == [
        "exchangeInfo",
        "depth?symbol=NKNUSDT&limit=1000",
        "depth?symbol=BLZETH&limit=1000",
        "depth?symbol=LRCBTC&limit=1000",
        "depth?symbol=RUNEEUR&limit=1000",
    ]
    assert json.loads(binance.rest[1].body)["lastUpdateId"] == 499869752

    kraken = recordings["kraken"]
    assert [c.url for c in kraken.connections] == ["wss://ws.kraken.com"] * 3
    assert [len(c.received) for c in kraken.connections] == [16, 20, 1469]


# --- websocket replay ---------------------------------------------------------------------------


async def test_ws_replays_every_frame_exactly_once(server, recordings):
    expected = [data for _, data in recordings["upbit"].connections[0].received]
    url = replay_url(UPBIT_WS, server.base_url)
    assert url == f"ws://127.0.0.1:{server.port}/api.upbit.com/websocket/v1"

    async with connect(url) as ws:
        await expect_silence(ws)  # the recorded session began with a subscription: wait for it
        await ws.send('[{"ticket":"t"},{"format":"SIMPLE"},{"type":"trade","codes":["KRW-LAMB"]}]')
        got = [await asyncio.wait_for(ws.recv(), 2) for _ in expected]
        assert got == expected  # bytes, in order
        await expect_silence(ws)

        async with connect(url) as second:  # the recording is used up: idle connection
            await second.send("[]")
            await expect_silence(second)

    assert server.replayed_frames == len(expected)
    assert not server.finished  # the other exchanges' connections were not replayed


async def test_ws_without_client_frames_streams_at_once_and_finishes(recordings):
    binance = recordings["binance"].connections[0]
    server = ReplayServer({"binance": recordings["binance"]})
    await server.start()
    try:
        async with connect(replay_url(binance.url, server.base_url)) as ws:
            got = [await asyncio.wait_for(ws.recv(), 2) for _ in binance.received]
            assert got == [data for _, data in binance.received]  # text frames as str
            assert server.finished
            await expect_silence(ws, 0.1)
    finally:
        await server.stop()


async def test_ws_connections_to_one_host_get_recorded_connections_in_order(server, recordings):
    url = replay_url("wss://ws.kraken.com", server.base_url)
    for recorded in recordings["kraken"].connections:
        async with connect(url) as ws:
            await ws.send('{"event":"subscribe"}')
            got = [await asyncio.wait_for(ws.recv(), 2) for _ in recorded.received]
            assert got == [data for _, data in recorded.received]


async def test_speed_keeps_recorded_spacing(tmp_path):
    recorder = Recorder(tmp_path, "synthetic")
    ws = recorder.open_ws("wss://feed.example.com/ws", 100.0)
    for index in range(3):
        ws.received(f'{{"n":{index}}}', 100.0 + 0.2 * index)
    recorder.close()

    server = ReplayServer(load_recordings(tmp_path), speed=1.0)
    await server.start()
    try:
        async with connect(replay_url("wss://feed.example.com/ws", server.base_url)) as client:
            started = time.monotonic()
            got = [await asyncio.wait_for(client.recv(), 2) for _ in range(3)]
            elapsed = time.monotonic() - started
    finally:
        await server.stop()
    assert got == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert 0.35 <= elapsed < 1.5


# --- HTTP replay --------------------------------------------------------------------------------


async def test_http_serves_recorded_body_ignoring_limit(server):
    base = server.base_url
    async with aiohttp.ClientSession() as session:
        url = replay_url("https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=5000", base)
        async with session.get(url) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert (await response.json())["lastUpdateId"] == 499869752

        url = replay_url("https://api.binance.com/api/v3/depth?symbol=NOPEUSDT&limit=5000", base)
        async with session.get(url) as response:
            assert response.status == 404
            assert "api.binance.com/api/v3/depth" in await response.text()

        # parameter values compare case-sensitively
        url = replay_url("https://api.binance.com/api/v3/depth?symbol=nknusdt", base)
        async with session.get(url) as response:
            assert response.status == 404


async def test_http_repeated_responses_in_order_then_last_repeats(server, recordings):
    recorded = [
        r.body for r in recordings["okx"].rest if r.url.endswith("instruments?instType=SPOT")
    ]
    assert len(recorded) == 5
    url = replay_url("https://www.okx.com/api/v5/public/instruments?instType=SPOT", server.base_url)
    async with aiohttp.ClientSession() as session:
        bodies = []
        for _ in range(len(recorded) + 2):
            async with session.get(url) as response:
                bodies.append(await response.text())
    assert bodies == recorded + [recorded[-1]] * 2


# --- recorder -----------------------------------------------------------------------------------


async def test_recorder_round_trip(tmp_path):
    binary = [b'it\'s "quoted"', b'only "double"', b"\x00\xff\x1f\x8b\n\r\\ end", b""]
    text = ['{"a":1}', "한국어 'quotes' \"and\" \u2028 separator\r"]

    recorder = Recorder(tmp_path, "roundtrip")
    recorder.http("https://api.example.com/v1/markets?x=1", 1.25, '[{"name":"비트코인"}]')
    first = recorder.open_ws("wss://feed.example.com/ws?a=b", 10.0)
    first.sent('{"op":"subscribe"}', 10.1)
    frames: list[tuple[float, bytes | str]] = []
    for index, data in enumerate([*binary, *text]):
        frames.append((10.2 + index / 7, data))
        first.received(data, 10.2 + index / 7)
    second = recorder.open_ws("wss://feed.example.com/ws", 20.0)
    second.received("[1]", 20.5)
    recorder.http("https://api.example.com/v1/depth?symbol=X", 21.0, '{"bids":[]}')
    recorder.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ROUNDTRIP.http.0.0",
        "ROUNDTRIP.ws.1.0",
        "ROUNDTRIP.ws.2.0",
    ]
    assert load_recordings(tmp_path) == {
        "roundtrip": Recording(
            exchange="roundtrip",
            rest=[
                HttpResponse(
                    "https://api.example.com/v1/markets?x=1", 1.25, '[{"name":"비트코인"}]'
                ),
                HttpResponse("https://api.example.com/v1/depth?symbol=X", 21.0, '{"bids":[]}'),
            ],
            connections=[
                WsConnection(
                    "wss://feed.example.com/ws?a=b", 10.0, [(10.1, '{"op":"subscribe"}')], frames
                ),
                WsConnection("wss://feed.example.com/ws", 20.0, [], [(20.5, "[1]")]),
            ],
            configuration={},
        )
    }

    # a second recorder in the same folder continues the numbering instead of overwriting
    again = Recorder(tmp_path, "roundtrip")
    again.open_ws("wss://feed.example.com/ws", 30.0).received('{"pretty":\n1}', 30.1)
    again.close()
    connections = load_recordings(tmp_path)["roundtrip"].connections
    assert [c.opened_at for c in connections] == [10.0, 20.0, 30.0]
    # the line format cannot hold a newline; in JSON it is whitespace, written as a space
    assert connections[2].received == [(30.1, '{"pretty": 1}')]
