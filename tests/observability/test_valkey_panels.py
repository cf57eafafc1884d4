"""The Weather dashboard's queries against a real Valkey, held to numbers computed by hand.

Two sources of data, one oracle. The emulator tests read a Valkey filled by
``aggregates.write_layout`` (the key layout of docs/architecture.md, written directly); the panel
tests read what the real API wrote for the same reports (``POST /api/weather/batch``). Both are
compared with ``HAND``: the aggregates of ``REPORTS`` worked out by hand below, never by the code
under test, so a slip in ``aggregates.Expected`` or in the API's Valkey function fails here.
Then ``verify.ValkeyCheck`` (what the end-to-end test uses) must agree with the API's data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import valkey
from weather_dashboards import checks, queries, redis_plugin, verify
from weather_dashboards.aggregates import Expected, Report, canonical, write_layout

from loadtest.ledger import Ledger
from tests.conftest import Api, wait_until

BUCKET_MS = 10_000

REPORTS = [
    Report("chinautla", "rainy", 18.5, 80),
    Report("chinautla", "rainy", 21.0, 75),
    Report("chinautla", "sunny", 27.5, 40),
    Report("chinautla", "cloudy", 19.0, 65),
    Report("mixco", "sunny", 30.5, 45),
    Report("mixco", "foggy", 12.0, 95),
    Report("guatemala", "cloudy", 22.0, 62),
    Report("guatemala", "rainy", 20.0, 70),
    Report("amatitlan", "sunny", -3.5, 20),
    Report("amatitlan", "sunny", 25.0, 50),
]

# REPORTS aggregated by hand.
HAND: dict[str, dict[str, float]] = {
    # temperature: (18.5 + 21 + 27.5 + 19) / 4, (30.5 + 12) / 2, (22 + 20) / 2, (-3.5 + 25) / 2
    "Average temperature per municipality": {"chinautla": 21.5, "mixco": 21.25, "guatemala": 21.0, "amatitlan": 10.75},
    # humidity: (80 + 75 + 40 + 65) / 4, (45 + 95) / 2, (62 + 70) / 2, (20 + 50) / 2
    "Average humidity per municipality": {"chinautla": 65.0, "mixco": 70.0, "guatemala": 66.0, "amatitlan": 35.0},
    "Highest temperature": {"temperature": 30.5, "humidity": 95.0},
    "Highest humidity": {"temperature": 30.5, "humidity": 95.0},
    "Lowest temperature": {"temperature": -3.5, "humidity": 20.0},
    "Lowest humidity": {"temperature": -3.5, "humidity": 20.0},
    # sunny: chinautla 1 + mixco 1 + amatitlan 2; rainy: 2 + 1; cloudy: 1 + 1; foggy: mixco 1
    "Reports per weather condition": {"sunny": 4.0, "rainy": 3.0, "cloudy": 2.0, "foggy": 1.0},
}
# ZRANGE order (count, then name) of each municipality: (least common, most common) with counts.
HAND_COMMONEST = {
    "chinautla": (("foggy", 0.0), ("rainy", 2.0)),  # foggy 0, cloudy 1, sunny 1, rainy 2
    "mixco": (("cloudy", 0.0), ("sunny", 1.0)),  # cloudy 0, rainy 0, foggy 1, sunny 1
    "guatemala": (("foggy", 0.0), ("rainy", 1.0)),  # foggy 0, sunny 0, cloudy 1, rainy 1
    "amatitlan": (("cloudy", 0.0), ("sunny", 2.0)),  # cloudy 0, foggy 0, rainy 0, sunny 2
}
# Per municipality: report count, sum of temperatures, sum of humidities.
HAND_TOTALS = {
    "chinautla": (4, 86.0, 260.0),
    "mixco": (2, 42.5, 140.0),
    "guatemala": (2, 42.0, 132.0),
    "amatitlan": (2, 21.5, 70.0),
}
SERIES = "Temperature and humidity in ${municipality}"


@dataclasses.dataclass
class Scene:
    """Valkey filled with REPORTS, and the dashboard that reads it."""

    client: valkey.Valkey
    board: dict[str, Any]
    datasources: dict[str, str]
    now_ms: int

    @property
    def window(self) -> tuple[int, int]:
        """The dashboard's time range: the last 6 hours."""
        return self.now_ms - 6 * 3600 * 1000, self.now_ms + 1000

    def problems(self, expected: Expected, **variables: str) -> list[verify.Problem]:
        """What the panel checks find against ``expected``, with these variable values."""
        check = verify.ValkeyCheck(self.client, expected, self.datasources, self.window)
        return check.problems(self.board, variables)

    def frame(self, title: str, **variables: str) -> redis_plugin.Frame:
        """The frame of the first target of the panel titled ``title``."""
        values = {**queries.default_values(self.board), **variables}
        return redis_plugin.execute(self.client, self.panel(title)["targets"][0], values, self.window)

    def panel(self, title: str) -> dict[str, Any]:
        """The panel titled ``title``."""
        return next(p for p in queries.panels(self.board) if p.get("title") == title)

    def values(self, title: str, **variables: str) -> dict[str, Any]:
        """Field name -> its single value, for one-row frames."""
        return {f.name: f.values[0] for f in self.frame(title, **variables).fields}


@pytest.fixture
def scene(valkey_client: valkey.Valkey, weather_board: dict[str, Any], datasources: dict[str, str]) -> Scene:
    """The Weather dashboard over a Valkey holding REPORTS in the documented layout, by hand."""
    now_ms = int(time.time() * 1000)
    write_layout(valkey_client, REPORTS, bucket_ms=BUCKET_MS, now_ms=now_ms)
    return Scene(valkey_client, weather_board, datasources, now_ms)


def _body(report: Report) -> dict[str, Any]:
    return dataclasses.asdict(report)


@pytest.fixture
def api_scene(
    start_api: Callable[..., Api],
    valkey_url: str,
    valkey_client: valkey.Valkey,
    weather_board: dict[str, Any],
    datasources: dict[str, str],
) -> Scene:
    """The Weather dashboard over what the real API wrote for REPORTS, buckets closed."""
    api = start_api(valkey_url, WEATHER_SERIES_INTERVAL="1")
    response = httpx.post(f"{api.url}/api/weather/batch", json=[_body(r) for r in REPORTS], timeout=10)
    assert response.status_code == 201, response.text

    def closed() -> bool:
        return all(int(valkey_client.hget(f"weather:bucket:{m}", "count") or 0) == 0 for m in HAND_TOTALS)  # type: ignore[arg-type]

    wait_until(closed, 10, "the API to close every open time-series bucket")
    return Scene(valkey_client, weather_board, datasources, int(time.time() * 1000))


# --- the emulator returns the plugin's frames, with hand-computed values ---------------------


@pytest.mark.parametrize("title", sorted(HAND))
def test_aggregate_panels_show_the_hand_computed_values(scene: Scene, title: str) -> None:
    """Pies (HGETALL), extremes and the bar chart (ZRANGE WITHSCORES): one numeric field per name."""
    assert scene.values(title) == HAND[title]


@pytest.mark.parametrize("municipality", sorted(HAND_COMMONEST))
def test_zrange_ends_name_most_and_least_common_weather(scene: Scene, municipality: str) -> None:
    """ZRANGE 0 0 is the least common weather (ties: first name), -1 -1 the most (ties: last name)."""
    least, most = HAND_COMMONEST[municipality]
    assert list(scene.values("Least common weather", municipality=municipality).items()) == [least]
    assert list(scene.values("Most common weather", municipality=municipality).items()) == [most]


def test_xrange_uses_the_dashboard_time_range(scene: Scene) -> None:
    """Without start/end, XRANGE runs from <from>-0 to <to>-0: older buckets drop out."""
    frame = scene.frame(SERIES)
    assert frame.names == ["$streamId", "$time", "temperature", "humidity", "count"]
    assert frame.field("temperature").values == [18.5, 21.0, 27.5]  # the 4th report is in the open bucket
    narrow = (scene.now_ms - 2 * BUCKET_MS - 1, scene.now_ms)
    target = scene.panel(SERIES)["targets"][0]
    frame = redis_plugin.execute(scene.client, target, {"prefix": "weather", "municipality": "chinautla"}, narrow)
    assert frame.field("temperature").values == [27.5]


def test_variable_query_lists_the_municipalities(scene: Scene) -> None:
    """SMEMBERS weather:municipalities through the plugin's free-text path (variables)."""
    frame = redis_plugin.execute(
        scene.client, {"query": "SMEMBERS ${prefix}:municipalities"}, {"prefix": "weather"}, (0, 1)
    )
    assert sorted(frame.field("Value").values) == sorted(HAND_TOTALS)


# --- the emulator follows the plugin's source: one test per rule ------------------------------


def test_variables_are_interpolated_only_where_the_plugin_does(scene: Scene) -> None:
    """KeyName gets $m; min does not, so Valkey sees the literal `$i` and the query fails."""
    target = {"type": "command", "command": "zrange", "keyName": "weather:conditions:$m", "min": "$i", "max": "-1"}
    with pytest.raises(redis_plugin.QueryError, match="not an integer"):
        redis_plugin.execute(scene.client, target, {"m": "mixco", "i": "0"}, (0, 1))
    target["min"] = "0"
    frame = redis_plugin.execute(scene.client, target, {"m": "mixco", "i": "0"}, (0, 1))
    assert frame.names == ["cloudy", "rainy", "foggy", "sunny"]


def test_interpolated_fields_are_the_frontends_and_empty_ones_become_blank() -> None:
    """2.2.1's applyTemplateVariables: keyName, query, field, ..., searchQuery; missing ones ''."""
    query = redis_plugin.interpolate({"keyName": "k:$m", "searchQuery": "@m:$m", "min": "$m"}, {"m": "mixco"})
    assert (query["keyName"], query["searchQuery"], query["min"]) == ("k:mixco", "@m:mixco", "$m")
    assert query["field"] == query["query"] == query["cypher"] == ""


def test_unknown_command_returns_an_empty_frame_silently(valkey_client: valkey.Valkey) -> None:
    """pkg/query.go's default case: no frame, no error (the panel shows "No data")."""
    frame = redis_plugin.execute(valkey_client, {"type": "command", "command": "keys", "keyName": "*"}, {}, (0, 1))
    assert frame.fields == []


def test_module_commands_fail_on_valkey(valkey_client: valkey.Valkey) -> None:
    """The plugin sends TS.RANGE and friends; Valkey has no such module."""
    target = {"type": "timeSeries", "command": "ts.range", "keyName": "weather:series:mixco"}
    with pytest.raises(redis_plugin.QueryError, match="unknown command"):
        redis_plugin.execute(valkey_client, target, {}, (0, 1))


def test_zrange_bylex_always_fails_because_the_plugin_adds_withscores(scene: Scene) -> None:
    """ZRANGE ... BYLEX WITHSCORES is a syntax error; BYSCORE works."""
    target = {"type": "command", "command": "zrange", "keyName": "weather:conditions", "min": "-", "max": "+"}
    with pytest.raises(redis_plugin.QueryError, match="WITHSCORES"):
        redis_plugin.execute(scene.client, {**target, "zrangeQuery": "BYLEX"}, {}, (0, 1))
    frame = redis_plugin.execute(scene.client, {**target, "zrangeQuery": "BYSCORE", "min": "2", "max": "3"}, {}, (0, 1))
    assert {f.name: f.values for f in frame.fields} == {"cloudy": [2.0], "rainy": [3.0]}


def test_a_query_field_runs_as_a_custom_command_whatever_the_command(scene: Scene) -> None:
    """A non-empty `query` wins over `command` (pkg/query.go), and arrays become one Value field."""
    target = {"type": "command", "command": "zrange", "keyName": "x", "query": "ZRANGE weather:conditions 0 1"}
    frame = redis_plugin.execute(scene.client, target, {}, (0, 1))
    assert (frame.name, frame.names, frame.fields[0].values) == ("x", ["Value"], ["foggy", "cloudy"])


def test_custom_command_replies_take_the_plugins_shapes(scene: Scene) -> None:
    """An empty array is "(empty array)", an integer stays one, a nil reply is an error."""
    run = lambda text: redis_plugin.execute(scene.client, {"query": text}, {}, (0, 1))  # noqa: E731
    assert run("SMEMBERS nothing:here").fields[0].values == [redis_plugin.EMPTY_ARRAY]
    assert run("SCARD weather:municipalities").fields[0].values == [4]
    with pytest.raises(redis_plugin.QueryError, match="wrong command"):
        run("GET nothing:here")


def test_hget_frame_is_named_after_the_field_and_nil_is_blank(scene: Scene) -> None:
    """pkg/redis-hash.go createFrameValue(field, value, field); a missing field decodes as ""."""
    target = {"type": "command", "command": "hget", "keyName": "weather:avg:temperature", "field": "mixco"}
    frame = redis_plugin.execute(scene.client, target, {}, (0, 1))
    assert (frame.name, frame.names, frame.fields[0].values) == ("mixco", ["mixco"], [21.25])
    frame = redis_plugin.execute(scene.client, {**target, "field": "nowhere"}, {}, (0, 1))
    assert frame.fields[0].values == [""]


def test_a_field_of_the_wrong_json_type_fails_the_query(scene: Scene) -> None:
    """The plugin decodes count as an int (queryModel): "count": "5" fails the whole target."""
    target = {"type": "command", "command": "xrange", "keyName": "weather:series:chinautla", "count": "5"}
    with pytest.raises(redis_plugin.QueryError, match="count"):
        redis_plugin.execute(scene.client, target, {}, scene.window)
    assert len(redis_plugin.execute(scene.client, {**target, "count": 2}, {}, scene.window).field("$time").values) == 2


def test_the_checker_refuses_what_fails_in_the_plugin() -> None:
    """BYLEX and a string count are flagged before any Valkey sees them."""
    base = {"refId": "A", "type": "command", "command": "zrange", "keyName": "k", "min": "-", "max": "+"}
    assert [p.rule for p in checks.check_redis_target({**base, "zrangeQuery": "BYLEX"}, "t")] == ["redis"]
    stream = {"refId": "A", "type": "command", "command": "xrange", "keyName": "k", "count": "5"}
    assert [p.rule for p in checks.check_redis_target(stream, "t")] == ["redis"]
    assert checks.check_redis_target({**stream, "count": 5}, "t") == []


# --- what the real API wrote, against the hand-computed numbers -------------------------------


def test_every_weather_panel_shows_what_the_api_wrote(api_scene: Scene) -> None:
    """Each aggregate panel, for the reports posted through the API, equals the hand-computed value."""
    for title, want in HAND.items():
        got = api_scene.values(title)
        assert got == pytest.approx(want, rel=1e-12), title


def test_municipality_section_shows_what_the_api_wrote(api_scene: Scene) -> None:
    """For each municipality: commonest weathers, and one closed bucket with every report's means."""
    for municipality, (count, temperature, humidity) in HAND_TOTALS.items():
        least, most = HAND_COMMONEST[municipality]
        assert list(api_scene.values("Least common weather", municipality=municipality).items()) == [least]
        assert list(api_scene.values("Most common weather", municipality=municipality).items()) == [most]
        series = api_scene.frame(SERIES, municipality=municipality)
        assert series.field("count").values == [count], municipality
        assert series.field("temperature").values == [pytest.approx(temperature / count)], municipality
        assert series.field("humidity").values == [pytest.approx(humidity / count)], municipality


def test_the_panel_checks_agree_with_the_api(api_scene: Scene) -> None:
    """verify.ValkeyCheck with Expected.from_reports finds nothing wrong, for every municipality."""
    expected = Expected.from_reports(REPORTS)
    assert [p for m in HAND_TOTALS for p in api_scene.problems(expected, municipality=m)] == []


# --- the panel checks catch the mistakes they are for -----------------------------------------


def test_a_wrong_average_is_caught(scene: Scene) -> None:
    """A running mean that drifted from the reports fails its pie."""
    scene.client.hset("weather:avg:temperature", "mixco", 99)
    problems = scene.problems(Expected.from_reports(REPORTS))
    assert [(p.rule, "Average temperature" in p.where) for p in problems] == [("value", True)]


def test_a_lost_report_in_the_series_is_caught(scene: Scene) -> None:
    """Buckets plus the open bucket must account for every report."""
    scene.client.hset("weather:bucket:chinautla", "count", 0)
    problems = scene.problems(Expected.from_reports(REPORTS))
    assert problems
    assert all("series of chinautla" in p.message for p in problems)


def test_a_missing_key_is_caught(scene: Scene) -> None:
    """No weather:max at all: the stats have nothing to show."""
    scene.client.delete("weather:max")
    problems = scene.problems(Expected.from_reports(REPORTS))
    assert {p.where.split(" target")[0] for p in problems} == {
        "panel 2 'Highest temperature'",
        "panel 3 'Highest humidity'",
    }
    assert {p.rule for p in problems} == {"shape", "value"}


def test_a_stat_selecting_a_missing_member_is_caught(scene: Scene) -> None:
    """A field filter naming no member of the zset shows "No data"."""
    scene.panel("Lowest humidity")["options"]["reduceOptions"]["fields"] = "/^humidty$/"
    assert [p.rule for p in scene.problems(Expected.from_reports(REPORTS))] == ["shape"]


def test_a_bar_chart_without_the_reduce_transformation_is_caught(scene: Scene) -> None:
    """One-row numeric fields have no category axis without it."""
    scene.panel("Reports per weather condition")["transformations"] = []
    assert [p.rule for p in scene.problems(Expected.from_reports(REPORTS))] == ["shape"]


def test_bar_labels_longer_than_the_tick_label_limit_are_caught(scene: Scene) -> None:
    """Grafana cuts x labels to xTickLabelMaxLength + '...': "cloudy" at 5 is "cloud..."."""
    scene.panel("Reports per weather condition")["options"]["xTickLabelMaxLength"] = 5
    problems = scene.problems(Expected.from_reports(REPORTS))
    assert [(p.rule, p.message.split("'")[1]) for p in problems] == [("shape", "cloudy")]


def test_a_municipality_missing_from_the_set_is_caught(scene: Scene) -> None:
    """The variable must offer every configured municipality, chinautla first of all."""
    scene.client.srem("weather:municipalities", "chinautla")
    assert {p.rule for p in scene.problems(Expected.from_reports(REPORTS))} == {"variable"}


# --- expectations from a Locust ledger -------------------------------------------------------


def test_expectations_from_a_ledger_equal_the_hand_computed_ones() -> None:
    """The load test's ledger (loadtest/ledger.py) carries all the dashboard needs."""
    ledger = Ledger()
    ledger.accept(REPORTS)
    ledger.lose_track([])
    expected = Expected.from_ledger(json.loads(json.dumps(ledger.to_dict())))
    assert expected.mean("temperature") == pytest.approx(HAND["Average temperature per municipality"])
    assert expected.mean("humidity") == pytest.approx(HAND["Average humidity per municipality"])
    assert expected.highest == {"temperature": 30.5, "humidity": 95.0}
    assert expected.lowest == {"temperature": -3.5, "humidity": 20.0}
    assert dict(expected.conditions) == {"sunny": 4, "rainy": 3, "cloudy": 2, "foggy": 1}
    for municipality, (least, most) in HAND_COMMONEST.items():
        ranked = expected.ranked_conditions(municipality)
        assert (ranked[0], ranked[-1]) == ((least[0], int(least[1])), (most[0], int(most[1])))


def test_names_are_compared_in_canonical_form() -> None:
    """Input is matched case- and accent-insensitively; the store keeps canonical names."""
    assert canonical(" Amatitlán ") == "amatitlan"
    assert Report.from_json(
        {"municipality": "CHINAUTLA", "weather": "Sunny", "temperature": 20, "humidity": 50}
    ) == Report("chinautla", "sunny", 20.0, 50.0)
