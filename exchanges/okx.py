"""OKX (v5): trades, `books` order books (400 levels) and tickers from the public feed.

One socket (`wss://ws.okx.com:8443/ws/v5/public`) carries every market; subscriptions are
`{"channel": .., "instId": "BTC-USDT"}` args. Instrument ids are already `BASE-QUOTE`, so
only spot instruments are subscribed (derivative ids like `BTC-USD-SWAP` are not markets in
our sense and are skipped with a warning).

Books, two protocols, both spoken:
- 2026 (OKX changelog 2026-02-12, help-center notice 2026-05-21; ../shared/EXCHANGES.md §7):
  no initial snapshot in the feed (an empty one, if any, is ignored) and checksum 0. Updates
  are buffered while the REST snapshot `/api/v5/market/books?instId=..&sz=400&source=0` is
  fetched, again until its `seqId` reaches the first buffered `prevSeqId`; buffered updates
  it covers (`seqId` <= its `seqId`) are dropped, the first one applied must have
  `prevSeqId` <= snapshot `seqId` < `seqId`, then every update's `prevSeqId` must equal the
  previous `seqId` (an update with `seqId` <= the book's, such as a keepalive with
  `prevSeqId` == `seqId`, changes nothing). A gap restarts this procedure.
- 2022 (the recordings): a `snapshot` with levels in the feed, then updates, with a CRC32
  `checksum` of the top 25 levels over the ORIGINAL price and size strings. Once the feed has
  sent a snapshot with levels, a gap, a mismatch or a crossed book resubscribes the channel
  (unsubscribe + subscribe) for a fresh one.
A nonzero checksum is verified in both; absent or 0 means "not sent". Every drop is a
`resync` on `ws.error`.
Docs re-checked 2026-11-30 (search tool): no stored OKX page newer than the two 2026 notices;
a third-party recorder (tickvault 0.1.1) measured `checksum` 0 on every `books` frame, in
line with the 2026-05-21 notice. The notices conflict (snapshot delisted vs. checksum always
0), which is why both forms are handled.

Heartbeat: OKX closes a socket with no traffic for 30 s, so the text `ping` is sent every
20 s; its `pong` answer is not JSON and is skipped before parsing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from exchanges.base import Connector, Stream, Subscriptions
from exchanges.book import L2Book, interleaved_crc32
from exchanges.publisher import Publisher
from exchanges.symbols import split, unified
from records import BUY, SELL, OrderBook, Ticker, Trade

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Okx", "checksum", "to_native", "to_unified"]

log = logging.getLogger(__name__)

URL = "wss://ws.okx.com:8443/ws/v5/public"
BOOK_URL = "https://www.okx.com/api/v5/market/books?instId={}&sz=400&source=0"
CHANNELS = {"trades": "trades", "book": "books", "ticker": "tickers"}
MAX_ARGS = 100  # per subscribe request; OKX caps a request at 64 KB of args
CHECKSUM_LEVELS = 25
TAKER_SIDE = {"buy": BUY, "sell": SELL}  # `side` is the taker's side
# acknowledgements and connection-count reports that need no action
QUIET_EVENTS = frozenset({"subscribe", "unsubscribe", "channel-conn-count"})


def to_native(symbol: str) -> str:
    base, quote = split(symbol)
    return f"{base}-{quote}"


def to_unified(inst_id: str) -> str:
    """`BTC-USDT` -> `BTC-USDT`; derivative ids (`BTC-USD-SWAP`) raise ValueError."""
    base, quote = split(inst_id)
    return unified(base, quote)


def checksum(book: L2Book) -> int:
    """OKX's CRC32 of the top 25 levels: `bidPx:bidSz:askPx:askSz:...` over the original text,
    interleaved level by level (the longer side continues alone), as a signed 32-bit int:
    the book's `interleaved_crc32` (C where built)."""
    return interleaved_crc32(book, CHECKSUM_LEVELS)


def _number(text: str) -> float | None:
    return float(text) if text else None  # OKX sends "" for a value it does not have


class Okx(Connector):
    name = "okx"
    # `op` subscribe / unsubscribe on the open socket (EXCHANGES.md §7, docs)
    live_changes = "delta"
    listing_url = "https://www.okx.com/api/v5/public/instruments?instType=SPOT"
    ping_interval = 20.0
    ping_message = "ping"

    def __init__(self, subscriptions: Subscriptions, out: Publisher,
                 settings: Settings) -> None:
        super().__init__(subscriptions, out, settings)
        # instId -> unified symbol, subscribed spot markets (`self.unified`, see Connector)
        for symbol in self.subscriptions:
            try:
                self.unified[to_native(symbol)] = to_unified(to_native(symbol))
            except ValueError:
                log.warning("okx: %s is not a spot BASE-QUOTE market; not subscribed", symbol)
        self.resubscribing: set[str] = set()  # books waiting for the snapshot we asked for
        # 2026 procedure: updates waiting for the REST snapshot, and books loading one
        self.buffers: dict[str, list[tuple[dict, float]]] = {}
        self.loading: set[str] = set()
        # symbols whose first update after a REST snapshot may bridge it (prevSeqId <= seqId)
        self.bridging: set[str] = set()
        self.snapshot_in_feed = False  # the feed sent a snapshot with levels: 2022 protocol
        self.streams: list[Stream] = []

    @classmethod
    def listed(cls, body: dict) -> set[str]:
        """{"code":"0","data":[{"instId":"BTC-USDT","instType":"SPOT","state":"live",..}]}"""
        return {to_unified(m["instId"]) for m in body["data"]}

    def on_subscriptions(self, added: Subscriptions, removed: Subscriptions) -> None:
        for symbol in added:
            try:
                self.unified[to_native(symbol)] = to_unified(to_native(symbol))
            except ValueError:
                log.warning("okx: %s is not a spot BASE-QUOTE market; not subscribed", symbol)
        for symbol in removed:
            self.buffers.pop(symbol, None)
            self.bridging.discard(symbol)
            self.resubscribing.discard(symbol)

    def change_messages(self, stream: Stream, added: Subscriptions,
                        removed: Subscriptions) -> list[str | bytes]:
        """{"op":"unsubscribe"|"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}"""
        messages: list[str | bytes] = []
        for op, change in (("unsubscribe", removed), ("subscribe", added)):
            args = [{"channel": CHANNELS[channel], "instId": to_native(symbol)}
                    for symbol, channels in sorted(change.items())
                    for channel in sorted(channels) if channel in CHANNELS]
            messages += [orjson.dumps({"op": op, "args": args[i:i + MAX_ARGS]}).decode()
                         for i in range(0, len(args), MAX_ARGS)]
        return messages

    def adopt(self, plan: Stream, stream: Stream) -> None:
        self.streams = [stream]

    def connections(self) -> list[Stream]:
        args = []
        for inst_id, symbol in sorted(self.unified.items()):
            for channel in sorted(self.subscriptions[symbol]):
                if channel in CHANNELS:
                    args.append({"channel": CHANNELS[channel], "instId": inst_id})
            if "book" in self.subscriptions[symbol]:
                self.books[symbol] = L2Book()
        if not args:
            return []
        requests = [orjson.dumps({"op": "subscribe", "args": args[i:i + MAX_ARGS]}).decode()
                    for i in range(0, len(args), MAX_ARGS)]
        self.streams = [Stream(URL, requests, sorted(self.unified.values()))]
        return self.streams

    def on_close(self, stream: Stream) -> None:
        super().on_close(stream)
        self.resubscribing.difference_update(stream.symbols)  # the new socket subscribes anew
        for symbol in stream.symbols:
            self.buffers.pop(symbol, None)
            self.bridging.discard(symbol)

    def on_frame(self, frame: bytes | str, ts_recv: float, stream: Stream) -> None:
        if frame == "pong" or frame == b"pong":
            return  # the answer to our text `ping`
        msg = orjson.loads(frame)
        arg = msg.get("arg")
        data = msg.get("data")
        if data is None:
            # {"event":"subscribe","arg":{..},"connId":".."}; errors carry `code` and `msg`
            event = msg.get("event")
            if event in QUIET_EVENTS:
                return
            if event == "notice":  # e.g. a service upgrade will close this socket soon
                log.warning("okx: notice %s: %s", msg.get("code"), msg.get("msg"))
                return
            raise ValueError(f"unexpected message: {msg}")
        channel = arg["channel"]
        symbol = self.subscribed(arg["instId"])
        if channel == "books":
            self._book(symbol, msg, data[0], ts_recv, stream)
        elif channel == "trades":
            # {"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306",
            #  "side":"buy","ts":"1630048897897","count":"3"}  (aggregated per taker order)
            out = self.out
            for t in data:
                out.trade(Trade("okx", symbol, int(t["ts"]) / 1000.0, ts_recv, float(t["px"]),
                                float(t["sz"]), TAKER_SIDE[t["side"]], t["tradeId"]))
        elif channel == "tickers":
            # {"instId":"BTC-USDT","last":"9999.99","askPx":..,"askSz":..,"bidPx":..,
            #  "bidSz":..,"vol24h":"2222","volCcy24h":"2222","ts":"1597026383085",...}
            # spot: vol24h is base volume, volCcy24h quote volume
            for t in data:
                self.out.ticker(Ticker("okx", symbol, int(t["ts"]) / 1000.0, ts_recv,
                                       _number(t["last"]), _number(t["bidPx"]),
                                       _number(t["bidSz"]), _number(t["askPx"]),
                                       _number(t["askSz"]), _number(t["vol24h"]),
                                       _number(t["volCcy24h"])))
        else:
            raise ValueError(f"unknown channel {channel!r}")

    def _book(self, symbol: str, msg: dict, data: dict, ts_recv: float, stream: Stream) -> None:
        """{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update",
        "data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],
        "ts":"1597026383085","checksum":-855196043,"prevSeqId":123455,"seqId":123456}]}
        Levels are [price, size, deprecated "0", order count], all text."""
        book = self.books.get(symbol)
        if book is None:
            if "book" not in self.subscriptions.get(symbol, ()):
                return  # unsubscribed on the open socket: in flight before the venue took it
            raise ValueError(f"book for {symbol}, which has no book subscription")
        if msg.get("action") == "snapshot":
            if not data["bids"] and not data["asks"]:
                return  # 2026: the first event may be an empty snapshot, to be ignored
            self.snapshot_in_feed = True
            book.load_text_levels(data["bids"], data["asks"])
            book.ready = True
            book.sequence = data.get("seqId")
            self.resubscribing.discard(symbol)
            self.buffers.pop(symbol, None)
            self.bridging.discard(symbol)
            self._publish(symbol, book, data, ts_recv, stream)
            return
        if not book.ready:
            if symbol in self.resubscribing:
                return  # in flight before the snapshot we asked for
            self._wait_for_snapshot(symbol, data, ts_recv)
            return
        self._update(symbol, book, data, ts_recv, stream)

    def _update(self, symbol: str, book: L2Book, data: dict, ts_recv: float,
                stream: Stream) -> bool:
        """Apply one update to a ready book; False when it broke the book (dropped)."""
        seq: Any = data.get("seqId")
        previous: Any = data.get("prevSeqId")
        sequence = book.sequence
        if previous is not None and sequence is not None:
            if seq <= sequence:
                return True  # covered by the snapshot, or a keepalive: nothing changes
            if previous != sequence and not (symbol in self.bridging and previous <= sequence):
                self._restart(symbol, stream, f"gap: book at seqId {sequence}, update has "
                                              f"prevSeqId {previous}", data, ts_recv)
                return False
        self.bridging.discard(symbol)
        book.apply_text_levels(data["bids"], data["asks"])
        book.sequence = seq
        return self._publish(symbol, book, data, ts_recv, stream)

    def _publish(self, symbol: str, book: L2Book, data: dict, ts_recv: float,
                 stream: Stream) -> bool:
        expected = data.get("checksum")
        if expected:  # absent or 0: OKX no longer sends it; the seqId chain is the proof
            actual = checksum(book)
            if actual != expected:
                self._restart(symbol, stream, f"checksum mismatch: got {actual}, OKX says "
                                              f"{expected}")
                return False
        if book.is_crossed():
            self._restart(symbol, stream, f"crossed book: bid {book.best_bid()} >= ask "
                                          f"{book.best_ask()}")
            return False
        book.ts_event = int(data["ts"]) / 1000.0
        top = book.changed_top(self.depth)
        if top is None:
            self.out.book_seen(symbol, book.ts_event, ts_recv)
        else:
            self.out.book(OrderBook("okx", symbol, book.ts_event, ts_recv, top[0], top[1],
                                    book.sequence))
        return True

    def _restart(self, symbol: str, stream: Stream, reason: str, data: dict | None = None,
                 ts_recv: float = 0.0) -> None:
        """Drop the book and start it over: by resubscribing where the feed sends snapshots
        (2022), else by the REST procedure, starting from `data` when it is the update that
        did not chain."""
        if self.snapshot_in_feed:
            self._resubscribe(symbol, stream, reason)
            return
        self.resync(symbol, reason)
        self.bridging.discard(symbol)
        if data is not None:
            self._wait_for_snapshot(symbol, data, ts_recv)

    def restart_book(self, symbol: str, stream: Stream) -> None:
        if self.snapshot_in_feed:
            self.resubscribing.add(symbol)
            args = [{"channel": "books", "instId": to_native(symbol)}]
            if self.session is not None:
                for op in ("unsubscribe", "subscribe"):
                    self.session.send_soon(stream, orjson.dumps({"op": op, "args": args}).decode())

    def _wait_for_snapshot(self, symbol: str, data: dict, ts_recv: float) -> None:
        self.buffers.setdefault(symbol, []).append((data, ts_recv))
        if symbol not in self.loading and self.session is not None:
            self.loading.add(symbol)
            self.spawn(self._load_snapshot(symbol))

    async def _load_snapshot(self, symbol: str) -> None:
        """The 2026 procedure: a REST snapshot whose seqId reaches the buffered updates."""
        delay = 0.2
        try:
            while True:
                buffered = self.buffers.get(symbol)
                if not buffered or self.books[symbol].ready:
                    return  # reset meanwhile, or a snapshot arrived in the feed
                try:
                    answer = await self.get_json(BOOK_URL.format(to_native(symbol)))
                    snapshot = answer["data"][0]
                    snapshot_seq = int(snapshot["seqId"])
                except (TimeoutError, OSError, RuntimeError, ValueError, KeyError, IndexError,
                        TypeError) as exc:
                    log.warning("okx %s: REST snapshot failed: %s", symbol, exc)
                    snapshot = None
                buffered = self.buffers.get(symbol)
                if not buffered or self.books[symbol].ready:
                    return
                if snapshot is not None and snapshot_seq >= buffered[0][0]["prevSeqId"]:
                    loaded = self._load(symbol, snapshot, snapshot_seq, buffered)
                    await self.out.drain()
                    if loaded:
                        return
                    delay = 0.2
                await asyncio.sleep(delay)  # too old, failed or gapped: fetch again
                delay = min(delay * 2.0, 5.0)
        finally:
            self.loading.discard(symbol)

    def _load(self, symbol: str, snapshot: dict, snapshot_seq: int,
              buffered: list[tuple[dict, float]]) -> bool:
        """Load a REST snapshot and apply the buffered updates it does not cover; False if
        they do not chain (the buffer then holds the rest, for the next snapshot)."""
        book = self.books[symbol]
        stream = self.session_stream(symbol)
        try:
            book.load_text_levels(snapshot["bids"], snapshot["asks"])
        except ValueError as exc:  # a bad level in the snapshot: ask again
            log.warning("okx %s: REST snapshot refused: %s", symbol, exc)
            return False
        book.ready = True
        book.sequence = snapshot_seq
        self.bridging.add(symbol)
        events = [(e, t) for e, t in buffered if e["seqId"] > snapshot_seq]
        buffered.clear()
        if not events:
            self._publish(symbol, book, snapshot, time.time(), stream)
            return book.ready
        for i, (event, event_ts) in enumerate(events):
            if event["prevSeqId"] > book.sequence and not (
                    symbol in self.bridging and event["prevSeqId"] <= book.sequence):
                self.resync(symbol, f"gap after REST snapshot {book.sequence}: next update "
                                    f"has prevSeqId {event['prevSeqId']}")
                self.bridging.discard(symbol)
                self.buffers[symbol] = [(e, t) for e, t in events[i:]]
                return False
            if not self._update(symbol, book, event, event_ts, stream) or not book.ready:
                return False
        return True

    def session_stream(self, symbol: str) -> Stream:
        """The stream that carries `symbol` (there is one)."""
        return self.streams[0] if self.streams else Stream(URL)

    def _resubscribe(self, symbol: str, stream: Stream, reason: str) -> None:
        """Drop the book and ask for a fresh snapshot: unsubscribe, then subscribe again."""
        self.resync(symbol, reason)
        self.resubscribing.add(symbol)
        if self.session is not None:
            args = [{"channel": "books", "instId": to_native(symbol)}]
            for op in ("unsubscribe", "subscribe"):  # sent in this order (tasks run FIFO)
                self.session.send_soon(stream, orjson.dumps({"op": op, "args": args}).decode())

    # -- trade history (exchanges.history) ------------------------------------------------

    history_reach = "`/api/v5/market/trades`: the last 500 trades, by time"

    def history_url(self, symbol: str, last_id: str, last_ts: float) -> str | None:
        return f"https://www.okx.com/api/v5/market/trades?instId={to_native(symbol)}&limit=500"

    def history_trades(self, symbol: str, body: dict, ts_recv: float) -> list[Trade]:
        """{"code":"0","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.1","px":"42219.9",
        "tradeId":"130639474","ts":"1630048897897"}, ...]} newest first."""
        if body.get("code") != "0":
            raise ValueError(f"okx trade history: {body.get('msg')}")
        return [Trade("okx", symbol, int(t["ts"]) / 1000.0, ts_recv, float(t["px"]),
                      float(t["sz"]), TAKER_SIDE[t["side"]], t["tradeId"])
                for t in body["data"]]


CONNECTOR = Okx
