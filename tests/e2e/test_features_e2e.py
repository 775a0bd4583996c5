"""End to end: features, candles, signals and market state from real workers on a real broker.

Crafted trades (out of order, on window edges exactly, too late, large, a volume spike) are
produced to `trade-data.<exchange>` as the connectors would; a worker folds them, is killed
with SIGKILL in the middle, restarts on the same data dir, and a second worker joins. Every
feature and candle, from either worker's views and from the derived topics, must equal what
this test computes by brute force from the trades it produced, to 1e-9 relative.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from pathlib import Path

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.embedded import EmbeddedBroker
from records import BUY, SELL, OrderBook, Trade
from records.codec import JSON
from records.derived import Features as FeaturesRecord
from tests.support import Worker, copy_recordings, http_json, read_topic, wait_for
from tests.compute.test_features import brute_candles, brute_features, close

APP_ID = "kcs-test-features"
T0 = 1_700_000_040.0  # a whole minute
INTERVALS = {"1m": 60.0, "5m": 300.0}
GRACE = 5.0
THRESHOLDS = {"KRW": 1e8, "USDT": 1e5}  # the defaults of KCS_LARGE_TRADE_NOTIONAL
SPIKE = "upbit:XRP-KRW"
BULK = "binance:SOL-USDT"
FAUST_TANSU = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1",
               "PRODUCER_MAX_BATCH_SIZE": "1"}


def random_market(key: str, count: int, price: float, amount: tuple[float, float],
                  rng: random.Random) -> list[Trade]:
    """Trades on a 0.5 s grid with lags landing exactly on window and candle edges."""
    exchange, _, symbol = key.partition(":")
    trades, clock = [], T0
    lags = [0.0] * 12 + [0.5, 4.0, 5.0, 6.0, 59.5, 60.0, 300.0, 899.5, 900.0, 1000.0]
    for i in range(count):
        clock += rng.choice([0.0, 0.5, 1.0, 2.5, 5.0])
        ts = clock - rng.choice(lags)
        trades.append(Trade(exchange, symbol, ts, clock + 0.1,
                            round(price * rng.uniform(0.98, 1.02), 2),
                            round(rng.uniform(*amount), 4), rng.choice((BUY, SELL)),
                            f"{key}-{i}"))
    t = clock + 1.0  # the end: the last trade is at t, then trades exactly on its edges
    for j, (lag, side) in enumerate([(0.0, BUY), (60.0, SELL), (59.5, BUY), (300.0, BUY),
                                     (299.5, SELL), (900.0, SELL), (899.5, BUY)]):
        trades.append(Trade(exchange, symbol, t - lag, t + 0.2, price, 1.0, side,
                            f"{key}-edge-{j}"))
    return trades


def spike_market(rng: random.Random) -> list[Trade]:
    """Increasing ts: 16 minutes at 30 per minute, a minute at 200, then calm again."""
    trades, ts = [], T0
    for i in range(16 * 30 + 200 + 10 * 30):
        ts += 2.0 if i < 480 or i >= 680 else 0.3
        trades.append(Trade("upbit", "XRP-KRW", ts, ts + 0.05, 800.0 + rng.randint(-5, 5),
                            1.0, rng.choice((BUY, SELL)), f"xrp-{i}"))
    return trades


def make_trades() -> dict[str, list[Trade]]:
    rng = random.Random(11)
    return {
        "binance:ETH-USDT": random_market("binance:ETH-USDT", 2500, 2000.0, (0.01, 5.0), rng),
        "binance:BTC-USDT": random_market("binance:BTC-USDT", 2500, 60000.0, (0.001, 2.0),
                                          rng),
        "upbit:BTC-KRW": random_market("upbit:BTC-KRW", 2500, 9e7, (0.001, 1.5), rng),
        SPIKE: spike_market(rng),
        BULK: random_market(BULK, 30000, 150.0, (0.1, 50.0), rng),
    }


def interleave(per_market: dict[str, list], fraction: tuple[float, float],
               rng: random.Random) -> list[tuple[str, object]]:
    """Each market's slice in its own order, markets interleaved at random."""
    queues = {}
    for key, items in per_market.items():
        lo, hi = (int(len(items) * f) for f in fraction)
        queues[key] = list(reversed(items[lo:hi]))
    out = []
    while queues:
        key = rng.choice(sorted(queues))
        out.append((key, queues[key].pop()))
        if not queues[key]:
            del queues[key]
    return out


async def produce(bootstrap: str, records: list[tuple[str, bytes]]) -> None:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key)
                   for topic, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 4, 1) for name in names])
    except Exception:  # noqa: BLE001  (already created by a worker: fine)
        pass
    finally:
        await admin.close()


def send_trades(bootstrap: str, items: list[tuple[str, Trade]]) -> None:
    asyncio.run(produce(bootstrap, [(f"trade-data.{t.exchange}", key.encode(),
                                     JSON.encode(f"trade-data.{t.exchange}", t))
                                    for key, t in items]))


def start_worker(broker: EmbeddedBroker, tmp: Path, data_dir: Path | None = None) -> Worker:
    worker = Worker(broker.url, tmp, data_dir=data_dir, ingest="none", app_id=APP_ID,
                    candle_intervals="1m,5m", candle_grace=GRACE, candle_history=1000)
    worker.env.update(FAUST_TANSU)  # the embedded profile, also when the broker is given
    return worker.start()


def view(worker: Worker, path: str) -> tuple[int, object]:
    try:
        return http_json(worker.url + path, timeout=10)
    except OSError:
        return 0, None


def n_of(worker: Worker, key: str) -> int:
    exchange, _, symbol = key.partition(":")
    status, body = view(worker, f"/features/{exchange}/{symbol}/")
    return body["n"] if status == 200 else -1


def late_count(trades: list[Trade]) -> int:
    late, t = 0, -math.inf
    for trade in trades:
        if trade.ts_event <= t - 900.0:
            late += 1
        t = max(t, trade.ts_event)
    return late


def expected_features(trades: list[Trade]) -> dict[str, object]:
    expected = brute_features([(t.ts_event, t.price, t.amount, t.side) for t in trades])
    expected.update(n=len(trades), late=late_count(trades),
                    updated=max(t.ts_recv for t in trades))
    return expected


def brute_spikes(trades: list[Trade]) -> list[tuple[float, float, float]]:
    """(ts, volume_1m, average) of each rising edge of the spike condition, checked when a
    trade moves the newest ts_event t into a new span floor(t / 5) (docs/features.md, "Signals")."""
    out, t, checked, was, since = [], -math.inf, -1, False, math.inf
    live: list[Trade] = []  # the trades that can still be in a window
    for trade in trades:
        if trade.ts_event <= t - 900:
            continue  # late: in no window, not even counted as history
        t = max(t, trade.ts_event)
        since = min(since, trade.ts_event)
        live.append(trade)
        if math.floor(t / 5.0) <= checked:
            continue
        checked = math.floor(t / 5.0)
        live = [x for x in live if x.ts_event > t - 900]
        volume_1m = sum(x.amount for x in live if x.ts_event > t - 60)
        volume_15m = sum(x.amount for x in live)
        average = (volume_15m - volume_1m) / 14
        history = since <= t - 900
        now = history and average > 0 and volume_1m > 3.0 * average
        if now and not was:
            out.append((t, volume_1m, average))
        was = now
    return out


def assert_same(got: dict, expected: dict, where: str) -> None:
    for name, value in expected.items():
        assert close(got[name], value), (where, name, got[name], value)


def assert_candles(got: list[dict], expected: list[list[float]], interval: float,
                   where: str) -> None:
    assert len(got) == len(expected), (where, len(got), len(expected))
    for candle, want in zip(got, expected, strict=True):
        values = [candle["start"], candle["open"], candle["high"], candle["low"],
                  candle["close"], candle["volume"], candle["quote_volume"], candle["trades"]]
        assert all(close(g, w) for g, w in zip(values, want, strict=True)), (where, candle,
                                                                             want)
        assert candle["end"] == candle["start"] + interval


def check_views(worker: Worker, trades: dict[str, list[Trade]]) -> dict[str, dict]:
    """Every market's features and candles from `worker`'s views against brute force."""
    answers = {}
    for key, market_trades in trades.items():
        exchange, _, symbol = key.partition(":")
        status, features = view(worker, f"/features/{exchange}/{symbol}/")
        assert status == 200, (key, features)
        assert_same(features, expected_features(market_trades), f"{worker.port} {key}")
        assert "buckets" not in features and "offset" not in features
        answers[key] = {"features": features}
        for label, interval in INTERVALS.items():
            status, body = view(worker, f"/candles/{exchange}/{symbol}/?interval={label}"
                                        f"&limit=1000")
            assert status == 200, (key, body)
            closed, still_open, _ = brute_candles(
                [(t.ts_event, t.price, t.amount) for t in market_trades], interval, GRACE)
            assert len(closed) > 5
            assert_candles(body["candles"], closed, interval, f"{worker.port} {key} {label}")
            assert_candles(body["open"], still_open, interval, f"{worker.port} {key} {label}")
            answers[key][label] = body
        status, body = view(worker, f"/candles/{exchange}/{symbol}/?interval=1m&limit=3")
        assert [c["start"] for c in body["candles"]] == \
            [c["start"] for c in answers[key]["1m"]["candles"][-3:]]
    return answers


def test_features_exact_through_a_kill_and_from_two_workers(
        fresh_broker: EmbeddedBroker, tmp_path: Path, workers: list[Worker]) -> None:
    bootstrap = fresh_broker.url.split("://", 1)[1]
    trades = make_trades()
    rng = random.Random(5)
    asyncio.run(create_topics(bootstrap, ["trade-data.binance", "trade-data.upbit",
                                          "orderbook-data.upbit"]))

    # Phase 1: a third of every market, and two books, then a worker.
    first = interleave(trades, (0.0, 0.3), rng)
    send_trades(bootstrap, first)
    book = OrderBook("upbit", "BTC-KRW", T0, T0 + 0.1, bids=[(9e7, 0.5), (8.99e7, 1.5)],
                     asks=[(9.01e7, 1.0), (9.02e7, 3.0)], sequence=None)
    asyncio.run(produce(bootstrap, [("orderbook-data.upbit", b"upbit:BTC-KRW",
                                        JSON.encode("orderbook-data.upbit", book))]))
    worker = start_worker(fresh_broker, tmp_path)
    workers.append(worker)
    counts = {key: sum(1 for k, _ in first if k == key) for key in trades}
    wait_for(lambda: all(n_of(worker, key) == counts[key] for key in trades), timeout=90)

    # Market state: top of book, microprice, depth and imbalance from the book. The book's
    # topic is read in runs of its own, folded after or before the trades' (no order between
    # topics), so its state is waited for like the features.
    wait_for(lambda: (lambda r: r[0] == 200 and r[1]["book_ts"] is not None)(
        view(worker, "/market/upbit/BTC-KRW/")), timeout=30)
    status, state = view(worker, "/market/upbit/BTC-KRW/")
    assert status == 200
    assert state["microprice"] == (9e7 * 1.0 + 9.01e7 * 0.5) / 1.5
    assert (state["bid_volume"], state["ask_volume"]) == (2.0, 4.0)
    assert state["imbalance"] == (2.0 - 4.0) / 6.0
    assert state["last_price"] == [t for k, t in first if k == "upbit:BTC-KRW"][-1].price

    # Phase 2: the rest, sent in chunks while the worker folds (it reads each fetch as one
    # run, up to 30,000 records: sent at once, the whole phase could be folded in one run);
    # kill -9 once it has folded part of it.
    rest = interleave(trades, (0.3, 1.0), rng)
    chunks = [rest[i:i + 2000] for i in range(0, len(rest), 2000)]

    def send_chunks() -> None:
        for chunk in chunks:
            send_trades(bootstrap, chunk)
            time.sleep(0.5)

    sender = threading.Thread(target=send_chunks)
    sender.start()
    total = len(trades[BULK])
    try:
        at_kill = wait_for(lambda: (lambda n: n if counts[BULK] < n < total else 0)(
            n_of(worker, BULK)), timeout=90, interval=0.1)
        worker.kill()
    finally:
        sender.join()

    # Restart on the same data dir: the tables come back from their changelogs.
    restarted = start_worker(fresh_broker, tmp_path, data_dir=worker.data_dir)
    workers.append(restarted)
    wait_for(lambda: all(n_of(restarted, key) == len(trades[key]) for key in trades),
             timeout=240)  # generous: recovery plus ~40k trades on a 2-core machine
    assert 0 < at_kill < total
    answers = check_views(restarted, trades)

    # A second worker joins: every view answers the same from either port.
    second = start_worker(fresh_broker, tmp_path)
    workers.append(second)

    last_answers: dict[tuple[int, str], object] = {}

    def both_answer() -> bool:
        for key in trades:
            exchange, _, symbol = key.partition(":")
            for w in (restarted, second):
                status, body = view(w, f"/features/{exchange}/{symbol}/")
                last_answers[w.port, key] = status, body if status != 200 else body["n"]
                if status != 200 or body["n"] != len(trades[key]):
                    return False
        return True

    try:
        wait_for(both_answer, timeout=90)
    except TimeoutError:
        raise AssertionError(f"views not answered alike: {last_answers}") from None
    for w in (restarted, second):
        again = check_views(w, trades)
        for key in trades:
            assert again[key]["features"] == answers[key]["features"]
            for label in INTERVALS:
                assert again[key][label] == answers[key][label]

    # Derived topics: the last `features` record of a market is its final features; every
    # closed candle was published (at least once: a crash may repeat one) with brute values.
    records = read_topic(fresh_broker.url, "features", idle=3.0)
    last = {r.key.decode(): JSON.decode("features", r.value) for r in records}
    for key in trades:  # the view's features as the topic's record (ts_event, ts_recv)
        assert last[key] == JSON.decode("features", JSON.encode(
            "features", FeaturesRecord.of(answers[key]["features"])))
    for label, interval in INTERVALS.items():
        published: dict[tuple[str, float], list[dict]] = {}
        for r in read_topic(fresh_broker.url, f"candles.{label}", idle=3.0):
            candle = json.loads(r.value)
            published.setdefault((r.key.decode(), candle["start"]), []).append(candle)
        for key, market_trades in trades.items():
            closed, _, _ = brute_candles(
                [(t.ts_event, t.price, t.amount) for t in market_trades], interval, GRACE)
            for want in closed:
                copies = published.pop((key, want[0]))
                assert_candles(copies, [want] * len(copies), interval, f"{key} {label}")
        assert not published  # nothing but closed candles

    # Signals: every large trade, and the volume spike with its brute-force numbers.
    signals = [(r.key.decode(), json.loads(r.value))
               for r in read_topic(fresh_broker.url, "signals", idle=3.0)]
    large = {s["trade_id"] for _, s in signals if s["type"] == "large_trade"}
    expected_large = {t.trade_id for market_trades in trades.values() for t in market_trades
                      if t.price * t.amount >= THRESHOLDS[t.symbol.rpartition("-")[2]]}
    assert large == expected_large and len(expected_large) > 10
    for key, market_trades in trades.items():
        spikes = {s["ts_event"]: s for k, s in signals
                  if k == key and s["type"] == "volume_spike"}
        for spike in spikes.values():
            assert spike["volume_1m"] > 3.0 * spike["average"] > 0
        if key == BULK:
            continue  # too many checks to brute-force here
        expected_spikes = brute_spikes(market_trades)
        assert sorted(spikes) == [ts for ts, _, _ in expected_spikes], key
        for ts, volume_1m, average in expected_spikes:
            assert close(spikes[ts]["volume_1m"], volume_1m)
            assert close(spikes[ts]["average"], average)
    assert len(brute_spikes(trades[SPIKE])) == 1

    # Market state went out on its topic too.
    states = [json.loads(r.value) for r in read_topic(fresh_broker.url, "market-state",
                                                      idle=3.0)
              if r.key == b"upbit:BTC-KRW"]
    assert states and states[-1]["last_price"] == trades["upbit:BTC-KRW"][-1].price


def test_features_of_a_replayed_recording_equal_brute_force(
        fresh_broker: EmbeddedBroker, tmp_path: Path, replays: Path,
        workers: list[Worker]) -> None:
    """The real Upbit session, replayed through the connector: the features and candles of
    every market equal brute force over the trades the connector put on `trade-data.upbit`."""
    directory = copy_recordings(tmp_path / "replay", "UPBIT", source=replays)
    worker = Worker(fresh_broker.url, tmp_path, replay=directory, app_id="kcs-test-replay-feat",
                    candle_intervals="1m,5m", candle_grace=GRACE)
    workers.append(worker.start())
    trades: dict[str, list[Trade]] = {}
    for record in read_topic(fresh_broker.url, "trade-data.upbit", expect=95):
        # One market lives in one partition, read in offset order: the order folded.
        trades.setdefault(record.key.decode(), []).append(Trade(**json.loads(record.value)))
    assert sum(map(len, trades.values())) == 95 and len(trades) == 3
    for key, market in trades.items():
        exchange, _, symbol = key.partition(":")
        count = len(market)
        wait_for(lambda k=key, n=count: n_of(worker, k) == n, timeout=60)
        status, features = view(worker, f"/features/{exchange}/{symbol}/")
        assert status == 200
        assert_same(features, expected_features(market), key)
        for label, interval in INTERVALS.items():
            closed, still_open, _ = brute_candles(
                [(t.ts_event, t.price, t.amount) for t in market], interval, GRACE)
            _, body = view(worker, f"/candles/{exchange}/{symbol}/?interval={label}")
            assert_candles(body["candles"], closed, interval, f"{key} {label}")
            assert_candles(body["open"], still_open, interval, f"{key} {label}")
    lamb = view(worker, "/features/upbit/LAMB-KRW/")[1]
    assert lamb["trades_1m"] == 93 and lamb["buy_volume_1m"] > 0 and lamb["sell_volume_1m"] > 0
