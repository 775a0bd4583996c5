"""The one L2 order book every connector keeps: price levels per side, kept sorted.

Each level keeps the size as a float and, where the exchange sends text, the original price
and size strings, because checksums (Kraken, OKX, Bitfinex) are defined over that text.
A book knows nothing about sequence rules: connectors decide when a change is valid and call
`clear()` when it is not; `is_crossed()` is the consistency check every exchange gets.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

__all__ = ["L2Book", "Level"]

# size, price text, size text (texts are None when the exchange sent JSON numbers)
Level = tuple[float, str | None, str | None]


class L2Book:
    __slots__ = ("bids", "asks", "sequence", "ts_event", "ready")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()  # ascending: best bid is the last key
        self.asks: SortedDict = SortedDict()  # ascending: best ask is the first key
        self.sequence: int | None = None
        self.ts_event = 0.0
        self.ready = False  # True once a snapshot was loaded and the book is publishable

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.sequence = None
        self.ready = False

    def set_bid(self, price: float, size: float, price_text: str | None = None,
                size_text: str | None = None) -> None:
        if size == 0.0:
            self.bids.pop(price, None)
        else:
            self.bids[price] = (size, price_text, size_text)

    def set_ask(self, price: float, size: float, price_text: str | None = None,
                size_text: str | None = None) -> None:
        if size == 0.0:
            self.asks.pop(price, None)
        else:
            self.asks[price] = (size, price_text, size_text)

    def load_text_levels(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Replace both sides from `[[price_text, size_text, ...], ...]` lists."""
        self.bids.clear()
        self.asks.clear()
        self.apply_text_levels(bids, asks)

    def apply_text_levels(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Apply absolute sizes given as text pairs; a zero size removes the level."""
        for level in bids:
            p, s = level[0], level[1]
            self.set_bid(float(p), float(s), p, s)
        for level in asks:
            p, s = level[0], level[1]
            self.set_ask(float(p), float(s), p, s)

    def best_bid(self) -> float | None:
        return self.bids.peekitem(-1)[0] if self.bids else None

    def best_ask(self) -> float | None:
        return self.asks.peekitem(0)[0] if self.asks else None

    def is_crossed(self) -> bool:
        return bool(self.bids) and bool(self.asks) and self.bids.peekitem(-1)[0] >= \
            self.asks.peekitem(0)[0]

    def top_bids(self, depth: int) -> list[tuple[float, float]]:
        items = self.bids.items()
        return [(p, lv[0]) for p, lv in reversed(items[-depth:])]

    def top_asks(self, depth: int) -> list[tuple[float, float]]:
        return [(p, lv[0]) for p, lv in self.asks.items()[:depth]]

    def text_bids(self, depth: int) -> list[Level]:
        """Best-first levels with their original text, for checksums."""
        return [lv for _, lv in reversed(self.bids.items()[-depth:])]

    def text_asks(self, depth: int) -> list[Level]:
        return [lv for _, lv in self.asks.items()[:depth]]
