"""Prometheus configuration, recording rules and alerts: promtool's checks and our conventions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.observability.conftest import OBSERVABILITY

PROMETHEUS = OBSERVABILITY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml")) + sorted((PROMETHEUS / "alerts").glob("*.yml"))
JOBS = {"weather-api", "valkey", "locust"}


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(  # noqa: S603
        [promtool, *map(str, args)], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )


def _rules(kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def _tests() -> list[dict[str, Any]]:
    return [
        case
        for path in sorted((PROMETHEUS / "tests").glob("*.yml"))
        for case in yaml.safe_load(path.read_text())["tests"]
    ]


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_check_config_accepts_the_local_config() -> None:
    """prometheus.yml and the rule files it names are valid."""
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_accepts_the_kubernetes_config(tmp_path: Path) -> None:
    """prometheus.k8s.yml is valid.

    Debian's promtool is built without Kubernetes service discovery and rejects the
    kubernetes_sd_configs blocks as unknown fields; there the same file is checked with those
    blocks replaced by static targets, and the blocks themselves by structure.
    """
    result = _promtool("check", "config", "prometheus.k8s.yml")
    if result.returncode == 0:
        return
    assert "field kubernetes_sd_configs not found" in result.stdout + result.stderr, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.k8s.yml").read_text())
    for job in config["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            assert sd == {"role": "pod", "namespaces": {"own_namespace": True}}, job["job_name"]
            job["static_configs"] = [{"targets": ["localhost:1"]}]
    config["rule_files"] = [str(PROMETHEUS / pattern) for pattern in config["rule_files"]]
    path = tmp_path / "prometheus.k8s.yml"
    path.write_text(yaml.safe_dump(config))
    result = _promtool("check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules_accepts_rules_and_alerts() -> None:
    """Every rule file parses and its expressions are valid PromQL."""
    result = _promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    """Promtool test rules tests/*.yml: every recording-rule and alert case."""
    result = _promtool("test", "rules", *sorted((PROMETHEUS / "tests").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_broken_alert(tmp_path: Path) -> None:
    """The unit tests would notice a page that never fires (its thresholds raised 100x)."""
    alerts = (PROMETHEUS / "alerts/weather-api.alerts.yml").read_text()
    alerts = alerts.replace("(14.4 * 0.001)", "(1440 * 0.001)").replace("(6 * 0.001)", "(600 * 0.001)")
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts/weather-api.alerts.yml").write_text(alerts)
    (tmp_path / "rules").symlink_to(PROMETHEUS / "rules")
    (tmp_path / "tests").symlink_to(PROMETHEUS / "tests")
    promtool = require_binary("promtool")
    result = subprocess.run(  # noqa: S603
        [promtool, "test", "rules", "tests/slo.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "WeatherApiAvailabilityBurnRateFast" in result.stdout + result.stderr


# --- conventions ------------------------------------------------------------------------------


def test_recording_rules_are_named_level_metric_operation() -> None:
    """level:metric:operation, e.g. route_method:http_server_requests:rate5m."""
    names = {rule["record"] for rule in _rules("record")}
    bad = [n for n in names if not re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", n)]
    assert names
    assert bad == []


def test_every_alert_has_summary_description_severity_and_runbook_anchor() -> None:
    """runbook_url points at a heading of observability/runbook.md."""
    runbook = (OBSERVABILITY / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, re.MULTILINE)
    }
    for rule in _rules("alert"):
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "observability/runbook.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, rule["alert"]


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    """Each alert is proven both ways in tests/*.yml."""
    firing, silent = set(), set()
    for case in _tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules("alert")}
    assert alerts - firing == set()
    assert alerts - silent == set()


def test_unit_tests_are_named_after_behaviour() -> None:
    """Names say what happens (fires, silent, ...), not which alert is tested."""
    for case in _tests():
        assert re.search(r"\b(fires|silent|is|counts|ignores)\b", case["name"]), case["name"]


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.k8s.yml"])
def test_scrape_jobs_are_the_contract(config: str) -> None:
    """Job names of docs/architecture.md: weather-api, valkey, locust (plus Prometheus itself)."""
    jobs = {job["job_name"] for job in yaml.safe_load((PROMETHEUS / config).read_text())["scrape_configs"]}
    assert jobs - {"prometheus"} == JOBS


def test_local_config_scrapes_the_default_ports() -> None:
    """The API on 8000, redis_exporter on 9121, Locust on 9646, all on loopback."""
    jobs = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in jobs}
    assert targets["weather-api"] == ["127.0.0.1:8000"]
    assert targets["valkey"] == ["127.0.0.1:9121"]
    assert targets["locust"] == ["127.0.0.1:9646"]
