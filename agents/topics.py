"""Every topic the app uses, declared once: names, and the Faust topics the agents read or
publish to. Keys are UTF-8 strings: `exchange:BASE-QUOTE` for market data and per-market
derived records, the base asset for `premium` and `bbo` (docs/normalization.md).
"""

from __future__ import annotations

from agents.application import app, settings
from agents.faust_internals import RawSchema
from compute.candles import parse_intervals
from records import DLQ_TOPIC, ERROR_TOPIC, EXCHANGES, book_topic, ticker_topic, trade_topic

__all__ = [
    "SOURCE_TOPICS", "DERIVED_TOPICS", "CONTROL_TOPICS", "CREATED_BEFORE_START", "SCHEMA_TOPICS",
    "MARKET_STATE", "FEATURES", "SIGNALS", "PREMIUM", "BBO", "CANDLE_INTERVALS", "candle_topic",
    "DLQ", "ERROR", "COMMAND", "BACKPRESSURE_EVENTS", "BATCH_PERFORMANCE", "connect_success",
    "ws_metrics", "CROSS_BY_ASSET", "market_data_topic", "market_state_topic",
    "features_topic", "signals_topic", "candle_topics", "premium_topic", "bbo_topic",
    "by_asset_topic", "INGEST_SHARDS", "ingest_shards_topic", "command_topic",
]

# --- source: market data, published by the connectors (exchanges/), one set per exchange
SOURCE_TOPICS = [name for ex in EXCHANGES
                 for name in (trade_topic(ex), book_topic(ex), ticker_topic(ex))]

# --- derived: published by the agents through agents.output
MARKET_STATE = "market-state"
FEATURES = "features"
SIGNALS = "signals"
PREMIUM = "premium"
BBO = "bbo"
CANDLE_INTERVALS = parse_intervals(settings.candle_intervals)  # label -> seconds


def candle_topic(label: str) -> str:
    return f"candles.{label}"


DERIVED_TOPICS = [MARKET_STATE, FEATURES, SIGNALS, PREMIUM, BBO,
                  *(candle_topic(label) for label in CANDLE_INTERVALS)]

# --- control: events and commands beside the data
DLQ = DLQ_TOPIC  # unparseable frames, refused market-data records (raw bytes, reason in headers)
ERROR = ERROR_TOPIC  # book integrity failures and resyncs
COMMAND = "ws.command"
BACKPRESSURE_EVENTS = "ws.backpressure.events"
BATCH_PERFORMANCE = "monitoring.batch.performance"


def connect_success(exchange: str) -> str:
    return f"ws.connect_success.{exchange}"


def ws_metrics(exchange: str) -> str:
    return f"ws.metrics.{exchange}"


# The ingest shards' control topic: membership (its partitions are assigned like any
# source's, and the owner of a shard's partition runs the shard), checkpoints and
# subscription sets (app/shards.py). Compacted on a real Kafka. KCS_INGEST_PARTITIONS
# partitions (INGEST_PARTITIONS), not the app's: every shard may get a worker of its own.
INGEST_SHARDS = f"{app.conf.id}-ingest-shards"

CONTROL_TOPICS = [DLQ, ERROR, COMMAND, BACKPRESSURE_EVENTS, BATCH_PERFORMANCE, INGEST_SHARDS,
                  *(connect_success(ex) for ex in EXCHANGES), *(ws_metrics(ex) for ex in EXCHANGES)]

# --- internal: the cross-exchange agent's re-keyed input
CROSS_BY_ASSET = f"{app.conf.id}-cross-by-asset"

# Checked against the schema registry at start (KCS_SCHEMA_REGISTRY): every topic the app
# produces to or will (the per-exchange connection topics included); records/codec.py says
# which of them are Avro.
SCHEMA_TOPICS = [*CONTROL_TOPICS, *SOURCE_TOPICS, *DERIVED_TOPICS,
                 *(name for ex in EXCHANGES for name in (connect_success(ex), ws_metrics(ex)))]
# Created (with the app's partition count; the control topic with its own) before Faust
# starts: the consumer subscribes to the source topics and records are produced to the
# others from the first second (the by-asset topic by the derived topics' producer, which
# would not create it with the app's partition count).
CREATED_BEFORE_START = [*CONTROL_TOPICS, *SOURCE_TOPICS, *DERIVED_TOPICS, CROSS_BY_ASSET]

# --- the Faust topics
_RAW = {"key_type": str, "key_serializer": "raw", "value_serializer": "raw"}
market_data_topic = app.topic(
    *SOURCE_TOPICS, schema=RawSchema(key_type=str, key_serializer="raw", value_serializer="raw"))
market_state_topic = app.topic(MARKET_STATE, **_RAW)
features_topic = app.topic(FEATURES, **_RAW)
signals_topic = app.topic(SIGNALS, **_RAW)
candle_topics = {label: app.topic(candle_topic(label), **_RAW) for label in CANDLE_INTERVALS}
premium_topic = app.topic(PREMIUM, partitions=app.conf.topic_partitions, **_RAW)
bbo_topic = app.topic(BBO, partitions=app.conf.topic_partitions, **_RAW)
ingest_shards_topic = app.topic(INGEST_SHARDS, partitions=settings.ingest_partitions, **_RAW)
command_topic = app.topic(COMMAND, partitions=app.conf.topic_partitions, **_RAW)
by_asset_topic = app.topic(CROSS_BY_ASSET, partitions=app.conf.topic_partitions,
                           internal=True, **_RAW)
