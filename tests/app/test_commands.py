"""`ws.command` parsing and the subscription set it leaves."""

from __future__ import annotations

import pytest

from app.commands import Command, CommandError, applied, parse_command

EXCHANGES = ["binance", "upbit"]


def test_a_command_is_read_with_its_defaults() -> None:
    command = parse_command(b'{"op": "subscribe", "exchange": "Upbit", "symbols": ["eth-krw"],'
                            b' "id": 7}', EXCHANGES)
    assert command == Command("subscribe", "upbit", ("ETH-KRW",), ("trades", "book", "ticker"), 7)


@pytest.mark.parametrize("value, command_id, reason", [
    (b"{oops", None, "not JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"op": "drop", "exchange": "upbit", "symbols": ["BTC-KRW"], "id": "a"}', "a", "'drop'"),
    (b'{"op": "subscribe", "exchange": "mtgox", "symbols": ["BTC-USD"], "id": "b"}', "b",
     "'mtgox'"),
    (b'{"op": "subscribe", "exchange": "upbit", "symbols": [], "id": "c"}', "c", "non-empty"),
    (b'{"op": "subscribe", "exchange": "upbit", "symbols": ["BTCKRW"], "id": "d"}', "d",
     "'BTCKRW'"),
    (b'{"op": "subscribe", "exchange": "upbit", "symbols": [42], "id": "e"}', "e", "42"),
    (b'{"op": "subscribe", "exchange": "upbit", "symbols": ["BTC-KRW"], "channels": ["l3"],'
     b' "id": "f"}', "f", "'l3'"),
])
def test_a_bad_command_is_refused_with_its_id_and_why(value: bytes, command_id: object,
                                                      reason: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_command(value, EXCHANGES)
    assert refused.value.command_id == command_id
    assert reason in refused.value.reason


def test_subscribe_adds_channels_and_unsubscribe_removes_them() -> None:
    start = {"BTC-KRW": {"trades", "book"}}
    sub = Command("subscribe", "upbit", ("BTC-KRW", "ETH-KRW"), ("ticker",), "1")
    after = applied(start, sub)
    assert after == {"BTC-KRW": {"trades", "book", "ticker"}, "ETH-KRW": {"ticker"}}
    assert start == {"BTC-KRW": {"trades", "book"}}  # left alone
    unsub = Command("unsubscribe", "upbit", ("BTC-KRW", "ETH-KRW", "XRP-KRW"),
                    ("ticker", "book"), "2")
    assert applied(after, unsub) == {"BTC-KRW": {"trades"}}
