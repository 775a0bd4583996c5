"""OKX books in both protocol forms, served by the replay server (REST snapshots included),
through the real session: the 2026 form (no snapshot in the feed, checksum 0, the REST
snapshot with `source=0`, `seqId` chaining, a gap that triggers the REST procedure again),
built from the recorded 2022 session, and the recorded 2022 form itself. Every published
book's top equals an independent rebuild (tests.exchanges.test_okx.Rebuild) at the same point."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import orjson

from config.settings import load_settings
from exchanges.okx import Okx
from exchanges.publisher import Publisher
from exchanges.session import Session
from replay.recordings import HttpResponse, Recording, WsConnection, load_recordings
from replay.server import ReplayServer
from replay.subscriptions import from_recordings
from tests.exchanges.test_protection import Producer
from tests.exchanges.test_okx import Rebuild

URL = "wss://ws.okx.com:8443/ws/v5/public"
REST = "https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400&source=0"
DEPTH = 20


def recorded_books(replays: Path) -> tuple[Recording, list[dict]]:
    recording = load_recordings(replays)["okx"]
    [connection] = recording.connections
    books = []
    for _, frame in connection.received:
        msg = orjson.loads(frame)
        if msg.get("arg", {}).get("channel") == "books" and msg["arg"]["instId"] == "BTC-USDT" \
                and "data" in msg:
            books.append(msg)
    assert books[0]["action"] == "snapshot" and len(books) > 20
    return recording, books


async def serve_okx(recording: Recording, until: Any) -> tuple[list[dict], list[dict], Any]:
    server = ReplayServer({"okx": recording})
    await server.start()
    settings = load_settings({})
    connector = Okx({"BTC-USDT": {"book"}}, Publisher("okx", Producer()), settings)
    session = Session(connector, settings, server.base_url)
    await session.start()
    producer: Producer = connector.out.producer  # type: ignore[assignment]
    try:
        async with asyncio.timeout(20):
            while not until(producer, server):
                await asyncio.sleep(0.05)
    finally:
        await session.stop()
        await server.stop()
    books = [orjson.loads(v) for v, _ in producer.on("orderbook-data.okx")]
    errors = [orjson.loads(v) for v, _ in producer.on("ws.error")]
    return books, errors, server


def top(book: dict) -> tuple[list, list]:
    return [tuple(x) for x in book["bids"]], [tuple(x) for x in book["asks"]]


async def test_2026_form_rest_snapshot_seqid_chaining_and_a_gap(replays: Path) -> None:
    _, recorded = recorded_books(replays)
    # the recorded session, sequenced as OKX does in 2026: snapshot seqId 1000, update i 1000+i
    rebuild = Rebuild()
    states: dict[int, tuple[list, list]] = {}
    texts: dict[int, tuple[list, list]] = {}
    updates = []
    for i, msg in enumerate(recorded):
        data = msg["data"][0]
        if i == 0:
            rebuild.load(data)
        else:
            rebuild.apply(data)
            update = copy.deepcopy(msg)
            update["action"] = "update"
            update["data"][0].update(checksum=0, prevSeqId=999 + i, seqId=1000 + i)
            updates.append(update)
        states[1000 + i] = rebuild.top(DEPTH)
        texts[1000 + i] = rebuild.sorted_text(400)
    last = 1000 + len(recorded) - 1
    gap = len(updates) // 2  # this update never arrives
    del updates[gap]

    def rest_body(seq: int, as_seq: int | None = None) -> str:
        bids, asks = texts[seq]
        return json.dumps({"code": "0", "msg": "", "data": [{
            "asks": [[p, s, "0", "1"] for p, s in asks],
            "bids": [[p, s, "0", "1"] for p, s in bids],
            "ts": "1652459230000", "seqId": seq if as_seq is None else as_seq}]})

    sub = json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]})
    empty = {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot",
             "data": [{"asks": [], "bids": [], "ts": "1652459225000", "checksum": 0,
                       "prevSeqId": -1, "seqId": 999}]}
    frames = [(1.0, json.dumps({"event": "subscribe", "arg": {"channel": "books",
                                                             "instId": "BTC-USDT"}})),
              (1.0, json.dumps(empty))] + [(2.0 + i / 100, json.dumps(u))
                                           for i, u in enumerate(updates)]
    rest = [
        HttpResponse(REST, 1.0, rest_body(1000, as_seq=990)),  # older than the updates: again
        HttpResponse(REST, 2.0, rest_body(1003)),  # covers updates 1001-1003: dropped
        HttpResponse(REST, 3.0, rest_body(1000 + gap + 3)),  # after the gap
    ]
    recording = Recording("okx", rest=rest, connections=[
        WsConnection(URL, 0.5, sent=[(0.6, sub)], received=frames)])

    books, errors, server = await serve_okx(
        recording, lambda p, s: any(orjson.loads(v)["sequence"] == last
                                    for v, _ in p.on("orderbook-data.okx")))
    assert books, "no OKX book was published"
    for book in books:  # every book published equals the rebuild at its seqId
        assert top(book) == states[book["sequence"]], book["sequence"]
    sequences = [b["sequence"] for b in books]
    assert sequences == sorted(sequences)
    assert sequences[0] == 1004  # the first update after the REST snapshot at 1003
    assert 1000 + gap + 1 not in sequences  # the lost update was never published as a book
    assert sequences[-1] == last
    assert any("gap" in e["reason"] for e in errors)  # the gap was reported ...
    assert server._served[("www.okx.com", "/api/v5/market/books",  # ... and REST asked again
                           (("instId", "BTC-USDT"), ("source", "0"), ("sz", "400")))] >= 3


async def test_2022_form_snapshot_in_the_feed_and_checksums(replays: Path) -> None:
    recording, recorded = recorded_books(replays)
    rebuild = Rebuild()
    expected = []
    for msg in recorded:
        data = msg["data"][0]
        if msg["action"] == "snapshot":
            rebuild.load(data)
        else:
            rebuild.apply(data)
        expected.append(rebuild.top(DEPTH))
    okx_only = Recording("okx", rest=recording.rest, connections=recording.connections)
    assert from_recordings({"okx": recording})["okx"]["BTC-USDT"] >= {"book"}
    books, errors, _ = await serve_okx(
        okx_only, lambda p, s: len(p.on("orderbook-data.okx")) >= len(recorded))
    assert [top(b) for b in books] == expected
    assert errors == []
