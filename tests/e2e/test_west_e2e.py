"""End to end for Coinbase, Kraken and Bitfinex: recordings through a real worker and broker.

Coinbase and Bitfinex are the real recorded sessions (COINBASE.*, BITFINEX.* in the shared
recordings directory, ../shared/replays), reached through the replay server's host aliases
(the connectors use today's hosts). Kraken is the v2 fixture recording
tests/fixtures/replays/KRAKEN.* (documented shapes, the book snapshot being the one of
Kraken's checksum guide): the real Kraken recordings are v1 and hold no trade (they are
tested through the session in test_kraken). The test reads every topic back and compares it
with what it computes itself from the raw frames: every trade exactly once, the top of book
after every book message equal to an independent rebuild (with every checksum verified
here), the tickers, no integrity error, and the markets' state over HTTP. """

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.embedded import EmbeddedBroker
from exchanges.replay import load_recordings
from records import BUY, SELL
from tests.support import (FIXTURES, Worker, assert_market_state, assert_published,
                           copy_recordings, http_json, read_topic)
from tests.exchanges.test_bitfinex import RebuiltBook as BitfinexBook
from tests.exchanges.test_bitfinex import raw
from tests.exchanges.test_coinbase import RebuiltBook as CoinbaseBook
from tests.exchanges.test_kraken import RebuiltBook as KrakenBook
from tests.exchanges.test_kraken import v2_book_levels

DEPTH = 20


def expected_coinbase(frames: list) -> dict:
    trades, books, tickers, rebuilt = [], [], [], {}
    for _, frame in frames:
        m = json.loads(frame)
        kind = m["type"]
        if kind in ("match", "last_match"):
            trades.append((m["product_id"], str(m["trade_id"]), float(m["price"]),
                           float(m["size"]), SELL if m["side"] == "buy" else BUY))
        elif kind == "snapshot":
            rebuilt[m["product_id"]] = CoinbaseBook(m["bids"], m["asks"])
            books.append((m["product_id"], *rebuilt[m["product_id"]].top(DEPTH)))
        elif kind == "l2update":
            for side, price, size in m["changes"]:
                rebuilt[m["product_id"]].change(side, price, size)
            books.append((m["product_id"], *rebuilt[m["product_id"]].top(DEPTH)))
        elif kind == "ticker":
            tickers.append((m["product_id"], float(m["price"]), float(m["best_bid"]),
                            float(m["best_ask"]), float(m["volume_24h"])))
    return {"trades": trades, "books": books, "tickers": tickers}


def expected_kraken(frames: list) -> dict:
    trades, books, tickers, seen = [], [], [], set()
    book = KrakenBook(10)  # the depth the recorded acknowledgement confirms
    for _, frame in frames:
        m = json.loads(frame)
        channel = m.get("channel")
        if channel == "book":
            if m["type"] == "snapshot":
                book = KrakenBook(10)
            for side, price, qty in v2_book_levels(frame):
                book.apply(side, price, qty)
            book.truncate()
            assert book.checksum() == m["data"][0]["checksum"]
            books.append(("BTC-USD", *book.top(DEPTH)))
        elif channel == "trade":
            for t in m["data"]:
                if t["trade_id"] not in seen:
                    seen.add(t["trade_id"])
                    trades.append(("BTC-USD", str(t["trade_id"]), t["price"], t["qty"],
                                   BUY if t["side"] == "buy" else SELL))
        elif channel == "ticker":
            tickers += [("BTC-USD", t["last"], t["bid"], t["ask"], t["volume"])
                        for t in m["data"]]
    return {"trades": trades, "books": books, "tickers": tickers}


def expected_bitfinex(frames: list, unified: dict[str, str]) -> dict:
    trades, books, tickers = [], [], []
    channels: dict[str, tuple[str, str]] = {}
    rebuilt: dict[str, BitfinexBook] = {}
    for _, frame in frames:
        m = raw(frame)
        if isinstance(m, dict):
            if m.get("event") == "subscribed":
                channels[m["chanId"]] = (m["channel"], unified[m["symbol"]])
            continue
        if m[1] == "hb":
            continue
        channel, symbol = channels[m[0]]
        if channel == "trades":
            trades += [(symbol, t[0], float(t[3]), abs(float(t[2])),
                        SELL if t[2].startswith("-") else BUY) for t in reversed(m[1])]
        elif channel == "book":
            if isinstance(m[1][0], list):
                rebuilt[symbol] = BitfinexBook()
                for level in m[1]:
                    rebuilt[symbol].apply(*level)
            else:
                rebuilt[symbol].apply(*m[1])
            books.append((symbol, *rebuilt[symbol].top(DEPTH)))
        else:
            t = m[1]
            tickers.append((symbol, float(t[6]), float(t[0]), float(t[2]), float(t[7])))
    return {"trades": trades, "books": books, "tickers": tickers}


def test_coinbase_kraken_bitfinex_end_to_end(broker: EmbeddedBroker, tmp_path: Path,
                                             replays: Path, workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", "COINBASE", "BITFINEX", source=replays)
    for name in ("KRAKEN.0", "KRAKEN.ws.1.0"):
        shutil.copy(FIXTURES / "replays" / name, directory / name)
    recordings = load_recordings(directory)
    bitfinex_symbols = recordings["bitfinex"].configuration["trades"]
    expected = {
        "coinbase": expected_coinbase(recordings["coinbase"].connections[0].received),
        "kraken": expected_kraken(recordings["kraken"].connections[0].received),
        "bitfinex": expected_bitfinex(
            recordings["bitfinex"].connections[0].received,
            {"t" + s.replace("-", ":" if len(s) > 7 else ""): s for s in bitfinex_symbols}),
    }
    assert [len(expected[e]["trades"]) for e in expected] == [34, 4, 210]
    assert [len(expected[e]["books"]) for e in expected] == [3310, 3, 514]
    assert [len(expected[e]["tickers"]) for e in expected] == [34, 2, 11]

    worker = Worker(broker.url, tmp_path, replay=directory, app_id="kcs-test-west",
                    ingest="coinbase,kraken,bitfinex")
    workers.append(worker.start())

    for exchange, want in expected.items():
        # every trade exactly once, and the top of book after every book message equal to
        # the independent rebuild
        assert_published(broker, exchange, want)

    # integrity: every book proved right, every frame understood
    # (both topics may be empty: everything above has been processed, so a short wait does)
    errors = [json.loads(r.value)
              for r in read_topic(broker.url, "ws.error", idle=2.0, timeout=6.0)]
    assert not [e for e in errors if e["exchange"] in expected]
    dlq = [dict(r.headers) for r in read_topic(broker.url, "ws.dlq", idle=2.0, timeout=6.0)]
    assert not [h for h in dlq if h["exchange"].decode() in expected]

    # market state over HTTP: the last trade and last book of a market per exchange
    for exchange, symbol in (("coinbase", "SKL-USD"), ("kraken", "BTC-USD"),
                             ("bitfinex", "TESTBTC-TESTUSD")):
        assert_market_state(worker, exchange, symbol, expected[exchange])
    assert http_json(f"{worker.url}/market/kraken/ETH-USD/")[0] == 404
