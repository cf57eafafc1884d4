"""Static checks of dashboards and provisioning files: what Grafana would silently get wrong.

Each rule returns ``Problem``s instead of raising, so one run reports everything. The rules:

- ``duplicate-id``: two panels (rows included) share an id; Grafana then edits the wrong one.
- ``grid``: a ``gridPos`` outside the 24-column grid, non-positive, or overlapping another panel.
- ``datasource``: a panel, target or variable names a data source uid that no provisioning
  file defines (the panel would show "data source not found").
- ``variable``: a ``$name`` / ``${name}`` / ``[[name]]`` with no such dashboard variable.
- ``redis``: a Redis data source target the plugin cannot run: unsupported command or query
  type, a missing argument, an unknown field, a variable in a field the plugin does not
  interpolate, a free-text query that is not a read command.
- ``dollar``: in a provisioning file, a ``$`` that Grafana would expand but that is neither
  ``$$`` (a literal dollar) nor a deliberate ``$__env{...}`` / ``$__file{...}``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from weather_dashboards import queries, redis_plugin, templating
from weather_dashboards.queries import Json

GRID_COLUMNS = 24


@dataclasses.dataclass(frozen=True)
class Problem:
    """One broken rule, located well enough to fix it."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


# --- provisioning ---------------------------------------------------------------------------


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:  # noqa: ANN401 (JSON/YAML)
    """Yield (path, text) for every string value in a parsed YAML/JSON document."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


_DOLLAR = re.compile(r"\$\$|\$__(?:env|file|vault)\{[^}]*\}|\$")


def check_provisioning_text(text: str, where: str) -> list[Problem]:
    """Flag every `$` in a provisioning file's values that Grafana would expand by accident.

    Grafana expands variables in the values (not the comments) of provisioning YAML.
    """
    return [
        Problem("dollar", f"{where} {path}", f"unescaped '$' in {value!r}: write $$ for a literal dollar")
        for path, value in _strings(yaml.safe_load(text))
        for match in _DOLLAR.finditer(value)
        if match.group(0) == "$"
    ]


def provisioned_datasources(directory: Path) -> tuple[dict[str, str], list[Problem]]:
    """Read every data source provisioning file: uid -> plugin type, and problems found."""
    defined: dict[str, str] = {}
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.y*ml")):
        text = path.read_text()
        problems += check_provisioning_text(text, path.name)
        for source in (yaml.safe_load(text) or {}).get("datasources", []):
            if not source.get("uid"):
                problems.append(
                    Problem("datasource", path.name, f"data source {source.get('name')!r} has no fixed uid")
                )
                continue
            defined[source["uid"]] = source["type"]
    return defined, problems


# --- dashboards -----------------------------------------------------------------------------


def _where(panel: Json) -> str:
    return f"panel {panel.get('id')} {panel.get('title', '')!r}"


def check_ids(board: Json) -> list[Problem]:
    """Panel ids are unique across the dashboard, rows included."""
    seen: dict[Any, Json] = {}
    problems = []
    for panel in queries.panels(board):
        panel_id = panel.get("id")
        if panel_id is None:
            problems.append(Problem("duplicate-id", _where(panel), "panel has no id"))
        elif panel_id in seen:
            problems.append(Problem("duplicate-id", _where(panel), f"id also used by {_where(seen[panel_id])}"))
        else:
            seen[panel_id] = panel
    return problems


def _rect(panel: Json) -> tuple[int, int, int, int] | None:
    pos = panel.get("gridPos") or {}
    try:
        return int(pos["x"]), int(pos["y"]), int(pos["w"]), int(pos["h"])
    except (KeyError, TypeError, ValueError):
        return None


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def _check_layer(layer: list[Json]) -> list[Problem]:
    problems = []
    placed: list[tuple[Json, tuple[int, int, int, int]]] = []
    for panel in layer:
        rect = _rect(panel)
        if rect is None:
            problems.append(Problem("grid", _where(panel), f"gridPos {panel.get('gridPos')!r} lacks x, y, w or h"))
            continue
        x, y, w, h = rect
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            problems.append(
                Problem("grid", _where(panel), f"gridPos x={x} y={y} w={w} h={h} is outside the 24-column grid")
            )
        for other, other_rect in placed:
            if _overlap(rect, other_rect):
                problems.append(Problem("grid", _where(panel), f"overlaps {_where(other)}"))
        placed.append((panel, rect))
    return problems


def check_grid(board: Json) -> list[Problem]:
    """Panels sit inside the grid and do not overlap (collapsed rows' panels among themselves)."""
    top = board.get("panels", [])
    problems = _check_layer(top)
    for panel in top:
        if panel.get("type") == "row" and panel.get("panels"):
            problems += _check_layer(panel["panels"])
    return problems


def _datasource_refs(board: Json) -> Iterator[tuple[str, Any]]:
    for panel in queries.panels(board):
        yield _where(panel), panel.get("datasource")
        for target in panel.get("targets", []):
            yield f"{_where(panel)} target {target.get('refId', '?')}", target.get("datasource")
    for variable in queries.variables(board):
        yield f"variable {variable.get('name')!r}", variable.get("datasource")
    for annotation in board.get("annotations", {}).get("list", []):
        yield f"annotation {annotation.get('name')!r}", annotation.get("datasource")


def check_datasources(board: Json, defined: Mapping[str, str]) -> list[Problem]:
    """Every data source reference resolves to a provisioned uid of the same plugin type."""
    problems = []
    datasource_variables = {v["name"] for v in queries.variables(board) if v.get("type") == "datasource"}
    for where, ref in _datasource_refs(board):
        if ref is None:
            continue
        uid = str(ref.get("uid", "") if isinstance(ref, dict) else ref)
        kind = ref.get("type") if isinstance(ref, dict) else None
        names = list(templating.references(str(uid)))
        if names and all(name in datasource_variables for name in names):
            continue
        if uid in queries.BUILTIN_DATASOURCES:
            continue
        if uid not in defined:
            problems.append(
                Problem("datasource", where, f"data source uid {uid!r} is not provisioned ({sorted(defined)})")
            )
        elif kind and kind != defined[uid]:
            problems.append(Problem("datasource", where, f"uid {uid!r} is a {defined[uid]}, not a {kind}"))
    return problems


def check_variables(board: Json) -> list[Problem]:
    """Every variable reference names a dashboard variable or a Grafana global ($__...)."""
    names = {str(v.get("name")) for v in queries.variables(board)}
    problems = []
    for path, text in _strings({k: v for k, v in board.items() if k != "templating"}):
        problems += [
            Problem("variable", path, f"${name} is not a variable of this dashboard ({sorted(names)})")
            for name in templating.references(text)
            if name not in names and not templating.is_builtin(name)
        ]
    for variable in queries.variables(board):
        for path, text in _strings({k: v for k, v in variable.items() if k not in {"current", "options"}}):
            problems += [
                Problem("variable", f"variable {variable.get('name')!r} {path}", f"${name} is not defined")
                for name in templating.references(text)
                if name not in names and not templating.is_builtin(name)
            ]
    return problems


def _check_free_text(query: str, where: str) -> list[Problem]:
    words = query.split()
    if not words or words[0].upper() not in redis_plugin.READ_COMMANDS:
        return [
            Problem(
                "redis", where, f"query {query!r} is not one of the read commands {sorted(redis_plugin.READ_COMMANDS)}"
            )
        ]
    return []


def check_redis_target(target: Json, where: str) -> list[Problem]:
    """The plugin can run this target: supported command, its arguments, nothing stray."""
    if target.get("query"):
        return _check_free_text(target["query"], where)
    if target.get("type") != "command":
        return [
            Problem("redis", where, f"query type {target.get('type')!r}: only 'command' works on Valkey (no modules)")
        ]
    name = target.get("command", "")
    command = redis_plugin.COMMANDS.get(name)
    if command is None:
        return [
            Problem(
                "redis",
                where,
                f"command {name!r} is not supported by {redis_plugin.PLUGIN_ID} {redis_plugin.PLUGIN_VERSION}",
            )
        ]
    problems = [
        Problem("redis", where, f"{name} needs {field!r}")
        for field in sorted(command.required)
        if target.get(field) in (None, "")
    ]
    allowed = redis_plugin.COMMON_FIELDS | command.required | command.optional
    problems += [
        Problem("redis", where, f"field {field!r} is not read by {name} (the plugin ignores it)")
        for field in sorted(set(target) - allowed)
    ]
    for field, value in target.items():
        if (
            isinstance(value, str)
            and field not in redis_plugin.INTERPOLATED_FIELDS
            and any(templating.references(value))
        ):
            problems.append(
                Problem("redis", where, f"{field}={value!r}: the plugin does not interpolate variables in {field!r}")
            )
    if name == "zrange":
        mode = target.get("zrangeQuery", "")
        if mode not in redis_plugin.ZRANGE_MODES:
            problems.append(
                Problem("redis", where, f"zrangeQuery {mode!r} is not one of {sorted(redis_plugin.ZRANGE_MODES)}")
            )
    return problems


def check_redis(board: Json, defined: Mapping[str, str]) -> list[Problem]:
    """Every target and query variable on a Redis data source is runnable by the plugin."""
    problems = []
    for target in queries.targets(board, defined):
        if target.datasource_type == redis_plugin.PLUGIN_ID:
            problems += check_redis_target(target.target, target.label)
    for variable in queries.variables(board):
        uid = str((variable.get("datasource") or {}).get("uid", ""))
        if variable.get("type") == "query" and defined.get(uid) == redis_plugin.PLUGIN_ID:
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            problems += _check_free_text(text, f"variable {variable.get('name')!r}")
    return problems


def check_dashboard(board: Json, defined: Mapping[str, str]) -> list[Problem]:
    """All dashboard rules."""
    return (
        check_ids(board)
        + check_grid(board)
        + check_datasources(board, defined)
        + check_variables(board)
        + check_redis(board, defined)
    )
