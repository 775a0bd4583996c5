"""Unit tests of the pure folds behind the feature tables, against brute force.

`Windows` (rolling features), `Candles` and the signal rules are fed crafted trades (out of
order, exactly on window edges, too late, delivered twice) and compared with values computed
here from the plain list of trades, to 1e-9 relative.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest

from compute.candles import Candles, parse_intervals
from compute.signals import large_trade, parse_thresholds, volume_spike
from compute.windows import HORIZON, WINDOWS, Bucket, Windows
from records import Trade

BUY, SELL = 1, -1


# --- brute force ------------------------------------------------------------------------------


def brute_features(trades: list[tuple[float, float, float, int]]) -> dict[str, object]:
    """Features at t = the newest ts_event, straight from the definition: the window W holds
    the trades with t - W < ts <= t; first/last by (ts, arrival order)."""
    t = max(tr[0] for tr in trades)
    ordered = sorted(enumerate(trades), key=lambda it: (it[1][0], it[0]))
    last_price = ordered[-1][1][1]
    out: dict[str, object] = {"ts": t, "last_price": last_price}
    for label, width in WINDOWS.items():
        inside = [tr for _, tr in ordered if t - width < tr[0] <= t]
        buy = sum(a for _, _, a, s in inside if s == BUY)
        sell = sum(a for _, _, a, s in inside if s == SELL)
        volume = sum(a for _, _, a, _ in inside)
        notional = sum(p * a for _, p, a, _ in inside)
        out[f"volume_{label}"] = volume
        out[f"buy_volume_{label}"] = buy
        out[f"sell_volume_{label}"] = sell
        out[f"trades_{label}"] = len(inside)
        out[f"vwap_{label}"] = notional / volume if volume > 0 else None
        out[f"pressure_{label}"] = buy / sell if sell > 0 else None
        out[f"momentum_{label}"] = last_price / inside[0][1] - 1 if inside else None
    return out


def close(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def assert_features(got: dict[str, object], expected: dict[str, object]) -> None:
    for name, value in expected.items():
        assert close(got[name], value), (name, got[name], value)


def fold_all(windows: Windows, trades: list[tuple[float, float, float, int]],
             first_offset: int = 0) -> None:
    for offset, (ts, price, amount, side) in enumerate(trades, first_offset):
        windows.fold(ts, price, amount, side, offset)


def reload(windows: Windows) -> Windows:
    """What `_load` rebuilds after a restart: buckets through JSON, as the table holds them."""
    buckets = {i: Bucket(**_decode(b.value())) for i, b in windows.buckets.items()}
    return Windows(windows.t, windows.offset, windows.n, windows.late, buckets, windows.since)


def _decode(value: dict[str, object]) -> dict[str, object]:
    decoded = json.loads(json.dumps(value))
    return {"entries": decoded["e"], "hi": decoded["hi"]}


# --- rolling windows --------------------------------------------------------------------------


def test_window_edges_are_open_at_t_minus_w_and_closed_at_t():
    t = 1_700_000_100.0
    trades = [
        (t - 900.0, 100.0, 1.0, BUY),  # exactly t - 15m: in no window (and late at arrival)
        (t - 300.0, 101.0, 2.0, SELL),  # exactly t - 5m: only in 15m
        (t - 299.999, 102.0, 3.0, BUY),  # just inside 5m
        (t - 60.0, 103.0, 4.0, SELL),  # exactly t - 1m: 5m and 15m only
        (t - 59.999, 104.0, 5.0, BUY),  # just inside 1m
        (t, 105.0, 6.0, SELL),
    ]
    windows = Windows()
    fold_all(windows, [trades[-1]] + trades[:-1])  # t first: every other trade is late
    features = windows.features()
    assert features["trades_1m"] == 2 and features["volume_1m"] == 11.0
    assert features["trades_5m"] == 4 and features["volume_5m"] == 3.0 + 4 + 5 + 6
    assert features["trades_15m"] == 5 and features["volume_15m"] == 2.0 + 3 + 4 + 5 + 6
    assert features["momentum_1m"] == pytest.approx(105.0 / 104.0 - 1)
    assert features["momentum_5m"] == pytest.approx(105.0 / 102.0 - 1)
    assert features["vwap_1m"] == pytest.approx((104 * 5 + 105 * 6) / 11)
    assert features["pressure_1m"] == pytest.approx(5.0 / 6.0)
    assert windows.late == 1  # only the trade exactly at t - 15m
    assert_features(features, brute_features(trades))


def test_empty_windows_and_one_sided_flow():
    windows = Windows()
    features = windows.features()
    assert features["ts"] is None and features["last_price"] is None
    assert features["volume_1m"] == 0.0 and features["trades_15m"] == 0
    assert features["vwap_1m"] is None and features["momentum_5m"] is None
    assert features["pressure_1m"] is None
    fold_all(windows, [(10.0, 5.0, 1.0, BUY), (11.0, 6.0, 1.0, BUY)])
    features = windows.features()
    assert features["pressure_1m"] is None  # no sells: the ratio is undefined
    assert features["sell_volume_1m"] == 0.0 and features["buy_volume_1m"] == 2.0
    # The 1m window after a long quiet spell holds only the newest trade.
    windows.fold(200.0, 7.0, 3.0, SELL, 2)
    features = windows.features()
    assert features["trades_1m"] == 1 and features["momentum_1m"] == 0.0
    assert features["trades_5m"] == 3


def test_random_out_of_order_trades_match_brute_force_after_every_batch():
    rng = random.Random(7)
    base = 1_700_000_000.0
    trades: list[tuple[float, float, float, int]] = []
    windows = Windows()
    clock = base
    offset = 0
    late_expected = 0
    newest = -math.inf
    for _batch in range(120):
        for _ in range(rng.randint(1, 40)):
            clock += rng.choice([0.0, 0.25, 0.5, 1.0, 5.0, 17.5])
            # out of order: some trades lag, several land exactly on window edges
            lag = rng.choice([0.0] * 6 + [1.0, 60.0, 300.0, 899.75, 900.0, 1000.0, 4.999])
            ts = clock - lag
            trade = (ts, round(rng.uniform(90, 110), 2), round(rng.uniform(0.001, 3), 3),
                     rng.choice([BUY, SELL]))
            if ts <= newest - HORIZON:
                late_expected += 1
            newest = max(newest, ts)
            trades.append(trade)
            windows.fold(*trade, offset)
            offset += 1
        windows.evict()
        if rng.random() < 0.2:
            windows = reload(windows)
        expected = brute_features(trades)
        assert_features(windows.features(), expected)
        for label, width in WINDOWS.items():  # the spike check's sums
            assert close(windows.volume(width), expected[f"volume_{label}"])
        short, long = windows.volumes(60.0, 900.0)
        assert close(short, expected["volume_1m"]) and close(long, expected["volume_15m"])
    assert windows.late == late_expected > 0
    assert windows.n == len(trades)
    # evicted buckets are exactly those wholly out of the longest window
    assert all(b.times[-1] > windows.t - HORIZON for b in windows.buckets.values())


def test_trades_at_the_same_ts_merge_and_keep_arrival_order():
    windows = Windows()
    fold_all(windows, [(100.0, 1.0, 1.0, BUY), (100.0, 3.0, 1.0, SELL), (99.0, 2.0, 1.0, BUY),
                       (100.0, 4.0, 2.0, BUY)])
    bucket = windows.buckets[math.floor(100.0 / 5.0)]
    assert bucket.times == [100.0]  # 99.0 sits in the bucket before
    assert bucket.entries[0][1:] == [3.0, 1.0, 1.0 + 3.0 + 8.0, 3, 1.0, 4.0]
    features = windows.features()
    assert features["last_price"] == 4.0
    assert features["momentum_1m"] == pytest.approx(4.0 / 2.0 - 1)


def test_a_trade_delivered_again_after_a_crash_is_not_counted_twice():
    trades = [(100.0 + i, 10.0 + i, 1.0, BUY) for i in range(10)]
    windows = Windows()
    fold_all(windows, trades[:6])
    saved_bucket_state = reload(windows)  # buckets were written up to offset 5 ...
    saved_bucket_state.offset, saved_bucket_state.n = 2, 3  # ... the state only up to 2
    saved_bucket_state.t = 102.0
    # Kafka redelivers from offset 3: the agent skips offsets <= the state's, the buckets
    # skip offsets <= their own `hi`.
    for offset in range(3, 10):
        saved_bucket_state.fold(*trades[offset], offset)
    assert_features(saved_bucket_state.features(), brute_features(trades))
    assert saved_bucket_state.n == 10


# --- candles ----------------------------------------------------------------------------------


def brute_candles(trades: list[tuple[float, float, float]], interval: float, grace: float
                  ) -> tuple[list[list[float]], list[list[float]], int]:
    """(closed candles in start order, open candles, late count) from the definition."""
    t = -math.inf
    members: dict[float, list[tuple[int, float, float, float]]] = {}
    late = 0
    for i, (ts, price, amount) in enumerate(trades):
        t = max(t, ts)
        start = math.floor(ts / interval) * interval
        if start + interval + grace <= t:
            late += 1
            continue
        members.setdefault(start, []).append((i, ts, price, amount))
    closed, still_open = [], []
    for start in sorted(members):
        group = members[start]
        by_time = sorted(group, key=lambda m: (m[1], m[0]))
        candle = [start, by_time[0][2], max(m[2] for m in group), min(m[2] for m in group),
                  by_time[-1][2], sum(m[3] for m in group), sum(m[2] * m[3] for m in group),
                  len(group)]
        (closed if start + interval + grace <= t else still_open).append(candle)
    return closed, still_open, late


def test_candles_close_in_event_time_with_grace_and_drop_late_trades():
    rng = random.Random(3)
    trades: list[tuple[float, float, float]] = []
    clock = 1_700_000_000.0
    for _ in range(3000):
        clock += rng.choice([0.0, 0.5, 1.0, 2.0, 7.0])
        lag = rng.choice([0.0] * 8 + [1.0, 4.0, 5.0, 6.0, 30.0, 65.0])
        trades.append((clock - lag, round(rng.uniform(50, 60), 1), round(rng.uniform(0.1, 2), 2)))
    intervals = parse_intervals("1m,5m")
    candles = Candles(intervals, 5.0)
    closed: dict[str, list[list[float]]] = {"1m": [], "5m": []}
    for i, trade in enumerate(trades):
        candles.fold(*trade)
        if i % 97 == 0:  # a restart: open candles through JSON, as the table holds them
            kept = candles.closed
            candles = Candles(intervals, 5.0, json.loads(json.dumps(candles.state())))
            candles.closed = kept
    for label, candle in candles.closed:
        closed[label].append(candle[:8])
    for label, interval in intervals.items():
        expected_closed, expected_open, _late = brute_candles(trades, interval, 5.0)
        assert len(closed[label]) == len(expected_closed) > 10
        for got, want in zip(closed[label], expected_closed, strict=True):
            assert all(close(g, w) for g, w in zip(got, want, strict=True)), (got, want)
        got_open = sorted(c[:8] for c in candles.open[label].values())
        assert len(got_open) == len(expected_open) >= 1
        for got, want in zip(got_open, expected_open, strict=True):
            assert all(close(g, w) for g, w in zip(got, want, strict=True)), (got, want)
    assert candles.late == sum(brute_candles(trades, iv, 5.0)[2] for iv in intervals.values())
    assert candles.late > 0


def test_candle_boundaries_and_grace():
    candles = Candles({"1m": 60.0}, 5.0)
    candles.fold(120.0, 1.0, 1.0)  # exactly at a start: candle [120, 180)
    candles.fold(179.999, 2.0, 1.0)
    candles.fold(180.0, 3.0, 1.0)  # next candle
    assert sorted(candles.open["1m"]) == [120.0, 180.0] and not candles.closed
    candles.fold(184.9, 4.0, 1.0)
    candles.fold(170.0, 5.0, 1.0)  # late but within the grace: joins [120, 180)
    assert not candles.closed
    candles.fold(185.0, 6.0, 1.0)  # t = 180 + 5: [120, 180) closes
    assert [(label, c[0], c[1], c[4], c[7]) for label, c in candles.closed] == [
        ("1m", 120.0, 1.0, 2.0, 3)]
    candles.fold(175.0, 7.0, 1.0)  # its candle is closed: late
    assert candles.late == 1 and candles.open["1m"][180.0][7] == 3


def test_interval_parsing():
    assert parse_intervals("1m, 5m,1h,30s,1d") == {"1m": 60.0, "5m": 300.0, "1h": 3600.0,
                                                  "30s": 30.0, "1d": 86400.0}
    for bad in ("", "1x", "m", "0m", "1.5m"):
        with pytest.raises(ValueError):
            parse_intervals(bad)


# --- signals ----------------------------------------------------------------------------------


def test_large_trade_threshold_per_quote_currency():
    thresholds = parse_thresholds("KRW=100000000, usdt=100000,BTC=2")
    assert thresholds == {"KRW": 1e8, "USDT": 1e5, "BTC": 2.0}
    trade = Trade("upbit", "BTC-KRW", 1.0, 1.0, 100_000_000.0, 1.0, BUY, "7")
    signal = large_trade("upbit", "BTC-KRW", trade, thresholds)
    assert signal is not None and signal["notional"] == 1e8 and signal["threshold"] == 1e8
    assert large_trade("upbit", "BTC-KRW", replace(trade, amount=0.999), thresholds) is None
    assert large_trade("upbit", "ETH-BTC", replace(trade, price=0.05, amount=40.0),
                       thresholds)["notional"] == pytest.approx(2.0)
    assert large_trade("kraken", "BTC-GBP", trade, thresholds) is None  # no threshold
    with pytest.raises(ValueError):
        parse_thresholds("KRW")


def test_volume_spike_against_the_trailing_average():
    # 14 minutes of 1.0 per minute before the last one: average 1.0
    assert volume_spike(3.01, 14.0 + 3.01, 3.0) == (True, pytest.approx(1.0))
    assert volume_spike(3.0, 17.0, 3.0)[0] is False  # not above k times
    assert volume_spike(5.0, 5.0, 3.0) == (False, 0.0)  # no trades before the last minute
    assert volume_spike(3.01, 14.0 + 3.01, 3.0, history=False)[0] is False  # warming up


# --- a market's batch fold ---------------------------------------------------------------------


def test_fold_trades_equals_fold_trade_one_by_one_also_after_a_restart():
    """`fold_trades` on batches (some trades delivered again, as after a crash) leaves a
    market exactly as `fold_trade` on each trade: features, candles, signals, state."""
    from compute.features import FeatureRules, evaluate, fold_trade, fold_trades, restore, stored

    rules = FeatureRules(intervals=parse_intervals("1m,5m"), grace=5.0, history=100,
                         thresholds=parse_thresholds("USDT=1000"), spike_factor=3.0)
    rng = random.Random(3)
    trades, t = [], 1_700_000_000.0
    for i in range(3000):
        t += rng.choice([0.0, 0.1, 0.5, 2.0]) if i < 1500 or i > 1800 else 0.01
        ts = t - rng.choice([0.0] * 20 + [1.0, 5.0, 60.0, 901.0])
        trades.append(Trade("x", "ETH-USDT", ts, t + 0.1, 100.0 + rng.random(),
                            rng.choice([0.1, 1.0, 5.0, 20.0]), rng.choice((1, -1)), str(i)))
    one, batched = restore("x:ETH-USDT", None, {}, rules), restore("x:ETH-USDT", None, {}, rules)
    for offset, trade in enumerate(trades):
        fold_trade(one, trade, offset, rules)
    start = 0
    while start < len(trades):
        end = min(len(trades), start + rng.randint(1, 400))
        again = max(0, start - rng.randint(0, 50))  # delivered again: already folded
        fold_trades(batched, trades[again:end], list(range(again, end)), rules)
        start = end
    assert evaluate(batched) == evaluate(one)
    assert stored(batched, {}) == stored(one, {})
    assert batched.signals == one.signals and any(s["type"] == "volume_spike"
                                                   for s in one.signals)
    assert batched.candles.closed == one.candles.closed and one.candles.closed
