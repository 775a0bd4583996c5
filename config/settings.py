"""The one settings object of kor-coin-stream, read from `KCS_*` environment variables by
pydantic-settings.

`load_settings()` reads the process environment over an optional `.env` file in the working
directory (python-dotenv's format: `export KCS_NAME=value`, quotes, trailing `# comments`).
Every setting is typed and range-checked: a bad value, or a `KCS_*` name that is no setting,
is refused at start with the setting's name, the value and what is allowed
(`SettingsError`). Every setting is listed, with its default, in `.env.example` and in the
README's configuration table (tests/app/test_settings.py checks both).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.exchanges import EXCHANGES, SHARD_MARKETS

__all__ = ["Settings", "SettingsError", "load_settings", "REPO_ROOT", "PREFIX"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "KCS_"


class SettingsError(ValueError):
    """Bad settings: one line per refused value, `KCS_NAME='value': what is allowed`."""


def _matching(pattern: str, allowed: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value.strip()):
            raise ValueError(f"use {allowed}")
        return value

    return AfterValidator(check)


def _exchange(value: str) -> str:
    if value.strip().lower() not in EXCHANGES:
        raise ValueError(f"unknown exchange {value.strip()!r}: use one of {', '.join(EXCHANGES)}")
    return value


def _exchange_choice(value: str) -> str:
    choice = value.strip().lower()
    if choice in ("", "auto", "all", "none"):
        return value
    unknown = [n.strip() for n in choice.split(",") if n.strip() not in EXCHANGES]
    if unknown:
        raise ValueError(f"unknown exchange {', '.join(map(repr, unknown))}: use auto, all, "
                         f"none, or a comma list of {', '.join(EXCHANGES)}")
    return value


def _replay_source(value: str) -> str:
    if value and not value.startswith(("http://", "https://")) and not Path(value).is_dir():
        raise ValueError("use a directory of recordings that exists, or http://host:port of a "
                         "running replay server")
    return value


def _existing_file(value: str) -> str:
    if value and not Path(value).is_file():
        raise ValueError("use a file that exists, or empty")
    return value


_HOST_PORT = r"((kafka|aiokafka)://)?[A-Za-z0-9_.\-]+:\d{1,5}"
# The kinds of value, each with what it allows (pydantic's message names the bound).
BrokerUrl = Annotated[str, _matching(rf"|{_HOST_PORT}(;{_HOST_PORT})*",
                                     "kafka://host:port[;host:port...], or empty")]
AppId = Annotated[str, _matching(r"[A-Za-z0-9._\-]+", "letters, digits, '.', '_', '-'")]
Port = Annotated[int, Field(ge=1, le=65535)]
NonEmpty = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=1)]
Levels = Annotated[int, Field(ge=1, le=1000)]
Milliseconds = Annotated[int, Field(ge=0, le=600_000)]
Bytes = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]
SecondsOrZero = Annotated[float, Field(ge=0)]
Speed = Annotated[float, Field(ge=0)]
Factor = Annotated[float, Field(gt=0)]
Exchange = Annotated[str, AfterValidator(_exchange)]
ReplaySource = Annotated[str, AfterValidator(_replay_source)]
ExistingFile = Annotated[str, AfterValidator(_existing_file)]
ExchangeChoice = Annotated[str, AfterValidator(_exchange_choice)]
Market = Annotated[str, _matching(r"[a-z]+:[A-Z0-9]+-[A-Z0-9]+", "exchange:BASE-QUOTE"),
                   AfterValidator(lambda v: _exchange(v.split(":")[0]) and v)]
Intervals = Annotated[str, _matching(r"\s*\d*[1-9]\d*[smhd]\s*(,\s*\d*[1-9]\d*[smhd]\s*)*",
                                     "a comma list of <n>s, <n>m, <n>h, <n>d (e.g. 1m,5m,1h)")]
StaleAfter = Annotated[str, _matching(
    r"|\s*\d+(\.\d*)?\s*|\s*[a-z]+\s*=\s*\d+(\.\d*)?\s*(,\s*[a-z]+\s*=\s*\d+(\.\d*)?\s*)*",
    "seconds, or venue=seconds,... (e.g. upbit=120,binance=30), or empty")]
ShardMarkets = Annotated[str, _matching(
    r"|\s*\d*[1-9]\d*\s*|\s*[a-z]+\s*=\s*\d*[1-9]\d*\s*(,\s*[a-z]+\s*=\s*\d*[1-9]\d*\s*)*",
    "markets per shard, or venue=markets,... (e.g. binance=300,bitfinex=8), or empty")]
RegistryUrl = Annotated[str, _matching(r"|https?://\S+", "http(s)://host:port, or empty")]
Thresholds = Annotated[str, _matching(
    r"\s*[A-Za-z0-9]+\s*=\s*\d+(\.\d*)?([eE]\d+)?\s*(,\s*[A-Za-z0-9]+\s*=\s*\d+(\.\d*)?"
    r"([eE]\d+)?\s*)*", "a comma list of QUOTE=amount (e.g. KRW=100000000,USDT=100000)")]


class Settings(BaseSettings):
    """Every setting, with its default; `KCS_<NAME>` sets `<name>` (see `load_settings`)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid",
                                      validate_default=True)

    # Kafka bootstrap URL (`kafka://host:9092[;host2:9092]`); empty: start the embedded broker.
    broker: BrokerUrl = ""
    app_id: AppId = "kor-coin-stream"
    # Faust web server: port, bind address, and the host other workers use to reach this one.
    web_port: Port = 6066
    web_bind: NonEmpty = "0.0.0.0"
    web_host: str = ""
    # Where RocksDB tables (and the embedded broker's scratch files) live.
    data_dir: NonEmpty = "data"
    # exchange -> symbols -> channels (TOML). Empty: config/subscriptions.toml, or when
    # replaying, the subscriptions recorded with the recordings.
    subscriptions: ExistingFile = ""
    # A directory of recordings to stream instead of the live exchanges, or the URL of a replay
    # server already running (http://host:port, `python -m replay serve`).
    replay: ReplaySource = ""
    # 0 = as fast as possible, 1 = recorded pace, 2 = twice as fast, ...
    replay_speed: Speed = 0.0
    # A directory to record every live WebSocket session and REST call into.
    record: str = ""
    # Which exchanges this worker ingests: "auto" (the shards whose control partitions the
    # group assigns it: see app/shards.py), or pinned: "all", "none", or a comma list.
    ingest: ExchangeChoice = "auto"
    # Markets per ingest shard: each shard is its own connection(s) and owner. Empty: each
    # venue's per-connection cap (config/exchanges.py), one shard where none is published; a
    # number for every venue, or "binance=300,bitfinex=8" per venue.
    shard_markets: ShardMarkets = ""
    # Partitions of the ingest shards' control topic `<app id>-ingest-shards`: at most this
    # many workers own shards. Read at creation; an existing topic keeps its count.
    ingest_partitions: Count = 16
    # The ingest buffer: records waiting for Kafka (an outage), over all shards (bytes).
    ingest_buffer_bytes: Bytes = 256 * 1024 * 1024
    # Seconds between two `ws.metrics.<exchange>` records of a connection.
    metrics_interval: Seconds = 10.0
    # Partitions of every topic this app creates. Source topics and tables are co-partitioned.
    partitions: Count = 4
    replication_factor: Count = 1
    # Levels per side in each published order book.
    book_depth: Levels = 20
    # Ingest producer: acks ("all" or "1"), linger (ms) and batch size (bytes). Linger 0 still
    # batches whatever queues up while a request is in flight (bench/ingest.py: faster and
    # lower latency than 2 ms).
    producer_acks: Literal["all", "1"] = "all"
    producer_linger_ms: Milliseconds = 0
    producer_batch_bytes: Bytes = 262144
    # Consumer fetch wait (ms). Faust hard-codes 1500 ms; lower means lower latency.
    fetch_max_wait_ms: Milliseconds = 100
    # The workers' consumer fetch per partition (bytes): Kafka's max.partition.fetch.bytes,
    # Faust's default 1 MiB. A worker folds a fetch while the next is read: bench/features.py
    # (same run, 2026-12-01), 2 MiB 132,082, 4 MiB 143,866, 8 MiB 165,226, 16 MiB 160,942
    # trades/s.
    fetch_partition_bytes: Bytes = 8 * 1024 * 1024
    # A feed silent this long (s) is reconnected; reconnect backoff starts/caps at these (s).
    silence_timeout: Seconds = 30.0
    backoff_initial: Seconds = 0.5
    backoff_max: Seconds = 30.0
    # Largest WebSocket frame accepted (bytes) and largest decompressed payload (bytes).
    max_frame_bytes: Bytes = 8 * 1024 * 1024
    max_inflated_bytes: Bytes = 32 * 1024 * 1024
    # A book whose exchange timestamps have not advanced for this long (s) while its socket
    # still delivers frames is dropped, resynced and reported (`ws.error` kind `stale`).
    # Empty: each venue's default (`Connector.stale_after`); a number for every venue, or
    # "upbit=120,binance=30" per venue.
    stale_after: StaleAfter = ""
    # Broker profile: "tansu" applies the settings measured on the Tansu broker (fast group
    # joins, one record per changelog batch), "kafka" keeps Faust's defaults. Empty: "tansu"
    # for the embedded broker, "kafka" otherwise.
    broker_profile: Literal["", "tansu", "kafka"] = ""
    # Korean premium: the KRW-USDT market whose price is the USDT-KRW rate, and the global
    # exchange of the headline premium.
    premium_rate_market: Market = "upbit:USDT-KRW"
    premium_reference: Exchange = "binance"
    # Consolidated BBO: leave out an exchange's book received more than this many seconds
    # before the newest update of any market of the asset.
    bbo_max_age: Seconds = 30.0
    # Market state: total bid/ask volume and imbalance over this many top levels per side.
    book_levels: Levels = 5
    # Candle intervals (comma list of <n>s|m|h|d, e.g. "1m,5m,1h"), the grace period (s) a
    # candle stays open after its end for late trades, and closed candles kept per interval.
    candle_intervals: Intervals = "1m"
    candle_grace: SecondsOrZero = 5.0
    candle_history: Count = 500
    # Volume-spike signal: the last minute's volume above this many times the trailing average.
    spike_factor: Factor = 3.0
    # Large-trade signal: notional (price x amount, in the quote currency) at least this much,
    # per quote currency ("QUOTE=amount,..."); markets in other quote currencies never signal.
    large_trade_notional: Thresholds = "KRW=100000000,USDT=100000,USDC=100000,USD=100000,BTC=2,EUR=100000"  # noqa: E501
    # Log lines: "json" (one object per line), "text", or empty: text on a terminal, else JSON.
    log_format: Literal["", "json", "text"] = ""
    # Schema registry URL (Confluent-compatible). Set: Avro in the Confluent wire format on
    # the Avro topics (records/codec.py), schemas checked at start; empty: JSON everywhere.
    schema_registry: RegistryUrl = ""
    # Trades kept per market for `GET /trades/{exchange}/{symbol}/` (agents/recent_trades.py).
    recent_trades: Count = 100
    # History (history/): the Parquet archive ("on"/"off"), where it goes (a path or any
    # pyarrow/fsspec URL; empty: <data_dir>/archive), and when its files roll (bytes of
    # source records, seconds).
    archive: Literal["on", "off"] = "on"
    archive_dir: str = ""
    archive_roll_bytes: Bytes = 64 * 1024 * 1024
    archive_roll_seconds: Seconds = 300.0
    # The PostgreSQL warm store (a libpq DSN; empty: off), its retention in days (raw
    # records, 1-minute and 1-hour candles), and how often retention runs (s).
    warm_dsn: str = ""
    warm_retention_raw: Seconds = 7.0
    warm_retention_1m: Seconds = 30.0
    warm_retention_1h: Seconds = 365.0
    warm_retention_interval: Seconds = 3600.0

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Settings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"KCS_BACKOFF_MAX={self.backoff_max!r} is below "
                             f"KCS_BACKOFF_INITIAL={self.backoff_initial!r}: use at least it")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is read by load_settings() (from os.environ or the mapping it is
        # given) and passed in as arguments; `.env` below them.
        return init_settings, dotenv_settings

    @property
    def replay_server(self) -> bool:
        """KCS_REPLAY names a running replay server rather than a directory of recordings."""
        return self.replay.startswith(("http://", "https://"))

    @property
    def embedded(self) -> bool:
        return not self.broker

    @property
    def profile(self) -> str:
        return self.broker_profile or ("tansu" if self.embedded else "kafka")

    @property
    def canonical_url(self) -> str:
        return f"http://{self.web_host or socket.gethostname()}:{self.web_port}"

    def stale_after_for(self, exchange: str, default: float) -> float:
        """`KCS_STALE_AFTER` for one venue: a number, or `venue=seconds,...` (others keep
        `default`); a bad value is refused with the setting's name."""
        try:
            value = _for_venue(self.stale_after, exchange)
            return default if value is None else float(value)
        except ValueError:
            raise ValueError(f"KCS_STALE_AFTER={self.stale_after!r}: use seconds, or "
                             f"venue=seconds,...") from None

    def shard_markets_for(self, exchange: str) -> int | None:
        """Markets per ingest shard of one venue (None: no cap, one shard)."""
        value = _for_venue(self.shard_markets, exchange)
        return SHARD_MARKETS.get(exchange) if value is None else int(value)

    @property
    def ingest_auto(self) -> bool:
        """Shards owned through the group (the default), not pinned to this worker."""
        return self.ingest.strip().lower() == "auto"

    def ingests(self, exchange: str) -> bool:
        """Whether this worker may run the exchange (when `auto`: if the group says so)."""
        choice = self.ingest.strip().lower()
        if choice in ("all", "auto"):
            return True
        if choice in ("", "none"):
            return False
        return exchange in {name.strip() for name in choice.split(",")}


def _for_venue(text: str, exchange: str) -> str | None:
    """A per-venue setting's value for one venue: `value` for every venue, or
    `venue=value,...`; None when empty or the venue is not named."""
    text = text.strip()
    if not text or "=" not in text:
        return text or None
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip().lower() == exchange:
            return value
    return None


def _names() -> dict[str, str]:
    """`KCS_NAME` -> field name."""
    return {PREFIX + name.upper(): name for name in Settings.model_fields}


def _refused(error: ValidationError, given: Mapping[str, Any]) -> SettingsError:
    lines = []
    for problem in error.errors():
        if problem["loc"]:
            name = PREFIX + str(problem["loc"][0]).upper()
            value = given.get(name, problem.get("input"))
            lines.append(f"{name}={value!r}: {problem['msg'].removeprefix('Value error, ')}")
        else:  # a check across settings: its message names them
            lines.append(problem["msg"].removeprefix("Value error, "))
    return SettingsError("bad settings:\n  " + "\n  ".join(lines))


def load_settings(environ: Mapping[str, str] | None = None,
                  dotenv: Path | None = None) -> Settings:
    """The settings from `environ` (default: os.environ) over the `.env` file `dotenv`
    (default: `.env` in the working directory). Raises SettingsError naming every setting
    refused, its value and what is allowed, and every `KCS_*` name that is no setting."""
    env = os.environ if environ is None else environ
    path = dotenv if dotenv is not None else Path.cwd() / ".env"
    from_file = {k: v for k, v in dotenv_values(path).items() if k.startswith(PREFIX)} \
        if path.is_file() else {}
    given = {**from_file, **{k: v for k, v in env.items() if k.startswith(PREFIX)}}
    names = _names()
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise SettingsError("bad settings:\n  " + "\n  ".join(
            f"{name}={given[name]!r}: no such setting (see .env.example)" for name in unknown))
    try:
        return Settings(_env_file=None, **{names[k]: v for k, v in given.items()})
    except ValidationError as exc:
        raise _refused(exc, given) from None
