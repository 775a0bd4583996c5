"""The one settings object of kor-coin-stream, read from `KCS_*` environment variables.

Values come from the process environment first, then from an optional `.env` file in the
working directory (lines `KCS_NAME=value`; `#` starts a comment). Every setting is listed,
with its default, in the README's configuration table: keep the two in step.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["Settings", "load_settings", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip().strip('"').strip("'")
    return values


@dataclass(frozen=True, slots=True)
class Settings:
    # Kafka bootstrap URL (`kafka://host:9092[;host2:9092]`); empty: start the embedded broker.
    broker: str = ""
    app_id: str = "kor-coin-stream"
    # Faust web server: port, bind address, and the host other workers use to reach this one.
    web_port: int = 6066
    web_bind: str = "0.0.0.0"
    web_host: str = ""
    # Where RocksDB tables (and the embedded broker's scratch files) live.
    data_dir: str = "data"
    # exchange -> symbols -> channels (TOML). Empty: config/subscriptions.toml, or when
    # replaying, the subscriptions recorded with the recordings.
    subscriptions: str = ""
    # A directory of recordings to stream instead of the live exchanges.
    replay: str = ""
    # 0 = as fast as possible, 1 = recorded pace, 2 = twice as fast, ...
    replay_speed: float = 0.0
    # A directory to record every live WebSocket session and REST call into.
    record: str = ""
    # Which exchanges this worker ingests: "auto" (the shards whose control partitions the
    # group assigns it: see app/shards.py), or pinned: "all", "none", or a comma list.
    ingest: str = "auto"
    # The ingest buffer: records waiting for Kafka (an outage), over all shards (bytes).
    ingest_buffer_bytes: int = 256 * 1024 * 1024
    # Seconds between two `ws.metrics.<exchange>` records of a connection.
    metrics_interval: float = 10.0
    # Partitions of every topic this app creates. Source topics and tables are co-partitioned.
    partitions: int = 4
    replication_factor: int = 1
    # Levels per side in each published order book.
    book_depth: int = 20
    # Ingest producer: acks ("all" or "1"), linger (ms) and batch size (bytes). Linger 0 still
    # batches whatever queues up while a request is in flight (bench/ingest.py: faster and
    # lower latency than 2 ms).
    producer_acks: str = "all"
    producer_linger_ms: int = 0
    producer_batch_bytes: int = 262144
    # Consumer fetch wait (ms). Faust hard-codes 1500 ms; lower means lower latency.
    fetch_max_wait_ms: int = 100
    # A feed silent this long (s) is reconnected; reconnect backoff starts/caps at these (s).
    silence_timeout: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # Largest WebSocket frame accepted (bytes) and largest decompressed payload (bytes).
    max_frame_bytes: int = 8 * 1024 * 1024
    max_inflated_bytes: int = 32 * 1024 * 1024
    # A book whose exchange timestamps have not advanced for this long (s) while its socket
    # still delivers frames is dropped, resynced and reported (`ws.error` kind `stale`).
    # Empty: each venue's default (`Connector.stale_after`); a number for every venue, or
    # "upbit=120,binance=30" per venue.
    stale_after: str = ""
    # Broker profile: "tansu" applies the settings measured on the Tansu broker (fast group
    # joins, one record per changelog batch), "kafka" keeps Faust's defaults. Empty: "tansu"
    # for the embedded broker, "kafka" otherwise.
    broker_profile: str = ""
    # Korean premium: the KRW-USDT market whose price is the USDT-KRW rate, and the global
    # exchange of the headline premium.
    premium_rate_market: str = "upbit:USDT-KRW"
    premium_reference: str = "binance"
    # Consolidated BBO: leave out an exchange's book received more than this many seconds
    # before the newest update of any market of the asset.
    bbo_max_age: float = 30.0
    # Market state: total bid/ask volume and imbalance over this many top levels per side.
    book_levels: int = 5
    # Candle intervals (comma list of <n>s|m|h|d, e.g. "1m,5m,1h"), the grace period (s) a
    # candle stays open after its end for late trades, and closed candles kept per interval.
    candle_intervals: str = "1m"
    candle_grace: float = 5.0
    candle_history: int = 500
    # Volume-spike signal: the last minute's volume above this many times the trailing average.
    spike_factor: float = 3.0
    # Large-trade signal: notional (price x amount, in the quote currency) at least this much,
    # per quote currency ("QUOTE=amount,..."); markets in other quote currencies never signal.
    large_trade_notional: str = "KRW=100000000,USDT=100000,USDC=100000,USD=100000,BTC=2,EUR=100000"
    # Log lines: "json" (one object per line), "text", or empty: text on a terminal, else JSON.
    log_format: str = ""
    # Schema registry URL (Confluent-compatible). Set: Avro in the Confluent wire format on
    # the Avro topics (records/codec.py), schemas checked at start; empty: JSON everywhere.
    schema_registry: str = ""
    # Trades kept per market for `GET /trades/{exchange}/{symbol}/` (agents/recent_trades.py).
    recent_trades: int = 100
    # History (history/): the Parquet archive ("on"/"off"), where it goes (a path or any
    # pyarrow/fsspec URL; empty: <data_dir>/archive), and when its files roll (bytes of
    # source records, seconds).
    archive: str = "on"
    archive_dir: str = ""
    archive_roll_bytes: int = 64 * 1024 * 1024
    archive_roll_seconds: float = 300.0
    # The PostgreSQL warm store (a libpq DSN; empty: off), its retention in days (raw
    # records, 1-minute and 1-hour candles), and how often retention runs (s).
    warm_dsn: str = ""
    warm_retention_raw: float = 7.0
    warm_retention_1m: float = 30.0
    warm_retention_1h: float = 365.0
    warm_retention_interval: float = 3600.0

    @property
    def embedded(self) -> bool:
        return not self.broker

    @property
    def profile(self) -> str:
        profile = self.broker_profile.strip().lower() or ("tansu" if self.embedded else "kafka")
        if profile not in ("tansu", "kafka"):
            raise ValueError(f"KCS_BROKER_PROFILE={self.broker_profile!r}: use tansu or kafka")
        return profile

    @property
    def canonical_url(self) -> str:
        return f"http://{self.web_host or socket.gethostname()}:{self.web_port}"

    def stale_after_for(self, exchange: str, default: float) -> float:
        """`KCS_STALE_AFTER` for one venue: a number, or `venue=seconds,...` (others keep
        `default`); a bad value is refused with the setting's name."""
        text = self.stale_after.strip()
        try:
            if not text:
                return default
            if "=" not in text:
                return float(text)
            for part in text.split(","):
                name, _, value = part.partition("=")
                if name.strip().lower() == exchange:
                    return float(value)
            return default
        except ValueError:
            raise ValueError(f"KCS_STALE_AFTER={self.stale_after!r}: use seconds, or "
                             f"venue=seconds,...") from None

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


def load_settings(environ: dict[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build the settings from `environ` (default: os.environ) over the `.env` file."""
    env = dict(_read_dotenv(dotenv if dotenv is not None else Path.cwd() / ".env"))
    env.update(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for field in fields(Settings):
        raw = env.get("KCS_" + field.name.upper())
        if raw is None:
            continue
        kind = type(field.default)
        try:
            values[field.name] = kind(raw) if kind is not str else raw
        except ValueError:
            raise ValueError(
                f"KCS_{field.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
    return Settings(**values)  # type: ignore[arg-type]
