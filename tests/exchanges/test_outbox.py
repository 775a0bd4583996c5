"""The ingest outbox's bound and the publisher's resume point, on records as connectors make
them (no broker needed: nothing here sends)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

from app.embedded import EmbeddedBroker
from app.ingest import new_producer
from config.settings import load_settings
from exchanges.outbox import BOOK, TICKER, TRADE, Budget, Outbox, fold_trade
from exchanges.publisher import Publisher
from records import OrderBook, Ticker, Trade, book_topic, ticker_topic, trade_topic

KINDS = {trade_topic("upbit"): TRADE, book_topic("upbit"): BOOK, ticker_topic("upbit"): TICKER}


def trade(n: int, symbol: str = "BTC-KRW", ts: float | None = None) -> Trade:
    return Trade("upbit", symbol, ts if ts is not None else 1000.0 + n, 1000.0 + n,
                 100.0 + n, 0.5, 1, str(n))


def book(n: int, symbol: str = "BTC-KRW") -> OrderBook:
    return OrderBook("upbit", symbol, 1000.0 + n, 1000.0 + n,
                     [(100.0 - i, 1.0) for i in range(20)], [(101.0 + i, 1.0) for i in range(20)],
                     n)


def ticker(n: int) -> Ticker:
    return Ticker("upbit", "BTC-KRW", 1000.0 + n, 1000.0 + n, 100.0, 99.0, 1.0, 101.0, 1.0,
                  10.0, 1000.0)


def outbox(limit: int, resynced: list[str] | None = None) -> tuple[Budget, Outbox, Publisher]:
    budget = Budget(limit, clock=lambda: 42.0)
    publisher = Publisher("upbit")
    box = Outbox("upbit", None, budget, KINDS,
                 on_book_dropped=(resynced.append if resynced is not None else None))
    publisher.outbox = box
    return budget, box, publisher


def test_past_the_bound_books_go_first_then_tickers_and_trades_last() -> None:
    async def run() -> None:
        resynced: list[str] = []
        budget, box, out = outbox(20_000, resynced)
        for n in range(40):
            out.book(book(n, "ETH-KRW" if n % 2 else "BTC-KRW"))
            out.ticker(ticker(n))
            out.trade(trade(n))
            await out.drain()
        assert budget.used <= budget.limit
        # Books keep the bound while there are books to drop: every ticker and trade kept.
        assert set(budget.dropped) == {("upbit", "book")}
        assert sum(1 for entry in box.queue if entry[4] == TRADE) == 40
        for n in range(40, 240):  # only trades from now: books, then tickers, then trades go
            out.trade(trade(n))
            await out.drain()
        assert budget.used <= budget.limit
        queued = [entry[4] for entry in box.queue]
        assert BOOK not in queued and TICKER not in queued
        dropped = budget.dropped
        assert dropped[("upbit", "book")] == 40 and dropped[("upbit", "ticker")] == 40
        assert 0 < dropped[("upbit", "trade")] < 240
        # The trades kept are the newest, in order.
        kept = [entry[6] for entry in box.queue]
        assert kept == [str(n) for n in range(240 - len(kept), 240)]
        assert sorted(set(resynced)) == ["BTC-KRW", "ETH-KRW"]
        events = list(budget.events)
        assert events[0]["event"] == "high_water"
        drops = [(e["type"], e["count"]) for e in events if e["event"] == "dropped"]
        assert drops[0][0] == "book" and drops[-1][0] == "trade"
        first_trade = [kind for kind, _ in drops].index("trade")
        assert {kind for kind, _ in drops[first_trade:]} == {"trade"}
        for event in events:
            if event["event"] == "dropped" and event["type"] == "trade":
                assert event["queued"]["book"] == event["queued"]["ticker"] == 0
        assert sum(n for kind, n in drops if kind == "trade") == dropped[("upbit", "trade")]
        await box.stop()
        assert budget.used == 0 and budget.events[-1]["event"] == "low_water"

    asyncio.run(run())


def test_a_resumed_market_publishes_only_trades_after_the_last_published() -> None:
    out = Publisher("upbit")
    out.resume_after("BTC-KRW", "5", 1005.0)
    for n in range(1, 9):
        out.trade(trade(n))
    out.trade(trade(3, "ETH-KRW"))  # another market: no resume point
    assert [(r[2].symbol, r[2].trade_id) for r in out.pending] == [
        ("BTC-KRW", "6"), ("BTC-KRW", "7"), ("BTC-KRW", "8"), ("ETH-KRW", "3")]
    assert out.skipped == 5 and not out.resume


def test_a_backfill_after_a_handover_keeps_the_resume_check_for_the_live_feed() -> None:
    out = Publisher("upbit")
    out.resume_after("BTC-KRW", "5", 1005.0)
    out.hold("BTC-KRW")  # the new owner's first connection: history fetched meanwhile
    out.release("BTC-KRW", [trade(n) for n in (4, 5, 6, 7)])  # the history after 5 and before
    for n in range(1, 10):  # a feed that sends its trades again from before the resume point
        out.trade(trade(n))
    assert [r[2].trade_id for r in out.pending] == ["6", "7", "8", "9"]


def test_ids_that_are_not_numbers_resume_by_time_and_the_ids_at_that_time() -> None:
    out = Publisher("kraken")
    # Kraken v1 trades are named "<time>-<position>": several share a time.
    out.resume_after("BTC-USD", "1005.5-1", 1005.5, ["1005.5-0", "1005.5-1"])
    for when, i in ((1004.0, 0), (1005.5, 0), (1005.5, 1), (1005.5, 2), (1006.0, 0)):
        out.trade(Trade("kraken", "BTC-USD", when, when, 1.0, 1.0, 1, f"{when}-{i}"))
    assert [r[2].trade_id for r in out.pending] == ["1005.5-2", "1006.0-0"]


def test_the_last_trade_per_market_keeps_every_id_of_its_time() -> None:
    last: dict[str, list] = {}
    for trade_id, ts in (("1", 1.0), ("2", 2.0), ("3", 2.0), ("9", 1.5)):
        fold_trade(last, "BTC-KRW", trade_id, ts)
    assert last == {"BTC-KRW": ["9", 1.5, ["9"]]}  # a higher id is newer whatever its time
    last = {}
    for trade_id, ts in (("a", 1.0), ("b", 2.0), ("c", 2.0), ("z", 1.5)):
        fold_trade(last, "X", trade_id, ts)
    assert last == {"X": ["c", 2.0, ["b", "c"]]}


def test_a_queued_record_is_a_tuple_the_collector_stops_tracking() -> None:
    """A backlog (a Kafka outage, a burst) is not walked by every collection until sent:
    the queued entry holds atomic values only (the trade's id, symbol and ts_event for the
    checkpoint, not the Trade), so the collector untracks it the first time it sees it."""
    async def run() -> None:
        budget, box, out = outbox(10**9)
        out.trade(trade(7))
        out.book(book(7))
        out.encode(0)  # as the session does: the trade's bytes beside its record
        await out.drain()
        gc.collect()
        assert len(box.queue) == 2
        for entry in box.queue:
            assert not gc.is_tracked(entry), entry
        queued_trade = box.queue[0]
        assert queued_trade[6:] == ("7", 1007.0, "BTC-KRW", 1007.0)
        await box.stop()

    asyncio.run(run())


def test_stop_ends_the_sender_while_it_waits_for_an_acknowledgement(
        fresh_broker: EmbeddedBroker) -> None:
    """The sender awaits its records' futures one by one: stop() cancelling it while it
    waits on one (a frozen broker) must end it, not pass for that record's failure."""
    async def run() -> None:
        producer = new_producer(load_settings({}), fresh_broker.url)
        await producer.start()
        budget = Budget(10**9)
        box = Outbox("upbit", producer, budget, KINDS)
        publisher = Publisher("upbit")
        publisher.outbox = box
        box.start()
        publisher.trade(trade(1))
        await publisher.drain()
        assert await box.drain(30.0) and box.acked == 1  # the topic and its metadata exist
        assert fresh_broker.process is not None
        os.kill(fresh_broker.process.pid, signal.SIGSTOP)
        try:
            publisher.trade(trade(2))
            await publisher.drain()
            for _ in range(100):  # until the sender waits on the record's future
                if box.inflight:
                    break
                await asyncio.sleep(0.01)
            assert box.inflight == 1
            stopping = asyncio.ensure_future(box.stop())
            await asyncio.wait({stopping}, timeout=5.0)  # not cancelled: a failure, not a hang
            assert stopping.done() and box.task is None and budget.used == 0
        finally:
            os.kill(fresh_broker.process.pid, signal.SIGCONT)
        await producer.stop()

    # Not asyncio.run: a sender that swallowed its cancellation would make its final
    # cancellation of every task hang instead of this test failing.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
