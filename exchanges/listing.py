"""Which markets a venue lists: its public REST market list, cached, for `ws.command`.

A subscribe of a market the venue does not list changes nothing and is refused (README,
`ws.command`). Each connector names its list (`Connector.listing_url`) and reads it
(`Connector.listed`); it is fetched from the REST host the connector uses (the replay server
when replaying, which answers it from the recordings), kept `LISTING_TTL` seconds, and
fetched again once when a market is not in it (a market listed since). A list that cannot be
fetched or read raises `ListingUnavailable`: the caller refuses the command rather than
subscribe a market nobody checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import aiohttp
import orjson

from exchanges import CONNECTORS
from exchanges.session import replay_url

__all__ = ["Listings", "ListingUnavailable", "LISTING_TTL"]

LISTING_TTL = 3600.0  # s: venues list new markets a few times a week
TIMEOUT = 10.0  # s for one fetch: an operator waits on the answer to the command


class ListingUnavailable(Exception):
    """The venue's market list could not be fetched or read."""


class Listings:
    def __init__(self, replay_base: str = "", ttl: float = LISTING_TTL) -> None:
        self.replay_base = replay_base
        self.ttl = ttl
        self.cache: dict[str, tuple[float, set[str]]] = {}  # exchange -> (fetched at, symbols)

    def url(self, exchange: str) -> str | None:
        url = CONNECTORS[exchange].listing_url
        if url is not None and self.replay_base:
            return replay_url(url, self.replay_base)
        return url

    async def unlisted(self, exchange: str, symbols: Iterable[str]) -> list[str]:
        """The symbols the venue does not list (none for a venue without a list)."""
        if self.url(exchange) is None:
            return []
        wanted = list(symbols)
        cached = self.cache.get(exchange)
        fresh = cached is None or time.monotonic() - cached[0] > self.ttl
        listed = await self._fetch(exchange) if fresh else cached[1]  # type: ignore[index]
        missing = [s for s in wanted if s not in listed]
        if missing and not fresh:  # listed since the last fetch? once
            listed = await self._fetch(exchange)
            missing = [s for s in wanted if s not in listed]
        return missing

    async def _fetch(self, exchange: str) -> set[str]:
        url = CONNECTORS[exchange].listing_url  # named in errors: what the operator knows
        target = self.url(exchange)  # where it is fetched from (the replay server, replaying)
        assert url is not None and target is not None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
                async with http.get(target) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise ListingUnavailable(f"GET {url}: HTTP {response.status}")
            listed = CONNECTORS[exchange].listed(orjson.loads(body))
        except ListingUnavailable:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ListingUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ListingUnavailable(f"GET {url}: unreadable market list "
                                     f"({type(exc).__name__}: {exc})") from None
        self.cache[exchange] = (time.monotonic(), listed)
        return listed
