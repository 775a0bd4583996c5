"""The replay server's host aliases: a connector's live URL reaches a recording made under
the host's older name (Coinbase Pro -> Exchange, Bitfinex api -> api-pub)."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from exchanges.replay import HOST_ALIASES, Recording, ReplayServer, WsConnection, replay_url


def _recording(url: str, frames: list[str]) -> Recording:
    connection = WsConnection(url=url, opened_at=1.0,
                              received=[(1.0 + i, f) for i, f in enumerate(frames)])
    return Recording(exchange="x", connections=[connection])


async def _frames(url: str, n: int) -> list[str]:
    async with connect(url) as ws:
        await ws.send("{}")  # the recorded connection had no sent line; harmless
        return [await asyncio.wait_for(ws.recv(), 5) for _ in range(n)]


def test_aliases_name_the_recorded_hosts() -> None:
    assert HOST_ALIASES["ws-feed.exchange.coinbase.com"] == "ws-feed.pro.coinbase.com"
    assert HOST_ALIASES["api-pub.bitfinex.com"] == "api.bitfinex.com"


async def test_live_url_gets_recording_made_under_old_host() -> None:
    recordings = {
        "coinbase": _recording("wss://ws-feed.pro.coinbase.com", ['{"n":1}', '{"n":2}']),
        "bitfinex": _recording("wss://api.bitfinex.com/ws/2", ['[1,"hb"]']),
    }
    server = ReplayServer(recordings)
    await server.start()
    try:
        coinbase = replay_url("wss://ws-feed.exchange.coinbase.com", server.base_url)
        assert await _frames(coinbase, 2) == ['{"n":1}', '{"n":2}']
        bitfinex = replay_url("wss://api-pub.bitfinex.com/ws/2", server.base_url)
        assert await _frames(bitfinex, 1) == ['[1,"hb"]']
        assert server.finished
    finally:
        await server.stop()


async def test_old_host_still_matches_and_each_recording_is_served_once() -> None:
    recordings = {"coinbase": _recording("wss://ws-feed.pro.coinbase.com", ['{"n":1}'])}
    server = ReplayServer(recordings)
    await server.start()
    try:
        old = replay_url("wss://ws-feed.pro.coinbase.com", server.base_url)
        assert await _frames(old, 1) == ['{"n":1}']
        # the alias points at the same queue: a second connection gets nothing
        new = replay_url("wss://WS-FEED.exchange.coinbase.com", server.base_url)
        with pytest.raises(TimeoutError):
            await _frames(new, 1)
    finally:
        await server.stop()
