"""Run every panel of a dashboard against the real data sources and judge what comes back.

Grafana cannot run on the CI machines, so the end-to-end test proves a dashboard piece by piece:

- ``ValkeyCheck``: each Redis data source target runs against Valkey exactly as the plugin
  would (``redis_plugin.execute``); the frame must have the shape its panel type needs, and its
  values must equal the aggregates of the reports that were sent (``aggregates.Expected``).
- ``PrometheusCheck``: each Prometheus target, with the dashboard's variables and Grafana's
  globals substituted, runs as a range query and must return at least one series, and every
  metric name it selects must exist in Prometheus (a series, or a family some target exposes):
  ``... or on() vector(0)`` returns a series even for a misspelled name, the name check does
  not. Targets with exemplars on must get exemplars, carrying the trace ids of requests whose
  trace the caller knows (the ``traceparent`` it sent).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import valkey

from weather_dashboards import queries, redis_plugin, templating
from weather_dashboards.aggregates import METRICS, WEATHERS, Expected
from weather_dashboards.checks import Problem
from weather_dashboards.queries import Json
from weather_dashboards.redis_plugin import Frame

# Means are rewritten on every report by the server (float arithmetic in Lua), so compare with a
# tolerance far below anything a panel displays (one decimal).
REL_TOL = 1e-9
ABS_TOL = 1e-6


def _close(a: Any, b: float) -> bool:  # noqa: ANN401 (a frame value: float or text)
    return isinstance(a, float) and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _as_dict(frame: Frame) -> dict[str, Any]:
    return {f.name: f.values[0] if len(f.values) == 1 else f.values for f in frame.fields}


def _field_regex(panel: Json) -> re.Pattern[str] | None:
    fields = panel.get("options", {}).get("reduceOptions", {}).get("fields", "")
    if fields.startswith("/") and fields.endswith("/") and len(fields) > 1:
        return re.compile(fields[1:-1])
    return None


def _numeric(frame: Frame, names: list[str]) -> list[str]:
    return [n for n in names if not all(isinstance(v, float) for v in frame.field(n).values)]


def shape_problems(panel: Json, frame: Frame, where: str) -> list[Problem]:
    """Problems of ``frame`` as data for a panel of this type: what it lacks to draw."""
    kind = panel.get("type")
    if not frame.fields or not any(f.values for f in frame.fields):
        return [Problem("shape", where, f"empty frame for a {kind} panel")]
    problems = []
    if kind in {"piechart", "barchart"}:
        problems += [Problem("shape", where, f"field {n!r} is not numeric") for n in _numeric(frame, frame.names)]
        problems += [
            Problem("shape", where, f"field {f.name!r} has {len(f.values)} rows, expected 1")
            for f in frame.fields
            if len(f.values) != 1
        ]
        if kind == "barchart" and not any(t.get("id") == "reduce" for t in panel.get("transformations", [])):
            problems.append(Problem("shape", where, "a bar chart of one-row fields needs the reduce transformation"))
        longest = (panel.get("options") or {}).get("xTickLabelMaxLength")
        if kind == "barchart" and longest is not None:
            problems += [
                Problem("shape", where, f"x label {n!r} is cut to {longest} characters + '...'")
                for n in frame.names
                if len(n) > longest
            ]
    elif kind == "stat":
        pattern = _field_regex(panel)
        selected = [n for n in frame.names if pattern.search(n)] if pattern else frame.names
        if not selected:
            problems.append(
                Problem("shape", where, f"no field matches {pattern.pattern if pattern else '*'} in {frame.names}")
            )
        if pattern is None and len(selected) != 1:
            problems.append(
                Problem("shape", where, f"a stat without a field filter needs one field, got {frame.names}")
            )
        problems += [Problem("shape", where, f"field {n!r} is not numeric") for n in _numeric(frame, selected)]
    elif kind == "timeseries":
        if "$time" not in frame.names or not frame.field("$time").values:
            problems.append(Problem("shape", where, f"no time field with rows in {frame.names}"))
        problems += [Problem("shape", where, f"missing field {m!r}") for m in METRICS if m not in frame.names]
    return problems


def _index_slice(items: list[Any], start: int, stop: int) -> list[Any]:
    """ZRANGE's inclusive, negative-aware index range applied to a Python list."""
    return items[start : (stop + 1) or None]


@dataclasses.dataclass(frozen=True)
class ValkeyCheck:
    """A Valkey that should hold the aggregates ``expected``, queried over ``time_range_ms``."""

    client: valkey.Valkey
    expected: Expected
    datasources: Mapping[str, str]
    time_range_ms: tuple[int, int]

    def problems(self, board: Json, variables: Mapping[str, str] | None = None) -> list[Problem]:
        """Run every Valkey target and variable of ``board``; check shapes and values."""
        values = {**queries.default_values(board), **(variables or {})}
        problems = []
        for target in queries.targets(board, self.datasources):
            if target.datasource_type != redis_plugin.PLUGIN_ID:
                continue
            try:
                frame = redis_plugin.execute(self.client, target.target, values, self.time_range_ms)
            except (redis_plugin.QueryError, valkey.ValkeyError) as error:
                problems.append(Problem("query", target.label, str(error)))
                continue
            problems += shape_problems(target.panel, frame, target.label)
            problems += self.value_problems(target, frame, values)
        for variable in queries.variables(board):
            problems += self._variable_problems(variable, values)
        return problems

    def value_problems(self, target: queries.Target, frame: Frame, values: Mapping[str, str]) -> list[Problem]:
        """Differences between the frame's values and the aggregates of the reports sent."""
        key = templating.substitute(target.target.get("keyName", ""), values)
        prefix = values.get("prefix", "weather")
        rest = key.removeprefix(f"{prefix}:")
        expected = self.expected
        want: Mapping[str, float]
        if rest.startswith("avg:"):
            want = expected.mean(rest.removeprefix("avg:"))
        elif rest in {"max", "min"}:
            want = expected.highest if rest == "max" else expected.lowest
        elif rest == "conditions":
            want = {w: expected.conditions[w] for w in WEATHERS}
        elif rest.startswith("conditions:"):
            ranked = expected.ranked_conditions(rest.removeprefix("conditions:"))
            want = dict(_index_slice(ranked, int(target.target["min"]), int(target.target["max"])))
        elif rest.startswith("series:"):
            return self._series_problems(f"{prefix}:bucket:{rest.removeprefix('series:')}", frame, target.label)
        else:
            return [Problem("value", target.label, f"no expectation for key {key!r}")]
        got = _as_dict(frame)
        if set(got) != set(want) or not all(_close(got[k], v) for k, v in want.items()):
            return [Problem("value", target.label, f"{key}: got {got}, expected {dict(want)}")]
        return []

    def _series_problems(self, bucket_key: str, frame: Frame, where: str) -> list[Problem]:
        # Closed buckets are in the stream, the current one in weather:bucket:<m>; together they
        # must account for every report of the municipality, and their sums for every value.
        municipality = bucket_key.rsplit(":", 1)[1]
        raw: dict[Any, Any] = self.client.hgetall(bucket_key)  # type: ignore[assignment]  # sync client
        open_bucket = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        counts = frame.field("count").values if "count" in frame.names else []
        total = sum(counts) + open_bucket.get("count", 0.0)
        want_count = self.expected.count[municipality]
        problems = []
        if total != want_count:
            problems.append(
                Problem("value", where, f"series of {municipality}: {total:g} reports, expected {want_count}")
            )
        for metric in METRICS:
            means = frame.field(metric).values if metric in frame.names else []
            got = sum(mean * n for mean, n in zip(means, counts, strict=True)) + open_bucket.get(f"{metric}_sum", 0.0)
            want = self.expected.sums[municipality][metric]
            if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-3):
                problems.append(
                    Problem("value", where, f"series of {municipality}: {metric} sum {got}, expected {want}")
                )
        return problems

    def _variable_problems(self, variable: Json, values: Mapping[str, str]) -> list[Problem]:
        uid = str((variable.get("datasource") or {}).get("uid", ""))
        if variable.get("type") != "query" or self.datasources.get(uid) != redis_plugin.PLUGIN_ID:
            return []
        frame = redis_plugin.execute(self.client, {"query": variable["query"]}, values, self.time_range_ms)
        options = frame.field("Value").values
        name, default = variable["name"], values.get(variable["name"])
        problems = []
        if default not in options:
            problems.append(Problem("variable", name, f"default {default!r} not in {options}"))
        if sorted(options) != sorted(self.expected.municipalities):
            problems.append(
                Problem("variable", name, f"options {options}, expected {list(self.expected.municipalities)}")
            )
        return problems


def _get(url: str) -> Json:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback Prometheus only)
        return json.load(response)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class PrometheusCheck:
    """A Prometheus at ``base_url`` that scraped a loaded system during ``window`` (epoch seconds).

    ``builtins`` are the values Grafana would give its globals ($__rate_interval, ...).
    """

    base_url: str
    datasources: Mapping[str, str]
    window: tuple[float, float]
    builtins: Mapping[str, str]

    def _targets(self, board: Json) -> Iterator[tuple[queries.Target, str]]:
        values = {**queries.default_values(board), **self.builtins}
        for target in queries.targets(board, self.datasources):
            if target.datasource_type == "prometheus":
                yield target, templating.substitute(target.target["expr"], values)

    def query_range(self, expr: str, step: float = 1) -> Json:
        """Prometheus' /api/v1/query_range over the window, as Grafana's data source calls it."""
        start, end = self.window
        params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        return _get(f"{self.base_url}/api/v1/query_range?{params}")

    def problems(self, board: Json) -> list[Problem]:
        """Every Prometheus target of ``board`` returns at least one series over the window."""
        problems = []
        for target, expr in self._targets(board):
            leftover = list(templating.references(expr))
            if leftover:
                problems.append(Problem("variable", target.label, f"unsubstituted {leftover} in {expr}"))
                continue
            try:
                answer = self.query_range(expr)
            except OSError as error:  # urllib's HTTPError (400 for a bad query) is an OSError
                problems.append(Problem("query", target.label, f"{expr}: {error}"))
                continue
            if not answer.get("data", {}).get("result"):
                problems.append(Problem("empty", target.label, f"no series for {expr}"))
        return problems

    def exemplar_problems(
        self, board: Json, known_trace_ids: frozenset[str] = frozenset(), trace_label: str = "trace_id"
    ) -> list[Problem]:
        """Targets asking for exemplars get some, each with a trace id, among them every known one.

        ``known_trace_ids`` are traces the caller started itself (its own ``traceparent``) with
        requests that the target's query selects: each must be an exemplar's trace id exactly.
        """
        problems = []
        for target, expr in self._targets(board):
            if not target.target.get("exemplar"):
                continue
            params = urllib.parse.urlencode({"query": expr, "start": self.window[0], "end": self.window[1]})
            series = _get(f"{self.base_url}/api/v1/query_exemplars?{params}").get("data", [])
            exemplars = [e for s in series for e in s.get("exemplars", [])]
            found = {e.get("labels", {}).get(trace_label) for e in exemplars}
            if not exemplars:
                problems.append(Problem("exemplar", target.label, f"no exemplars for {expr}"))
            elif None in found or "" in found:
                problems.append(Problem("exemplar", target.label, f"exemplars without {trace_label}: {exemplars[:3]}"))
            problems += [
                Problem("exemplar", target.label, f"trace {trace_id} (sent in traceparent) is no exemplar of {expr}")
                for trace_id in sorted(known_trace_ids - found)
            ]
        return problems

    def _known_names(self) -> set[str]:
        """Metric names Prometheus has series of in the window, and families its targets expose."""
        params = urllib.parse.urlencode({"start": self.window[0], "end": self.window[1]})
        names = set(_get(f"{self.base_url}/api/v1/label/__name__/values?{params}").get("data", []))
        families = set(_get(f"{self.base_url}/api/v1/metadata").get("data", {}))
        return names | families

    def metric_name_problems(self, board: Json) -> list[Problem]:
        """Every metric name a Prometheus target selects exists: as series, or as an exposed family.

        A family with no sample yet (a labelled counter nothing has incremented) is exposed with
        its HELP and TYPE, which Prometheus keeps as metadata; the family of ``x_total``,
        ``x_bucket``, ``x_count``, ``x_sum`` or ``x_created`` is ``x``.
        """
        known = self._known_names()
        problems = []
        for target, expr in self._targets(board):
            for name in queries.metric_names(expr):
                family = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
                if name not in known and family not in known:
                    problems.append(Problem("metric", target.label, f"{name} does not exist in Prometheus ({expr})"))
        return problems

    def variable_problems(self, board: Json) -> list[Problem]:
        """Each ``label_values(selector, label)`` variable offers its default value."""
        problems = []
        for variable in queries.variables(board):
            uid = str((variable.get("datasource") or {}).get("uid", ""))
            if variable.get("type") != "query" or self.datasources.get(uid) != "prometheus":
                continue
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", str(variable.get("query", "")))
            if match is None:
                problems.append(Problem("variable", variable["name"], f"cannot run {variable.get('query')!r} here"))
                continue
            selector, label = match.groups()
            params = urllib.parse.urlencode({"match[]": selector})
            options = _get(f"{self.base_url}/api/v1/label/{label}/values?{params}").get("data", [])
            default = (variable.get("current") or {}).get("value")
            if default not in options:
                problems.append(Problem("variable", variable["name"], f"default {default!r} not among {options}"))
        return problems
