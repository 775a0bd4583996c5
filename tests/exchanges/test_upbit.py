"""Upbit parsing, on the recorded session in ../shared/replays and documented frames."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import orjson
import pytest

from config.settings import load_settings
from exchanges.base import Stream
from exchanges.publisher import Publisher
from exchanges.upbit import Upbit, to_native, to_unified
from records import BUY, SELL, OrderBook, Ticker, Trade


def upbit(**subs: set[str]) -> tuple[Upbit, Publisher]:
    out = Publisher("upbit")
    return Upbit(subs or {"BTC-KRW": {"trades", "book", "ticker"}}, out, load_settings({})), out


def recorded_frames(replays: Path) -> list[bytes]:
    frames = []
    for line in (replays / "UPBIT.ws.62.0").read_text().splitlines():
        if line and " <-> " not in line and " <- " not in line:
            frames.append(ast.literal_eval(line.partition(": ")[2]))
    return frames


STREAM = Stream("wss://api.upbit.com/websocket/v1")


def test_symbol_mapping_both_ways() -> None:
    assert to_native("BTC-KRW") == "KRW-BTC"
    assert to_unified("KRW-BTC") == "BTC-KRW"
    assert to_unified("USDT-XBT") == "BTC-USDT"  # aliases map to the common code
    assert to_unified(to_native("ETH-BTC")) == "ETH-BTC"


def test_subscription_request_lists_every_code_once() -> None:
    connector, _ = upbit(**{"BTC-KRW": {"trades", "book"}, "ETH-KRW": {"ticker"}})
    [stream] = connector.connections()
    request = json.loads(stream.subscribe[0])
    assert request[1] == {"format": "SIMPLE"}
    by_type = {r["type"]: r["codes"] for r in request if "type" in r}
    assert by_type == {"trade": ["KRW-BTC"], "orderbook": ["KRW-BTC"], "ticker": ["KRW-ETH"]}
    assert stream.symbols == ["BTC-KRW", "ETH-KRW"]


def test_every_recorded_trade_once_with_exact_fields(replays: Path) -> None:
    connector, out = upbit()
    frames = recorded_frames(replays)
    for i, frame in enumerate(frames):
        connector.on_frame(frame, 1000.0 + i, STREAM)
    trades = [r for _, _, r, _, _ in out.pending if isinstance(r, Trade)]
    raw = [json.loads(f) for f in frames]
    raw_trades = [m for m in raw if m["ty"] == "trade"]
    assert len(trades) == len(raw_trades) == 95
    for trade, msg in zip(trades, raw_trades, strict=True):
        base_quote = msg["cd"].split("-")
        assert trade.symbol == f"{base_quote[1]}-{base_quote[0]}"
        assert trade.trade_id == str(msg["sid"])
        assert trade.price == msg["tp"] and trade.amount == msg["tv"]
        assert trade.side == (BUY if msg["ab"] == "BID" else SELL)
        assert trade.ts_event == msg["ttms"] / 1000.0
    # `sequential_id` is unique within a market, not across markets (the recording shows it).
    assert len({(t.symbol, t.trade_id) for t in trades}) == 95


def test_every_recorded_book_is_the_whole_top_of_the_message(replays: Path) -> None:
    connector, out = upbit()
    frames = recorded_frames(replays)
    for frame in frames:
        connector.on_frame(frame, 1.0, STREAM)
    books = [r for _, _, r, _, _ in out.pending if isinstance(r, OrderBook)]
    raw_books = [m for m in map(json.loads, frames) if m["ty"] == "orderbook"]
    assert len(books) == len(raw_books) == 57
    for book, msg in zip(books, raw_books, strict=True):
        bids = [(u["bp"], u["bs"]) for u in msg["obu"] if u["bp"] and u["bs"]]
        asks = [(u["ap"], u["as"]) for u in msg["obu"] if u["ap"] and u["as"]]
        assert book.bids == bids[:20] and book.asks == asks[:20]
        assert book.bids[0][0] < book.asks[0][0]
        assert book.ts_event == msg["tms"] / 1000.0


def test_default_format_parses_like_simple() -> None:
    # The DEFAULT-format trade as Upbit documents it.
    frame = orjson.dumps({
        "type": "trade", "code": "KRW-BTC", "timestamp": 1730336862047,
        "trade_timestamp": 1730336862000, "trade_price": 100473000.0, "trade_volume": 0.00014208,
        "ask_bid": "BID", "sequential_id": 17303368620000000, "stream_type": "REALTIME"})
    connector, out = upbit()
    connector.on_frame(frame, 5.0, STREAM)
    assert out.pending[0][2] == Trade("upbit", "BTC-KRW", 1730336862.0, 5.0, 100473000.0,
                                      0.00014208, BUY, "17303368620000000")


def test_ticker_and_padded_book_sides() -> None:
    connector, out = upbit()
    connector.on_frame(b'{"ty":"ticker","cd":"KRW-BTC","tp":100473000.0,"atv24h":2105.7,'
                       b'"atp24h":211500000000,"tms":1730336862082,"st":"REALTIME"}', 7.0, STREAM)
    # A quiet book: the ask side is padded with zero units, which are not levels.
    connector.on_frame(b'{"ty":"orderbook","cd":"KRW-BTC","tms":1790134742106,"obu":['
                       b'{"ap":1.16539E8,"bp":1.16538E8,"as":0.02054761,"bs":0.08120946},'
                       b'{"ap":0,"bp":1.16537E8,"as":0,"bs":0.01129382}]}', 8.0, STREAM)
    ticker, book = out.pending[0][2], out.pending[1][2]
    assert ticker == Ticker("upbit", "BTC-KRW", 1730336862.082, 7.0, 100473000.0, None, None,
                            None, None, 2105.7, 211500000000)
    assert book.asks == [(116539000.0, 0.02054761)]
    assert book.bids == [(116538000.0, 0.08120946), (116537000.0, 0.01129382)]


def test_crossed_book_is_not_published_and_is_reported() -> None:
    connector, out = upbit()
    connector.on_frame(b'{"ty":"orderbook","cd":"KRW-BTC","tms":1,"obu":['
                       b'{"ap":100.0,"bp":101.0,"as":1.0,"bs":1.0}]}', 1.0, STREAM)
    [(topic, key, value, _, _)] = out.pending
    assert topic == "ws.error" and key == b"upbit:BTC-KRW"
    assert b"crossed" in value


@pytest.mark.parametrize("frame", [b"not json", b'{"ty":"trade","cd":"KRW-BTC"}',
                                   b'{"error":{"name":"WRONG_FORMAT","message":"bad"}}'])
def test_bad_frames_raise(frame: bytes) -> None:
    connector, _ = upbit()
    with pytest.raises(Exception):  # noqa: B017 (the session turns any exception into a DLQ entry)
        connector.on_frame(frame, 1.0, STREAM)
