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
- ``tick-labels``: a bar chart with ``xTickLabelMaxLength`` below 1. Grafana shortens every x
  label to that many characters plus "..." (public/app/plugins/panel/barchart/utils.ts,
  ``prepConfig`` -> ``formatShortValue`` -> ``shortenValue``): 0, the SDK's default, draws "...".
- ``thresholds``: a panel coloured by thresholds (a stat whose ``colorMode`` is not ``none``, a
  gauge, a bar gauge, or any panel with colour mode ``thresholds``) whose colour mode is
  thresholds (explicitly, or by default: @grafana/data ``getFieldColorModeForField``) and whose
  thresholds are missing or Grafana's default (green, red from 80: the ``thresholds`` standard
  option's ``defaultValue``, public/app/core/components/OptionsUI/registry.tsx).
- ``unit``: a panel that shows numbers without a unit (``fieldConfig.defaults.unit``; for a
  heatmap ``options.yAxis.unit`` and ``options.cellValues.unit``). ``none`` is a deliberate unit.
- ``dollar``: in a provisioning file, a ``$`` that Grafana would expand but that is neither
  ``$$`` (a literal dollar) nor a deliberate ``$__env{...}`` / ``$__file{...}``.
- ``rate-interval``: the Prometheus data source's ``timeInterval`` differs from Prometheus'
  ``scrape_interval``. Grafana computes ``$__rate_interval`` from ``timeInterval`` (at least
  four of them); shorter than four real scrapes, ``rate()`` returns nothing on fresh series.
- ``service-map``: the Tempo data source's service map or traces-to-metrics points at
  Prometheus but Tempo runs no metrics-generator writing the span metrics they query.
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
    problems += [
        Problem("redis", where, f"{field}={value!r}: the plugin decodes {field!r} as a JSON {kind}")
        for field, value in target.items()
        for kind, fields in (("number", redis_plugin.INT_FIELDS), ("boolean", redis_plugin.BOOL_FIELDS))
        if field in fields and (isinstance(value, bool) != (kind == "boolean") or not isinstance(value, int))
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
                Problem(
                    "redis",
                    where,
                    f"zrangeQuery {mode!r} is not one of {sorted(redis_plugin.ZRANGE_MODES)} "
                    "(the plugin appends WITHSCORES, which Valkey refuses with BYLEX)",
                )
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


# --- how Grafana renders ------------------------------------------------------------------

# The thresholds standard option's default (public/app/core/components/OptionsUI/registry.tsx).
GRAFANA_DEFAULT_THRESHOLDS = [(None, "green"), (80, "red")]
# Panels that show numbers and so need a unit; text, rows, logs, traces and node graphs do not.
NUMERIC_PANELS = frozenset(
    {"timeseries", "stat", "gauge", "bargauge", "barchart", "piechart", "histogram", "state-timeline", "table"}
)


def check_tick_labels(board: Json) -> list[Problem]:
    """Bar charts do not shorten their x labels to nothing."""
    return [
        Problem(
            "tick-labels",
            _where(panel),
            f"xTickLabelMaxLength {length}: Grafana shortens every x label to {length} characters + '...'",
        )
        for panel in queries.panels(board)
        if panel.get("type") == "barchart"
        and (length := (panel.get("options") or {}).get("xTickLabelMaxLength")) is not None
        and length < 1
    ]


def _coloured_by_thresholds(panel: Json) -> bool:
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    mode = (defaults.get("color") or {}).get("mode")
    if mode not in {None, "thresholds"}:
        return False
    kind = panel.get("type")
    if kind == "stat":  # the stat panel's colorMode defaults to "value"
        return (panel.get("options") or {}).get("colorMode", "value") != "none"
    return kind in {"gauge", "bargauge"} or mode == "thresholds"


def _steps(thresholds: Json) -> list[tuple[Any, Any]]:
    return [(step.get("value"), step.get("color")) for step in thresholds.get("steps", [])]


def check_thresholds(board: Json) -> list[Problem]:
    """Every panel coloured by thresholds has thresholds of its own, not Grafana's default."""
    problems = []
    for panel in queries.panels(board):
        if not _coloured_by_thresholds(panel):
            continue
        thresholds = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("thresholds")
        if not thresholds or not thresholds.get("steps"):
            problems.append(
                Problem(
                    "thresholds", _where(panel), "coloured by thresholds it does not set: Grafana's green, red from 80"
                )
            )
        elif _steps(thresholds) == GRAFANA_DEFAULT_THRESHOLDS:
            problems.append(
                Problem("thresholds", _where(panel), "coloured by Grafana's default thresholds (green, red from 80)")
            )
    return problems


def check_units(board: Json) -> list[Problem]:
    """Every panel that shows numbers says in what unit."""
    problems = []
    for panel in queries.panels(board):
        kind = panel.get("type")
        if kind == "heatmap":
            options = panel.get("options") or {}
            places = {
                "options.yAxis.unit": (options.get("yAxis") or {}).get("unit"),
                "options.cellValues.unit": (options.get("cellValues") or {}).get("unit"),
            }
        elif kind in NUMERIC_PANELS:
            places = {"fieldConfig.defaults.unit": ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")}
        else:
            continue
        problems += [
            Problem("unit", _where(panel), f"no unit in {place} (use 'none' for a plain number)")
            for place, unit in places.items()
            if not unit
        ]
    return problems


def check_dashboard(board: Json, defined: Mapping[str, str]) -> list[Problem]:
    """All dashboard rules."""
    return (
        check_ids(board)
        + check_grid(board)
        + check_datasources(board, defined)
        + check_variables(board)
        + check_redis(board, defined)
        + check_tick_labels(board)
        + check_thresholds(board)
        + check_units(board)
    )


# --- data sources against the services they query -------------------------------------------


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration.strip())
    if match is None:
        msg = f"not a duration: {duration!r}"
        raise ValueError(msg)
    return float(match.group(1)) * units[match.group(2)]


def check_scrape_interval(datasources: list[Json], prometheus_configs: Mapping[str, Json]) -> list[Problem]:
    """The Prometheus data source's timeInterval is every Prometheus config's scrape_interval."""
    problems = []
    for source in datasources:
        if source.get("type") != "prometheus":
            continue
        time_interval = (source.get("jsonData") or {}).get("timeInterval", "15s")
        for name, config in prometheus_configs.items():
            scrape = (config.get("global") or {}).get("scrape_interval", "1m")
            intervals = [scrape] + [
                job["scrape_interval"] for job in config.get("scrape_configs", []) if "scrape_interval" in job
            ]
            problems += [
                Problem(
                    "rate-interval",
                    f"data source {source.get('uid')!r}",
                    f"timeInterval {time_interval} but {name} scrapes every {interval}: $__rate_interval is wrong",
                )
                for interval in sorted(set(intervals))
                if _seconds(interval) != _seconds(time_interval)
            ]
    return problems


def check_tempo_links(datasources: list[Json], tempo_config: Json) -> list[Problem]:
    """A Tempo service map or traces-to-metrics link needs Tempo's metrics-generator."""
    generator = tempo_config.get("metrics_generator") or {}
    remote_write = (generator.get("storage") or {}).get("remote_write")
    processors = ((tempo_config.get("overrides") or {}).get("defaults") or {}).get("metrics_generator") or {}
    has_span_metrics = bool(remote_write) and bool(processors.get("processors"))
    problems = []
    for source in datasources:
        if source.get("type") != "tempo":
            continue
        json_data = source.get("jsonData") or {}
        problems += [
            Problem(
                "service-map",
                f"data source {source.get('uid')!r} jsonData.{link}",
                "queries span metrics in Prometheus, but Tempo runs no metrics-generator: always empty",
            )
            for link in ("serviceMap", "tracesToMetrics")
            if json_data.get(link) and not has_span_metrics
        ]
    return problems
