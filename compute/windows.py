"""Exact rolling windows over one market's trades, in event time, kept in 5-second buckets.

Pure computation (no Faust, no settings): the window semantics and the storage layout are in
docs/features.md ("Rolling windows"); `agents/features.py` keeps these objects in tables.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Any

from records import BUY

__all__ = ["Windows", "Bucket", "WINDOWS", "BUCKET", "HORIZON"]

WINDOWS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
HORIZON = max(WINDOWS.values())
_floor = math.floor
# Seconds of event time per stored bucket: small enough that a busy market's bucket stays a
# few kB (it is rewritten every batch), large enough that 15 minutes are few buckets to sum.
BUCKET = 5.0

# An entry merges the trades of one market with the same ts_event.
TS, BUY_VOL, SELL_VOL, NOTIONAL, COUNT, FIRST, LAST = range(7)


class Bucket:
    """The entries of one market's 5-second span of event time, sorted by ts_event."""

    __slots__ = ("entries", "times", "hi", "sums")

    def __init__(self, entries: list[list[float]] | None = None, hi: int = -1) -> None:
        self.entries = entries if entries is not None else []
        self.times = [e[TS] for e in self.entries]
        self.hi = hi  # the highest source offset folded in
        self.sums: tuple[float, float, float, int] | None = None  # buy, sell, notional, count

    def totals(self, start: int = 0) -> tuple[float, float, float, int]:
        """Sums of the entries from index `start` on."""
        if start == 0 and self.sums is not None:
            return self.sums
        buy = sell = notional = 0.0
        count = 0
        for e in self.entries[start:] if start else self.entries:
            buy += e[BUY_VOL]
            sell += e[SELL_VOL]
            notional += e[NOTIONAL]
            count += e[COUNT]
        if start == 0:
            self.sums = (buy, sell, notional, count)
        return buy, sell, notional, count

    def value(self) -> dict[str, Any]:
        return {"hi": self.hi, "e": self.entries}


class Windows:
    """Exact rolling windows over one market's trades (see the module docstring)."""

    __slots__ = ("t", "offset", "n", "late", "since", "buckets", "dirty", "removed")

    def __init__(self, t: float = -math.inf, offset: int = -1, n: int = 0, late: int = 0,
                 buckets: dict[int, Bucket] | None = None, since: float = math.inf) -> None:
        self.t = t
        self.since = since  # the oldest ts_event ever folded: how much history there is
        self.offset = offset  # the source offset of the last trade folded
        self.n = n
        self.late = late
        self.buckets = buckets if buckets is not None else {}
        self.dirty: set[int] = set()  # buckets to write
        self.removed: set[int] = set()  # buckets to delete

    def fold(self, ts: float, price: float, amount: float, side: int, offset: int) -> bool:
        """Fold one trade; False when it is too late for every window."""
        self.offset = offset
        self.n += 1
        t = self.t
        if ts <= t - HORIZON:
            self.late += 1
            return False
        if ts > t:
            self.t = ts
        if ts < self.since:
            self.since = ts
        index = _floor(ts / BUCKET)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
            self.removed.discard(index)
        if offset <= bucket.hi:
            return True  # folded into this bucket before a crash
        bucket.hi = offset
        self.dirty.add(index)
        # The trade joins the bucket's entry of its ts_event, or a new one (written here, not
        # in a Bucket method: one call fewer per trade).
        bucket.sums = None
        times, entries = bucket.times, bucket.entries
        if not times or ts > times[-1]:  # the common case: a new entry, written whole
            times.append(ts)
            if side == BUY:
                entries.append([ts, amount, 0.0, price * amount, 1, price, price])
            else:
                entries.append([ts, 0.0, amount, price * amount, 1, price, price])
            return True
        if ts == times[-1]:
            e = entries[-1]
        else:  # out of order
            i = bisect_left(times, ts)
            if times[i] == ts:
                e = entries[i]
            else:
                e = [ts, 0.0, 0.0, 0.0, 0, price, price]
                times.insert(i, ts)
                entries.insert(i, e)
        if side == BUY:
            e[BUY_VOL] += amount
        else:
            e[SELL_VOL] += amount
        e[NOTIONAL] += price * amount
        e[COUNT] += 1
        e[LAST] = price
        return True

    def evict(self) -> None:
        """Forget the buckets whose every trade is out of the longest window."""
        edge = self.t - HORIZON
        for index in [i for i, b in self.buckets.items() if not b.times or b.times[-1] <= edge]:
            del self.buckets[index]
            self.dirty.discard(index)
            self.removed.add(index)

    def volume(self, width: float) -> float:
        """The volume of the window of `width` seconds ending at t."""
        return self.volumes(width, width)[0]

    def volumes(self, short: float, long: float) -> tuple[float, float]:
        """The volumes of the windows of `short` and `long` (>= short) seconds ending at t,
        in one pass."""
        lo_short, lo_long = self.t - short, self.t - long
        volume_short = volume_long = 0.0
        for bucket in self.buckets.values():
            times = bucket.times
            if times[-1] <= lo_long:
                continue
            # A bucket wholly inside the long window, its sums kept (most of the 180 of a
            # full 15 minutes): read in place. The spike check runs this every 5 s of a
            # market's event time (bench/features.py: 6.7% of the worker in py-spy).
            sums = bucket.sums if times[0] > lo_long else None
            if sums is None:
                sums = bucket.totals(0 if times[0] > lo_long else bisect_right(times, lo_long))
            volume_long += sums[0] + sums[1]
            if times[-1] > lo_short:
                b, s, _, _ = bucket.totals(0 if times[0] > lo_short else
                                           bisect_right(times, lo_short))
                volume_short += b + s
        return volume_short, volume_long

    def features(self) -> dict[str, Any]:
        t = self.t
        order = sorted(self.buckets)
        out: dict[str, Any] = {"ts": t if t != -math.inf else None}
        last_price = None
        if order:
            last_price = self.buckets[order[-1]].entries[-1][LAST]
        out["last_price"] = last_price
        for label, width in WINDOWS.items():
            lo = t - width
            buy = sell = notional = 0.0
            count = 0
            first = None
            # Buckets wholly before lo hold no trade of this window (one bucket of margin
            # against rounding in floor(ts / BUCKET); each is still tested below).
            skip = bisect_left(order, _floor(lo / BUCKET) - 1) if order and lo > -math.inf else 0
            for index in order[skip:]:
                bucket = self.buckets[index]
                times = bucket.times
                if times[-1] <= lo:
                    continue
                if times[0] > lo:
                    start = 0
                else:
                    start = bisect_right(times, lo)
                if first is None:
                    first = bucket.entries[start][FIRST]
                b, s, q, c = bucket.totals(start)
                buy += b
                sell += s
                notional += q
                count += c
            volume = buy + sell
            out["volume_" + label] = volume
            out["buy_volume_" + label] = buy
            out["sell_volume_" + label] = sell
            out["vwap_" + label] = notional / volume if volume > 0.0 else None
            out["pressure_" + label] = buy / sell if sell > 0.0 else None
            out["trades_" + label] = count
            out["momentum_" + label] = (last_price / first - 1.0
                                        if first is not None and last_price is not None
                                        else None)
        return out
