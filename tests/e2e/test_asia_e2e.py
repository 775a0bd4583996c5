"""End to end for Bybit, OKX and HTX: recordings through a real worker into a real broker.

OKX and HTX are the real recorded sessions (OKX.*, HUOBI.* in the shared
recordings directory, ../shared/replays); Bybit is
the fixture recording tests/fixtures/replays/BYBIT.* (documented shapes, with one `u` gap).
The replay server plays them through the connectors exactly as a live session would; the
test reads every topic back and compares it with what it computes itself from the raw
frames: every trade exactly once, the top of book after every book message equal to an
independent rebuild, the tickers, the integrity errors, and the markets' state over HTTP.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import defaultdict
from pathlib import Path

from app.embedded import EmbeddedBroker
from exchanges.replay import load_recordings
from records import BUY, SELL
from tests.support import (FIXTURES, Worker, assert_market_state, assert_published,
                           copy_recordings, http_json, read_topic)
from tests.exchanges.test_bybit import Rebuild as BybitRebuild
from tests.exchanges.test_okx import Rebuild as OkxRebuild

DEPTH = 20


def expected_okx(frames) -> dict:
    """BTC-USDT is the one spot market; the recording's futures and swap go to the DLQ."""
    trades, books, tickers, foreign = [], [], [], 0
    rebuild = OkxRebuild()
    for _, frame in frames:
        msg = json.loads(frame)
        if "data" not in msg:
            continue
        arg = msg["arg"]
        if arg["instId"] != "BTC-USDT":
            foreign += 1
        elif arg["channel"] == "trades":
            trades += [("BTC-USDT", t["tradeId"], float(t["px"]), float(t["sz"]),
                        BUY if t["side"] == "buy" else SELL) for t in msg["data"]]
        elif arg["channel"] == "books":
            data = msg["data"][0]
            (rebuild.load if msg["action"] == "snapshot" else rebuild.apply)(data)
            assert rebuild.crc() == data["checksum"]
            books.append(("BTC-USDT", *rebuild.top(DEPTH)))
        else:
            tickers += [("BTC-USDT", float(t["last"]), float(t["bidPx"]), float(t["askPx"]),
                         float(t["vol24h"])) for t in msg["data"]]
    return {"trades": trades, "books": books, "tickers": tickers, "foreign": foreign}


def expected_htx(frames, unified: dict[str, str]) -> dict:
    trades, books = [], []
    for _, frame in frames:
        msg = json.loads(gzip.decompress(frame))
        ch = msg.get("ch", "")
        if not ch:
            continue
        symbol = unified[ch.split(".")[1]]
        if ch.endswith(".trade.detail"):
            trades += [(symbol, str(t["tradeId"]), float(t["price"]), float(t["amount"]),
                        BUY if t["direction"] == "buy" else SELL) for t in msg["tick"]["data"]]
        else:
            tick = msg["tick"]
            books.append((symbol, [tuple(map(float, lv)) for lv in tick["bids"][:DEPTH]],
                          [tuple(map(float, lv)) for lv in tick["asks"][:DEPTH]]))
    return {"trades": trades, "books": books, "tickers": []}


def expected_bybit(frames) -> dict:
    trades, books, tickers, gaps = [], [], [], []
    rebuilds: dict[str, BybitRebuild] = defaultdict(BybitRebuild)
    last_u: dict[str, int] = {}  # markets whose rebuilt book chains, and their last u
    for _, frame in frames:
        msg = json.loads(frame)
        topic = msg.get("topic", "")
        if topic.startswith("publicTrade."):
            trades += [(t["s"].replace("USDT", "-USDT"), t["i"], float(t["p"]), float(t["v"]),
                        BUY if t["S"] == "Buy" else SELL) for t in msg["data"]]
        elif topic.startswith("tickers."):
            t = msg["data"]
            tickers.append((t["symbol"].replace("USDT", "-USDT"), float(t["lastPrice"]), None,
                            None, float(t["volume24h"])))
        elif topic.startswith("orderbook."):
            data, native = msg["data"], msg["data"]["s"]
            if msg["type"] == "snapshot":
                rebuilds[native].load(data["b"], data["a"])
            elif native not in last_u:
                continue
            elif data["u"] != last_u[native] + 1:
                gaps.append(native.replace("USDT", "-USDT"))
                del last_u[native]
                continue
            else:
                rebuilds[native].apply(data["b"], data["a"])
            last_u[native] = data["u"]
            books.append((native.replace("USDT", "-USDT"), *rebuilds[native].top(DEPTH)))
    return {"trades": trades, "books": books, "tickers": tickers, "gaps": gaps}


def test_bybit_okx_htx_end_to_end(broker: EmbeddedBroker, tmp_path: Path, replays: Path,
                                  workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", "OKX", "HUOBI", source=replays)
    for name in ("BYBIT.0", "BYBIT.ws.1.0"):
        shutil.copy(FIXTURES / "replays" / name, directory / name)
    recordings = load_recordings(directory)
    expected = {
        "okx": expected_okx(recordings["okx"].connections[0].received),
        "htx": expected_htx(recordings["huobi"].connections[0].received,
                            {s.replace("-", "").lower(): s
                             for s in recordings["huobi"].configuration["trades"]}),
        "bybit": expected_bybit(recordings["bybit"].connections[0].received),
    }
    worker = Worker(broker.url, tmp_path, replay=directory, app_id="kcs-test-asia",
                    ingest="bybit,okx,htx")
    workers.append(worker.start())

    for exchange, want in expected.items():
        # every trade exactly once, and the top of book after every book message equal to
        # the independent rebuild
        assert_published(broker, exchange, want)

    assert len(expected["okx"]["trades"]) == 21 and len(expected["okx"]["books"]) == 30
    assert len(expected["okx"]["tickers"]) == 9
    assert len(expected["htx"]["trades"]) == 29 and len(expected["htx"]["books"]) == 82
    assert len(expected["bybit"]["books"]) > 20 and len(expected["bybit"]["tickers"]) > 4

    # integrity: Bybit's one `u` gap is on ws.error; OKX's and HTX's books all proved right
    errors = [(r.key.decode(), json.loads(r.value)) for r in read_topic(broker.url, "ws.error")]
    ours = [(key, e) for key, e in errors if e["exchange"] in expected]
    assert [key for key, _ in ours] == [f"bybit:{s}" for s in expected["bybit"]["gaps"]]
    assert expected["bybit"]["gaps"] == ["ETH-USDT"] and "gap" in ours[0][1]["reason"]
    # OKX frames of the recording's futures and swap (not spot markets) went to the DLQ
    dlq = [dict(r.headers) for r in read_topic(broker.url, "ws.dlq")]
    okx_dlq = [h for h in dlq if h["exchange"] == b"okx"]
    assert len(okx_dlq) == expected["okx"]["foreign"] == 61
    assert all(b"not subscribed" in h["reason"] for h in okx_dlq)
    assert not [h for h in dlq if h["exchange"] in (b"htx", b"bybit")]

    # market state over HTTP: the last trade and last book of a market per exchange
    for exchange, symbol in (("okx", "BTC-USDT"), ("htx", "FIL3S-USDT"),
                             ("bybit", "ETH-USDT")):
        assert_market_state(worker, exchange, symbol, expected[exchange])
    assert http_json(f"{worker.url}/market/okx/BTC-USD-220527/")[0] == 404
