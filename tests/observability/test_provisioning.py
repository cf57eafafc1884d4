"""Grafana provisioning: fixed uids, the trace link, and no `$` that Grafana would expand."""

from __future__ import annotations

from pathlib import Path

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


def test_grafana_environment_pins_the_plugin_and_disables_anonymous_access() -> None:
    """grafana.env installs redis-datasource 2.2.0 and keeps anonymous access off."""
    env = dict(
        line.split("=", 1)
        for line in (OBSERVABILITY / "grafana/grafana.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["GF_INSTALL_PLUGINS"] == "redis-datasource 2.2.0"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env


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
