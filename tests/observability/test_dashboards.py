"""The committed dashboards: generated from code, laid out as designed, and checked for mistakes.

Every rule of the checker is proven here by breaking a real dashboard in exactly one way.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from weather_dashboards import checks, generate, queries, weather
from weather_dashboards.__main__ import main

from tests.observability.conftest import OBSERVABILITY

Board = dict[str, Any]


def _panel(board: Board, title: str) -> dict[str, Any]:
    return next(p for p in queries.panels(board) if p.get("title") == title)


def _rules(board: Board, datasources: dict[str, str]) -> set[str]:
    return {p.rule for p in checks.check_dashboard(board, datasources)}


# --- generated, committed, clean -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(generate.BUILDERS))
def test_committed_json_equals_generator_output(name: str) -> None:
    """observability/grafana/dashboards/<name> is exactly what the code generates."""
    committed = (generate.DASHBOARD_DIR / name).read_text()
    assert committed == generate.render(generate.BUILDERS[name]), "run `task dashboards` and commit"


def test_a_fresh_generator_run_writes_the_committed_bytes(tmp_path: Path) -> None:
    """`python -m weather_dashboards generate`, in a new interpreter, writes exactly the committed files."""
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "weather_dashboards", "generate", "--out", str(tmp_path)],
        cwd=OBSERVABILITY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in generate.DASHBOARD_DIR.glob("*.json")}
    assert sorted(fresh) == sorted(committed) == sorted(generate.BUILDERS)
    assert [name for name in fresh if fresh[name] != committed[name]] == [], "run `task dashboards` and commit"


def test_check_reports_drift_when_the_code_changes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A builder that now renders something else makes `check` fail with a drift problem."""
    original = weather.build

    def renamed() -> Any:  # noqa: ANN401 (an SDK dashboard)
        board = original()
        board.title = "Weather (changed in code, not regenerated)"
        return board

    monkeypatch.setitem(generate.BUILDERS, "weather.json", renamed)
    assert main(["check"]) == 1
    assert "[drift] weather.json" in capsys.readouterr().err


def test_stale_reports_a_hand_edited_dashboard(tmp_path: Path) -> None:
    """A dashboard edited by hand (or not regenerated) is reported as drifted."""
    generate.write(tmp_path)
    path = tmp_path / "weather.json"
    path.write_text(path.read_text().replace('"Weather"', '"Weather (edited)"'))
    assert generate.stale(tmp_path) == ["weather.json"]


@pytest.mark.parametrize("name", sorted(generate.BUILDERS))
def test_committed_dashboards_pass_every_check(name: str, datasources: dict[str, str]) -> None:
    """No rule of the checker fires on the committed dashboards."""
    board = json.loads((generate.DASHBOARD_DIR / name).read_text())
    assert checks.check_dashboard(board, datasources) == []


def test_check_command_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m weather_dashboards check` (task check) exits 0 on the committed files."""
    assert main(["check"]) == 0
    assert "0 problems" in capsys.readouterr().out


# --- the Weather dashboard follows the sketch ------------------------------------------------


def test_weather_rows_follow_the_sketch(weather_board: Board) -> None:
    """Row 1: humidity pie left of four stats; row 2: temperature pie left of the bar chart."""
    pos = {p["title"]: p["gridPos"] for p in queries.panels(weather_board)}
    pie_h, pie_t = pos["Average humidity per municipality"], pos["Average temperature per municipality"]
    assert pie_h["x"] == pie_t["x"] == 0
    assert pie_h["y"] < pie_t["y"]
    assert pos["Highest temperature"]["y"] == pos["Highest humidity"]["y"] == pie_h["y"]
    assert pos["Lowest temperature"]["y"] == pos["Lowest humidity"]["y"] > pie_h["y"]
    assert pos["Highest temperature"]["x"] < pos["Highest humidity"]["x"]
    assert pos["Reports per weather condition"]["y"] == pie_t["y"]
    assert pos["Reports per weather condition"]["x"] > pie_t["x"]


def test_weather_municipality_section_follows_the_sketch(weather_board: Board) -> None:
    """Below a row header: identifier over name on the left; commonest weathers over the series."""
    panels = {p["title"]: p for p in queries.panels(weather_board)}
    header = panels["Municipality: ${municipality}"]
    assert header["type"] == "row"
    pos = {t: p["gridPos"] for t, p in panels.items()}
    below = header["gridPos"]["y"] + 1
    assert pos["Identifier"] == {"x": 0, "y": below, "w": 8, "h": 4}
    assert pos["Municipality"]["x"] == 0
    assert pos["Municipality"]["y"] > below
    assert pos["Most common weather"]["y"] == pos["Least common weather"]["y"] == below
    assert pos["Most common weather"]["x"] < pos["Least common weather"]["x"]
    series = pos["Temperature and humidity in ${municipality}"]
    assert series["y"] > below
    assert series["x"] > 0


def test_weather_variables_default_to_chinautla_and_a_carnet_label(weather_board: Board) -> None:
    """Municipality comes from SMEMBERS weather:municipalities, default chinautla; identifier is editable."""
    by_name = {v["name"]: v for v in queries.variables(weather_board)}
    assert by_name["municipality"]["query"] == "SMEMBERS ${prefix}:municipalities"
    assert by_name["municipality"]["current"]["value"] == "chinautla"
    assert by_name["identifier"]["type"] == "textbox"
    assert queries.default_values(weather_board) == {
        "prefix": "weather",
        "municipality": "chinautla",
        "identifier": "CARNET",
    }
    assert "${identifier}" in _panel(weather_board, "Identifier")["options"]["content"]
    assert "${municipality}" in _panel(weather_board, "Municipality")["options"]["content"]


def test_weather_panels_use_the_commands_of_the_design(weather_board: Board, datasources: dict[str, str]) -> None:
    """HGETALL for the pies, ZRANGE for stats and bars, XRANGE for the series, all on Valkey."""
    used = {
        (t.panel["title"], t.target["command"], t.target["keyName"])
        for t in queries.targets(weather_board, datasources)
    }
    assert used == {
        ("Average humidity per municipality", "hgetall", "${prefix}:avg:humidity"),
        ("Average temperature per municipality", "hgetall", "${prefix}:avg:temperature"),
        ("Highest temperature", "zrange", "${prefix}:max"),
        ("Highest humidity", "zrange", "${prefix}:max"),
        ("Lowest temperature", "zrange", "${prefix}:min"),
        ("Lowest humidity", "zrange", "${prefix}:min"),
        ("Reports per weather condition", "zrange", "${prefix}:conditions"),
        ("Most common weather", "zrange", "${prefix}:conditions:$municipality"),
        ("Least common weather", "zrange", "${prefix}:conditions:$municipality"),
        ("Temperature and humidity in ${municipality}", "xrange", "${prefix}:series:$municipality"),
    }
    assert {t.datasource_uid for t in queries.targets(weather_board, datasources)} == {"valkey"}


def test_commonest_weather_panels_take_the_ends_of_the_ranking(weather_board: Board) -> None:
    """Most common is ZRANGE -1 -1 (highest score last), least common is ZRANGE 0 0."""
    most = _panel(weather_board, "Most common weather")["targets"][0]
    least = _panel(weather_board, "Least common weather")["targets"][0]
    assert (most["min"], most["max"], least["min"], least["max"]) == ("-1", "-1", "0", "0")


def test_service_heatmap_has_exemplars_and_datasource_links_traces(service_board: Board) -> None:
    """The heatmap asks for exemplars; the Prometheus data source sends their trace_id to Tempo."""
    heat = next(p for p in queries.panels(service_board) if p["type"] == "heatmap")
    assert heat["targets"][0]["exemplar"] is True
    assert heat["targets"][0]["format"] == "heatmap"
    source = (OBSERVABILITY / "grafana/provisioning/datasources/datasources.yml").read_text()
    assert "exemplarTraceIdDestinations" in source
    assert "datasourceUid: tempo" in source


def test_service_dashboard_covers_the_design(service_board: Board) -> None:
    """Every metric family the design lists is queried by some panel."""
    exprs = " ".join(t["expr"] for p in queries.panels(service_board) for t in p.get("targets", []))
    for metric in (
        "http_server_request_duration_seconds_bucket",
        "http_server_requests_in_flight",
        "weather_valkey_command_duration_seconds_bucket",
        "weather_valkey_errors_total",
        "redis_up",
        "redis_connected_clients",
        "redis_memory_used_bytes",
        "redis_commands_processed_total",
        "locust_users",
        "locust_requests_total",
        "locust_failures_total",
        "locust_response_time_seconds_bucket",
        "route_method:http_server_request_errors:ratio_rate1h",
        "route_method:http_server_request_slow:ratio_rate5m",
    ):
        assert metric in exprs, metric


# --- each checker rule fails on a dashboard broken for it ------------------------------------


def test_duplicate_panel_id_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """Two panels with one id."""
    weather_board["panels"][1]["id"] = weather_board["panels"][0]["id"]
    assert _rules(weather_board, datasources) == {"duplicate-id"}


def test_duplicate_id_inside_a_collapsed_row_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """Panels hidden in a collapsed row count too."""
    row = _panel(weather_board, "Municipality: ${municipality}")
    row["panels"] = [dict(copy.deepcopy(weather_board["panels"][0]), gridPos={"x": 0, "y": 0, "w": 1, "h": 1})]
    assert _rules(weather_board, datasources) == {"duplicate-id"}


def test_overlapping_panels_are_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """A panel moved onto its neighbour."""
    _panel(weather_board, "Highest humidity")["gridPos"]["x"] = 12
    problems = checks.check_dashboard(weather_board, datasources)
    assert [p.rule for p in problems] == ["grid"]
    assert "overlaps" in problems[0].message


def test_panel_beyond_24_columns_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """X + w > 24 would wrap in Grafana and push every panel below it around."""
    _panel(weather_board, "Highest humidity")["gridPos"]["w"] = 9
    problems = checks.check_dashboard(weather_board, datasources)
    assert [p.rule for p in problems] == ["grid"]
    assert "outside the 24-column grid" in problems[0].message


def test_panel_without_height_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A gridPos missing a dimension."""
    del service_board["panels"][1]["gridPos"]["h"]
    assert _rules(service_board, datasources) == {"grid"}


def test_unknown_datasource_uid_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A panel pointing at a data source no provisioning file defines."""
    service_board["panels"][1]["datasource"]["uid"] = "prometheus-old"
    assert _rules(service_board, datasources) == {"datasource"}


def test_datasource_of_the_wrong_type_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """A uid that exists but belongs to another plugin."""
    weather_board["panels"][0]["datasource"] = {"type": "redis-datasource", "uid": "prometheus"}
    assert "datasource" in _rules(weather_board, datasources)


def test_undefined_variable_in_a_query_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A PromQL expression using a variable the dashboard does not define."""
    target = service_board["panels"][1]["targets"][0]
    target["expr"] = target["expr"].replace('job="weather-api"', 'job="$job"')
    problems = checks.check_dashboard(service_board, datasources)
    assert [p.rule for p in problems] == ["variable"]
    assert "$job" in problems[0].message


def test_undefined_variable_in_text_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """A text panel (or title) using ${carnet} when the variable is named identifier."""
    _panel(weather_board, "Identifier")["options"]["content"] = "# ${carnet}"
    assert _rules(weather_board, datasources) == {"variable"}


def test_grafana_global_variables_are_not_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """$__rate_interval, $__range and friends are Grafana's own."""
    service_board["panels"][1]["targets"][0]["expr"] += " + 0 * vector($__range_s)"
    assert checks.check_dashboard(service_board, datasources) == []


def test_unsupported_redis_command_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """ZREVRANGEBYSCORE is a fine Valkey command the plugin cannot run."""
    _panel(weather_board, "Highest temperature")["targets"][0]["command"] = "zrevrangebyscore"
    problems = checks.check_dashboard(weather_board, datasources)
    assert [p.rule for p in problems] == ["redis"]
    assert "not supported" in problems[0].message


def test_redis_module_query_type_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """RedisTimeSeries queries need a module Valkey does not have."""
    target = _panel(weather_board, "Temperature and humidity in ${municipality}")["targets"][0]
    target.update(type="timeSeries", command="ts.range")
    assert _rules(weather_board, datasources) == {"redis"}


def test_redis_command_missing_an_argument_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """ZRANGE without its index range."""
    del _panel(weather_board, "Lowest humidity")["targets"][0]["max"]
    assert _rules(weather_board, datasources) == {"redis"}


def test_redis_field_the_plugin_ignores_is_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """`key` instead of `keyName` (the plugin's pre-1.3 name) silently queries nothing."""
    target = _panel(weather_board, "Average humidity per municipality")["targets"][0]
    target["key"] = target.pop("keyName")
    assert {p.message for p in checks.check_dashboard(weather_board, datasources)} >= {
        "hgetall needs 'keyName'",
        "field 'key' is not read by hgetall (the plugin ignores it)",
    }


def test_variable_in_a_field_the_plugin_does_not_interpolate_is_reported(
    weather_board: Board, datasources: dict[str, str]
) -> None:
    """The plugin interpolates keyName but not min/max: `$rank` would reach Valkey verbatim."""
    weather_board["templating"]["list"].append({"name": "rank", "type": "constant", "query": "0"})
    _panel(weather_board, "Least common weather")["targets"][0]["min"] = "$rank"
    problems = checks.check_dashboard(weather_board, datasources)
    assert [p.rule for p in problems] == ["redis"]
    assert "does not interpolate" in problems[0].message


def test_redis_variable_query_must_be_a_read_command(weather_board: Board, datasources: dict[str, str]) -> None:
    """A variable query runs verbatim on every dashboard load: only reads are allowed."""
    next(v for v in weather_board["templating"]["list"] if v["name"] == "municipality")["query"] = "FLUSHALL"
    assert _rules(weather_board, datasources) == {"redis"}


# --- Grafana's rendering traps ----------------------------------------------------------------


def test_bar_chart_tick_labels_of_length_zero_are_reported(weather_board: Board, datasources: dict[str, str]) -> None:
    """XTickLabelMaxLength 0 (the SDK default) makes Grafana draw every x label as '...'."""
    _panel(weather_board, "Reports per weather condition")["options"]["xTickLabelMaxLength"] = 0
    assert _rules(weather_board, datasources) == {"tick-labels"}


def test_bar_chart_without_a_tick_label_limit_is_accepted(weather_board: Board, datasources: dict[str, str]) -> None:
    """No xTickLabelMaxLength at all: Grafana does not shorten."""
    del _panel(weather_board, "Reports per weather condition")["options"]["xTickLabelMaxLength"]
    assert checks.check_dashboard(weather_board, datasources) == []


def test_stat_coloured_without_thresholds_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A stat coloured by value with no thresholds of its own gets green, red from 80."""
    del _panel(service_board, "Availability, last 24h")["fieldConfig"]["defaults"]["thresholds"]
    assert _rules(service_board, datasources) == {"thresholds"}


def test_stat_with_grafanas_default_thresholds_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """Writing Grafana's default steps down explicitly is still the default."""
    defaults = _panel(service_board, "Valkey up")["fieldConfig"]["defaults"]
    defaults["thresholds"]["steps"] = [{"value": None, "color": "green"}, {"value": 80, "color": "red"}]
    assert _rules(service_board, datasources) == {"thresholds"}


def test_stat_losing_its_fixed_colour_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """Without a colour mode, a stat is coloured by (default) thresholds."""
    del _panel(service_board, "Memory used")["fieldConfig"]["defaults"]["color"]
    assert _rules(service_board, datasources) == {"thresholds"}


def test_stat_not_coloured_needs_no_thresholds(service_board: Board, datasources: dict[str, str]) -> None:
    """ColorMode none: thresholds do not show, so none are needed."""
    panel = _panel(service_board, "Memory used")
    del panel["fieldConfig"]["defaults"]["color"]
    panel["options"]["colorMode"] = "none"
    assert checks.check_dashboard(service_board, datasources) == []


def test_gauge_without_thresholds_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A gauge always colours by thresholds."""
    panel = _panel(service_board, "Connected clients")
    panel["type"] = "gauge"
    del panel["fieldConfig"]["defaults"]["color"]
    assert _rules(service_board, datasources) == {"thresholds"}


def test_panel_without_a_unit_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A time series of numbers with no unit."""
    del _panel(service_board, "In-flight requests")["fieldConfig"]["defaults"]["unit"]
    assert _rules(service_board, datasources) == {"unit"}


def test_heatmap_without_a_unit_is_reported(service_board: Board, datasources: dict[str, str]) -> None:
    """A heatmap's units live in options.yAxis and options.cellValues."""
    heat = next(p for p in queries.panels(service_board) if p["type"] == "heatmap")
    del heat["options"]["cellValues"]["unit"]
    problems = checks.check_dashboard(service_board, datasources)
    assert [(p.rule, "cellValues" in p.message) for p in problems] == [("unit", True)]


def test_every_coloured_stat_has_thresholds_that_mean_something(service_board: Board) -> None:
    """Valkey up is red below 1; availability and latency are green from their objectives."""
    steps = {
        title: [
            (s["value"], s["color"])
            for s in _panel(service_board, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        ]
        for title in ("Valkey up", "Availability, last 24h", "Requests under 100 ms, last 24h")
    }
    assert steps == {
        "Valkey up": [(None, "red"), (1, "green")],
        "Availability, last 24h": [(None, "red"), (0.999, "green")],
        "Requests under 100 ms, last 24h": [(None, "red"), (0.99, "green")],
    }


def test_service_dashboard_shows_valkey_evictions(service_board: Board) -> None:
    """Evicted keys per second (redis_exporter) beside memory used and maxmemory."""
    panel = _panel(service_board, "Valkey memory and evictions")
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("rate(redis_evicted_keys_total" in e for e in exprs)
    assert any("redis_memory_max_bytes" in e for e in exprs)
    assert panel["fieldConfig"]["defaults"]["unit"] == "bytes"


@pytest.mark.parametrize("name", sorted(generate.BUILDERS))
def test_readme_lists_every_panel(name: str) -> None:
    """observability/README.md has a table row for each panel (and row header) of each dashboard."""
    readme = (OBSERVABILITY / "README.md").read_text()
    board = json.loads((generate.DASHBOARD_DIR / name).read_text())
    rows = {f"| {p['title']} |" if p["type"] != "row" else f"| *row* {p['title']} |" for p in queries.panels(board)}
    assert [row for row in sorted(rows) if row not in readme] == []
