"""Cross-exchange state keyed by base asset: the Korean premium and the consolidated BBO.

Market data is keyed `exchange:BASE-QUOTE`; these tables are keyed by the base asset, so the
data is re-keyed in two steps:

1. The market-data agent (`agents/market_data.py`), in the same pass over the market-data
   topics that serves market state and features, keeps per batch the latest top of book and
   latest trade of each market (`fold_for_assets`), and sends one compact update per market to
   the internal topic `<app id>-cross-by-asset`, keyed by the base asset (raw key bytes, the
   same bytes as the tables' keys, so a table view is routed to the worker owning the key).
   Updates of the rate market (`KCS_PREMIUM_RATE_MARKET`, default `upbit:USDT-KRW`) are also
   *broadcast* to every partition of that topic under the key `#rate`: every partition then
   holds the rate it needs, with no global table and no cross-worker lookup.
2. `cross-exchange` folds those updates, in batches, into the `cross_state` table (per asset:
   the quote of each of its markets and the asset's clock; per partition, under the key
   `#partition-<n>`: the rate market's quote and the assets with a Korean KRW market), then
   recomputes the premium (`compute/premium.py`) and the BBO (`compute/bbo.py`) of each asset
   touched, and of every asset of a partition whose rate price changed. A changed result is
   published once per batch to the `premium` / `bbo` topic (key = asset, value = JSON of the
   table value; a null value when a premium can no longer be computed) through
   `agents.output`, and once delivered, written to the `premium` / `bbo` table; the inputs
   (`cross_state`) are written last. A crash in between leaves inputs that the re-read events
   change again, so a result is published at least once, never skipped. The first batch
   of an asset after a start publishes and writes its results even when unchanged, and
   rewrites its inputs: a crash may have left local writes that never reached the changelog
   (see `agents/tables.py`).

Every timestamp used is a record's own `ts_recv`, never a Kafka message timestamp. Updates
older (by `ts_recv`) than what a market already holds are ignored, so the events re-read after
a crash (at-least-once) change nothing. Views: `GET /premium/`, `GET /premium/{asset}/`,
`GET /bbo/`, `GET /bbo/{asset}/` from any worker.
"""

from __future__ import annotations

import time
from typing import Any

from faust.types import EventT
from faust.web import Request, Response, View

from agents import output, topics
from agents.application import app, settings
from agents.batching import BATCH_SIZE, BATCH_WITHIN, in_partition_of, report_batch
from agents.topics import by_asset_topic
from agents.views import gathered, routed_value
from compute.bbo import bbo_changed, compute_bbo
from records.derived import Bbo, Premium
from compute.premium import (apply_update, compute_premium, is_korean_krw, market_parts,
                             premium_changed, price_of)

__all__ = ["premium_table", "bbo_table", "cross_state", "send_by_asset", "RATE_KEY"]

RATE_KEY = "#rate"
PARTITIONS = app.conf.topic_partitions
_rate_exchange, _, _rate_symbol = settings.premium_rate_market.strip().partition(":")
RATE_MARKET = f"{_rate_exchange.lower()}:{_rate_symbol.upper()}"  # as market keys are spelt
REFERENCE = settings.premium_reference.strip().lower()
MAX_AGE = settings.bbo_max_age

PREMIUM_TOPIC, BBO_TOPIC = topics.PREMIUM, topics.BBO
RECORDS = {PREMIUM_TOPIC: Premium, BBO_TOPIC: Bbo}  # the typed record of each output topic

# Raw keys: the same bytes as the by-asset topic's keys. Faust serializes table keys as JSON
# (`"BTC"`) unless key_type is bytes, and routes a view by the partition of the serialized
# key: JSON keys would send views to a worker that does not hold the key. Keys are written
# as str (the raw codec encodes them); iterating a table yields bytes.
TABLE_OPTIONS: dict[str, Any] = {"default": None, "key_type": bytes,
                                 "partitions": PARTITIONS}
cross_state = app.Table("cross_state", **TABLE_OPTIONS,
                        help="Quotes of every market per base asset; rate per partition")
premium_table = app.Table("premium", **TABLE_OPTIONS,
                          help="Korean premium per base asset")
bbo_table = app.Table(
    "bbo", **TABLE_OPTIONS, help="Consolidated best bid and offer per asset and quote currency")


def _partition_key(partition: int) -> str:
    return f"#partition-{partition}"


async def send_by_asset(latest: dict[str, dict[str, Any]], sent: list[Any]) -> None:
    """Re-key a batch's newest prices by asset (the rate market's to every partition): queued
    on the derived topics' producer (`agents.output`), their delivery futures added to `sent`,
    which the caller awaits before it writes its tables and the batch's offsets are committed.

    Not Faust's producer: it carries the changelogs, one record per request on the embedded
    broker, and these records waited behind every changelog record of the runs in flight
    (bench/features.py: about 2 us per trade, a fifth of the market-data agent's time). The
    partitioner is the same (murmur2 of the key), so an asset lands where Faust would put it.
    """
    encode = output.codec.encode
    for market, update in latest.items():
        payload = encode(topics.CROSS_BY_ASSET, update)  # internal: JSON
        sent.append(await output.send(topics.CROSS_BY_ASSET, market_parts(market)[1].encode(),
                                      payload))
        if market == RATE_MARKET:
            for partition in range(PARTITIONS):
                sent.append(await output.send(topics.CROSS_BY_ASSET, RATE_KEY.encode(),
                                              payload, partition))


class _Partition:
    """One partition's rate and Korean-KRW assets, as loaded at the start of a batch."""

    __slots__ = ("state", "event", "rate_before", "dirty")

    def __init__(self, state: dict[str, Any], event: EventT) -> None:
        self.state, self.event, self.dirty = state, event, False
        self.rate_before = price_of(state.get("rate"))


# The assets and partitions this process has written: the first write after a start rewrites
# every entry (see agents/tables.py).
_rewritten: set[str] = set()  # assets, and partitions by their `_partition_key`


def _changes(asset: str, state: dict[str, Any], rate: dict[str, Any] | None, event: EventT,
             with_bbo: bool, force: bool = False
             ) -> list[tuple[Any, str, str, dict[str, Any] | None, EventT]]:
    """An asset's premium (and BBO) recomputed: (table, topic, asset, value, event) of each
    that changed, or of each when `force`; value None when it can no longer be computed."""
    with in_partition_of(event):
        old_premium = premium_table.get(asset)
        old_bbo = bbo_table.get(asset) if with_bbo else None
    out = []
    premium = compute_premium(asset, state["markets"], rate, RATE_MARKET, REFERENCE)
    if premium_changed(old_premium, premium) or (force and premium is not None):
        out.append((premium_table, PREMIUM_TOPIC, asset, premium, event))
    if with_bbo:
        bbo = compute_bbo(asset, state["markets"], state["clock"], MAX_AGE)
        if bbo_changed(old_bbo, bbo) or (force and bbo is not None):
            out.append((bbo_table, BBO_TOPIC, asset, bbo, event))
    return out


@app.agent(by_asset_topic, name="cross-exchange")
async def track_cross_exchange(stream: Any) -> None:
    decode = output.codec.decode
    async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
        started = time.monotonic()
        parts: dict[int, _Partition] = {}
        # asset -> [state, its latest event, partition, changed in this batch]
        assets: dict[str, list[Any]] = {}
        for event in events:
            partition = event.message.partition
            part = parts.get(partition)
            if part is None:
                with in_partition_of(event):  # the partition's own copy of the rate
                    state = cross_state.get(_partition_key(partition))
                part = parts[partition] = _Partition(state or {"rate": None, "assets": []},
                                                     event)
                if _partition_key(partition) not in _rewritten:
                    _rewritten.add(_partition_key(partition))
                    part.dirty = state is not None
            else:
                part.event = event
            update = decode(topics.CROSS_BY_ASSET, event.value)
            if event.key == RATE_KEY:
                rate = part.state["rate"] or {}
                if apply_update(rate, update):
                    part.state["rate"], part.dirty = rate, True
                continue
            asset = event.key
            entry = assets.get(asset)
            if entry is None:
                with in_partition_of(event):
                    state = cross_state.get(asset) or {"markets": {}, "clock": 0.0}
                entry = assets[asset] = [state, event, partition, False]
            market = update["m"]
            state = entry[0]
            if apply_update(state["markets"].setdefault(market, {}), update):
                for side in ("b", "t"):
                    if side in update:
                        state["clock"] = max(state["clock"], update[side][-1])
                entry[1], entry[3] = event, True
                if is_korean_krw(market) and asset not in part.state["assets"]:
                    part.state["assets"] = sorted([*part.state["assets"], asset])
                    part.dirty = True
        first = {asset for asset in assets if asset not in _rewritten}
        _rewritten.update(first)
        touched = {asset for asset, entry in assets.items() if entry[3]} | first
        changes = []
        for asset in touched:
            state, event, partition, _ = assets[asset]
            changes += _changes(asset, state, parts[partition].state["rate"], event, True,
                                force=asset in first)
        for part in parts.values():
            if price_of(part.state["rate"]) == part.rate_before:
                continue
            for asset in part.state["assets"]:  # a new rate: every premium of the partition
                if asset not in touched:
                    with in_partition_of(part.event):
                        state = cross_state.get(asset)
                    if state is not None:
                        changes += _changes(asset, state, part.state["rate"], part.event, False)
        # Publish, then write the results, then the inputs (see the module docstring).
        encode = output.codec.encode
        sent = [await output.send(topic, asset.encode(), None if value is None else
                                  encode(topic, RECORDS[topic].of(value)))  # type: ignore[arg-type]
                for _, topic, asset, value, _ in changes]
        await output.flush(sent)
        for table, _, asset, value, event in changes:
            with in_partition_of(event):
                if value is None:
                    del table[asset]
                else:
                    table[asset] = value
        for asset in touched:
            state, event, _, _ = assets[asset]
            with in_partition_of(event):
                cross_state[asset] = state
        for partition, part in parts.items():
            if part.dirty:
                with in_partition_of(part.event):
                    cross_state[_partition_key(partition)] = part.state
        # Its records' age: since the market-data agent sent them (Kafka's timestamp).
        await report_batch("cross-exchange", len(events), len(assets), started,
                           min((e.message.timestamp for e in events), default=float("inf")))


def _local(table: Any) -> dict[str, Any]:
    return {key.decode(): value for key, value in table.items()
            if value is not None and not key.startswith(b"#")}


@app.page("/premium/")
async def premium_all(view: View, request: Request) -> Response:
    return await gathered(app, view, request, premium_table, lambda: _local(premium_table))


@app.page("/premium/{asset}/")
async def premium_one(view: View, request: Request, asset: str) -> Response:
    key = asset.upper()
    return await routed_value(app, view, request, premium_table, key, f"premium for {key}")


@app.page("/bbo/")
async def bbo_all(view: View, request: Request) -> Response:
    return await gathered(app, view, request, bbo_table, lambda: _local(bbo_table))


@app.page("/bbo/{asset}/")
async def bbo_one(view: View, request: Request, asset: str) -> Response:
    key = asset.upper()
    return await routed_value(app, view, request, bbo_table, key, f"BBO for {key}")
