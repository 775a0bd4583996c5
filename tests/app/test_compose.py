"""docker/compose.yml, checked without a Docker engine: it is valid against the compose
specification's JSON schema (vendored by check-jsonschema), every KCS_* variable it sets is
a real setting, every file it mounts or builds from exists, and it has what an operator needs
(KRaft Kafka, a schema registry, N identical workers that scale, Prometheus finding them
all, Grafana with the dashboard, healthchecks, restart policies, a non-root image)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"


def settings_names() -> set[str]:
    """Every KCS_* name the settings class reads (wherever the class lives on this branch)."""
    try:
        from config.settings import Settings  # type: ignore[import-not-found]
    except ImportError:
        from app.settings import Settings
    if dataclasses.is_dataclass(Settings):
        names = [f.name for f in dataclasses.fields(Settings)]
    else:  # pydantic-settings
        names = list(Settings.model_fields)  # type: ignore[attr-defined]
    return {"KCS_" + name.upper() for name in names}


def compose_schema() -> dict[str, Any]:
    """check-jsonschema's vendored copy of the compose specification's schema (located, not
    imported: the package's CLI needs a newer click than Faust allows)."""
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((package / "builtin_schemas/vendor/compose-spec.json").read_text())


def validator_for_compose() -> Any:
    schema = compose_schema()
    cls = jsonschema.validators.validator_for(schema)  # the draft the schema declares
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = validator_for_compose()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_schema_check_catches_a_mistake(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["restart_policy"] = "always"  # not a service key
    broken["services"]["kafka"]["depends_on"] = 5  # neither a list nor a map
    errors = list(validator_for_compose().iter_errors(broken))
    assert any("restart_policy" in e.message for e in errors)
    assert any(list(e.absolute_path) == ["services", "kafka", "depends_on"] for e in errors)


def test_every_kcs_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = settings_names()
    assert "KCS_BROKER" in known and len(known) > 20
    used = {name for service in compose["services"].values()
            for name in environment(service) if name.startswith("KCS_")}
    assert {"KCS_BROKER", "KCS_LOG_FORMAT"} <= used
    assert used - known == set()
    dockerfile_env = [word.split("=", 1)[0]
                      for line in (DOCKER / "Dockerfile").read_text().splitlines()
                      if line.startswith("ENV ") for word in line.split()[1:]]
    assert {n for n in dockerfile_env if n.startswith("KCS_")} - known == set()


def test_every_mounted_file_and_build_context_exists(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    checked = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source in named or (isinstance(volume, str) and ":" not in volume):
                continue  # a named volume, or an anonymous one (a container path only)
            assert (DOCKER / source).exists(), f"{name} mounts {source}, which does not exist"
            checked += 1
        build = service.get("build")
        if build:
            context = DOCKER / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
    assert checked >= 4  # Prometheus config + rules, Grafana provisioning + dashboards
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    for rule_file in prometheus["rule_files"]:
        mounted = [v for v in compose["services"]["prometheus"]["volumes"]
                   if v.split(":")[1] == rule_file]
        assert mounted, f"{rule_file} is not mounted into Prometheus"
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/kor-coin-stream.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mount = [v for v in compose["services"]["grafana"]["volumes"] if v.split(":")[1] == path]
    assert mount and list((DOCKER / mount[0].split(":")[0]).glob("*.json"))


def test_services_an_operator_needs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "broker,controller" in environment(services["kafka"])["KAFKA_PROCESS_ROLES"]  # KRaft
    assert "schema-registry" in services
    workers = {n: s for n, s in services.items() if "KCS_BROKER" in environment(s)}
    assert list(workers) == ["worker"]  # one service of identical workers, scaled
    worker = workers["worker"]
    env = environment(worker)
    assert env.get("KCS_INGEST", "auto") == "auto"  # the group decides who ingests what
    assert "KCS_WEB_HOST" not in env  # each replica's own host name (unique per container)
    assert worker["deploy"]["replicas"] >= 2
    low, high = worker["ports"][0].split(":")[0].split("-")  # a host port per replica
    assert int(high) - int(low) + 1 >= worker["deploy"]["replicas"]
    assert all(isinstance(v, str) and ":" not in v for v in worker["volumes"])  # anonymous
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        assert "healthcheck" in service, name
    targets = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    found = targets["scrape_configs"][0]["dns_sd_configs"][0]
    assert found["names"] == list(workers) and found["type"] == "A"  # every replica


def test_image_runs_as_a_user_and_ignores_local_state() -> None:
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", ".env"} <= ignored
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert all(Path(REPO / p).exists() for p in copied if p != "pyproject.toml") and \
        not copied & ignored


def test_image_compiles_the_per_message_path_itself() -> None:
    """The image builds its own compiled modules (a plain install would run the pure ones) and
    never takes the host's build, made for another interpreter or stale."""
    text = (DOCKER / "Dockerfile").read_text()
    assert "exchanges/_native.py build" in text and "state() == 'compiled'" in text
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {"**/*.so", "exchanges/_native.stamp"} <= ignored
