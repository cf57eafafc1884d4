"""The Weather dashboard's queries against a real Valkey holding the documented key layout.

The data is written by ``aggregates.write_layout`` (the key layout of docs/architecture.md, by
hand), so these tests prove the emulator of the Redis plugin and the panel checks on their own;
the end-to-end test then applies the same checks to what the API wrote during a Locust run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
import valkey
from weather_dashboards import queries, redis_plugin, verify
from weather_dashboards.aggregates import Expected, Report, canonical, write_layout

from loadtest.ledger import Ledger

BUCKET_MS = 10_000

REPORTS = [
    Report("chinautla", "rainy", 18.5, 80),
    Report("chinautla", "rainy", 21.0, 75),
    Report("chinautla", "sunny", 27.5, 40),
    Report("chinautla", "cloudy", 19.0, 65),
    Report("mixco", "sunny", 30.5, 35),
    Report("mixco", "foggy", 12.0, 95),
    Report("guatemala", "cloudy", 22.0, 60),
    Report("guatemala", "rainy", 20.0, 70),
    Report("amatitlan", "sunny", -3.5, 20),
    Report("amatitlan", "sunny", 25.0, 50),
]


@dataclasses.dataclass
class Scene:
    """Valkey filled with REPORTS in the documented layout, and what the panels must show."""

    client: valkey.Valkey
    expected: Expected
    board: dict[str, Any]
    datasources: dict[str, str]
    now_ms: int

    @property
    def window(self) -> tuple[int, int]:
        """The dashboard's time range: the last 6 hours."""
        return self.now_ms - 6 * 3600 * 1000, self.now_ms + 1000

    def problems(self, **variables: str) -> list[verify.Problem]:
        """What the panel checks find, with these variable values."""
        check = verify.ValkeyCheck(self.client, self.expected, self.datasources, self.window)
        return check.problems(self.board, variables)

    def frame(self, title: str) -> redis_plugin.Frame:
        """The frame of the first target of the panel titled ``title``."""
        panel = self.panel(title)
        return redis_plugin.execute(self.client, panel["targets"][0], queries.default_values(self.board), self.window)

    def panel(self, title: str) -> dict[str, Any]:
        """The panel titled ``title``."""
        return next(p for p in queries.panels(self.board) if p.get("title") == title)


@pytest.fixture
def scene(valkey_client: valkey.Valkey, weather_board: dict[str, Any], datasources: dict[str, str]) -> Scene:
    """The Weather dashboard over a Valkey holding REPORTS, written just now."""
    now_ms = int(time.time() * 1000)
    expected = write_layout(valkey_client, REPORTS, bucket_ms=BUCKET_MS, now_ms=now_ms)
    return Scene(valkey_client, expected, weather_board, datasources, now_ms)


# --- the emulator returns the plugin's frames ------------------------------------------------


def test_hgetall_gives_one_numeric_field_per_municipality(scene: Scene) -> None:
    """A pie gets one slice (field) per municipality, the running mean as a float."""
    frame = scene.frame("Average humidity per municipality")
    assert {f.name: f.values for f in frame.fields} == {m: [v] for m, v in scene.expected.mean("humidity").items()}


def test_zrange_withscores_gives_one_field_per_member(scene: Scene) -> None:
    """ZRANGE weather:max 0 -1 WITHSCORES: fields temperature and humidity with their scores."""
    frame = scene.frame("Highest temperature")
    assert {f.name: f.values for f in frame.fields} == {"temperature": [30.5], "humidity": [95.0]}


def test_zrange_ends_name_most_and_least_common_weather(scene: Scene) -> None:
    """In chinautla rainy leads with 2; foggy (0) is last by count, first by name among zeros."""
    most = scene.frame("Most common weather")
    least = scene.frame("Least common weather")
    assert (most.names, most.fields[0].values) == (["rainy"], [2.0])
    assert (least.names, least.fields[0].values) == (["foggy"], [0.0])


def test_xrange_uses_the_dashboard_time_range(scene: Scene) -> None:
    """Without start/end, XRANGE runs from <from>-0 to <to>-0: older buckets drop out."""
    title = "Temperature and humidity in ${municipality}"
    frame = scene.frame(title)
    assert frame.names == ["$streamId", "$time", "temperature", "humidity", "count"]
    assert frame.field("temperature").values == [18.5, 21.0, 27.5]  # the 4th report is in the open bucket
    narrow = (scene.now_ms - 2 * BUCKET_MS - 1, scene.now_ms)
    target = scene.panel(title)["targets"][0]
    frame = redis_plugin.execute(scene.client, target, {"prefix": "weather", "municipality": "chinautla"}, narrow)
    assert frame.field("temperature").values == [27.5]


def test_variable_query_lists_the_municipalities(scene: Scene) -> None:
    """SMEMBERS weather:municipalities through the plugin's free-text path (variables)."""
    query = {"query": "SMEMBERS ${prefix}:municipalities"}
    frame = redis_plugin.execute(scene.client, query, {"prefix": "weather"}, (0, 1))
    assert sorted(frame.field("Value").values) == sorted(scene.expected.municipalities)


def test_variables_are_interpolated_only_where_the_plugin_does(scene: Scene) -> None:
    """KeyName gets $m; min does not, so Valkey sees the literal `$i` and refuses it."""
    target = {"type": "command", "command": "zrange", "keyName": "weather:conditions:$m", "min": "$i", "max": "-1"}
    with pytest.raises(valkey.ResponseError):
        redis_plugin.execute(scene.client, target, {"m": "mixco", "i": "0"}, (0, 1))
    target["min"] = "0"
    frame = redis_plugin.execute(scene.client, target, {"m": "mixco", "i": "0"}, (0, 1))
    assert frame.names == ["cloudy", "rainy", "foggy", "sunny"]


def test_unsupported_command_is_a_query_error(valkey_client: valkey.Valkey) -> None:
    """The emulator refuses what the plugin would not run."""
    with pytest.raises(redis_plugin.QueryError):
        redis_plugin.execute(valkey_client, {"type": "command", "command": "keys", "keyName": "*"}, {}, (0, 1))


# --- the panel checks accept the truth and catch the rest ------------------------------------


def test_every_weather_panel_shows_the_aggregates(scene: Scene) -> None:
    """Every Valkey panel (and the variable) has the right shape and exactly the right values."""
    assert scene.problems() == []


@pytest.mark.parametrize("municipality", ["mixco", "guatemala", "amatitlan"])
def test_weather_panels_hold_for_every_municipality(scene: Scene, municipality: str) -> None:
    """The municipality section is right for any choice of the variable."""
    assert scene.problems(municipality=municipality) == []


def test_a_wrong_average_is_caught(scene: Scene) -> None:
    """A running mean that drifted from the reports fails its pie."""
    scene.client.hset("weather:avg:temperature", "mixco", 99)
    assert [(p.rule, "Average temperature" in p.where) for p in scene.problems()] == [("value", True)]


def test_a_lost_report_in_the_series_is_caught(scene: Scene) -> None:
    """Buckets plus the open bucket must account for every report."""
    scene.client.hset("weather:bucket:chinautla", "count", 0)
    problems = scene.problems()
    assert problems
    assert all("series of chinautla" in p.message for p in problems)


def test_a_missing_key_is_caught(scene: Scene) -> None:
    """No weather:max at all: the stats have nothing to show."""
    scene.client.delete("weather:max")
    problems = scene.problems()
    assert {p.where.split(" target")[0] for p in problems} == {
        "panel 2 'Highest temperature'",
        "panel 3 'Highest humidity'",
    }
    assert {p.rule for p in problems} == {"shape", "value"}


def test_a_stat_selecting_a_missing_member_is_caught(scene: Scene) -> None:
    """A field filter naming no member of the zset shows "No data"."""
    scene.panel("Lowest humidity")["options"]["reduceOptions"]["fields"] = "/^humidty$/"
    assert [p.rule for p in scene.problems()] == ["shape"]


def test_a_bar_chart_without_the_reduce_transformation_is_caught(scene: Scene) -> None:
    """One-row numeric fields have no category axis without it."""
    scene.panel("Reports per weather condition")["transformations"] = []
    assert [p.rule for p in scene.problems()] == ["shape"]


def test_a_municipality_missing_from_the_set_is_caught(scene: Scene) -> None:
    """The variable must offer every configured municipality, chinautla first of all."""
    scene.client.srem("weather:municipalities", "chinautla")
    assert {p.rule for p in scene.problems()} == {"variable"}


# --- expectations from a Locust ledger -------------------------------------------------------


def test_expectations_from_a_ledger_equal_those_from_the_reports() -> None:
    """The load test's ledger (loadtest/ledger.py) carries all the dashboard needs."""
    ledger = Ledger()
    ledger.accept(REPORTS)
    ledger.lose_track([])
    data = json.loads(json.dumps(ledger.to_dict()))
    from_ledger, from_reports = Expected.from_ledger(data), Expected.from_reports(REPORTS)
    assert from_ledger.count == from_reports.count
    assert from_ledger.conditions == from_reports.conditions
    assert from_ledger.highest == from_reports.highest
    assert from_ledger.lowest == from_reports.lowest
    assert from_ledger.mean("temperature") == pytest.approx(from_reports.mean("temperature"))
    for m in from_reports.municipalities:
        assert from_ledger.ranked_conditions(m) == from_reports.ranked_conditions(m)


def test_names_are_compared_in_canonical_form() -> None:
    """Input is matched case- and accent-insensitively; the store keeps canonical names."""
    assert canonical(" Amatitlán ") == "amatitlan"
    assert Report.from_json(
        {"municipality": "CHINAUTLA", "weather": "Sunny", "temperature": 20, "humidity": 50}
    ) == Report("chinautla", "sunny", 20.0, 50.0)
