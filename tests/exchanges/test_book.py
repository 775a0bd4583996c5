"""The shared L2 book against a brute-force book, over random changes of every kind."""

from __future__ import annotations

import random

from exchanges.book import L2Book


def brute_top(levels: dict[float, float], depth: int, descending: bool) -> list[tuple]:
    return [(p, levels[p]) for p in sorted(levels, reverse=descending)[:depth]]


def test_top_levels_stay_exact_under_random_changes() -> None:
    rng = random.Random(7)
    book = L2Book()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
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
        elif action < 0.85 and side:  # ...or truncate it (Kraken keeps the subscribed depth)
            worst = side.popitem(0 if side is book.bids else -1)[0]
            ref.pop(worst)
        elif action < 0.86:
            side.clear()
            ref.clear()
        depth = 5 if step % 500 else 3  # a depth change must not serve a stale list
        assert book.top_bids(depth) == brute_top(bids, depth, True), step
        assert book.top_asks(depth) == brute_top(asks, depth, False), step
    assert [lv[1] for lv in book.text_bids(3)] == [f"{p:.1f}" for p, _ in
                                                  brute_top(bids, 3, True)]


def test_crossed_and_text_levels() -> None:
    book = L2Book()
    book.load_text_levels([["100.5", "1"], ["100.0", "2"]], [["101", "3"]])
    assert not book.is_crossed()
    assert book.text_asks(5) == [(3.0, "101", "3")]
    book.apply_text_levels([["101.5", "1"]], [])
    assert book.is_crossed() and book.best_bid() == 101.5
    book.apply_text_levels([["101.5", "0"]], [])
    assert not book.is_crossed() and book.top_bids(1) == [(100.5, 1.0)]
