"""Render the dashboards to the JSON committed in observability/grafana/dashboards/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard

from weather_dashboards import service, weather

OBSERVABILITY = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = OBSERVABILITY / "grafana" / "dashboards"
DATASOURCE_DIR = OBSERVABILITY / "grafana" / "provisioning" / "datasources"
# What the data sources query: Prometheus (both configurations) and Tempo (deploy/ runs it).
PROMETHEUS_CONFIGS = (
    OBSERVABILITY / "prometheus" / "prometheus.yml",
    OBSERVABILITY / "prometheus" / "prometheus.k8s.yml",
)
TEMPO_CONFIG = OBSERVABILITY.parent / "deploy" / "base" / "tempo" / "tempo.yaml"

BUILDERS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "weather.json": weather.build,
    "service.json": service.build,
}


def render(build: Callable[[], dashboard.Dashboard]) -> str:
    """The dashboard as committed: sorted keys and a final newline, so diffs stay small."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """Write every dashboard into ``directory``; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in BUILDERS.items():
        path = directory / name
        path.write_text(render(build))
        written.append(path)
    return written


def stale(directory: Path = DASHBOARD_DIR) -> list[str]:
    """Names of committed dashboards that differ from what the code generates (or are missing)."""
    return [
        name
        for name, build in BUILDERS.items()
        if not (directory / name).exists() or (directory / name).read_text() != render(build)
    ]
