"""End to end for Bithumb (v1), Coinone and Korbit: fixture recordings through a real worker.

The three recordings in tests/fixtures/replays/ are built from the documented message shapes
(no real recordings of these APIs exist). They hold, besides normal trades, books and
tickers: a malformed Bithumb frame, a Coinone ERROR message, a Coinone book older than the one
before it, crossed books on Bithumb and Korbit, padded and zero levels, and a Korbit book with
an empty side. The replay server plays them through the connectors exactly as a live session
would; the test reads every topic back and asks the worker's web views.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path


from app.embedded import EmbeddedBroker
from records import BUY, SELL
from tests.support import FIXTURES, Worker, http_json, read_topic, wait_for

EXCHANGES = ("bithumb", "coinone", "korbit")
BAD_FRAME = b'{"type":"trade","code":"KRW-BTC","trade_price":1162'  # in BITHUMB.ws.1.0
COINONE_ERROR = b'{"response_type":"ERROR","error_code":160012,"message":"Invalid Topic"}'

# (symbol, ts_event, price, amount, side, trade_id), in recorded order
TRADES = {
    "bithumb": [
        ("BTC-KRW", 1790133600.3, 116210000.0, 0.0009, BUY, "1079953210371761700"),
        ("ETH-KRW", 1790133600.35, 3714000.0, 1.25, SELL, "1079953210371761702"),
        # after the malformed frame: still processed
        ("BTC-KRW", 1790133600.4, 116200000.0, 0.5, SELL, "1079953210371761705"),
    ],
    "coinone": [
        ("BTC-KRW", 1790134177.835, 116460000.0, 0.00483595, BUY, "1790134177835001"),
        ("ETH-KRW", 1790134177.84, 3715000.0, 0.3, SELL, "1790134177840001"),
        ("BTC-KRW", 1790134177.95, 116455000.0, 0.1, SELL, "1790134177950002"),
    ],
    "korbit": [
        ("BTC-KRW", 1790134243.05, 116506000.0, 0.0067, BUY, "25441720"),
        ("BTC-KRW", 1790134243.06, 116455000.0, 0.012, SELL, "25441725"),
        ("ETH-KRW", 1790134243.12, 3714000.0, 0.5, SELL, "9120031"),
    ],
}

# (symbol, ts_event, bids, asks, sequence), in recorded order; crossed and stale books absent
BOOKS = {
    "bithumb": [
        ("BTC-KRW", 1790133600.100001, [[116200000.0, 0.02], [116190000.0, 1.0]],
         [[116210000.0, 0.1234], [116220000.0, 0.5]], None),
        ("ETH-KRW", 1790133600.120002, [[3714000.0, 3.012], [3713000.0, 15.399]],
         [[3715000.0, 8.4592], [3716000.0, 3.3766]], None),
        # padded bid units and a size-0 ask level dropped
        ("BTC-KRW", 1790133600.450003, [[116190000.0, 0.5]],
         [[116210000.0, 0.1234], [116220000.0, 0.5]], None),
        ("ETH-KRW", 1790133600.550005, [[3715000.0, 1.5], [3713000.0, 15.399]],
         [[3716000.0, 2.0], [3717000.0, 3.3766]], None),
    ],
    "coinone": [
        # the first book's `timestamp` lags its id (as the probe saw): published as sent
        ("BTC-KRW", 1790134167.0, [[116450000.0, 0.0118], [116400000.0, 0.2]],
         [[116460000.0, 0.0232], [116470000.0, 0.05]], 1790134177753001),
        ("ETH-KRW", 1790134177.76, [[3715000.0, 0.75], [3714000.0, 4.0]],
         [[3716000.0, 2.5], [3717000.0, 1.0]], 1790134177760001),
        ("BTC-KRW", 1790134177.9, [[116455000.0, 0.3], [116450000.0, 0.0118]],
         [[116460000.0, 0.01], [116470000.0, 0.05]], 1790134177900001),
    ],
    "korbit": [
        ("BTC-KRW", 1790134242.563, [[116455000.0, 0.00499], [116453000.0, 0.01919775]],
         [[116506000.0, 0.27522], [116538000.0, 0.00665633]], None),
        ("ETH-KRW", 1790134242.7, [[3714000.0, 3.3], [3713000.0, 4.4]],
         [[3716000.0, 1.1], [3717000.0, 2.2]], None),
        ("BTC-KRW", 1790134243.28, [[116460000.0, 0.05], [116455000.0, 0.00499]],
         [[116500000.0, 0.2], [116538000.0, 0.00665633]], None),
        ("ETH-KRW", 1790134243.35, [], [[3716000.0, 1.0]], None),
    ],
}

# (symbol, ts_event, last, bid, bid_size, ask, ask_size, volume_24h, quote_volume_24h)
TICKERS = {
    "bithumb": [
        ("BTC-KRW", 1790133600.2, 116205000.0, None, None, None, None, 267.27610034,
         30947007404.5912),
        ("ETH-KRW", 1790133600.21, 3714500.0, None, None, None, None, 1520.5, 5648000000.25),
    ],
    "coinone": [
        ("BTC-KRW", 1790134177.8, 116455000.0, 116450000.0, 0.0118, 116460000.0, 0.0232,
         267.27610034, 30947007404.5912),
        ("ETH-KRW", 1790134177.81, 3715500.0, 3715000.0, 0.75, 3716000.0, 2.5, 1520.5,
         5648000000.25),
    ],
    "korbit": [
        ("BTC-KRW", 1790134243.0, 116463000.0, 116455000.0, None, 116506000.0, None,
         39.25266763, 4549864965.49708),
        ("ETH-KRW", 1790134243.01, 3715000.0, 3714000.0, None, 3716000.0, None, 812.5,
         3018437500.5),
    ],
}

URLS = {"bithumb": "wss://ws-api.bithumb.com/websocket/v1",
        "coinone": "wss://stream.coinone.co.kr",
        "korbit": "wss://ws-api.korbit.co.kr/v2/public"}


def by_key(records: list, fields: tuple[str, ...]) -> dict[str, list[tuple]]:
    """Topic records as field tuples per key, in topic (per-key) order."""
    out: dict[str, list[tuple]] = {}
    for record in records:
        value = json.loads(record.value)
        assert value["ts_recv"] > 0
        out.setdefault(record.key.decode(), []).append(tuple(value[f] for f in fields))
    return out


def expected_by_key(exchange: str, rows: list[tuple]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for row in rows:
        out.setdefault(f"{exchange}:{row[0]}", []).append(row)
    return out


def test_korean_exchanges_end_to_end(broker: EmbeddedBroker, tmp_path: Path,
                                     workers: list[Worker]) -> None:
    replay = tmp_path / "replay"
    replay.mkdir()
    for prefix in ("BITHUMB", "COINONE", "KORBIT"):
        for path in (FIXTURES / "replays").glob(f"{prefix}.*"):
            shutil.copy(path, replay / path.name)
    # The worker creates its topics itself, before anything is produced (app.main).
    worker = Worker(broker.url, tmp_path, replay=replay, app_id="kcs-test-korea",
                    ingest="bithumb,coinone,korbit")
    workers.append(worker.start())

    for exchange in EXCHANGES:
        trades = read_topic(broker.url, f"trade-data.{exchange}", expect=len(TRADES[exchange]))
        assert by_key(trades, ("symbol", "ts_event", "price", "amount", "side", "trade_id")) \
            == expected_by_key(exchange, TRADES[exchange]), exchange
        assert all(json.loads(r.value)["exchange"] == exchange for r in trades)

        books = read_topic(broker.url, f"orderbook-data.{exchange}",
                           expect=len(BOOKS[exchange]))
        assert by_key(books, ("symbol", "ts_event", "bids", "asks", "sequence")) \
            == expected_by_key(exchange, BOOKS[exchange]), exchange

        tickers = read_topic(broker.url, f"ticker-data.{exchange}",
                             expect=len(TICKERS[exchange]))
        assert by_key(tickers, ("symbol", "ts_event", "last", "bid", "bid_size", "ask",
                                "ask_size", "volume_24h", "quote_volume_24h")) \
            == expected_by_key(exchange, TICKERS[exchange]), exchange

    # The malformed Bithumb frame and Coinone's ERROR message are on the DLQ byte for byte,
    # with the reason; the frames after them were processed (the trades above include them).
    dlq = [r for r in read_topic(broker.url, "ws.dlq")
           if dict(r.headers).get("exchange", b"").decode() in EXCHANGES]
    assert sorted((dict(r.headers)["exchange"], r.value) for r in dlq) == [
        (b"bithumb", BAD_FRAME), (b"coinone", COINONE_ERROR)]
    headers = {dict(r.headers)["exchange"].decode(): dict(r.headers) for r in dlq}
    assert headers["bithumb"]["reason"].startswith(b"JSONDecodeError: ")
    assert headers["bithumb"]["url"] == URLS["bithumb"].encode()
    assert float(headers["bithumb"]["ts_recv"]) > 0
    assert headers["coinone"]["reason"] == b"ValueError: coinone error 160012: Invalid Topic"

    # Each crossed book was dropped with a resync event; the stale Coinone book is not one.
    errors = [json.loads(r.value) for r in read_topic(broker.url, "ws.error")]
    errors = sorted((e["exchange"], e["symbol"], e["kind"], e["reason"]) for e in errors
                    if e["exchange"] in EXCHANGES)
    assert errors == [
        ("bithumb", "ETH-KRW", "resync", "crossed book: bid 3714000.0 >= ask 3713000.0"),
        ("korbit", "BTC-KRW", "resync", "crossed book: bid 116455000.0 >= ask 116450000.0"),
    ]

    # Market state: the last trade and the last published book of each market.
    for exchange in EXCHANGES:
        for symbol in ("BTC-KRW", "ETH-KRW"):
            trade = [t for t in TRADES[exchange] if t[0] == symbol][-1]
            book = [b for b in BOOKS[exchange] if b[0] == symbol][-1]
            ticker = [t for t in TICKERS[exchange] if t[0] == symbol][-1]
            url = f"{worker.url}/market/{exchange}/{symbol}/"
            bid = book[2][0] if book[2] else [None, None]
            ask = book[3][0] if book[3] else [None, None]

            def settled(url: str = url, trade: tuple = trade, ticker: tuple = ticker,
                        book: tuple = book) -> bool:
                status, state = http_json(url)
                return status == 200 and state.get("last_trade_id") == trade[5] and \
                    state.get("book_ts") == book[1] and state.get("volume_24h") == ticker[7]

            wait_for(settled, timeout=30)
            _, state = http_json(url)
            assert (state["exchange"], state["symbol"]) == (exchange, symbol)
            assert (state["last_price"], state["last_amount"], state["last_side"],
                    state["last_trade_ts"]) == (trade[2], trade[3], trade[4], trade[1])
            assert [state["best_bid"], state["best_bid_size"]] == bid
            assert [state["best_ask"], state["best_ask_size"]] == ask
            if book[2] and book[3]:
                assert state["spread"] == ask[0] - bid[0]
            else:
                assert state["spread"] is None  # Korbit ETH-KRW: its last book has no bids

    # The stale Coinone book was counted; every feed stayed connected.
    _, health = http_json(worker.url + "/health/")
    for exchange in EXCHANGES:
        assert health["ingest"][exchange]["connected"] == 1
    with urllib.request.urlopen(worker.url + "/metrics/", timeout=5) as response:
        metrics = response.read().decode().splitlines()
    assert 'kcs_stale_books_total{exchange="coinone"} 1' in metrics
    assert 'kcs_dlq_frames_total{exchange="bithumb"} 1' in metrics
