"""Read a dashboard's JSON the way Grafana does: panels, their targets, data sources, variables.

Shared by the checker (``checks``) and the end-to-end test, which runs every target against the
real data source with the dashboard's default variable values substituted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

from weather_dashboards import templating

# Data source uids Grafana defines itself; they need no provisioning.
BUILTIN_DATASOURCES = {
    "-- Grafana --": "grafana",
    "grafana": "grafana",
    "-- Mixed --": "mixed",
    "-- Dashboard --": "dashboard",
}

Json = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Target:
    """One query of one panel, with the data source it runs on."""

    panel: Json
    target: Json
    datasource_uid: str
    datasource_type: str

    @property
    def label(self) -> str:
        """Where this query lives, for messages: panel id, title and refId."""
        return f"panel {self.panel.get('id')} {self.panel.get('title', '')!r} target {self.target.get('refId', '?')}"


def panels(board: Json) -> Iterator[Json]:
    """Every panel, rows included, with the panels nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(board: Json) -> list[Json]:
    """The dashboard's template variables."""
    return list(board.get("templating", {}).get("list", []))


def default_values(board: Json) -> dict[str, str]:
    """Each variable's value when the dashboard opens: current, else constant/textbox query."""
    values: dict[str, str] = {}
    for variable in variables(board):
        current = variable.get("current") or {}
        value = current.get("value")
        if value is None and variable.get("type") in {"constant", "textbox"}:
            value = variable.get("query")
        if isinstance(value, list):  # multi-value variables; ours are single-valued
            value = ",".join(value)
        if value is not None:
            values[variable["name"]] = str(value)
    # A variable's value may itself refer to others (rare); resolve once more.
    return {name: templating.substitute(value, values) for name, value in values.items()}


def _uid(ref: Any, defined: Mapping[str, str]) -> str:  # noqa: ANN401 (a JSON value)
    if isinstance(ref, dict):
        return str(ref.get("uid", ""))
    if isinstance(ref, str):  # legacy: a data source name; resolve if it is a known uid
        return ref if ref in defined else ""
    return ""


def targets(board: Json, datasources: Mapping[str, str]) -> Iterator[Target]:
    """Every panel target with its effective data source (the target's own, else the panel's).

    ``datasources`` maps provisioned uids to plugin types.
    """
    for panel in panels(board):
        panel_uid = _uid(panel.get("datasource"), datasources)
        for target in panel.get("targets", []):
            uid = _uid(target.get("datasource"), datasources) or panel_uid
            kind = datasources.get(uid) or BUILTIN_DATASOURCES.get(uid, "")
            yield Target(panel, target, uid, kind)


def grafana_builtins(rate_interval: str, interval: str, range_seconds: int) -> dict[str, str]:
    """Values for Grafana's global variables, for running queries outside Grafana."""
    return {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": f"{range_seconds}s",
        "__range_s": str(range_seconds),
    }


# PromQL words that look like metric names but are not (operators, modifiers, constants).
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
     "offset", "atan2", "inf", "nan"}
)  # fmt: skip
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> list[str]:
    """The metric (and recording rule) names a PromQL expression selects, in order, once each.

    Strings, label matchers, range selectors and grouping label lists are removed first; what
    remains that is an identifier, not a function call and not a PromQL keyword is a name.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names: list[str] = []
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or word.lower() in _PROMQL_WORDS:
            continue
        if word not in names:
            names.append(word)
    return names
