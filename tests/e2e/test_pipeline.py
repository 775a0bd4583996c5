"""End to end: recordings replayed through a real worker into a real broker.

The Upbit and Binance recordings (with one malformed frame slipped into the Upbit one) go
through the connectors exactly as a live session would; the test reads the topics back and
asks the worker's web views, and compares with what it computes itself from the raw files.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from app.embedded import EmbeddedBroker, free_port
from records import BUY, SELL
from tests.support import (FIXTURES, REPO, Worker, copy_recordings, http_json, read_topic,
                           wait_for)
from tests.exchanges.test_binance import rebuild_books

BAD_FRAME = b'{"ty":"trade","cd":"KRW-LAMB","tms":16186782'  # cut off mid-frame


def upbit_with_a_bad_frame(directory: Path) -> list[dict]:
    """Insert a malformed frame after the 10th received frame; return the good messages."""
    path = directory / "UPBIT.ws.62.0"
    out, messages, received = [], [], 0
    for line in path.read_text().splitlines():
        out.append(line)
        if line and " <-> " not in line and " <- " not in line:
            messages.append(json.loads(ast.literal_eval(line.partition(": ")[2])))
            received += 1
            if received == 10:
                out.append(f"{line.partition(': ')[0]}: {BAD_FRAME!r}")
    path.write_text("\n".join(out) + "\n")
    return messages


def test_replay_to_topics_and_market_state(fresh_broker: EmbeddedBroker, tmp_path: Path,
                                           replays: Path, workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", "UPBIT", "BINANCE", source=replays)
    messages = upbit_with_a_bad_frame(directory)
    worker = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-pipeline")
    workers.append(worker.start())

    # Every Upbit trade exactly once, with its exact id, price, amount and side.
    raw_trades = [m for m in messages if m["ty"] == "trade"]
    records = read_topic(fresh_broker.url, "trade-data.upbit", expect=len(raw_trades))

    def order(item: tuple[str, dict]) -> tuple[str, str]:
        return item[0], item[1]["trade_id"]

    got = sorted(((r.key.decode(), json.loads(r.value)) for r in records), key=order)
    expected = sorted((
        (f"upbit:{m['cd'].split('-')[1]}-{m['cd'].split('-')[0]}",
         {"exchange": "upbit", "symbol": f"{m['cd'].split('-')[1]}-{m['cd'].split('-')[0]}",
          "ts_event": m["ttms"] / 1000.0, "price": m["tp"], "amount": m["tv"],
          "side": BUY if m["ab"] == "BID" else SELL, "trade_id": str(m["sid"])})
        for m in raw_trades), key=order)
    assert len(got) == len(expected) == 95
    for (key, value), (want_key, want) in zip(got, expected, strict=True):
        assert key == want_key
        assert value.pop("ts_recv") > 0
        assert value == want

    # The malformed frame is on the DLQ, byte for byte, with the reason; frames after it
    # were processed (the trades above include every one after it).
    [dlq] = read_topic(fresh_broker.url, "ws.dlq", expect=1)
    headers = dict(dlq.headers)
    assert dlq.value == BAD_FRAME
    assert headers["exchange"] == b"upbit" and b"JSONDecodeError" in headers["reason"]

    # Market state over HTTP equals the recording's last trade and last book per market.
    last_trade = [m for m in raw_trades if m["cd"] == "KRW-LAMB"][-1]
    last_book = [m for m in messages if m["ty"] == "orderbook" and m["cd"] == "KRW-LAMB"][-1]
    url = worker.url + "/market/upbit/LAMB-KRW/"
    wait_for(lambda: http_json(url)[1].get("last_trade_id") == str(last_trade["sid"]))
    _, state = http_json(url)
    top = last_book["obu"][0]
    assert (state["last_price"], state["last_amount"]) == (last_trade["tp"], last_trade["tv"])
    assert (state["best_bid"], state["best_bid_size"]) == (top["bp"], top["bs"])
    assert (state["best_ask"], state["best_ask_size"]) == (top["ap"], top["as"])
    assert state["mid"] == (top["ap"] + top["bp"]) / 2 and state["spread"] == top["ap"] - top["bp"]

    final_tops = {native: tops[-1] for native, tops in rebuild_books(directory).items()}
    bids, asks = final_tops["NKNUSDT"]
    (bid, bid_size), (ask, ask_size) = bids[0], asks[0]
    url = worker.url + "/market/binance/NKN-USDT/"
    wait_for(lambda: http_json(url)[1].get("best_bid") == bid and
             http_json(url)[1].get("best_ask") == ask)
    _, state = http_json(url)
    assert (state["best_bid_size"], state["best_ask_size"]) == (bid_size, ask_size)

    _, markets = http_json(worker.url + "/markets/")
    assert {"upbit:LAMB-KRW", "upbit:WAVES-KRW", "binance:NKN-USDT", "binance:RUNE-EUR"} <= \
        set(markets)
    assert http_json(worker.url + "/market/upbit/NOPE-KRW/")[0] == 404
    _, health = http_json(worker.url + "/health/")
    assert health["ingest"]["upbit"]["connected"] == 1


def test_embedded_broker_is_announced_and_stopped(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCS_")}
    env.update(KCS_WEB_PORT=str(port), KCS_WEB_HOST="127.0.0.1", KCS_DATA_DIR=str(tmp_path),
               KCS_INGEST="none")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "faust", "-A", "app", "worker"],
                                   cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        line = wait_for(lambda: next((x for x in log_path.read_text().splitlines()
                                      if "embedded Kafka broker" in x), None), timeout=30)
        # A text line or a JSON log line (stderr is redirected to the log by Faust).
        broker_port = int(re.search(r"listening on kafka://[0-9.]+:([0-9]+)", line)[1])
        wait_for(lambda: http_json(f"http://127.0.0.1:{port}/health/")[0] == 200, timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
    # The broker went with the worker.
    import socket

    time.sleep(0.5)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", broker_port)) != 0


def test_a_down_broker_is_reported_and_retried_until_it_is_up(tmp_path: Path,
                                                              workers: list[Worker]) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "late-broker.log")
    worker = Worker(broker.url, tmp_path, ingest="none", app_id="kcs-test-late-broker")
    worker.keep_trying = True
    workers.append(worker)
    try:
        worker.start(wait=4)
    except TimeoutError:
        pass  # expected: there is no broker yet
    # still trying (on a busy machine the first attempt may come after the 4 s above)
    wait_for(lambda: f"Kafka at {broker.url} is not reachable" in worker.log(), timeout=60)
    assert worker.process is not None and worker.process.poll() is None
    broker.start()
    try:
        wait_for(lambda: "Worker]: Ready" in worker.log(), timeout=90)
        assert http_json(worker.url + "/health/")[0] == 200
    finally:
        worker.stop()
        broker.stop()


def test_two_workers_answer_every_market_view_alike(fresh_broker: EmbeddedBroker, tmp_path: Path,
                                                     replays: Path,
                                                     workers: list[Worker]) -> None:
    directory = copy_recordings(tmp_path / "replay", "UPBIT", "BINANCE", source=replays)
    first = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-two")
    workers.append(first.start())
    second = Worker(fresh_broker.url, tmp_path, ingest="none", app_id="kcs-test-two")
    workers.append(second.start())

    # The markets with data in these recordings.
    expected = {"upbit:LAMB-KRW", "upbit:WAVES-KRW", "upbit:XTZ-BTC", "upbit:ITAM-BTC",
                "binance:NKN-USDT", "binance:BLZ-ETH", "binance:LRC-BTC", "binance:RUNE-EUR"}

    def owned_by_both() -> bool:
        local = [set(http_json(w.url + "/markets/?local=1")[1]) for w in (first, second)]
        return all(local) and not local[0] & local[1] and local[0] | local[1] == expected
    wait_for(owned_by_both, timeout=90)  # each worker owns some markets, none owns all
    _, everything = http_json(first.url + "/markets/")
    assert http_json(second.url + "/markets/")[1] == everything
    assert set(everything) == expected
    for key, state in everything.items():
        exchange, symbol = key.split(":")
        answers = [http_json(f"{w.url}/market/{exchange}/{symbol}/") for w in (first, second)]
        assert answers[0] == answers[1] == (200, state), key


def test_binance_trades_tickers_and_books_through_a_worker(fresh_broker: EmbeddedBroker,
                                                            tmp_path: Path,
                                                            workers: list[Worker]) -> None:
    # The real Binance recording has books only: its trades and tickers come from the fixture
    # recording (documented frame shapes, REST snapshots included).
    directory = copy_recordings(tmp_path / "replay", "BINANCE", source=FIXTURES / "replays")
    worker = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-binance")
    workers.append(worker.start())
    trades = [json.loads(r.value) for r in read_topic(fresh_broker.url, "trade-data.binance",
                                                      expect=5)]
    assert sorted((t["symbol"], t["trade_id"], t["price"], t["amount"], t["side"])
                  for t in trades) == sorted([
        ("BTC-USDT", "5001", 97000.5, 0.01, BUY), ("BTC-USDT", "5002", 97000.0, 0.25, SELL),
        ("ETH-USDT", "7001", 3100.1, 1.5, BUY), ("ETH-USDT", "300", 3100.0, 0.75, SELL),
        ("BTC-USDT", "5003", 97001.0, 0.05, BUY)])
    tickers = [json.loads(r.value) for r in read_topic(fresh_broker.url, "ticker-data.binance",
                                                       expect=2)]
    assert {(t["symbol"], t["last"], t["volume_24h"]) for t in tickers} == {
        ("BTC-USDT", 97000.0, 12345.678), ("ETH-USDT", 3100.1, 5000.0)}
    books = [json.loads(r.value) for r in read_topic(fresh_broker.url, "orderbook-data.binance",
                                                     expect=7)]
    expected = rebuild_books(directory)
    for native, symbol in (("BTCUSDT", "BTC-USDT"), ("ETHUSDT", "ETH-USDT")):
        published = [(tuple(map(tuple, b["bids"])), tuple(map(tuple, b["asks"])))
                     for b in books if b["symbol"] == symbol]
        assert published == expected[native], symbol
    url = worker.url + "/market/binance/BTC-USDT/"
    wait_for(lambda: http_json(url)[1].get("last_trade_id") == "5003")
    _, state = http_json(url)
    assert (state["best_bid"], state["best_ask"]) == (97000.1, 97001.0)
