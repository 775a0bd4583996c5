"""The venues' market lists: read through the replay server from the recordings (the real
answers of seven venues) and the fixture recordings (documented shapes for the other four),
cached, and refused clearly when the list cannot be fetched."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.embedded import free_port
from exchanges import CONNECTORS
from exchanges.listing import Listings, ListingUnavailable
from replay.recordings import load_recordings
from replay.server import ReplayServer
from replay.subscriptions import from_recordings
from tests.support import FIXTURES, REPLAYS
from tests.venue import LoopbackVenue

RECORDED = ("upbit", "binance", "okx", "coinbase", "kraken", "bitfinex", "htx")
FIXTURE_LISTS = ("bybit", "bithumb", "coinone", "korbit")  # tests/fixtures/replays


def listed_through_replay(directory: Path, names: tuple[str, ...]
                          ) -> dict[str, tuple[list[str], list[str], int]]:
    """Per exchange: its recorded markets missing from its list, of BTC-KRW and NOPE-XYZ
    the ones missing, and how many markets it recorded."""
    recordings = load_recordings(directory)
    subscribed = from_recordings(recordings)

    async def run() -> dict[str, tuple[list[str], list[str], int]]:
        server = ReplayServer(recordings)
        await server.start()
        try:
            listings = Listings(replay_base=server.base_url)
            return {name: (await listings.unlisted(name, sorted(subscribed[name])),
                           await listings.unlisted(name, ["BTC-KRW", "NOPE-XYZ"]),
                           len(subscribed[name]))
                    for name in names}
        finally:
            await server.stop()

    return asyncio.run(run())


@pytest.mark.parametrize("directory, names", [(REPLAYS, RECORDED),
                                              (FIXTURES / "replays", FIXTURE_LISTS)])
def test_every_recorded_market_is_listed_and_an_unknown_one_is_not(
        directory: Path, names: tuple[str, ...]) -> None:
    found = listed_through_replay(directory, names)
    for name in names:
        recorded_missing, unknown, recorded = found[name]
        assert recorded > 0, name
        assert recorded_missing == [], name  # every market the recording holds is listed
        assert "NOPE-XYZ" in unknown, name
    if "upbit" in found:
        assert found["upbit"][1] == ["NOPE-XYZ"]  # Upbit lists BTC-KRW
    if "korbit" in found:
        assert found["korbit"][1] == ["NOPE-XYZ"]


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
        listings = Listings(replay_base=venue.url)
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
