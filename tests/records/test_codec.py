"""The records, their schema files and the codec, with no broker and no registry."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import orjson
import pytest

from records import OrderBook, Ticker, Trade
from records.codec import AVRO_FAMILIES, JSON, JSON_TOPICS, SCHEMAS_DIR, Codec, is_avro
from records.codec import schema_file
from records.control import (BackpressureEvent, BatchPerformance, ConnectSuccess, ErrorEvent,
                             WsCommand, WsMetrics)
from records.derived import Bbo, Candle, Features, MarketState, Premium, Signal, dumps_as_is
from records.derived import field_names
from records.registry import SchemaContractError, check_schema_files

RECORDS = {"trade": Trade, "order_book": OrderBook, "ticker": Ticker,
           "market_state": MarketState, "features": Features, "candle": Candle,
           "signal": Signal, "premium": Premium, "bbo": Bbo, "error_event": ErrorEvent,
           "connect_success": ConnectSuccess, "ws_metrics": WsMetrics,
           "backpressure_event": BackpressureEvent, "batch_performance": BatchPerformance,
           "ws_command": WsCommand}

TRADE = Trade("binance", "BTC-USDT", 1790000000.123, 1790000000.5, 97000.01, 0.25, 1, "42")
PREMIUM = {"asset": "BTC", "ts": 3.5,
           "rate": {"market": "upbit:USDT-KRW", "price": 1400.0, "source": "book"},
           "reference": "binance",
           "krw": {"upbit": {"market": "upbit:BTC-KRW", "price": 1.4e8, "source": "trade"}},
           "global": {"binance": {"market": "binance:BTC-USDT", "price": 97000.0,
                                  "source": "book"}},
           "premium": {"upbit": {"binance": 1.031}}, "headline": {"upbit": 1.031}}
BBO = {"asset": "BTC", "ts": 2.0, "quotes": {"USDT": {
    "bid": 1.0, "bid_size": 2.0, "bid_exchange": "okx", "ask": None, "ask_size": None,
    "ask_exchange": None, "crossed": False, "exchanges": ["okx"]}}}


def test_every_record_has_its_schema_file_with_the_same_fields_each_documented() -> None:
    texts = check_schema_files()
    assert set(texts) == set(RECORDS) == set(AVRO_FAMILIES.values()) | {
        n for n in JSON_TOPICS.values() if n}
    for name, cls in RECORDS.items():
        schema = json.loads(texts[name])
        wire = [f.name.rstrip("_") for f in fields(cls)]
        assert [f["name"] for f in schema["fields"]] == wire, name
        for field in schema["fields"]:
            assert field["doc"], (name, field["name"])
            nullable = isinstance(field["type"], list) and "null" in field["type"]
            # a nullable field defaults to null: a reader with it reads records without it
            assert nullable == ("default" in field and field["default"] is None), field


def test_topics_follow_the_policy() -> None:
    for topic in ("trade-data.upbit", "orderbook-data.okx", "ticker-data.binance",
                  "ws.connect_success.kraken", "ws.metrics.htx", "market-state", "features",
                  "candles.1m", "candles.1h", "signals", "premium", "bbo"):
        assert is_avro(topic), topic
    for topic in ("ws.command", "ws.error", "ws.dlq", "ws.backpressure.events",
                  "monitoring.batch.performance", "kor-coin-stream-cross-by-asset"):
        assert not is_avro(topic), topic
    assert schema_file("candles.5m") == "candle" and schema_file("ws.dlq") is None


def test_a_missing_or_undocumented_schema_file_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, directory)
    schema = json.loads((directory / "candle.avsc").read_text())
    del schema["fields"][3]["doc"]
    (directory / "candle.avsc").write_text(json.dumps(schema))
    with pytest.raises(SchemaContractError, match=r"candle.avsc: field\(s\) without a doc: start"):
        check_schema_files(directory)
    (directory / "bbo.avsc").unlink()
    with pytest.raises(SchemaContractError, match="bbo.avsc"):
        check_schema_files(directory)
    (directory / "bbo.avsc").write_text("{not json")
    with pytest.raises(SchemaContractError, match="bbo.avsc"):
        check_schema_files(directory)


def test_json_is_the_records_json() -> None:
    assert JSON.encode("trade-data.binance", TRADE) == orjson.dumps(TRADE)
    assert JSON.decode("trade-data.binance", orjson.dumps(TRADE))["trade_id"] == "42"
    assert not JSON.uses_avro


def test_avro_frames_and_decodes_every_record_type_to_the_json_values() -> None:
    ids = {"trade-data.binance": 1, "orderbook-data.binance": 2, "ticker-data.binance": 3,
           "market-state": 4, "features": 5, "candles.1m": 6, "signals": 7, "premium": 8,
           "bbo": 9}
    codec = Codec(ids)
    records = {
        "trade-data.binance": TRADE,
        "orderbook-data.binance": OrderBook("binance", "BTC-USDT", 1.0, 1.5,
                                            [(2.0, 1.0), (1.5, 3.0)], [(2.5, 0.5)], 77),
        "ticker-data.binance": Ticker("binance", "BTC-USDT", 1.0, 1.5, 2.0, None, None, 2.5,
                                      1.0, 10.0, None),
        "market-state": MarketState.of({"exchange": "upbit", "symbol": "BTC-KRW",
                                        "last_price": 1.0, "last_side": -1}),
        "features": Features.of({"exchange": "upbit", "symbol": "BTC-KRW", "ts": 5.0,
                                 "updated": 6.0, "n": 3, "trades_1m": 3, "vwap_1m": 1.5}),
        "candles.1m": Candle.of({"exchange": "upbit", "symbol": "BTC-KRW", "interval": "1m",
                                 "start": 60.0, "end": 120.0, "open": 1.0, "high": 2.0,
                                 "low": 0.5, "close": 1.5, "volume": 3.0,
                                 "quote_volume": 4.5, "trades": 3.0}),
        "signals": Signal.of({"type": "volume_spike", "exchange": "upbit",
                              "symbol": "BTC-KRW", "ts": 9.0, "volume_1m": 10.0,
                              "average": 2.0, "factor": 3.0, "ratio": 5.0}),
        "premium": Premium.of(PREMIUM),
        "bbo": Bbo.of(BBO),
    }
    for topic, record in records.items():
        value = codec.encode(topic, record)
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == ids[topic], topic
        assert codec.decode(topic, value) == orjson.loads(JSON.encode(topic, record)), topic
    features = codec.decode("features", codec.encode("features", records["features"]))
    assert (features["ts_event"], features["ts_recv"]) == (5.0, 6.0)
    assert set(features) == set(field_names(Features))
    assert codec.decode("premium", codec.encode("premium", records["premium"]))["global"] == \
        {"binance": PREMIUM["global"]["binance"]}
    # JSON topics stay JSON; an Avro topic the preflight did not see is refused by name.
    assert codec.encode("ws.error", {"kind": "gap"}) == b'{"kind":"gap"}'
    with pytest.raises(LookupError, match="candles.5m"):
        codec.encode("candles.5m", records["candles.1m"])


def test_market_state_always_has_every_field() -> None:
    state = MarketState.of({"exchange": "okx", "symbol": "BTC-USDT"})
    assert set(orjson.loads(JSON.encode("market-state", state))) == set(
        field_names(MarketState))


def test_records_encoded_as_they_are_write_what_as_dict_gives() -> None:
    """The JSON codec skips `as_dict` where orjson's own dataclass encoding writes the same
    (`dumps_as_is`): every field, in order, with a value in each, and never for a record with
    a renamed field or records inside."""
    plain = [cls for cls in RECORDS.values() if hasattr(cls, "as_dict") and dumps_as_is(cls)]
    assert ErrorEvent in plain and Premium not in plain and Bbo not in plain
    samples = {"str": "x", "int": 7, "float": 2.5, "bool": True, "list": ["a"],
               "dict": {"trade": 3}}
    for cls in plain:
        values = {}
        for field in fields(cls):
            kind = str(field.type).split("[")[0].split(" ")[0]
            values[field.name] = samples.get(kind)
        record = cls.of(values)
        assert any(v is not None for v in values.values()), cls
        assert JSON.encode("ws.error", record) == orjson.dumps(record.as_dict()), cls
    event = ErrorEvent("upbit", None, "trade_gap", "r", None, 1.5, after_id="9", from_ts=1.0)
    assert JSON.encode("ws.error", event) == orjson.dumps(event.as_dict())


def test_a_trade_row_holds_the_trade_whatever_the_encoding() -> None:
    """The feature agents read trades as `TradeRow`s: JSON decoded straight into one, Avro
    through its dict; either way the fields of the Trade sent."""
    from msgspec.structs import asdict

    from records.codec import TradeRow

    avro = Codec({"trade-data.binance": 1})
    for codec in (JSON, avro):
        row = codec.decode_trade("trade-data.binance", codec.encode("trade-data.binance", TRADE))
        assert type(row) is TradeRow
        assert asdict(row) == {f.name: getattr(TRADE, f.name) for f in fields(Trade)}
    # an integer where a float belongs is the float; a field it does not know is ignored
    value = orjson.dumps({**asdict(JSON.decode_trade("trade-data.binance", orjson.dumps(TRADE))),
                          "price": 97000, "venue": [1]})
    assert JSON.decode_trade("trade-data.binance", value).price == 97000.0
    with pytest.raises(Exception, match="price"):  # a value of the wrong type: refused
        JSON.decode_trade("trade-data.binance", value.replace(b"97000", b'"97000"'))


def test_a_registry_that_does_not_answer_is_not_the_records_fault() -> None:
    """An unknown schema id the registry answered for is the record's problem (a worker
    refuses it to ws.dlq); a registry that did not answer is not (the worker stops, and
    reads the record again when restarted)."""
    import httpx

    from records.codec import RegistryUnavailable

    value = b"\x00" + (1234).to_bytes(4, "big") + b"\x02"

    def down(schema_id: int) -> str:
        raise httpx.ConnectError("connection refused")

    def missing(schema_id: int) -> str:
        raise LookupError(f"schema id {schema_id} is not in the registry")

    with pytest.raises(RegistryUnavailable, match="1234") as unavailable:
        Codec(fetch_schema=down).decode("trade-data.upbit", value)
    assert isinstance(unavailable.value, ConnectionError)
    with pytest.raises(LookupError, match="1234"):
        Codec(fetch_schema=missing).decode("trade-data.upbit", value)
    with pytest.raises(LookupError, match="no registry"):
        Codec().decode_trade("trade-data.upbit", value)


def test_confluent_avro_is_told_from_json_by_its_magic_byte() -> None:
    from records.codec import is_confluent_avro

    trade = Trade("upbit", "BTC-KRW", 1.0, 2.0, 3.0, 4.0, 1, "t")
    avro = Codec({"trade-data.upbit": 7}).encode("trade-data.upbit", trade)
    assert is_confluent_avro(avro) and avro[1:5] == (7).to_bytes(4, "big")
    assert not is_confluent_avro(JSON.encode("trade-data.upbit", trade))
    assert not is_confluent_avro(b"")
