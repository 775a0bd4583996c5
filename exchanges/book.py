"""The one L2 order book every connector keeps: price levels per side, kept sorted.

Each level keeps the size as a float and, where the exchange sends text, the original price
and size strings, because checksums (Kraken, OKX, Bitfinex) are defined over that text.
A book knows nothing about sequence rules: connectors decide when a change is valid and call
`clear()` when it is not; `is_crossed()` is the consistency check every exchange gets.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from sortedcontainers import SortedDict

from exchanges.values import INF, BadValue

__all__ = ["L2Book", "Level", "BookSide", "is_ordered", "crossed", "snapshot_fault",
           "first_levels", "check_levels"]

# size, price text, size text (texts are None when the exchange sent JSON numbers)
Level = tuple[float, str | None, str | None]


class BookSide(SortedDict):
    """One side of a book (price -> Level), remembering its published top N.

    Most changes land below the top N (deep levels of a 1000-level book), so the top-N
    list is rebuilt only when a change reaches into it. Every mutator invalidates, so
    code that edits the side directly stays correct.
    """

    def __init__(self, descending: bool) -> None:
        super().__init__()
        self.descending = descending  # bids: the best price is the highest
        self.top: list[tuple[float, float]] | None = None
        self.top_depth = 0

    def _touch(self, price: float) -> None:
        top = self.top
        if top is not None and (len(top) < self.top_depth or (
                price >= top[-1][0] if self.descending else price <= top[-1][0])):
            self.top = None

    def __setitem__(self, price: float, level: Level) -> None:
        self._touch(price)
        super().__setitem__(price, level)

    def __delitem__(self, price: float) -> None:
        self._touch(price)
        super().__delitem__(price)

    def pop(self, price: float, *default: object) -> object:  # type: ignore[override]
        self._touch(price)
        return super().pop(price, *default)

    def popitem(self, index: int = -1) -> tuple[float, Level]:
        self.top = None
        return super().popitem(index)

    def clear(self) -> None:
        self.top = None
        super().clear()

    def update(self, *args: object, **kwargs: object) -> None:
        self.top = None
        super().update(*args, **kwargs)

    def setdefault(self, price: float, level: Level | None = None) -> object:  # type: ignore
        self._touch(price)
        return super().setdefault(price, level)

    def best(self, depth: int) -> list[tuple[float, float]]:
        """The best `depth` levels as (price, size), best first; cached until touched."""
        top = self.top
        if top is None or self.top_depth != depth:
            get = dict.__getitem__  # the plain dict lookup, without SortedDict's item view
            if self.descending:
                top = [(p, get(self, p)[0]) for p in reversed(self.keys()[-depth:])]
            else:
                top = [(p, get(self, p)[0]) for p in self.keys()[:depth]]
            self.top = top
            self.top_depth = depth
        return top


def is_ordered(levels: list[tuple[float, float]], descending: bool) -> bool:
    """True when prices strictly improve towards the front, as a side of a book must: a full
    book message that breaks it is not published (its best level could be the worst)."""
    if descending:
        return all(a[0] > b[0] for a, b in pairwise(levels))
    return all(a[0] < b[0] for a, b in pairwise(levels))


def crossed(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> str | None:
    """Why a book whose sides are listed best first cannot be right (its best bid at or
    above its best ask), or None."""
    if bids and asks and bids[0][0] >= asks[0][0]:
        return f"crossed book: bid {bids[0][0]} >= ask {asks[0][0]}"
    return None


def snapshot_fault(bids: list[tuple[float, float]], asks: list[tuple[float, float]]
                   ) -> str | None:
    """Why a full book message cannot be published as it is (crossed, or a side out of
    price order), or None."""
    fault = crossed(bids, asks)
    if fault is None and not (is_ordered(bids, True) and is_ordered(asks, False)):
        fault = "book side out of price order"
    return fault


def check_levels(*sides: list[tuple[float, float]]) -> None:
    """BadValue unless every level of a full book message (not kept in an L2Book, whose
    setters check) has a finite price and size above 0; where such a message is parsed."""
    for side in sides:
        for price, size in side:
            if not (0.0 < price < INF and 0.0 < size < INF) or type(price) is bool or \
                    type(size) is bool:
                if type(price) is bool or type(size) is bool:
                    raise BadValue("book level", (price, size), "type")
                _reject(price, size)


def first_levels(levels: Iterable[dict], depth: int) -> list[tuple[float, float]]:
    """The first `depth` non-zero `{"price": .., "qty": ..}` levels as (price, size): a full
    book message's side, padded or zero levels (not orders) left out."""
    out: list[tuple[float, float]] = []
    for level in levels:
        price, size = float(level["price"]), float(level["qty"])
        if not (0.0 <= price < INF and 0.0 <= size < INF):
            _reject(price, size)
        if price and size:
            out.append((price, size))
            if len(out) == depth:
                break
    return out


def _reject(price: float, size: float) -> None:
    """Raise BadValue for a level whose price is not finite and above 0, or whose size is not
    finite and 0 or more (a size 0 deletes a level: it is a meaningful value)."""
    if not 0.0 < price < INF:
        raise BadValue("book price", price, _why(price))
    raise BadValue("book size", size, _why(size))


def _why(value: float) -> str:
    if value != value:
        return "nan"
    if value in (INF, -INF):
        return "infinite"
    return "negative" if value < 0.0 else "zero"


def _levels(levels: list[list[str]]) -> dict[float, Level]:
    out = {}
    for level in levels:
        p, s = level[0], level[1]
        price, size = float(p), float(s)
        if not (0.0 < price < INF and 0.0 <= size < INF):
            _reject(price, size)
        if size != 0.0:
            out[price] = (size, p, s)
    return out


class L2Book:
    __slots__ = ("bids", "asks", "sequence", "ts_event", "ready")

    def __init__(self) -> None:
        self.bids = BookSide(descending=True)  # ascending keys: best bid is the last key
        self.asks = BookSide(descending=False)  # ascending keys: best ask is the first key
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
        """Set a level (size 0 deletes it). A bad price or size raises BadValue and drops the
        whole book: the message that carried it was only partly applied."""
        if not (0.0 < price < INF and 0.0 <= size < INF):
            self._drop(price, size)
        if size == 0.0:
            self.bids.pop(price, None)
        else:
            self.bids[price] = (size, price_text, size_text)

    def set_ask(self, price: float, size: float, price_text: str | None = None,
                size_text: str | None = None) -> None:
        if not (0.0 < price < INF and 0.0 <= size < INF):
            self._drop(price, size)
        if size == 0.0:
            self.asks.pop(price, None)
        else:
            self.asks[price] = (size, price_text, size_text)

    def _drop(self, price: float, size: float) -> None:
        """A bad level in a message that is only partly applied: the book cannot be proven
        any more. Clear it and raise BadValue naming the book (the session has the connector
        resync it)."""
        self.clear()
        try:
            _reject(price, size)
        except BadValue as exc:
            exc.book = self
            raise

    def load_text_levels(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Replace both sides from `[[price_text, size_text, ...], ...]` lists (a snapshot:
        one bulk insert per side, much faster than level by level on 1000-level books)."""
        new_bids, new_asks = _levels(bids), _levels(asks)  # BadValue before any change
        self.bids.clear()
        self.asks.clear()
        self.bids.update(new_bids)
        self.asks.update(new_asks)

    def apply_text_levels(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Apply absolute sizes given as text pairs; a zero size removes the level."""
        for level in bids:
            p, s = level[0], level[1]
            self.set_bid(float(p), float(s), p, s)  # BadValue: the book is dropped
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
        """Best first. The list is shared until the top changes: do not modify it."""
        return self.bids.best(depth)

    def top_asks(self, depth: int) -> list[tuple[float, float]]:
        return self.asks.best(depth)

    def text_bids(self, depth: int) -> list[Level]:
        """Best-first levels with their original text, for checksums."""
        return [lv for _, lv in reversed(self.bids.items()[-depth:])]

    def text_asks(self, depth: int) -> list[Level]:
        return [lv for _, lv in self.asks.items()[:depth]]
