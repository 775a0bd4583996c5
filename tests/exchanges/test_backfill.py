"""No trade lost or doubled across a reconnect, per venue: a local WebSocket server that
serves a venue's recorded (or, for Kraken v2, constructed) session, resets the first
connection right after a burst of frames (frames in flight are lost), leaves out of the
second connection the trades of a window after the cut, and a local HTTP server that
answers the venue's REST trade history. Every trade of the session is published exactly
once, the missing ones backfilled. A venue with no history, or a history that does not
reach back, reports the gap as `trade_gap` on `ws.error`."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from yarl import URL

from config.settings import load_settings
from bench.parse import OfflineSession, recordings_by_exchange
from exchanges import CONNECTORS, EXCHANGES
from exchanges.base import Stream
from exchanges.metrics import metrics
from exchanges.publisher import Publisher
from exchanges.session import Session, replay_url
from exchanges.base import NEW_MARKET_MARGIN
from records import BUY, OrderBook, Trade
from replay.subscriptions import RECORDING_NAMES, from_recordings
from tests.exchanges.test_protection import Producer

RECORDINGS = recordings_by_exchange()
MOVING = {"fromId", "since", "start"}  # query parameters that depend on the last trade


def history_key(url: str) -> tuple[str, frozenset]:
    """A history request, without the parameters that move with the last trade."""
    parsed = URL(url)
    return parsed.path, frozenset((k, v) for k, v in parsed.query.items() if k not in MOVING)


def ms(trade: Trade) -> int:
    return round(trade.ts_event * 1000)


def upbit_like(trades: list[Trade]) -> Any:
    return [{"market": "-".join(reversed(t.symbol.split("-"))), "timestamp": ms(t),
             "trade_price": t.price,
             "trade_volume": t.amount, "ask_bid": "BID" if t.side == BUY else "ASK",
             "sequential_id": int(t.trade_id)} for t in reversed(trades)]


# Each venue's REST trade history, written from its docs (see the connectors' docstrings).
HISTORY: dict[str, Any] = {
    "upbit": upbit_like,
    "bithumb": upbit_like,
    "coinone": lambda trades: {"result": "success", "transactions": [
        {"id": t.trade_id, "timestamp": ms(t), "price": repr(t.price), "qty": repr(t.amount),
         "is_seller_maker": t.side == BUY} for t in trades]},
    "korbit": lambda trades: {"success": True, "data": [
        {"timestamp": ms(t), "price": repr(t.price), "qty": repr(t.amount),
         "isBuyerTaker": t.side == BUY, "tradeId": int(t.trade_id)} for t in trades]},
    "binance": lambda trades: [
        {"id": int(t.trade_id), "price": repr(t.price), "qty": repr(t.amount), "time": ms(t),
         "isBuyerMaker": t.side != BUY, "isBestMatch": True} for t in trades],
    "bybit": lambda trades: {"retCode": 0, "result": {"category": "spot", "list": [
        {"execId": t.trade_id, "price": repr(t.price), "size": repr(t.amount),
         "side": "Buy" if t.side == BUY else "Sell", "time": str(ms(t))} for t in trades]}},
    "okx": lambda trades: {"code": "0", "data": [
        {"tradeId": t.trade_id, "px": repr(t.price), "sz": repr(t.amount),
         "side": "buy" if t.side == BUY else "sell", "ts": str(ms(t))} for t in trades]},
    "htx": lambda trades: {"status": "ok", "data": [{"id": 1, "ts": 1, "data": [
        {"trade-id": int(t.trade_id), "price": t.price, "amount": t.amount,
         "direction": "buy" if t.side == BUY else "sell", "ts": ms(t)} for t in trades]}]},
    "coinbase": lambda trades: [
        {"time": datetime.datetime.fromtimestamp(t.ts_event, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"), "trade_id": int(t.trade_id), "price": repr(t.price),
         "size": repr(t.amount), "side": "sell" if t.side == BUY else "buy"} for t in trades],
    "kraken": lambda trades: {"error": [], "result": {"XXBTZUSD": [
        [repr(t.price), repr(t.amount), repr(t.ts_event), "b" if t.side == BUY else "s", "m",
         "", int(t.trade_id)] for t in trades], "last": "0"}},
    "bitfinex": lambda trades: [
        [int(t.trade_id), ms(t), t.amount * t.side, t.price] for t in trades],
}


def kraken_v2_session() -> tuple[list, list[str], dict[str, set[str]]]:
    """Kraken's default feed is v2; the recordings are v1 (no trade ids): a constructed one."""
    frames = [orjson.dumps({"method": "subscribe", "success": True,
                            "result": {"channel": "trade", "symbol": "BTC/USD"}}).decode()]
    for i in range(60):
        when = datetime.datetime.fromtimestamp(1_712_345_678 + i * 0.5, datetime.UTC)
        frames.append(orjson.dumps({"channel": "trade", "type": "update", "data": [{
            "symbol": "BTC/USD", "side": "buy" if i % 3 else "sell", "price": 62805.1 + i,
            "qty": 0.0015 + i / 1000, "ord_type": "market", "trade_id": 81942511 + i,
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}]}).decode())
    return frames, ["subscribe"], {"BTC-USD": {"trades"}}


def binance_session() -> tuple[list, list[str], dict[str, set[str]]]:
    """The Binance recordings hold no trades: a constructed `@trade` session."""
    frames = []
    for i in range(60):
        frames.append(orjson.dumps({"stream": "btcusdt@trade", "data": {
            "e": "trade", "E": 1_700_000_000_000 + i * 100, "s": "BTCUSDT", "t": 5000 + i,
            "p": f"{42000 + i}.10", "q": "0.015", "T": 1_700_000_000_000 + i * 100,
            "m": bool(i % 2)}}).decode())
    return frames, [], {"BTC-USDT": {"trades"}}


def bitfinex_session() -> tuple[list, list[str], dict[str, set[str]]]:
    """The Bitfinex recordings hold only the trade snapshots sent on subscribing: a
    constructed session with live `te` trades."""
    frames = [orjson.dumps({"event": "info", "version": 2, "platform": {"status": 1}}).decode(),
              orjson.dumps({"event": "subscribed", "channel": "trades", "chanId": 17,
                            "symbol": "tBTCUSD", "pair": "BTCUSD"}).decode(),
              orjson.dumps([17, [[900 + i, 1_700_000_000_000 - i, 0.5, 42000.0]
                                 for i in range(3)], 1]).decode()]  # [.., sequence]
    for i in range(40):
        frames.append(orjson.dumps([17, "te", [1000 + i * 7, 1_700_000_001_000 + i * 50,
                                               0.01 * (1 if i % 2 else -1), 42001.0 + i],
                                    2 + i]).decode())
    return frames, ["subscribe"], {"BTC-USD": {"trades"}}


def venue_session(name: str) -> tuple[list, list[str], dict[str, set[str]]]:
    """The frames of the venue's recorded connection with the most trades, what the client
    sent on it, and the subscriptions (trades only) of its markets."""
    if name == "kraken":
        return kraken_v2_session()
    if name == "binance":
        return binance_session()
    if name == "bitfinex":
        return bitfinex_session()
    recording, _ = RECORDINGS[name]
    prefix = next((k for k, v in RECORDING_NAMES.items() if v == name), name)
    subs = from_recordings({recording.exchange: recording}).get(name) or from_recordings(
        {prefix: recording})[name]
    trades_only = {s: {"trades"} for s, channels in subs.items() if "trades" in channels}
    best = max(recording.connections, key=lambda c: len(c.received))
    return [d for _, d in best.received], [s for _, s in best.sent], trades_only


def parse_session(name: str, frames: list, subs: dict
                  ) -> tuple[list[int], list[Trade], dict[int, list[Trade]], list[float]]:
    """Which frames carry trades, every trade of the session (first sight), the trades of
    each frame, and the newest exchange time (trades, books) after each frame, by running a
    connector of its own over them."""
    out = Publisher(name)
    connector = CONNECTORS[name](subs, out, load_settings({}))
    connector.session = OfflineSession()  # type: ignore[assignment]
    streams = connector.connections()
    stream = streams[0] if streams else Stream("wss://x")
    trade_frames, trades, per_frame, clocks = [], [], {}, []
    clock = 0.0
    for i, frame in enumerate(frames):
        mark = len(out.pending)
        try:
            connector.on_frame(frame, 1_700_000_000.0, stream)
        except Exception:  # noqa: BLE001 - a bad recorded frame is the DLQ's
            del out.pending[mark:]
        records = [e[2] for e in out.pending[mark:]]
        new = [r for r in records if isinstance(r, Trade)]
        clock = max([clock] + [r.ts_event for r in records if isinstance(r, (Trade, OrderBook))])
        clocks.append(clock)
        if new:
            trade_frames.append(i)
            trades += new
            per_frame[i] = new
    return trade_frames, trades, per_frame, clocks


class VenueServer:
    """WebSocket + HTTP on one loopback port, any path (reached through `replay_url`)."""

    def __init__(self, first: list, second: list, client_speaks_first: bool,
                 history: Any) -> None:
        self.first, self.second = first, second
        self.client_speaks_first = client_speaks_first
        self.history = history
        self.connections = 0
        self.history_requests: list[str] = []
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=2.0)
        if not ws.can_prepare(request).ok:
            self.history_requests.append(str(request.rel_url))
            body = (self.history or {}).get(history_key(str(request.url)))
            if body is None:
                return web.Response(status=404)
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        await ws.prepare(request)
        self.connections += 1
        if self.client_speaks_first:
            await ws.receive()
        if self.connections == 1:
            for frame in self.first:  # a burst, then a reset: some frames never arrive
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            assert request.transport is not None
            request.transport.abort()
            return ws
        for frame in self.second:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        async for _ in ws:  # stay open until the client goes
            pass
        return ws


async def run_cut_session(name: str, history_for: Any, until_gap: bool = False
                          ) -> tuple[list[Trade], Any, Any, list]:
    frames, sent, subs = venue_session(name)
    trade_frames, trades, per_frame, clocks = parse_session(name, frames, subs)
    assert len(trade_frames) >= 2, f"{name}: too few trade frames to cut"
    third = max(1, len(trade_frames) // 3)
    cut = trade_frames[third - 1] + 1  # the first connection ends after this frame
    # trades of the window [cut, window_end) never come live again ...
    window_end = trade_frames[2 * third] if 2 * third < len(trade_frames) else len(frames)
    published_before = {t.symbol for i in trade_frames if i < cut for t in per_frame[i]}
    since = clocks[cut - 1] - NEW_MARKET_MARGIN

    def happened_during_the_drop(i: int) -> bool:
        # ... except trades of a market with none before the cut that are older than the
        # stream's exchange time at the cut: those were not missed by the drop (a venue's
        # last trade sent on subscribing), the live feed still sends them
        return all(t.symbol in published_before or t.ts_event >= since for t in per_frame[i])

    window = {i for i in trade_frames if cut <= i < window_end and happened_during_the_drop(i)}
    second = [f for i, f in enumerate(frames)
              if i >= cut and i not in window or i < cut and i not in trade_frames]
    server = VenueServer(frames[:cut], second, bool(sent), None)
    await server.start()
    settings = load_settings({"KCS_BACKOFF_INITIAL": "0.05"})
    connector = CONNECTORS[name](subs, Publisher(name, Producer()), settings)
    if history_for is not None:  # each market's history answers that market's trades
        server.history = {}
        for symbol in subs:
            url = connector.history_url(symbol, "0", 1.0)
            assert url is not None
            server.history[history_key(replay_url(url, server.base_url))] = history_for(
                [t for t in trades if t.symbol == symbol])
    session = Session(connector, settings, server.base_url)
    await session.start()
    producer: Producer = connector.out.producer  # type: ignore[assignment]

    def published() -> list[dict]:
        return [orjson.loads(v) for v, _ in producer.on(f"trade-data.{name}")]

    try:
        async with asyncio.timeout(float(__import__("os").environ.get("BF_TIMEOUT", "20"))):
            while server.connections < 2 or connector.out.held or (
                    not until_gap and len(published()) < len(trades)) or (
                    until_gap and not producer.on("ws.error")):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # anything published twice would show now
    finally:
        await session.stop()
        await server.stop()
    events = [orjson.loads(v) for v, _ in producer.on("ws.error")]
    return trades, published(), server, events


@pytest.mark.parametrize("name", EXCHANGES)
async def test_every_trade_once_across_a_reset_with_the_gap_backfilled(name: str) -> None:
    backfilled = metrics.get("kcs_backfilled_trades_total", exchange=name)
    trades, published, server, events = await run_cut_session(name, HISTORY[name])
    want = [(t.symbol, t.trade_id) for t in trades]
    got = [(t["symbol"], t["trade_id"]) for t in published]
    assert len(got) == len(set(got)), f"{name}: a trade was published twice"
    assert sorted(got) == sorted(want), f"{name}: {len(set(want) - set(got))} trades lost"
    assert server.history_requests, f"{name}: the trade history was never asked"
    assert metrics.get("kcs_backfilled_trades_total", exchange=name) > backfilled
    assert not [e for e in events if e["kind"] == "trade_gap"]


async def test_a_venue_without_trade_history_reports_the_gap() -> None:
    trades, published, server, events = await run_cut_session("binance", None, until_gap=True)
    [gap] = [e for e in events if e["kind"] == "trade_gap"]
    assert gap["symbol"] in {t.symbol for t in trades}
    last = [t for t in published if t["symbol"] == gap["symbol"]]
    assert gap["after_id"] and gap["from_ts"] <= gap["to_ts"]
    assert last and int(gap["after_id"]) >= int(last[0]["trade_id"])


async def test_a_history_that_does_not_reach_back_names_the_missing_ids() -> None:
    def recent_only(trades: list[Trade]) -> Any:
        return HISTORY["binance"](trades[-3:])  # only the last three trades

    trades, published, server, events = await run_cut_session("binance", recent_only,
                                                              until_gap=True)
    gaps = [e for e in events if e["kind"] == "trade_gap"]
    assert gaps and all(int(g["from_id"]) <= int(g["to_id"]) for g in gaps)
    assert all(int(g["from_id"]) == int(g["after_id"]) + 1 for g in gaps)
