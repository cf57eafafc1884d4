"""Shared pieces of both dashboards: data source references and explicit grid placement.

Every panel gets an explicit ``gridPos`` and ``id``: the layout follows a sketch, so it is
written down rather than left to the SDK's left-to-right auto placement.
"""

# The SDK's builder methods take their booleans positionally (`.multi(False)`).
# ruff: noqa: FBT003

from __future__ import annotations

from typing import TypeVar

from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard

# Fixed uids, defined in observability/grafana/provisioning/datasources/datasources.yml.
PROMETHEUS_UID = "prometheus"
VALKEY_UID = "valkey"
TEMPO_UID = "tempo"

PROMETHEUS = dashboard.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)

TAG = "weather-api"

P = TypeVar("P", bound=cogbuilder.Builder[dashboard.Panel])


def place(panel: P, panel_id: int, x: int, y: int, w: int, h: int) -> P:  # noqa: PLR0913, PLR0917 (Grafana's x, y, w, h)
    """Give ``panel`` its id and its rectangle on the 24-column grid."""
    panel.id(panel_id)  # type: ignore[attr-defined]  # every SDK panel builder has id()/grid_pos()
    panel.grid_pos(dashboard.GridPos(x=x, y=y, w=w, h=h))  # type: ignore[attr-defined]
    return panel


def row(title: str, panel_id: int, y: int) -> cogbuilder.Builder[dashboard.RowPanel]:
    """An expanded row header spanning the grid at height ``y``."""
    return builders.Row(title).id(panel_id).grid_pos(dashboard.GridPos(x=0, y=y, w=24, h=1))


def dashboard_links() -> list[cogbuilder.Builder[dashboard.DashboardLink]]:
    """A drop-down linking the dashboards of this project to each other."""
    return [
        builders.DashboardLink("weather-api")
        .type(dashboard.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(False)
        .keep_time(True)
    ]
