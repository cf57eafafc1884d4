"""compose.yaml runs the same pieces as Kubernetes, from the same files, at the same versions.

No Docker engine (nor `docker compose`) runs here: the file is read and checked against the
repository and the kustomize base.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY, REPO

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def base_images() -> dict[str, str]:
    """Image name -> tag pinned in deploy/base/kustomization.yaml."""
    spec = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    return {image["name"]: image["newTag"] for image in spec["images"]}


def test_compose_has_every_piece_of_the_stack() -> None:
    """API, Valkey and its exporter, Prometheus, Grafana, collector, Tempo and Locust."""
    assert set(SERVICES) >= {
        "api",
        "valkey",
        "valkey-exporter",
        "prometheus",
        "grafana",
        "otel-collector",
        "tempo",
        "locust",
    }


def test_compose_pins_the_versions_kubernetes_runs() -> None:
    """Every third-party image has the tag of the kustomize base; ours are built from our Dockerfiles.

    Grafana is ours too (observability/grafana/image/, the plugin inside): built there, with the
    tag the kustomize base pins.
    """
    pinned = base_images()
    for name, service in SERVICES.items():
        if name == "grafana":
            assert service["build"] == {"context": "observability/grafana/image"}
            image, _, tag = service["image"].rpartition(":")
            assert pinned.get(image) == tag, f"grafana: {service['image']} vs kustomization {pinned.get(image)}"
            continue
        if "build" in service:
            assert service["build"]["context"] == "."
            assert service["build"]["target"] in {"runtime", "loadtest"}
            continue
        image, _, tag = service["image"].rpartition(":")
        if name == "net":
            continue
        assert pinned.get(image) == tag, f"{name}: {service['image']} vs kustomization {pinned.get(image)}"


def test_compose_uses_the_repository_files_not_copies() -> None:
    """Every bind mount is a file or folder of the repository: deploy/, observability/, loadtest/."""
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source}"
    mounted = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])}
    assert "./observability/prometheus" in mounted
    assert "./observability/grafana/dashboards" in mounted
    assert "./loadtest" in mounted
    assert "observability/grafana/grafana.env" in SERVICES["grafana"]["env_file"]


def test_compose_services_share_one_loopback_like_a_pod() -> None:
    """All services join `net`, so prometheus.yml's 127.0.0.1 targets are right; ports bind loopback."""
    for name, service in SERVICES.items():
        if name != "net":
            assert service["network_mode"] == "service:net", name
            assert "ports" not in service, name
    for port in SERVICES["net"]["ports"]:
        assert port.startswith("127.0.0.1:"), port
    scrape = yaml.safe_load((REPO / "observability" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]}
    assert all(t.startswith(("127.0.0.1:", "localhost:")) for t in targets), targets


def test_compose_secrets_come_from_the_generated_env_files() -> None:
    """Interpolated secrets are keys of valkey.env.example; the admin password is grafana.env's."""
    text = (REPO / "compose.yaml").read_text()
    keys = {
        line.split("=", 1)[0]
        for line in (DEPLOY / "base" / "secrets" / "valkey.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    assert interpolated
    assert interpolated <= keys
    assert "deploy/base/secrets/grafana.env" in SERVICES["grafana"]["env_file"]
    assert "deploy/base/secrets/valkey.env" in SERVICES["valkey"]["env_file"]
    assert "PASSWORD=" not in text


def test_compose_valkey_runs_the_kubernetes_start_script_as_a_single_primary() -> None:
    """The same valkey-start.sh and ACL users, without replicas: min-replicas-to-write 0."""
    valkey = SERVICES["valkey"]
    assert valkey["entrypoint"] == ["sh", "/etc/valkey/valkey-start.sh"]
    assert "./deploy/base/valkey:/etc/valkey:ro" in valkey["volumes"]
    assert valkey["environment"]["MIN_REPLICAS_TO_WRITE"] == "0"
    assert SERVICES["api"]["environment"]["WEATHER_VALKEY_URL"].startswith("redis://api:${VALKEY_API_PASSWORD")
