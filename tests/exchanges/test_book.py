"""The shared L2 book against a brute-force book, over random changes of every kind."""

from __future__ import annotations

import random
from typing import Any

import pytest

from exchanges.book import L2Book
from exchanges.values import BadValue


def brute_top(levels: dict[float, float], depth: int, descending: bool) -> list[tuple]:
    return [(p, levels[p]) for p in sorted(levels, reverse=descending)[:depth]]


def test_top_levels_stay_exact_under_random_changes() -> None:
    rng = random.Random(7)
    book = L2Book()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    published: tuple[list, list] | None = None  # the last top 5 a connector would publish
    handed_out: list[tuple[list, list]] = []
    for step in range(20000):
        side, ref, setter = rng.choice([(book.bids, bids, book.set_bid),
                                        (book.asks, asks, book.set_ask)])
        price = float(rng.randint(1, 60))
        action = rng.random()
        if action < 0.6:
            size = float(rng.choice([0, 0, 1, 2, 3]))
            setter(price, size, f"{price:.1f}", f"{size:.1f}")
            if size:
                ref[price] = size
            else:
                ref.pop(price, None)
        elif action < 0.8:  # connectors may edit a side directly (e.g. Bitfinex count 0)
            side.pop(price, None)
            ref.pop(price, None)
        elif action < 0.85:  # ...or truncate it (Kraken keeps the subscribed depth)
            depth = rng.randint(0, 30)
            side.truncate(depth)
            for worst in sorted(ref, reverse=side is book.asks)[:max(0, len(ref) - depth)]:
                del ref[worst]
        elif action < 0.86:
            side.clear()
            ref.clear()
        want = (brute_top(bids, 5, True), brute_top(asks, 5, False))
        # a new top-5 record exactly when the top 5 differ from the last one published
        top = book.changed_top(5)
        if top is None:
            assert want == published, step
        else:
            assert top == want, step
        published = want
        # lists handed out (records hold them) never change afterwards
        assert all(given == copy for given, copy in handed_out), step
        depth = 5 if step % 500 else 3  # a depth change must not serve a stale list
        handed_out = [(top, list(top)) for top in (book.top_bids(depth), book.top_asks(depth))]
        assert book.top_bids(depth) == brute_top(bids, depth, True), step
        assert book.top_asks(depth) == brute_top(asks, depth, False), step
        assert len(book.bids) == len(bids) and len(book.asks) == len(asks), step
    assert [lv[1] for lv in book.text_bids(3)] == [f"{p:.1f}" for p, _ in
                                                  brute_top(bids, 3, True)]
    assert [p for p, _ in book.bids.items()] == sorted(bids, reverse=True)


def test_changed_top_only_after_a_change_within_the_top() -> None:
    book = L2Book()
    book.load_text_levels([[str(100 - i), "1"] for i in range(30)],
                          [[str(101 + i), "1"] for i in range(30)])
    assert book.changed_top(20) is not None  # a snapshot is a change
    assert book.changed_top(20) is None
    book.set_bid(75.0, 2.0, "75", "2")  # the 26th bid: below the top 20
    book.set_ask(140.0, 1.0, "140", "1")  # a new level far below the top
    book.asks.pop(129.0)
    book.asks.truncate(25)
    assert book.changed_top(20) is None
    book.set_ask(120.0, 3.0, "120", "3")  # the 20th ask
    assert book.changed_top(20) is not None
    book.set_bid(100.5, 1.0, "100.5", "1")  # a new best bid
    assert book.changed_top(1) is not None
    book.bids.pop(100.5)
    assert book.changed_top(0) is None
    book.asks.truncate(19)  # the 20th ask goes
    assert book.changed_top(20) is not None
    book.clear()
    assert book.changed_top(1) is not None


def test_crossed_and_text_levels() -> None:
    book = L2Book()
    book.load_text_levels([["100.5", "1"], ["100.0", "2"]], [["101", "3"]])
    assert not book.is_crossed()
    assert book.text_asks(5) == [(3.0, "101", "3")]
    book.apply_text_levels([["101.5", "1"]], [])
    assert book.is_crossed() and book.best_bid() == 101.5
    book.apply_text_levels([["101.5", "0"]], [])
    assert not book.is_crossed() and book.top_bids(1) == [(100.5, 1.0)]
    assert book.best_ask() == 101.0 and L2Book().best_bid() is None


def test_snapshot_load_equals_level_by_level() -> None:
    """`load_text_levels` checks a usual snapshot side in C loops and any other level by
    level: both give the book that setting the levels one by one gives, and the same error."""
    rng = random.Random(11)
    for case in range(200):
        sides = []
        for _ in range(2):
            levels = [[f"{rng.uniform(1, 500):.2f}", f"{rng.choice([0, 0.5, 1, 2.25]):g}"]
                      for _ in range(rng.randint(0, 40))]
            if case % 4 == 1 and levels:  # a bad value somewhere
                levels[rng.randrange(len(levels))][rng.randint(0, 1)] = rng.choice(
                    ["nan", "inf", "-1", "0" if case % 8 == 1 else "-inf"])
            sides.append(levels)
        loaded, built = L2Book(), L2Book()
        error = None
        try:
            loaded.load_text_levels(*sides)
        except BadValue as exc:
            error = exc.reason
        try:
            for levels, setter in zip(sides, (built.set_bid, built.set_ask), strict=True):
                for p, s in levels:
                    if float(s) != 0.0 or not 0.0 < float(p) < float("inf"):
                        setter(float(p), float(s), p, s)
        except BadValue as exc:
            assert error == exc.reason, case
            continue
        assert error is None, case
        assert loaded.bids.items() == built.bids.items(), case
        assert loaded.asks.items() == built.asks.items(), case


def test_sided_levels_apply_in_order() -> None:
    book = L2Book()
    book.apply_sided_levels([["buy", "100.0", "1"], ["sell", "101.0", "2"],
                             ["buy", "100.0", "0"], ["buy", "99.5", "3"]], "buy")
    assert book.bids.items() == [(99.5, (3.0, "99.5", "3"))]
    assert book.asks.items() == [(101.0, (2.0, "101.0", "2"))]
    with pytest.raises(BadValue):
        book.apply_sided_levels([["sell", "nan", "1"]], "buy")
    assert not book.bids and not book.asks  # a bad level drops the book


@pytest.mark.parametrize("side_type", ["python", "built"])
def test_a_bool_is_not_a_size(side_type: str) -> None:
    """float(False) is 0.0: a JSON false where a size belongs would delete a level unseen.
    Both sides refuse it (TypeError, the frame to the DLQ), the level kept."""
    from exchanges import book as books

    kind: Any = books.BookSide if side_type == "python" else books.SIDE_TYPE
    for bad in (["100.5", False], [True, "1.0"]):
        side = kind(True)
        side.set(100.5, (2.0, "100.5", "2.0"))
        with pytest.raises(TypeError):  # compiled, mypyc refuses it first (a str expected)
            side.apply_text([bad])
        with pytest.raises(TypeError):  # compiled, mypyc refuses it first (a str expected)
            side.load_text([bad])
        assert side.items() == [(100.5, (2.0, "100.5", "2.0"))]


# -- the C side (exchanges/_book.c) against the pure one --------------------------------------

def c_book() -> object:
    """exchanges._book, or a skip where it is not what this process runs (pure modules)."""
    from exchanges import book

    if book.SIDE_TYPE is book.BookSide:
        pytest.skip("the C book side is not built or not in use (pure modules)")
    import exchanges._book as native

    return native


def random_text(rng: random.Random) -> str:
    """Decimal text as venues send it, and the odd forms float() also reads or refuses."""
    kind = rng.random()
    if kind < 0.5:
        places = rng.randint(0, 10)
        return f"{rng.randint(0, 10 ** rng.randint(1, 12)) / 10 ** places:.{places}f}"
    if kind < 0.7:  # up to 20 digits either side of the dot (the C side reads 8 at a time)
        whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 20)))
        fraction = "".join(rng.choice("0000123456789") for _ in range(rng.randint(0, 20)))
        return whole + ("." + fraction if rng.random() < 0.8 else "")
    return rng.choice(["0", "0.0", "00.100", ".5", "5.", "1e3", "1E-3", "-0", "-1.5", " 1.5",
                       "1_0", "nan", "inf", "-inf", "", ".", "1.2.3", "abc", "+2",
                       "9007199254740993", "9007199254740992", "0.1234567890123456789",
                       "1" * 30, "0." + "0" * 30 + "1", "123456789.0123456789012",
                       "4503599627370497.5", "1.00000000000000000000000000001",
                       "1618678123.481570", "0.000022900", "13355.87450757", "12345678",
                       "1234567890123456", "12345678901234567890", "9007199254740992.0",
                       "0.9007199254740993", "1.2345678x", "x1234567.8", "1234.5678.9",
                       "\u0661", "1.5\u00a0"])


def test_c_text_parse_equals_float() -> None:
    native: Any = c_book()
    rng = random.Random(5)
    for _ in range(50000):
        text = random_text(rng)
        try:
            want: object = float(text)
        except ValueError as exc:
            want = str(exc)
        try:
            got: object = native.parse_float(text)
        except ValueError as exc:
            got = str(exc)
        assert repr(got) == repr(want), text


def test_c_side_answers_as_the_pure_side() -> None:
    """Every operation, at random, on both sides at once: the same levels, top lists, texts,
    checksums, `touched` and errors after each."""
    from exchanges import book

    native: Any = c_book()
    rng = random.Random(3)

    def level_text(price: float) -> str:
        return f"{price:.{rng.choice([1, 2, 8])}f}"

    def text_levels() -> list[list[str]]:
        out = []
        for _ in range(rng.randint(0, 40)):
            price = rng.randint(1, 80) / 2
            size = rng.choice([0, 0, 1, 2.5, 0.00012])
            out.append([level_text(price), f"{size:.8f}", "1618678133.365913"])
        if out and rng.random() < 0.1:
            out[rng.randrange(len(out))][rng.randint(0, 1)] = rng.choice(
                ["nan", "inf", "-1", "0", "x"])
        if rng.random() < 0.5:
            out.sort(key=lambda lv: float(lv[0]) if lv[0][0].isdigit() else 0.0,
                     reverse=rng.random() < 0.5)
        return out

    for descending in (True, False):
        pure, fast = book.BookSide(descending), native.BookSide(descending)
        for step in range(6000):
            action = rng.random()
            price = rng.randint(1, 80) / 2
            calls: list[tuple[str, tuple]] = []
            if action < 0.35:
                size = rng.choice([1.0, 2.0, 0.5])
                calls.append(("put", (price, size, level_text(price), f"{size}")))
            elif action < 0.45:
                calls.append(("set", (price, (3.0, level_text(price), "3"))))
            elif action < 0.6:
                calls.append(("pop", (price, "none")))
            elif action < 0.65:
                calls.append(("truncate", (rng.randint(0, 40),)))
            elif action < 0.67:
                calls.append(("clear", ()))
            elif action < 0.7:
                levels = {rng.randint(1, 80) / 2: (1.5, "p", "1.5") for _ in range(30)}
                calls.append(("load", (levels,)))
            elif action < 0.8:
                calls.append(("load_text", (text_levels(),)))
            elif action < 0.95:
                calls.append(("apply_text", (text_levels(),)))
            else:
                depth = rng.randint(0, 25)
                calls.append(("best", (depth,)))
                calls.append(("text", (depth,)))
            if rng.random() < 0.2:
                pure.touched = fast.touched = book.UNTOUCHED
            for name, args in calls:
                answers = []
                for side in (pure, fast):
                    try:
                        answers.append(("ok", getattr(side, name)(*args)))
                    except (ValueError, TypeError) as exc:
                        answers.append(("raised", f"{type(exc).__name__}: {exc}"))
                assert repr(answers[0]) == repr(answers[1]), (step, name, args)  # nan
            assert pure.items() == fast.items(), step
            assert len(pure) == len(fast) and bool(pure) == bool(fast), step
            assert pure.touched == fast.touched, step
            assert pure.best_price() == fast.best_price(), step
            depth = rng.choice([5, 10, 20])
            assert pure.best(depth) == fast.best(depth), step
            assert pure.text(depth) == fast.text(depth), step
            assert (price in pure) == (price in fast), step
            if price in pure:
                assert pure[price] == fast[price], step
            if all(lv[1] != "p" for lv in pure.text(10)):
                crc = rng.choice([0, 0, rng.randint(0, (1 << 32) - 1)])  # 0: often kept
                for _ in range(2):
                    assert pure.digits_crc32(10, crc) == fast.digits_crc32(10, crc), step
        other_pure, other_fast = book.BookSide(descending), native.BookSide(descending)
        other_pure.load_text([["10", "1"], ["11", "2"]])
        other_fast.load_text([["10", "1"], ["11", "2"]])
        pure.take(other_pure)
        fast.take(other_fast)
        assert pure.items() == fast.items() and len(other_fast) == 0 == len(other_pure)


def test_c_best_list_is_never_edited_once_handed_out() -> None:
    native: Any = c_book()
    side = native.BookSide(True)
    side.load_text([["100", "1"], ["99", "2"]])
    top = side.best(5)
    assert side.best(5) is top  # no change: the same list
    side.put(100.5, 3.0, "100.5", "3")
    assert top == [(100.0, 1.0), (99.0, 2.0)]
    assert side.best(5) == [(100.5, 3.0), (100.0, 1.0), (99.0, 2.0)]
    side.put(50.0, 1.0, "50", "1")  # below the top 2: the list for depth 2 stays
    top2 = side.best(2)
    side.put(49.0, 1.0, "49", "1")
    assert side.best(2) is top2


def test_max_float_equals_max_of_floats() -> None:
    from exchanges import book

    rng = random.Random(9)
    fast: Any = book.max_float
    for _ in range(3000):
        levels = [["1", "1", random_text(rng) if rng.random() < 0.2 else
                   f"{rng.uniform(1.6e9, 1.7e9):.6f}"] for _ in range(rng.randint(0, 6))]
        start = rng.choice([None, 0.0, 1.65e9])
        answers = []
        for fn in (book._max_float, fast):
            try:
                answers.append(repr(fn(levels, 2, start)))
            except (ValueError, IndexError) as exc:
                answers.append(f"{type(exc).__name__}: {exc}")
        assert answers[0] == answers[1], levels


def test_asks_bids_digits_crc32_is_the_two_sides_chained() -> None:
    """Kraken's checksum in one call (`digits_checksum`; C where built) equals the asks' then
    the bids' `digits_crc32` of the pure sides, and zlib over the digits spelled out, while
    changes reach one side, both or neither (a side's kept CRC continued from a new start)."""
    import zlib

    from exchanges import book as book_module

    rng = random.Random(17)
    book, pure = L2Book(), L2Book()
    pure.bids, pure.asks = book_module.BookSide(True), book_module.BookSide(False)
    for step in range(4000):
        for _ in range(rng.choice([0, 0, 1, 2])):
            bid = rng.random() < 0.5
            price = rng.randint(1, 40) / 4
            levels = [[f"{price + (0 if bid else 20):.{rng.randint(2, 6)}f}",
                       f"{rng.choice([0, 0.5, 12.25, 0.00012]):.8f}"]]
            for target in (book, pure):
                target.apply_side_text(target.bids if bid else target.asks, levels)
        depth = rng.choice([10, 10, 10, 3, 0])
        spelled = "".join(t.replace(".", "").lstrip("0") for side in
                          (book.text_asks(depth), book.text_bids(depth)) for _, *texts in side
                          for t in texts)
        want = zlib.crc32(spelled.encode())
        assert book_module.digits_checksum(book, depth) == want, step
        assert pure.bids.digits_crc32(depth, pure.asks.digits_crc32(depth, 0)) == want, step


def test_interleaved_crc32() -> None:
    """The book's interleaved checksum (C where built; OKX's and Bitfinex's checksum) equals
    the rule spelled out in Python: sides of any lengths, ask amounts negative."""
    from exchanges.book import interleaved_crc32

    rng = random.Random(13)
    for case in range(2000):
        book = L2Book()
        for setter, sign in ((book.set_bid, 1), (book.set_ask, -1)):
            for _ in range(rng.randint(0, 40)):
                price = rng.randint(1, 10 ** rng.randint(1, 9)) / 10 ** rng.randint(0, 8)
                text = f"{price:.{rng.randint(0, 8)}f}"
                size = rng.randint(1, 10 ** 6) / 10 ** rng.randint(0, 8)
                size_text = f"{sign * size:.8f}" if case % 2 else f"{size:g}"
                if float(text) > 0:
                    setter(float(text), size, text, size_text)
        depth = rng.choice([25, 1, 0, 60])
        assert interleaved_crc32(book, depth) == book_checksum_of(book, depth), case


def book_checksum_of(book: L2Book, depth: int) -> int:
    """The interleaved checksum spelled out once more, for depths other than 25."""
    import zlib

    bids, asks = book.text_bids(depth), book.text_asks(depth)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        for side in (bids, asks):
            if i < len(side):
                parts += side[i][1:]  # type: ignore[arg-type]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def counted_number(rng: random.Random, value: float) -> str:
    """A number as Bitfinex may write it: an int where whole, else a float's text."""
    if value == int(value) and rng.random() < 0.5:
        return str(int(value))
    return repr(value)


def counted_level(rng: random.Random) -> list[str]:
    """[PRICE, COUNT, AMOUNT] as text: usual levels, deletes, and values no book holds."""
    price = rng.choice([rng.randint(1, 40) / 2, rng.randint(1, 40) / 2, 0.0, -1.0, 1e308])
    amount = rng.choice([1.0, 2.5, 0.00012, 0.0, 1e308]) * rng.choice([1, -1])
    count = rng.choice(["1", "3", "0", "0", "1.0", "true", "10000000000000000000000"])
    return [counted_number(rng, price), count, counted_number(rng, amount)]


def counted_text(rng: random.Random, levels: list[list[str]]) -> str:
    """The levels written as an array, mostly as Bitfinex does, sometimes not quite."""
    written = [f"[{','.join(level)}]" for level in levels]
    joiner = rng.choice([",", ",", ",", ", ", "],["])
    text = f"[{joiner.join(written)}]" if rng.random() < 0.9 else f"[ {','.join(written)}]"
    if rng.random() < 0.05 and levels:
        text = text.replace(",", ", ", 1)  # whitespace in a level: kept as written
    if rng.random() < 0.05:
        text = text.replace(levels[0][0], f'"{levels[0][0]}"', 1) if levels else text
    return text


def test_c_counted_snapshot_and_updates_answer_as_the_pure_twin() -> None:
    """Bitfinex's snapshots and updates (`load_counted`, `apply_counted`): the C twins read
    the same texts and numbers, keep the same levels and refuse the same frames (ValueError
    with the same message, or the same bad level) as book.py's Python twins, at random; and
    `changed_top` answers as its twin after each."""
    import orjson

    from exchanges import book

    native: Any = c_book()
    rng = random.Random(17)

    def both(name: str, args: tuple, pure: tuple, fast: tuple) -> None:
        answers = []
        for twin, (bids, asks) in ((getattr(book, f"_{name}"), pure),
                                   (getattr(native, name), fast)):
            try:
                answers.append(("ok", twin(bids, asks, *args)))
            except (ValueError, OverflowError) as exc:
                answers.append(("raised", f"{type(exc).__name__}: {exc}"))
        assert repr(answers[0]) == repr(answers[1]), (name, args)
        for p, f in zip(pure, fast, strict=True):
            assert p.items() == f.items(), (name, args)
            assert p.touched == f.touched and p.best(20) == f.best(20), (name, args)
        if rng.random() < 0.5:  # the top-N lists after a change, one call (`changed_top`)
            depth = rng.choice([0, 1, 5, 20])
            assert book._changed_top(*pure, depth) == native.changed_top(*fast, depth), args
            assert pure[0].touched == fast[0].touched == book.UNTOUCHED

    pure = (book.BookSide(True), book.BookSide(False))
    fast = (native.BookSide(True), native.BookSide(False))
    for case in range(3000):
        levels = [counted_level(rng) for _ in range(rng.randint(0, 30))]
        if rng.random() < 0.7:  # usual: no bad value, bids best first then asks best first
            levels = [[p, "1" if c in ("1.0", "true", "10000000000000000000000") else c, a]
                      for p, c, a in levels if 0 < float(p) < 1e300 and float(a) < 1e300]
            levels.sort(key=lambda lv: (lv[2][0] == "-", -float(lv[0]) if lv[2][0] != "-"
                                        else float(lv[0])))
        text = f"[17082,{counted_text(rng, levels)},{case}]"
        try:
            decoded = orjson.loads(text)[1]
        except orjson.JSONDecodeError:
            continue  # refused before any book sees it
        both("load_counted", (text, decoded), pure, fast)
        for _ in range(rng.randint(0, 20)):
            level = counted_level(rng)
            if rng.random() < 0.7:
                level[1] = rng.choice(["0", "1", "2"])
            update = f"[{','.join(level)}]"
            if rng.random() < 0.05:
                update = rng.choice([update.replace(",", ", "), f"[{level[0]},{level[1]}]",
                                     f"[{update},1]", update.replace(level[1], "[1,2]", 1)])
            text = f"[17082,{update},{case}]"
            try:
                decoded = orjson.loads(text)[1]
            except orjson.JSONDecodeError:
                continue
            if type(decoded) is list:
                both("apply_counted", (text, decoded), pure, fast)
    # any text at all: the C twin cuts the same tokens (here texts of [1.5, 1, +-2.5] levels)
    for _ in range(20000):
        text = "".join(rng.choice("[[]],,,1-") for _ in range(rng.randint(0, 40)))
        count = rng.randint(0, 4)
        levels = [[1.5 + i, 1, rng.choice([2.5, -2.5])] for i in range(count)]
        both("load_counted", (text, levels), pure, fast)
    # not ASCII: the C twin leaves it to the Python one
    assert native.load_counted(*fast, '[1,[[1,1,1]],"\u00e9"]', [[1, 1, 1]]) is NotImplemented
    assert native.apply_counted(*fast, '[1,[1,1,1],"\u00e9"]', [1, 1, 1]) is NotImplemented


def test_counted_book_loads_deletes_and_refuses() -> None:
    """L2Book's Bitfinex entry points, in either build: a snapshot's asks are its negative
    amounts, a count of 0 deletes, and a bad level drops the book with BadValue."""
    book = L2Book()
    text = "[1,[[100.5,1,2],[100,2,1.5],[101,1,-3],[102,0,-1],[101.5,1,-0.5]],2]"
    book.load_counted(text, [[100.5, 1, 2], [100, 2, 1.5], [101, 1, -3], [102, 0, -1],
                             [101.5, 1, -0.5]])
    assert book.text_bids(5) == [(2.0, "100.5", "2"), (1.5, "100", "1.5")]
    assert book.text_asks(5) == [(3.0, "101", "-3"), (0.5, "101.5", "-0.5")]
    book.apply_counted("[1,[101,0,-1],3]", [101, 0, -1])
    book.apply_counted("[1,[99.5,4,0.25],4]", [99.5, 4, 0.25])
    assert book.top_asks(5) == [(101.5, 0.5)]
    assert book.top_bids(5) == [(100.5, 2.0), (100.0, 1.5), (99.5, 0.25)]
    with pytest.raises(ValueError):
        book.apply_counted("[1,[99.5,0.0,1],5]", [99.5, 0.0, 1])
    assert len(book.bids) == 3  # refused: the book as it was
    with pytest.raises(BadValue):
        book.apply_counted("[1,[-1,1,1],5]", [-1, 1, 1])
    assert not book.bids and not book.asks
    with pytest.raises(BadValue):
        book.load_counted("[1,[[100,1,1],[0,1,-1]],2]", [[100, 1, 1], [0, 1, -1]])
    assert not book.bids and not book.ready
    with pytest.raises(ValueError):  # its texts could not be cut
        book.load_counted("[1,[[100,1,1], [101,1,-1]],2]", [[100, 1, 1], [101, 1, -1]])
    book.load_counted("[1,[[100,1,1],[101, 1,-1]],2]", [[100, 1, 1], [101, 1, -1]])
    assert book.text_asks(1) == [(1.0, "101", "-1")]  # a space kept as written: fails a cs
