"""The venues' market lists: read from the recordings through the replay server (the real
answers of seven venues), from documented shapes for the four without a recorded list, and
refused clearly when the list cannot be fetched."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.embedded import free_port
from exchanges import CONNECTORS
from exchanges.listing import Listings, ListingUnavailable
from replay.recordings import load_recordings
from replay.server import ReplayServer
from replay.subscriptions import from_recordings
from tests.support import REPLAYS
from tests.venue import LoopbackVenue

RECORDED = ("upbit", "binance", "okx", "coinbase", "kraken", "bitfinex", "htx")


def test_every_recorded_market_is_listed_and_an_unknown_one_is_not() -> None:
    recordings = load_recordings(REPLAYS)
    subscribed = from_recordings(recordings)

    async def run() -> dict[str, tuple[list[str], list[str]]]:
        server = ReplayServer(recordings)
        await server.start()
        try:
            listings = Listings(replay_base=server.base_url)
            return {name: (await listings.unlisted(name, sorted(subscribed[name])),
                           await listings.unlisted(name, ["BTC-KRW", "NOPE-XYZ"]))
                    for name in RECORDED}
        finally:
            await server.stop()

    found = asyncio.run(run())
    for name in RECORDED:
        assert subscribed[name], name
        recorded_markets, unknown = found[name]
        assert recorded_markets == [], name  # every market the recording holds is listed
        assert "NOPE-XYZ" in unknown, name
    assert found["upbit"][1] == ["NOPE-XYZ"]  # Upbit lists BTC-KRW


@pytest.mark.parametrize("exchange, body, market", [
    ("bybit", {"retCode": 0, "result": {"category": "spot", "list": [
        {"symbol": "BTCUSDT", "baseCoin": "BTC", "quoteCoin": "USDT", "status": "Trading"}]}},
     "BTC-USDT"),
    ("bithumb", [{"market": "KRW-BTC", "korean_name": "비트코인", "english_name": "Bitcoin"}],
     "BTC-KRW"),
    ("coinone", {"result": "success", "markets": [
        {"quote_currency": "KRW", "target_currency": "BTC"}]}, "BTC-KRW"),
    ("korbit", {"success": True, "data": [{"symbol": "btc_krw"}]}, "BTC-KRW"),
])
def test_documented_lists_are_read(exchange: str, body: object, market: str) -> None:
    assert CONNECTORS[exchange].listed(json.loads(json.dumps(body))) == {market}


def test_a_list_that_cannot_be_fetched_is_named_in_the_error() -> None:
    listings = Listings(replay_base=f"http://127.0.0.1:{free_port()}")  # nobody listens
    with pytest.raises(ListingUnavailable, match=r"GET https://api.upbit.com/v1/market/all: "):
        asyncio.run(listings.unlisted("upbit", ["BTC-KRW"]))
    assert listings.cache == {}  # nothing cached: the next command fetches again


def test_the_list_is_cached_and_fetched_again_once_on_a_miss() -> None:
    venue = LoopbackVenue(["KRW-BTC"]).start()
    try:
        listings = Listings(replay_base=venue.base_url)
        unlisted = listings.unlisted
        assert asyncio.run(unlisted("upbit", ["BTC-KRW"])) == []
        assert asyncio.run(unlisted("upbit", ["BTC-KRW"])) == []
        assert venue.listing_requests == 1  # cached
        venue.markets.append("KRW-ETH")  # listed since
        assert asyncio.run(unlisted("upbit", ["ETH-KRW", "NOPE-KRW"])) == ["NOPE-KRW"]
        assert venue.listing_requests == 2  # one fetch for the miss, not one per market
        listings.ttl = 0.0  # expired: fetched before answering, and not again for the miss
        venue.listing_status = 503
        with pytest.raises(ListingUnavailable, match="HTTP 503"):
            asyncio.run(unlisted("upbit", ["BTC-KRW"]))
        assert venue.listing_requests == 3
    finally:
        venue.stop()
