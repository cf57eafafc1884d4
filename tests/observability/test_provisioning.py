"""Grafana provisioning: fixed uids, the trace link, and no `$` that Grafana would expand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from weather_dashboards import checks, generate

from tests.observability.conftest import OBSERVABILITY

PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"


def test_datasources_have_the_fixed_uids(datasources: dict[str, str]) -> None:
    """prometheus, valkey (redis-datasource) and tempo, as the dashboards expect."""
    assert datasources == {"prometheus": "prometheus", "valkey": "redis-datasource", "tempo": "tempo"}


def test_prometheus_exemplars_link_to_tempo() -> None:
    """Exemplars' trace_id label opens the trace in the data source with uid tempo."""
    sources = yaml.safe_load((PROVISIONING / "datasources/datasources.yml").read_text())["datasources"]
    prometheus = next(s for s in sources if s["uid"] == "prometheus")
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "tempo"}]


def test_valkey_credentials_come_from_the_environment() -> None:
    """The Valkey user and password are not in the file, only references to the environment."""
    sources = yaml.safe_load((PROVISIONING / "datasources/datasources.yml").read_text())["datasources"]
    valkey = next(s for s in sources if s["uid"] == "valkey")
    assert valkey["jsonData"]["acl"] is True
    assert valkey["jsonData"]["user"] == "$__env{VALKEY_GRAFANA_USER}"
    assert valkey["secureJsonData"]["password"] == "$__env{VALKEY_GRAFANA_PASSWORD}"  # noqa: S105 (a reference, not a secret)


@pytest.mark.parametrize("path", sorted(PROVISIONING.rglob("*.yml")), ids=lambda p: p.name)
def test_provisioning_files_have_no_unescaped_dollar(path: Path) -> None:
    """Every `$` in a value is $$ or a deliberate $__env{...}."""
    assert checks.check_provisioning_text(path.read_text(), path.name) == []


def test_dashboard_provider_points_at_the_dashboards_folder() -> None:
    """The provider loads files from one folder, read-only from the UI."""
    provider = yaml.safe_load((PROVISIONING / "dashboards/dashboards.yml").read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"].endswith("weather-api")
    assert generate.DASHBOARD_DIR.is_dir()


def test_grafana_environment_keeps_anonymous_access_off() -> None:
    """grafana.env: anonymous access off, no admin password, no plugin install (the image has it)."""
    env = dict(
        line.split("=", 1)
        for line in (OBSERVABILITY / "grafana/grafana.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert "GF_INSTALL_PLUGINS" not in env


# --- the data sources against what they query ------------------------------------------------


def _sources() -> list[dict[str, Any]]:
    return list(yaml.safe_load((PROVISIONING / "datasources/datasources.yml").read_text())["datasources"])


def _prometheus_configs() -> dict[str, Any]:
    return {path.name: yaml.safe_load(path.read_text()) for path in generate.PROMETHEUS_CONFIGS}


def test_rate_interval_matches_every_scrape_interval() -> None:
    """TimeInterval equals prometheus.yml's and prometheus.k8s.yml's scrape_interval."""
    assert checks.check_scrape_interval(_sources(), _prometheus_configs()) == []


def test_a_scrape_interval_longer_than_time_interval_is_reported() -> None:
    """Scraping every 60 s under a 15 s timeInterval: $__rate_interval (1m) holds one sample."""
    configs = _prometheus_configs()
    configs["prometheus.yml"]["global"]["scrape_interval"] = "60s"
    problems = checks.check_scrape_interval(_sources(), configs)
    assert [(p.rule, "prometheus.yml scrapes every 60s" in p.message) for p in problems] == [("rate-interval", True)]


def test_tempo_links_to_metrics_only_what_exists() -> None:
    """No service map, no traces-to-metrics: our Tempo runs no metrics-generator."""
    tempo = next(s for s in _sources() if s["uid"] == "tempo")
    assert "serviceMap" not in tempo["jsonData"]
    assert "tracesToMetrics" not in tempo["jsonData"]
    assert checks.check_tempo_links(_sources(), yaml.safe_load(generate.TEMPO_CONFIG.read_text())) == []


def test_a_service_map_without_a_metrics_generator_is_reported() -> None:
    """The old setting: serviceMap on Prometheus, Tempo without span metrics."""
    sources = _sources()
    next(s for s in sources if s["uid"] == "tempo")["jsonData"]["serviceMap"] = {"datasourceUid": "prometheus"}
    problems = checks.check_tempo_links(sources, yaml.safe_load(generate.TEMPO_CONFIG.read_text()))
    assert [p.rule for p in problems] == ["service-map"]


def test_a_service_map_with_a_metrics_generator_is_accepted() -> None:
    """Tempo writing service-graph and span metrics to Prometheus makes the service map work."""
    sources = _sources()
    next(s for s in sources if s["uid"] == "tempo")["jsonData"]["serviceMap"] = {"datasourceUid": "prometheus"}
    tempo = {
        "metrics_generator": {
            "storage": {"path": "/var/tempo/generator", "remote_write": [{"url": "http://p/api/v1/write"}]}
        },
        "overrides": {"defaults": {"metrics_generator": {"processors": ["service-graphs", "span-metrics"]}}},
    }
    assert checks.check_tempo_links(sources, tempo) == []


# --- the `$` rule on deliberately broken files -----------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["pa$word", "${VALKEY_PASSWORD}", "$VALKEY_PASSWORD", "price: 5$", "$__env{OK} and $other"],
)
def test_unescaped_dollar_is_reported(value: str) -> None:
    """Grafana would expand (or eat) these dollars."""
    text = yaml.safe_dump({"datasources": [{"uid": "x", "secureJsonData": {"password": value}}]})
    problems = checks.check_provisioning_text(text, "broken.yml")
    assert [p.rule for p in problems] == ["dollar"]
    assert "secureJsonData.password" in problems[0].where


@pytest.mark.parametrize("value", ["pa$$word", "$__env{VALKEY_PASSWORD}", "$__file{/run/secrets/pw}", "no dollar"])
def test_escaped_or_deliberate_dollar_is_accepted(value: str) -> None:
    """$$ is a literal dollar; $__env{} and $__file{} are what we mean to expand."""
    text = yaml.safe_dump({"datasources": [{"uid": "x", "secureJsonData": {"password": value}}]})
    assert checks.check_provisioning_text(text, "ok.yml") == []


def test_dollar_in_a_comment_is_not_reported() -> None:
    """Grafana expands values, not comments."""
    assert checks.check_provisioning_text("# costs $5\napiVersion: 1\n", "ok.yml") == []


def test_datasource_without_a_uid_is_reported(tmp_path: Path) -> None:
    """A data source without a fixed uid gets a random one: dashboards cannot reference it."""
    (tmp_path / "ds.yml").write_text("apiVersion: 1\ndatasources:\n  - name: Loose\n    type: prometheus\n")
    defined, problems = checks.provisioned_datasources(tmp_path)
    assert defined == {}
    assert [p.rule for p in problems] == ["datasource"]
