"""Grafana's image: the pinned plugin inside it, one tag everywhere, nothing downloaded at start.

No Docker engine runs here, so the image is not built: its Dockerfile is linted (hadolint) and
read, and every file that names the image (compose.yaml, the kustomize base, the Taskfile) is
held to the versions the Dockerfile pins and the plugin emulation follows.
"""

from __future__ import annotations

import re
import subprocess

import yaml
from weather_dashboards import redis_plugin

from tests.conftest import require_binary
from tests.observability.conftest import OBSERVABILITY, ROOT

IMAGE_DIR = OBSERVABILITY / "grafana" / "image"
DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()
PINS = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.MULTILINE))
TAG = f"{PINS['GRAFANA_VERSION']}-redis-datasource-{PINS['REDIS_DATASOURCE_VERSION']}"
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["grafana"]
DEPLOYMENT = yaml.safe_load((ROOT / "deploy" / "base" / "grafana" / "deployment.yaml").read_text())
(CONTAINER,) = DEPLOYMENT["spec"]["template"]["spec"]["containers"]


def _env_file() -> dict[str, str]:
    text = (OBSERVABILITY / "grafana" / "grafana.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_the_image_installs_the_plugin_version_the_emulation_follows() -> None:
    """The Dockerfile's plugin pin is redis_plugin.PLUGIN_VERSION, installed with that exact version."""
    assert PINS["REDIS_DATASOURCE_VERSION"] == redis_plugin.PLUGIN_VERSION
    assert 'plugins install redis-datasource "${REDIS_DATASOURCE_VERSION}"' in DOCKERFILE
    assert "FROM grafana/grafana:${GRAFANA_VERSION}" in DOCKERFILE


def test_compose_kustomize_and_taskfile_name_the_same_image() -> None:
    """compose.yaml builds weather-api-grafana:<tag>, the kustomize base pins <tag>, the task builds it."""
    assert COMPOSE["image"] == f"weather-api-grafana:{TAG}"
    assert COMPOSE["build"] == {"context": "observability/grafana/image"}
    base = yaml.safe_load((ROOT / "deploy" / "base" / "kustomization.yaml").read_text())
    assert {i["name"]: i.get("newTag") for i in base["images"]}["weather-api-grafana"] == TAG
    assert not any(i["name"] == "grafana/grafana" for i in base["images"])
    assert CONTAINER["image"] == "weather-api-grafana"
    taskfile = yaml.safe_load((OBSERVABILITY / "Taskfile.yml").read_text())
    assert taskfile["vars"]["GRAFANA_IMAGE"] == f"weather-api-grafana:{TAG}"


def test_nothing_downloads_a_plugin_when_grafana_starts() -> None:
    """No GF_INSTALL_PLUGINS anywhere; preinstall and its auto-update off; no update checks."""
    env = _env_file()
    for text in (
        (OBSERVABILITY / "grafana" / "grafana.env").read_text(),
        (ROOT / "compose.yaml").read_text(),
        yaml.safe_dump(DEPLOYMENT),
    ):
        assert "GF_INSTALL_PLUGINS" not in text
    assert env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"
    assert env["GF_PLUGINS_PREINSTALL_AUTO_UPDATE"] == "false"
    assert env["GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES"] == "false"


def test_the_plugins_folder_is_not_hidden_by_a_volume() -> None:
    """GF_PATHS_PLUGINS lies outside every path compose and Kubernetes mount a volume on."""
    (plugins,) = re.findall(r"^ENV GF_PATHS_PLUGINS=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert "--pluginsDir " + plugins in DOCKERFILE
    mounted = [v.split(":")[1] for v in COMPOSE["volumes"]] + [m["mountPath"] for m in CONTAINER["volumeMounts"]]
    assert "/var/lib/grafana" in mounted
    assert [path for path in mounted if plugins == path or plugins.startswith(path.rstrip("/") + "/")] == []


def test_grafana_may_not_reach_the_internet() -> None:
    """Its NetworkPolicy allows Prometheus, Tempo and Valkey only: no ipBlock egress."""
    policy = yaml.safe_load((ROOT / "deploy" / "base" / "grafana" / "networkpolicy.yaml").read_text())
    peers = [peer for rule in policy["spec"]["egress"] for peer in rule["to"]]
    assert all("ipBlock" not in peer for peer in peers)
    assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in peers} == {
        "prometheus",
        "tempo",
        "valkey",
    }


def test_hadolint_passes_on_the_grafana_dockerfile() -> None:
    """The same hadolint settings as the API's Dockerfile; every finding fails."""
    tool = require_binary("hadolint")
    config = ROOT / "deploy" / "hadolint.yaml"
    result = subprocess.run(  # noqa: S603
        [tool, "--config", str(config), str(IMAGE_DIR / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_states_the_pins() -> None:
    """observability/README.md names both versions and the image tag."""
    readme = (OBSERVABILITY / "README.md").read_text()
    assert f"Grafana {PINS['GRAFANA_VERSION']}" in readme
    assert f"redis-datasource {PINS['REDIS_DATASOURCE_VERSION']}" in readme
    assert f"weather-api-grafana:{TAG}" in readme
