"""The operator's surface end to end: a real worker replays recordings at their recorded
pace, a real Prometheus (Debian's `prometheus`) scrapes its /metrics, and every Grafana
panel's query (docker/grafana/dashboards/kor-coin-stream.json) must return data from it;
/metrics passes `promtool check metrics`.

A few records for the Korean premium (which the 2021 recordings cannot give: Upbit had no
USDT-KRW market then) are produced to the market-data topics directly, as ingest would.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiokafka
import pytest

from app.embedded import EmbeddedBroker, free_port, stop_process
from tests.support import REPO, Worker, copy_recordings, http_json, start_broker, wait_for

DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "kor-coin-stream.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
RECORDED = ("UPBIT", "BINANCE", "OKX", "COINBASE")  # 5 to 15 s each at the recorded pace
SPEED = 0.25  # a quarter of the recorded pace: data flows for about a minute

pytestmark = pytest.mark.e2e


def premium_records(now: float) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Books of the rate market and of one asset on a Korean and a global exchange."""
    def book(exchange: str, symbol: str, bid: float, ask: float) -> tuple[str, bytes, dict]:
        return (f"orderbook-data.{exchange}", f"{exchange}:{symbol}".encode(),
                {"exchange": exchange, "symbol": symbol, "ts_event": now - 0.01,
                 "ts_recv": now, "bids": [[bid, 1.0]], "asks": [[ask, 1.0]],
                 "sequence": None})
    return [book("upbit", "USDT-KRW", 1369.0, 1371.0),
            book("upbit", "SOL-KRW", 210_000.0, 210_100.0),
            book("bithumb", "SOL-KRW", 209_900.0, 210_200.0),
            book("binance", "SOL-USDT", 150.0, 150.1)]


async def produce(broker_url: str, records: list[tuple[str, bytes, dict[str, Any]]]) -> None:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker_url.split("://", 1)[-1])
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, json.dumps(value).encode(), key=key)
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def replaying(tmp_path_factory: pytest.TempPathFactory, replays: Path
              ) -> Iterator[tuple[EmbeddedBroker, Worker, str]]:
    """One broker, one worker replaying at a quarter of the recorded pace, and (when
    installed) a Prometheus scraping it every second from before it starts; for the module."""
    tmp = tmp_path_factory.mktemp("operator")
    broker = start_broker(tmp)
    recordings = copy_recordings(tmp / "recordings", *RECORDED, source=replays)
    worker = Worker(broker.url, tmp, app_id="kcs-test-operator", replay=str(recordings),
                    replay_speed=SPEED, partitions=2)
    prometheus = start_prometheus(tmp, worker.port) if PROMETHEUS else None
    try:
        worker.start()
        asyncio.run(produce(broker.url, premium_records(time.time())))
        yield broker, worker, prometheus[1] if prometheus else ""
    finally:
        worker.stop()
        if prometheus:
            stop_process(prometheus[0], grace=10.0)
        broker.stop()


def start_prometheus(tmp: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "kcs-worker", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    process = subprocess.Popen(
        [PROMETHEUS or "prometheus", f"--config.file={config}",
         f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(tmp / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def prometheus_query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package)")
def test_every_dashboard_panel_returns_data_from_a_real_prometheus(
        replaying: tuple[EmbeddedBroker, Worker, str]) -> None:
    _, _, base = replaying
    queries = panel_queries()
    assert len(queries) >= 12
    missing: list[str] = [title for title, _ in queries]

    def all_answered() -> bool:
        missing[:] = [title for title, expr in queries
                      if not has_data(prometheus_query(base, expr))]
        return not missing

    try:
        wait_for(all_answered, timeout=60, interval=2.0)
    except TimeoutError:
        pytest.fail(f"panels without data: {missing}")
    assert has_data(prometheus_query(base, 'up{job="kcs-worker"} == 1'))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_metrics_endpoint_passes_promtool(replaying: tuple[EmbeddedBroker, Worker, str]
                                          ) -> None:
    _, worker, _ = replaying
    for path in ("/metrics", "/metrics/"):
        with urllib.request.urlopen(worker.url + path, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read()
        check = subprocess.run([PROMTOOL or "promtool", "check", "metrics"], input=body,
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        text = body.decode()
        for name in ("kcs_records_total", "kcs_dlq_frames_total", "kcs_book_resyncs_total",
                     "kcs_reconnects_total", "kcs_connection_up", "kcs_last_frame_age_seconds",
                     "kcs_book_age_seconds", "kcs_ingest_buffer_bytes",
                     "kcs_frame_to_ack_seconds_bucket", "kcs_event_delay_seconds_bucket",
                     "kcs_agent_batch_seconds_bucket"):
            assert f"\n{name}{{" in text or f"\n{name} " in text, name
        assert 'kcs_records_total{exchange="upbit",type="trade"}' in text


def test_worker_logs_are_json_lines_with_connection_fields(
        replaying: tuple[EmbeddedBroker, Worker, str]) -> None:
    _, worker, _ = replaying
    wanted = {"upbit", "binance", "okx", "coinbase"}

    def connected_logged() -> bool:
        # a connection is logged once its first frame arrives, which can follow the worker's
        # readiness by seconds (the recordings are replayed at a quarter of their pace)
        return wanted <= {r.get("exchange") for r in json_lines(worker.log())
                          if r.get("phase") == "connected"}

    try:
        wait_for(connected_logged, timeout=60)
    except TimeoutError:
        pass  # the assertions below say what is missing
    records = json_lines(worker.log())
    assert records, worker.log()[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    connected = [r for r in records if r.get("phase") == "connected"]
    assert {r["exchange"] for r in connected} >= wanted, worker.log()[-3000:]
    assert all(r["level"] == "INFO" and r["region"] and r["request_type"] == "websocket"
               for r in connected)


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)


def page_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran (headless Chromium, its virtual clock advanced
    past a few refreshes)."""
    result = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=8000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package)")
def test_status_page_shows_the_replayed_markets_in_chromium(
        replaying: tuple[EmbeddedBroker, Worker, str], tmp_path: Path) -> None:
    _, worker, _ = replaying
    wait_for(lambda: "SOL" in http_json(f"{worker.url}/premium/")[1], timeout=60)
    wait_for(lambda: len(http_json(f"{worker.url}/markets/")[1]) >= 10, timeout=60)
    markets = http_json(f"{worker.url}/markets/")[1]
    exchanges = {key.split(":")[0] for key in markets}
    assert {"upbit", "binance", "okx", "coinbase"} <= exchanges
    for path in ("/status/", "/"):
        dom = page_dom(worker.url + path, tmp_path / f"profile{len(path)}")
        assert "<h1>kor-coin-stream</h1>" in dom
        shown = [key for key in markets if f"<td>{key}</td>" in dom]
        assert shown == list(markets), sorted(set(markets) - set(shown))[:10]
        for name in ("upbit", "binance", "okx", "coinbase"):  # feeds: connected x / y
            assert f'<td>{name}</td><td class="' in dom, name
        assert "<td>SOL</td><td>upbit</td><td>binance</td>" in dom  # premium board
        assert "<td>SOL</td><td>KRW</td>" in dom and "<td>SOL</td><td>USDT</td>" in dom  # BBO
