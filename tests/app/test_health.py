"""The health report's feed states, from real sessions (not started: their connection state
is set as the session itself sets it)."""

from __future__ import annotations

from pathlib import Path

from app.health import feed_report
from config.settings import load_settings
from exchanges import CONNECTORS
from exchanges.publisher import Publisher
from exchanges.session import Session


def session_of(exchange: str, symbols: list[str]) -> Session:
    settings = load_settings({}, Path("/x"))
    subs = {s: {"trades", "book", "ticker"} for s in symbols}
    session = Session(CONNECTORS[exchange](subs, Publisher(exchange), settings), settings)
    session.streams = session.connector.connections()
    return session


def test_a_feed_is_connected_only_when_every_stream_is() -> None:
    session = session_of("kraken", ["BTC-USD", "ETH-USD"])
    # two connections, as a connector opens when its markets do not fit on one
    session.streams = streams = session.connector.connections() + session.connector.connections()
    now = 1_000.0
    assert feed_report(session, now)["state"] == "connecting"
    session.connected[id(streams[0])] = False
    assert feed_report(session, now)["state"] == "down"
    for stream in streams:
        session.connected[id(stream)] = True
    report = feed_report(session, now)
    assert report["state"] == "connected" and report["connected"] == len(streams)
    assert report["last_frame_age"] is None and report["last_event_age"] is None
    session.connected[id(streams[-1])] = False
    report = feed_report(session, now)
    assert report["state"] == "degraded" and report["connected"] == 1


def test_ages_of_the_last_frame_and_the_last_exchange_time() -> None:
    session = session_of("upbit", ["BTC-KRW"])
    (stream,) = session.streams
    session.connected[id(stream)] = True
    stream.last_frame = 990.0
    session.connector.out.last_event = 900.0
    report = feed_report(session, 1_000.0)
    assert report["last_frame_age"] == 10.0 and report["last_event_age"] == 100.0
    assert report["streams"] == [{"url": stream.url, "state": "connected", "symbols": 1,
                                  "last_frame_age": 10.0}]
    session.connected[id(stream)] = False
    assert feed_report(session, 1_000.0)["state"] == "down"


def test_a_replay_that_served_everything_is_finished_not_down() -> None:
    session = session_of("kraken", ["BTC-USD"])
    session.streams = streams = session.connector.connections() + session.connector.connections()
    for stream in streams:
        session.connected[id(stream)] = True
    session.connected[id(streams[0])] = False  # the replay server ended this one
    session.finished.add(id(streams[0]))
    report = feed_report(session, 1_000.0)
    assert report["state"] == "connected"
    assert [s["state"] for s in report["streams"]] == ["finished", "connected"]
    session.connected[id(streams[1])] = False
    session.finished.add(id(streams[1]))
    assert feed_report(session, 1_000.0)["state"] == "finished"
    session.finished.clear()  # the same streams merely closed: an outage
    assert feed_report(session, 1_000.0)["state"] == "down"
