"""No trade lost across a reconnect: the missed trades fetched from the venue's REST history.

After a trade stream reconnects, each of its markets that had published a trade is
backfilled: while the venue's recent trades are fetched, the market's live trades are held
back (`Publisher.hold`); the fetched trades after the last one published are published in
time order, then the held live ones, so each trade is published once and in order (trades
already published are dropped by the publisher's deduplication).

What a venue offers is declared on its connector: `history_url(symbol, last_id, last_ts)`
(None: no public trade history), `history_trades(symbol, body, ts_recv)` (its answer as
Trades), `history_ids` (True where trade ids rise by exactly 1 per market, so a gap can be
named by ids) and `history_reach` (how far back, for the README).

A gap the history cannot fill (it does not reach back to the last trade published, the venue
has none, or the request failed) is published on `ws.error` as kind `trade_gap` with the
missing id or time range, and counted (`kcs_trade_gaps_total`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from exchanges.metrics import metrics

if TYPE_CHECKING:
    from exchanges.base import Connector, Stream
    from records import Trade

__all__ = ["backfill"]

log = logging.getLogger(__name__)

FIRST_FRAME_WAIT = 10.0  # s: a new connection that delivers nothing this long backfills nothing


async def backfill(connector: Connector, symbol: str, last: tuple[float, str],
                   stream: Stream, published: frozenset[str] = frozenset()) -> None:
    """Publish the trades of `symbol` missed since `last` = (ts_event, trade id) of its last
    published trade (id "" when none was: the trades since that time); see module doc.
    `published`: ids of trades at that time published by a previous owner of the feed (a
    handover: they are not in this publisher's deduplication).

    It starts once the new connection delivered a frame: a connection that fails at once (or
    a finished replay) backfills nothing, the next one will, from the same trade."""
    out = connector.out
    last_ts, last_id = last
    out.hold(symbol)
    missed: list[Trade] = []
    try:
        if not await _delivering(stream):
            return
        connector.resume_points.pop(symbol, None)  # a handover's backfill runs once
        url = connector.history_url(symbol, last_id, last_ts)
        if url is None:
            _gap(connector, symbol, last_id, last_ts, "the venue has no public trade history")
            return
        try:
            body = await connector.get_json(url)
            trades = connector.history_trades(symbol, body, time.time())
        except Exception as exc:  # noqa: BLE001 - any failure is a gap we report, not a crash
            _gap(connector, symbol, last_id, last_ts, f"trade history failed: {exc}")
            return
        trades.sort(key=lambda t: t.ts_event)
        if connector.history_ids and last_id:
            after = int(last_id)
            missed = [t for t in trades if int(t.trade_id) > after]
            reached = any(int(t.trade_id) <= after + 1 for t in trades) or not trades
            if not reached:
                first = min(int(t.trade_id) for t in trades)
                _gap(connector, symbol, last_id, last_ts, "trade history does not reach back",
                     from_id=str(after + 1), to_id=str(first - 1))
        else:
            missed = [t for t in trades if t.ts_event >= last_ts and
                      not (t.ts_event == last_ts and t.trade_id in published)]
            # a market with no trade published yet (no id) has nothing it must reach back to
            if last_id and trades and trades[0].ts_event > last_ts:
                _gap(connector, symbol, last_id, last_ts, "trade history does not reach back",
                     to_ts=trades[0].ts_event)
    finally:
        published = out.release(symbol, missed)
        if published:
            metrics.inc("kcs_backfilled_trades_total", value=float(published),
                        exchange=connector.name)
            log.info("%s %s: %d missed trades backfilled", connector.name, symbol, published)
        await out.drain()


async def _delivering(stream: Stream, wait: float = FIRST_FRAME_WAIT) -> bool:
    """True once the stream's current connection delivered a frame, False if it ended or
    delivered nothing within `wait` seconds."""
    connects, since = stream.connects, time.time()
    while stream.last_frame <= since:
        if stream.connects != connects or stream.ws is None or time.time() - since > wait:
            return False
        await asyncio.sleep(0.02)
    return stream.connects == connects


def _gap(connector: Connector, symbol: str, last_id: str, last_ts: float, reason: str,
         from_id: str | None = None, to_id: str | None = None,
         to_ts: float | None = None) -> None:
    fields: dict[str, object] = {"from_ts": last_ts, "to_ts": to_ts or time.time(),
                                 "after_id": last_id}
    if from_id is not None:
        fields.update(from_id=from_id, to_id=to_id)
    log.warning("%s %s: trades after %s may be lost: %s", connector.name, symbol, last_id,
                reason)
    connector.out.error(symbol, reason, kind="trade_gap", **fields)
