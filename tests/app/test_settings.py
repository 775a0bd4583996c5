"""Settings: environment over `.env`, types checked, and every setting documented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from config.settings import Settings, load_settings
from tests.support import REPO


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nKCS_WEB_PORT=7000\nKCS_INGEST='upbit, binance'\n"
                      "KCS_BOOK_DEPTH=5\n")
    settings = load_settings({"KCS_WEB_PORT": "7100"}, dotenv)
    assert settings.web_port == 7100 and settings.book_depth == 5
    assert settings.ingests("upbit") and settings.ingests("binance")
    assert not settings.ingests("kraken")


def test_defaults_and_embedded_profile() -> None:
    settings = load_settings({}, Path("/nonexistent"))
    assert settings == Settings()
    assert settings.embedded and settings.ingests("okx")
    assert not load_settings({"KCS_BROKER": "kafka://k:9092"}, Path("/x")).embedded
    assert not load_settings({"KCS_INGEST": "none"}, Path("/x")).ingests("upbit")


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ValueError, match="KCS_WEB_PORT='http'"):
        load_settings({"KCS_WEB_PORT": "http"}, Path("/x"))


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [f"KCS_{f.name.upper()}" for f in fields(Settings)
               if f"`KCS_{f.name.upper()}`" not in readme]
    assert not missing, f"settings missing from the README's configuration table: {missing}"


def test_default_subscriptions_cover_every_exchange_and_build_connections() -> None:
    from app.subscriptions import load_subscriptions
    from exchanges import CONNECTORS, EXCHANGES
    from exchanges.publisher import Publisher

    settings = load_settings({}, Path("/x"))
    subscriptions = load_subscriptions(settings)
    assert sorted(subscriptions) == sorted(EXCHANGES) == sorted(CONNECTORS)
    for name, subs in subscriptions.items():
        assert subs and all(channels == {"trades", "book", "ticker"} for channels in subs.values())
        streams = CONNECTORS[name](subs, Publisher(name), settings).connections()
        assert streams and all(s.url.startswith("wss://") for s in streams), name
        assert set(subs) <= {sym for s in streams for sym in s.symbols}, name


def test_a_bad_subscription_is_refused_with_its_name(tmp_path: Path) -> None:
    from app.subscriptions import load_subscriptions

    path = tmp_path / "subs.toml"
    path.write_text('[upbit]\n"BTC-KRW" = ["trades", "candles"]\n')
    with pytest.raises(ValueError, match="candles"):
        load_subscriptions(load_settings({"KCS_SUBSCRIPTIONS": str(path)}, Path("/x")))
