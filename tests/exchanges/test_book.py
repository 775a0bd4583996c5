"""The shared L2 book against a brute-force book, over random changes of every kind."""

from __future__ import annotations

import random

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
        changed = book.top_changed(5)
        if not changed:
            assert want == published, step
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


def test_top_changed_only_after_a_change_within_the_top() -> None:
    book = L2Book()
    book.load_text_levels([[str(100 - i), "1"] for i in range(30)],
                          [[str(101 + i), "1"] for i in range(30)])
    assert book.top_changed(20)  # a snapshot is a change
    assert not book.top_changed(20)
    book.set_bid(75.0, 2.0, "75", "2")  # the 26th bid: below the top 20
    book.set_ask(140.0, 1.0, "140", "1")  # a new level far below the top
    book.asks.pop(129.0)
    book.asks.truncate(25)
    assert not book.top_changed(20)
    book.set_ask(120.0, 3.0, "120", "3")  # the 20th ask
    assert book.top_changed(20)
    book.set_bid(100.5, 1.0, "100.5", "1")  # a new best bid
    assert book.top_changed(1)
    book.bids.pop(100.5)
    assert not book.top_changed(0)
    book.asks.truncate(19)  # the 20th ask goes
    assert book.top_changed(20)
    book.clear()
    assert book.top_changed(1)


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


@pytest.mark.parametrize("bad", [(float("nan"), 1.0), (1.0, float("inf")), (-1.0, 1.0),
                                 (1.0, 0.0)])
def test_load_levels_refuses_a_bad_level_and_drops_the_book(bad: tuple[float, float]) -> None:
    book = L2Book()
    book.load_levels({100.0: (1.0, "100", "1")}, {101.0: (2.0, "101", "2")})
    assert book.top_bids(5) == [(100.0, 1.0)] and book.top_asks(5) == [(101.0, 2.0)]
    price, size = bad
    with pytest.raises(BadValue):
        book.load_levels({100.0: (1.0, "100", "1")}, {price: (size, "x", "y")})
    assert not book.bids and not book.asks
