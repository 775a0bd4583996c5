"""The replay server survives a failed connection and says when a replay is finished: the
real server, the real session and connectors, the recorded sessions of ../shared/replays."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import load_settings
from exchanges import CONNECTORS
from exchanges.publisher import Publisher
from exchanges.session import Session
from replay.recordings import load_recordings
from replay.server import ReplayServer
from replay.subscriptions import from_recordings
from tests.exchanges.test_protection import Producer


def recorded_upbit_trades(replays: Path) -> list[tuple[str, str]]:
    """(market, trade id) of every recorded trade, first sight only: the recording itself
    repeats one trade, as the venue did."""
    [connection] = load_recordings(replays)["upbit"].connections
    ids: dict[tuple[str, str], None] = {}
    for _, frame in connection.received:
        msg = orjson.loads(frame)
        if msg.get("ty") == "trade":
            quote, _, base = msg["cd"].partition("-")
            ids.setdefault((f"{base}-{quote}", str(msg["sid"])), None)
    return list(ids)


async def replay_upbit(replays: Path, settings: Any, cut_after: int,
                       until: Any) -> tuple[Any, ReplayServer, Session]:
    recordings = {"upbit": load_recordings(replays)["upbit"]}
    server = ReplayServer(recordings, cut_after=cut_after)
    await server.start()
    connector = CONNECTORS["upbit"](from_recordings(recordings)["upbit"],
                                    Publisher("upbit", Producer()), settings)
    session = Session(connector, settings, server.base_url)
    await session.start()
    try:
        async with asyncio.timeout(20):
            while not until(server, connector, session):
                await asyncio.sleep(0.05)
    finally:
        await session.stop()
        await server.stop()
    return connector, server, session


def published(connector: Any) -> list[tuple[str, str]]:
    trades = [orjson.loads(v) for v, _ in connector.out.producer.on("trade-data.upbit")]
    return [(t["symbol"], t["trade_id"]) for t in trades]


@pytest.mark.parametrize("cut_after", [1, 40, 150])
async def test_a_first_connection_cut_after_n_frames_still_publishes_every_trade_once(
        replays: Path, cut_after: int) -> None:
    recorded = recorded_upbit_trades(replays)
    assert len(recorded) > 90
    settings = load_settings({"KCS_BACKOFF_INITIAL": "0.1"})
    connector, server, _ = await replay_upbit(
        replays, settings, cut_after,
        lambda server, connector, _: server.finished and len(published(connector)) >= len(
            recorded))
    got = published(connector)
    assert len(got) == len(set(got)) and set(got) == set(recorded)  # each once
    for symbol in {s for s, _ in recorded}:  # in the recorded order, market by market
        assert [t for t in got if t[0] == symbol] == [t for t in recorded if t[0] == symbol]
    assert server.finished


async def test_a_finished_replay_stops_the_feed_instead_of_reconnecting_forever(
        replays: Path, caplog: Any) -> None:
    settings = load_settings({"KCS_BACKOFF_INITIAL": "0.1", "KCS_SILENCE_TIMEOUT": "1"})
    # after the last frame the feed goes silent; the watchdog reconnects once, the server
    # answers "replay finished", and the stream task ends
    _, server, session = await replay_upbit(
        replays, settings, 0, lambda server, _c, session: server.finished and not session.tasks)
    assert "replay finished for wss://api.upbit.com/websocket/v1" in caplog.text
    assert caplog.text.count("connection lost") <= 1
