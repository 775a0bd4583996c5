"""The one L2 order book every connector keeps: price levels per side, kept sorted.

Each level keeps the size as a float and, where the exchange sends text, the original price
and size strings, because checksums (Kraken, OKX, Bitfinex) are defined over that text.
A book knows nothing about sequence rules: connectors decide when a change is valid and call
`clear()` when it is not; `is_crossed()` is the consistency check every exchange gets.

Speed: where the compiled modules run (exchanges/_native.py), a side is `exchanges/_book.c`:
one C array of levels sorted by key (price for bids, -price for asks, so the best level is last
and a change near the top moves the fewest entries), found by binary search, sizes as C
doubles, the exchange's strings kept by reference; text is parsed to the float `float(text)`
gives in C, Kraken's checksum is computed from the kept strings with no Python object built
(`digits_crc32`), and the (price, size) and Level tuples are built once per level. That took
Kraken's recorded pass (depth-1000 books, a checksum on every update) from 1.14-1.18x to
2.46-2.73x cryptofeed's msg/s and from 9.4-9.9x to 3.6-3.7x its decode floor (bench/parse.py
--rounds 3, two back-to-back pairs before/after at load 3.5-4.1, 2026-11-30): CPython's object
work around the Python side (dict, key list, float boxing, checksum text rebuilt as strings)
was the cost, which compiling this module with mypyc could not remove. Then reading text 8
digits at a time, keeping each side's checksum CRC (continued with zlib's crc32_combine) and
Kraken's checksum in one call took it from 3.10-3.30x to 3.69-3.85x cryptofeed's msg/s and
from 3.65-3.97x to 3.13-3.35x its decode floor (same bench, two alternating pairs, same day).
`BookSide` below is the same side in Python: the fallback where nothing compiles
(`KORCOIN_PURE_PYTHON=1`, no compiler), and the reference the C side is tested against
(tests/exchanges/test_book.py: every operation at random, both sides, same answers). It is a
dict (price -> level) plus one flat list of its prices, sorted so that the best price is last,
kept in order with `bisect`.
Libraries measured and not used: a tree of Python objects (sortedcontainers), and the
`order-book` package 0.6.1 (the last one for Python 3.11), which sorts on read: on a 1000-level
side, random updates near the top each followed by the Kraken checksum and a top-20 read, min
of 15 alternating passes in one process, order-book 13.5 us per update, the Python side 9.5 us,
and order-book needs Decimal keys to keep the text a checksum is computed from. Each side
remembers how close to the best level a change came since it was last asked (`touched`,
`look()`), so connectors build and publish the top-N record only after a change within the top
N (`changed_top`); the top-N list is never edited once handed out (records hold it).
"""

from __future__ import annotations

import importlib
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from typing import Any, Protocol

from exchanges import _native
from exchanges.values import INF, BadValue

__all__ = ["L2Book", "Level", "BookSide", "Side", "new_side", "max_float", "interleaved_crc32",
           "digits_checksum", "is_ordered", "crossed", "crossed_reason", "snapshot_fault",
           "first_levels", "check_levels", "counted_tokens"]

# size, price text, size text (texts are None when the exchange sent JSON numbers)
Level = tuple[float, str | None, str | None]

UNTOUCHED = 1 << 62  # `touched` when no change reached any level since the last look


class Side(Protocol):
    """What a book side offers: `BookSide` below, or the same in C (`exchanges/_book.c`)."""

    touched: int

    def __len__(self) -> int: ...
    def __contains__(self, price: float) -> bool: ...
    def __getitem__(self, price: float) -> Level: ...
    def set(self, price: float, level: Level) -> None: ...
    def put(self, price: float, size: float, price_text: str | None,
            size_text: str | None) -> None: ...
    def pop(self, price: float, default: object = None) -> object: ...
    def truncate(self, depth: int) -> None: ...
    def clear(self) -> None: ...
    def load(self, levels: dict[float, Level]) -> None: ...
    def load_text(self, levels: Sequence[Sequence[str]]) -> tuple[float, float] | None: ...
    def apply_text(self, levels: Sequence[Sequence[str]]) -> tuple[float, float] | None: ...
    def take(self, other: Any) -> None: ...
    def best_price(self) -> float | None: ...
    def best(self, depth: int) -> list[tuple[float, float]]: ...
    def text(self, depth: int) -> list[Level]: ...
    def items(self) -> list[tuple[float, Level]]: ...
    def digits_crc32(self, depth: int, crc: int) -> int: ...
    def look(self, depth: int) -> bool: ...


@lru_cache(maxsize=1 << 16)
def _level_digits(level: Level) -> str:
    """A level's part of Kraken's checksum input: its price then size text, each with the
    decimal point and leading zeros removed. Cached by level: the same levels come back in
    the top 10 message after message."""
    return (level[1].replace(".", "").lstrip("0") +  # type: ignore[union-attr]
            level[2].replace(".", "").lstrip("0"))  # type: ignore[union-attr]


class BookSide:
    """One side of a book: price -> Level, and the prices sorted with the best last.

    `keys` holds sort keys, not prices: the price itself for bids (highest is best) and the
    negated price for asks (lowest is best), so the best level is `keys[-1]` on both sides
    and changes near the top move the fewest list slots. Negation is exact for floats.
    """

    __slots__ = ("levels", "keys", "sign", "top", "top_depth", "shared", "touched",
                 "crc_depth", "crc_start", "crc_value")

    def __init__(self, descending: bool) -> None:
        self.levels: dict[float, Level] = {}
        self.keys: list[float] = []  # ascending sort keys: the best price is last
        self.sign = 1.0 if descending else -1.0  # key = price * sign (and price = key * sign)
        # The best `top_depth` levels as (price, size), kept in step with every change (a
        # change at rank r edits slot r instead of rebuilding the list); None: rebuild.
        self.top: list[tuple[float, float]] | None = None
        self.top_depth = 0
        self.shared = False  # `top` was handed out (records hold it): copy before editing
        self.touched = 0  # rank (0 = best) of the best level changed since the last look
        # The last digits_crc32: over the best crc_depth levels (0: none kept) from crc_start.
        self.crc_depth = 0
        self.crc_start = self.crc_value = 0

    def __len__(self) -> int:
        return len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __contains__(self, price: float) -> bool:
        return price in self.levels

    def __getitem__(self, price: float) -> Level:
        return self.levels[price]

    def _own_top(self) -> list[tuple[float, float]]:
        top = self.top
        if self.shared:
            top = self.top = top.copy()  # type: ignore[union-attr]
            self.shared = False
        return top  # type: ignore[return-value]

    def put(self, price: float, size: float, price_text: str | None,
            size_text: str | None) -> None:
        self.set(price, (size, price_text, size_text))

    def set(self, price: float, level: Level) -> None:
        """Add or replace the level at `price` (a non-zero size)."""
        keys = self.keys
        i = bisect_left(keys, price * self.sign)
        levels = self.levels
        if price in levels:
            levels[price] = level
            rank = len(keys) - 1 - i
            if rank < self.top_depth and self.top is not None:
                self._own_top()[rank] = (price, level[0])
        else:
            keys.insert(i, price * self.sign)
            levels[price] = level
            rank = len(keys) - 1 - i
            if rank < self.top_depth and self.top is not None:
                top = self._own_top()
                top.insert(rank, (price, level[0]))
                if len(top) > self.top_depth:
                    top.pop()
        if rank < self.touched:
            self.touched = rank
        if rank < self.crc_depth:
            self.crc_depth = 0

    def pop(self, price: float, default: object = None) -> object:
        """Remove the level at `price`; its Level, or `default` when there was none."""
        levels = self.levels
        level = levels.pop(price, None)
        if level is None:
            return default
        keys = self.keys
        i = bisect_left(keys, price * self.sign)
        del keys[i]
        rank = len(keys) - i
        depth = self.top_depth
        if rank < depth and self.top is not None:
            top = self._own_top()
            del top[rank]
            if len(keys) >= depth:  # the level that moves up into the top
                p = keys[-depth] * self.sign
                top.append((p, levels[p][0]))
        if rank < self.touched:
            self.touched = rank
        if rank < self.crc_depth:
            self.crc_depth = 0
        return level

    def truncate(self, depth: int) -> None:
        """Keep the best `depth` levels (the server's own book ends there)."""
        keys = self.keys
        extra = len(keys) - depth
        if extra > 0:
            levels, sign = self.levels, self.sign
            for key in keys[:extra]:
                del levels[key * sign]
            del keys[:extra]
            top = self.top
            if top is not None and len(top) > depth:
                del self._own_top()[depth:]
            if depth < self.touched:
                self.touched = depth
            if depth < self.crc_depth:
                self.crc_depth = 0

    def clear(self) -> None:
        self.levels.clear()
        self.keys.clear()
        self.top = None
        self.shared = False
        self.touched = 0
        self.crc_depth = 0

    def load(self, levels: dict[float, Level]) -> None:
        """Replace the side (a snapshot): one sort instead of a bisect per level."""
        self.levels = levels
        sign = self.sign
        self.keys = sorted(levels) if sign > 0 else sorted([-p for p in levels])
        self.top = None
        self.shared = False
        self.touched = 0
        self.crc_depth = 0

    def load_text(self, levels: Sequence[Sequence[str]]) -> tuple[float, float] | None:
        """Replace the side from `[[price_text, size_text, ...], ...]` (zero sizes left out,
        a repeated price's last level kept); None, or the first level (price, size) that is
        not a finite price above 0 and a finite size of 0 or more, the side left as it was."""
        out: dict[float, Level] = {}
        for level in levels:
            p, s = level[0], level[1]
            price, size = _number(p), _number(s)
            if not (0.0 < price < INF and 0.0 <= size < INF):
                return price, size
            if size != 0.0:
                out[price] = (size, p, s)
        self.load(out)
        return None

    def apply_text(self, levels: Sequence[Sequence[str]]) -> tuple[float, float] | None:
        """Apply absolute sizes given as text pairs in order (a zero size removes the level);
        None, or the first bad level (see `load_text`), the levels before it applied."""
        for level in levels:
            p, s = level[0], level[1]
            price, size = _number(p), _number(s)
            if not (0.0 < price < INF and 0.0 <= size < INF):
                return price, size
            if size == 0.0:
                self.pop(price)
            else:
                self.set(price, (size, p, s))
        return None

    def take(self, other: Any) -> None:
        """Take the levels of `other` (a side of the same kind, emptied)."""
        self.levels, self.keys = other.levels, other.keys
        other.levels, other.keys = {}, []
        other.clear()
        self.top = None
        self.shared = False
        self.touched = 0
        self.crc_depth = 0

    def look(self, depth: int) -> bool:
        """True when a change reached the best `depth` levels since the last look (or since
        the side was cleared or loaded); starts a new watch."""
        changed = self.touched < depth
        self.touched = UNTOUCHED
        return changed

    def digits_crc32(self, depth: int, crc: int) -> int:
        """`zlib.crc32` continued from `crc` over the best `depth` levels' price then size
        text, each with the decimal point and leading zeros removed (Kraken's checksum). The
        last one is kept until a change reaches those levels (an untouched side's, Kraken)."""
        if depth > 0 and depth == self.crc_depth and crc == self.crc_start:
            return self.crc_value
        value = zlib.crc32("".join(map(_level_digits, self.text(depth))).encode(), crc)
        self.crc_depth, self.crc_start, self.crc_value = max(depth, 0), crc, value
        return value

    def best_price(self) -> float | None:
        keys = self.keys
        return keys[-1] * self.sign if keys else None

    def best(self, depth: int) -> list[tuple[float, float]]:
        """The best `depth` levels as (price, size), best first; the same list object until
        a change reaches it (do not modify it: records share it)."""
        top = self.top
        if top is None or self.top_depth != depth:
            levels, best = self.levels, self._best_keys(depth)
            if self.sign > 0:
                top = [(p, levels[p][0]) for p in best]
            else:
                top = [(-k, levels[-k][0]) for k in best]
            self.top = top
            self.top_depth = depth
        self.shared = True
        return top

    def text(self, depth: int) -> list[Level]:
        """The best `depth` levels with their original text, best first (for checksums)."""
        levels, best = self.levels, self._best_keys(depth)
        if self.sign > 0:
            return [levels[p] for p in best]
        return [levels[-k] for k in best]

    def _best_keys(self, depth: int) -> list[float]:
        """The best `depth` sort keys, best first (none for a depth of 0 or less)."""
        return self.keys[:-depth - 1:-1] if depth > 0 else []

    def items(self) -> list[tuple[float, Level]]:
        """Every level, best first."""
        levels, sign = self.levels, self.sign
        return [(k * sign, levels[k * sign]) for k in reversed(self.keys)]


def _number(value: Any) -> float:
    """float(value), but a bool is refused as the C side refuses it: float(False) is 0.0, and
    a JSON false where a size belongs would delete a level."""
    if type(value) is bool:
        raise TypeError(f"not a number: {value!r}")
    return float(value)


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
        return crossed_reason(bids, asks)
    return None


def crossed_reason(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> str:
    """`crossed()`'s reason, where the caller found the best bid at or above the best ask."""
    return f"crossed book: bid {bids[0][0]} >= ask {asks[0][0]}"


def snapshot_fault(bids: list[tuple[float, float]], asks: list[tuple[float, float]]
                   ) -> str | None:
    """Why a full book message cannot be published as it is (crossed, or a side out of
    price order), or None."""
    fault = crossed(bids, asks)
    if fault is None and not (is_ordered(bids, True) and is_ordered(asks, False)):
        fault = "book side out of price order"
    return fault


def check_levels(*sides: list[tuple[Any, Any]]) -> None:
    """BadValue unless every level of a full book message (not kept in an L2Book, whose
    setters check) has a finite price and size above 0; where such a message is parsed.
    Levels untyped: compiled, a level read as float would turn a bool into 1.0 unseen."""
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


def _max_float(levels: Sequence[Sequence[Any]], index: int, start: float | None
               ) -> float | None:
    best = start
    for level in levels:
        value = float(level[index])
        if best is None or value > best:
            best = value
    return best


def _interleaved_crc32(book: L2Book, depth: int) -> int:
    bids, asks = book.text_bids(depth), book.text_asks(depth)
    parts: list[str | None] = []
    for (_, bid_price, bid_size), (_, ask_price, ask_size) in zip(bids, asks, strict=False):
        parts += (bid_price, bid_size, ask_price, ask_size)
    for _, price, size in bids[len(asks):] or asks[len(bids):]:  # the longer side's rest
        parts += (price, size)
    crc = zlib.crc32(":".join(parts).encode())  # type: ignore[arg-type]
    return crc - 0x100000000 if crc & 0x80000000 else crc


def counted_tokens(text: str, levels: int) -> list[str]:
    """A counted snapshot's number tokens as written (`load_counted`), three per level
    (PRICE, COUNT, AMOUNT): the text between the first `[[` and the `]]` after it, its `],[`
    separators replaced by commas, split at commas (two C passes; a regex took 3x as long).
    Exactly `levels - 1` separators and three tokens per level, or ValueError: a nested or
    missing value shows in one count or the other."""
    if levels == 0:
        return []
    start = text.find("[[") + 2
    end = text.find("]]", start) if start >= 2 else -1
    inner = text[start:end]
    joined = inner.replace("],[", ",")
    tokens = joined.split(",")
    if end < 0 or len(tokens) != 3 * levels or len(joined) != len(inner) - 2 * (levels - 1):
        raise ValueError(f"book snapshot text is not {levels} levels of 3 numbers")
    return tokens


def _counted_number(value: object) -> float:
    """A decoded number that is not a float: an int as the float `float(text)` also gives;
    anything else (true, a string, null) is refused."""
    if type(value) is int:
        return float(value)
    raise ValueError(f"book value {value!r}")


def _load_counted(bids: Side, asks: Side, text: str, levels: Any) -> tuple[float, float] | None:
    """Replace both sides from a book snapshot written `[[PRICE,COUNT,AMOUNT],...]`
    (Bitfinex's); `levels` is the list decoded from `text`. The numbers are the decoded ones
    (orjson's parse is correctly rounded: the float `float(text)` gives), the price and
    amount texts kept are cut from `text` (`counted_tokens`). A level whose AMOUNT text
    starts with `-` is an ask of size -AMOUNT, any other a bid; COUNT 0 or AMOUNT 0 deletes
    the price from its side as sent so far, and a price sent twice keeps its last level.
    Both sides are emptied first. ValueError for a text or level not of that shape (a COUNT
    that is no int, a value that is no number); the first other level, in the order sent,
    that is not a finite price and size above 0 is returned as (price, size), the sides left
    empty; else None. exchanges/_book.c's `load_counted` is the same in C."""
    bids.clear()
    asks.clear()
    if type(levels) is not list:
        raise ValueError(f"book message {levels!r}")
    tokens = counted_tokens(text, len(levels))
    new_bids: dict[float, Level] = {}
    new_asks: dict[float, Level] = {}
    i = 0
    for level in levels:
        if type(level) is not list or len(level) != 3:
            raise ValueError(f"book level {level!r}")
        p, count, a = level[0], level[1], level[2]
        price = p if type(p) is float else _counted_number(p)
        amount = a if type(a) is float else _counted_number(a)
        amount_text = tokens[i + 2]
        if type(count) is not int:
            raise ValueError(f"book level count {count!r}")
        ask = amount_text.startswith("-")
        side = new_asks if ask else new_bids
        size = -amount if ask else amount
        if count == 0 or size == 0.0:
            side.pop(price, None)
        elif not (0.0 < price < INF and 0.0 < size < INF):
            return price, size
        else:
            side[price] = (size, tokens[i], amount_text)
        i += 3
    bids.load(new_bids)
    asks.load(new_asks)
    return None


def _apply_counted(bids: Side, asks: Side, text: str, update: list
                   ) -> tuple[float, float] | None:
    """Apply one book update written `[CHAN_ID,[PRICE,COUNT,AMOUNT],SEQ]` (Bitfinex's),
    `update` its decoded inner list. The numbers are the ones orjson decoded (correctly
    rounded: the float `float(text)` gives; parsing the tokens again cost 2.5x the cutting),
    the texts are cut from the frame at the inner array's two commas (three decoded numbers
    have exactly those). An AMOUNT text that starts with `-` is the asks' (size -AMOUNT), any
    other the bids'; COUNT 0 removes the price from that side, else its level is set (a
    size 0 removes it too). The count decides a deletion, so its text must be the decoded
    integer's where it deletes; a value that is no number, or a count that is no integer,
    refuses the update (ValueError, nothing changed). Returns None, or the (price, size) of
    a level that is not a finite price above 0 and a finite size of 0 or more (nothing
    changed). exchanges/_book.c's `apply_counted` is the same in C."""
    if len(update) != 3:
        raise ValueError(f"book update of {len(update)} fields: {update}")
    p, count, a = update[0], update[1], update[2]
    price = p if type(p) is float else _counted_number(p)
    amount = a if type(a) is float else _counted_number(a)
    start = text.find("[", 1) + 1
    first = text.find(",", start)
    second = text.find(",", first + 1)
    close = text.find("]", second) if second >= 0 else -1
    if start <= 0 or first < 0 or second < 0 or close < 0:  # not with two numbers decoded
        raise ValueError(f"book update text {text!r}")
    deletes = second == first + 2 and text[first + 1] == "0"  # the count's text is "0"
    if type(count) is not int or deletes != (count == 0):
        raise ValueError(f"book update count {text[first + 1:second]!r} is not {count!r}")
    ask = text[second + 1] == "-"  # the amount's first character (`close` is after it)
    side = asks if ask else bids
    if not deletes:
        size = -amount if ask else amount
        if not (0.0 < price < INF and 0.0 <= size < INF):
            return price, size
        if size != 0.0:
            side.put(price, size, text[start:first], text[second + 1:close])
            return None
    side.pop(price)
    return None


def _changed_top(bids: Side, asks: Side, depth: int
                 ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]] | None:
    """None when no change reached the best `depth` levels of either side since they last
    looked, else both sides' best `depth` levels (`best`); both sides look (each starts a new
    watch). exchanges/_book.c's `changed_top` is the same in C."""
    bids_changed = bids.look(depth)
    if not asks.look(depth) and not bids_changed:
        return None
    return bids.best(depth), asks.best(depth)


def _c_book() -> Any:
    """exchanges/_book.c's module where the compiled modules run, else None: it is part of
    the same build, so pure means none of it (exchanges/_native.py)."""
    if _native.state() != "compiled":
        return None
    return importlib.import_module("exchanges._book")


_C: Any = _c_book()

# max_float(levels, index, start): the largest float(level[index]) of `levels` and `start`
# (None: the first level's), a later value taking over only when greater, as max() does.
max_float: Any = _C.max_float if _C is not None else _max_float

# What L2Book builds its sides with: the C side where built (why and what it gained: the module
# docstring), else the Python one.
SIDE_TYPE: Any = _C.BookSide if _C is not None else BookSide


def interleaved_crc32(book: L2Book, depth: int) -> int:
    """The signed CRC32 of `bidPrice:bidSize:askPrice:askSize:...` over the best `depth`
    levels' original text, level by level, the longer side going on alone: OKX's checksum,
    and Bitfinex's (whose ask size text is the negative amount it sent). In C where built."""
    if _C is not None:
        crc: int | None = _C.interleaved_crc32(book.bids, book.asks, depth)
        if crc is not None:
            return crc
    return _interleaved_crc32(book, depth)  # no C, or a text that is not ASCII: Python's


# A Bitfinex snapshot or update, in C where built: `_load_counted` and `_apply_counted`, or
# their C twins, which read ASCII text only and answer NotImplemented for any other (the
# caller then runs the Python twin). Why: the L2Book methods below.
_LOAD_COUNTED: Any = _C.load_counted if _C is not None else _load_counted
_APPLY_COUNTED: Any = _C.apply_counted if _C is not None else _apply_counted
_CHANGED_TOP: Any = _C.changed_top if _C is not None else _changed_top

# asks_bids_digits_crc32(asks, bids, depth): `digits_checksum` in one C call, where built.
_ASKS_BIDS_DIGITS_CRC32: Any = _C.asks_bids_digits_crc32 if _C is not None else None


def digits_checksum(book: L2Book, depth: int) -> int:
    """CRC32 (unsigned) of the best `depth` asks then the best `depth` bids, each level its
    price then size text with the decimal point and leading zeros removed (Kraken's
    checksum): `bids.digits_crc32(depth, asks.digits_crc32(depth, 0))`, in one C call where
    built (two calls and the int between them were ~60 ns of Kraken's ~2 us update)."""
    if _ASKS_BIDS_DIGITS_CRC32 is not None:
        crc: int = _ASKS_BIDS_DIGITS_CRC32(book.asks, book.bids, depth)
        return crc
    return book.bids.digits_crc32(depth, book.asks.digits_crc32(depth, 0))


def new_side(descending: bool) -> Side:
    side: Side = SIDE_TYPE(descending)
    return side


class L2Book:
    __slots__ = ("bids", "asks", "sequence", "ts_event", "ready")

    def __init__(self) -> None:
        self.bids: Side = new_side(True)
        self.asks: Side = new_side(False)
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
            self.bids.pop(price)
        else:
            self.bids.put(price, size, price_text, size_text)

    def set_ask(self, price: float, size: float, price_text: str | None = None,
                size_text: str | None = None) -> None:
        if not (0.0 < price < INF and 0.0 <= size < INF):
            self._drop(price, size)
        if size == 0.0:
            self.asks.pop(price)
        else:
            self.asks.put(price, size, price_text, size_text)

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

    def load_text_levels(self, bids: Sequence[Sequence[str]],
                         asks: Sequence[Sequence[str]]) -> None:
        """Replace both sides from `[[price_text, size_text, ...], ...]` lists (a snapshot:
        one sort per side, much faster than level by level on 1000-level books)."""
        new_bids, new_asks = new_side(True), new_side(False)
        for side, levels in ((new_bids, bids), (new_asks, asks)):
            bad = side.load_text(levels)
            if bad is not None:
                _reject(bad[0], bad[1])  # BadValue before any change
        self.bids.take(new_bids)
        self.asks.take(new_asks)

    def load_counted(self, text: str, levels: Any) -> None:
        """Replace both sides from a snapshot written `[[PRICE,COUNT,AMOUNT],...]`, the list
        `levels` decoded from `text` (Bitfinex's; `_load_counted` has the rules). The book
        is cleared first: a level that is not a finite price and size above 0 raises
        BadValue and drops it, a text or level of another shape raises ValueError. In C
        where built: cutting the tokens and loading a recorded ~190-level snapshot took
        52 us in the compiled Python (replace, split, two dicts of Level tuples, a check
        loop), 22 us in C (timeit, 2026-11-30)."""
        self.clear()
        bad = _LOAD_COUNTED(self.bids, self.asks, text, levels)
        if bad is NotImplemented:
            bad = _load_counted(self.bids, self.asks, text, levels)
        if bad is not None:
            self._drop(bad[0], bad[1])

    def apply_counted(self, text: str, update: list) -> None:
        """Apply one update written `[CHAN_ID,[PRICE,COUNT,AMOUNT],SEQ]`, the inner list
        `update` decoded from `text` (Bitfinex's; `_apply_counted` has the rules). A level
        that is not a finite price above 0 and a finite size raises BadValue and drops the
        book; an update of another shape raises ValueError, the book left as it was. In
        C where built: the cutting and setting took 0.24 us of a recorded update's 1.42 us
        `on_frame` in the compiled Python, which went to 1.13 us (bench/parse.py's frames,
        2026-11-30)."""
        bad = _APPLY_COUNTED(self.bids, self.asks, text, update)
        if bad is not None:
            if bad is NotImplemented:
                bad = _apply_counted(self.bids, self.asks, text, update)
                if bad is None:
                    return
            self._drop(bad[0], bad[1])

    def apply_text_levels(self, bids: Sequence[Sequence[str]],
                          asks: Sequence[Sequence[str]]) -> None:
        """Apply absolute sizes given as text pairs; a zero size removes the level."""
        bad = self.bids.apply_text(bids)
        if bad is None:
            bad = self.asks.apply_text(asks)
        if bad is not None:
            self._drop(bad[0], bad[1])  # BadValue: the book is dropped

    def apply_side_text(self, side: Side, levels: Sequence[Sequence[str]]) -> None:
        """`apply_text_levels` for one side (`self.bids` or `self.asks`): a venue whose update
        names one side (Kraken) makes one call instead of one per side."""
        bad = side.apply_text(levels)
        if bad is not None:
            self._drop(bad[0], bad[1])  # BadValue: the book is dropped

    def apply_sided_levels(self, changes: Sequence[Sequence[str]], bid: str) -> None:
        """Apply `[[side, price_text, size_text], ...]` in order (Coinbase's `changes`), where
        a side equal to `bid` names the bids and any other the asks; a zero size removes the
        level. One call per message instead of two per level: Coinbase's l2update path is
        mostly this loop and the record."""
        bids, asks = self.bids, self.asks
        for side, p, s in changes:
            price, size = float(p), float(s)
            if not (0.0 < price < INF and 0.0 <= size < INF):
                self._drop(price, size)  # BadValue: the book is dropped
            if size == 0.0:
                (bids if side == bid else asks).pop(price)
            else:
                (bids if side == bid else asks).put(price, size, p, s)

    def changed_top(self, depth: int
                    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]] | None:
        """The top `depth` bids and asks when a change reached them on either side since the
        last call (or since the book was cleared or loaded), else None: only then is a new
        top-N record worth publishing. Each call starts a new watch. One call into the C
        side (both sides look, then both lists)."""
        top: Any = _CHANGED_TOP(self.bids, self.asks, depth)
        return top  # type: ignore[no-any-return]

    def best_bid(self) -> float | None:
        return self.bids.best_price()

    def best_ask(self) -> float | None:
        return self.asks.best_price()

    def is_crossed(self) -> bool:
        bid, ask = self.bids.best_price(), self.asks.best_price()
        return bid is not None and ask is not None and bid >= ask

    def top_bids(self, depth: int) -> list[tuple[float, float]]:
        """Best first. The list is shared until the top changes: do not modify it."""
        return self.bids.best(depth)

    def top_asks(self, depth: int) -> list[tuple[float, float]]:
        return self.asks.best(depth)

    def text_bids(self, depth: int) -> list[Level]:
        """Best-first levels with their original text, for checksums."""
        return self.bids.text(depth)

    def text_asks(self, depth: int) -> list[Level]:
        return self.asks.text(depth)
