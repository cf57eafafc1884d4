"""Bounded cost per request: the largest answer, long names and long paths, on a real process."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable

import httpx
import valkey

from tests.conftest import Api, wait_until
from tests.test_cli import _serve_and_fail

REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
JSON_HEADERS = {"Content-Type": "application/json"}
DAY = 8640
"""Buckets in a day at the default 10 s interval: the series Valkey keeps (`WEATHER_SERIES_MAXLEN`)."""
NAME_LIMIT = 64
"""The documented longest municipality or weather name (README, docs/architecture.md)."""
PATH_LIMIT = 256
"""The documented longest path kept in an access line."""


def _fill_a_day(valkey_url: str, municipality: str) -> None:
    """Write a full day of closed buckets the way the function library's close_bucket does."""
    client = valkey.Valkey.from_url(valkey_url)
    interval_ms = 10_000
    first = (int(time.time() * 1000) // interval_ms - DAY) * interval_ms
    rng = random.Random(9)
    pipe = client.pipeline(transaction=False)
    for i in range(DAY):
        pipe.execute_command(
            "XADD",
            f"weather:series:{municipality}",
            "MAXLEN",
            DAY,
            f"{first + i * interval_ms}-0",
            "temperature",
            f"{rng.uniform(-10, 40):.17g}",
            "humidity",
            f"{rng.uniform(0, 100):.17g}",
            "count",
            rng.randint(1, 50),
        )
    pipe.execute()
    assert client.xlen(f"weather:series:{municipality}") == DAY
    client.close()


def _points_cap(api: Api) -> int:
    """The most `points` the served OpenAPI document allows."""
    schema = httpx.get(api.url + "/schema/openapi.json", timeout=10).json()
    (parameter,) = [
        p for p in schema["paths"]["/api/municipalities/{municipality}"]["get"]["parameters"] if p["name"] == "points"
    ]
    cap: int = parameter["schema"]["maximum"]
    return cap


async def _read_and_post(api: Api, points: int, seconds: float) -> tuple[Counter[int], Counter[int]]:
    """Four clients read `points` buckets in a loop while one posts reports; both statuses counted."""
    reads: Counter[int] = Counter()
    posts: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:

        async def reader() -> None:
            while time.monotonic() < deadline:
                response = await client.get("/api/municipalities/chinautla", params={"points": points})
                reads[response.status_code] += 1

        async def poster() -> None:
            while time.monotonic() < deadline:
                response = await client.post("/api/weather", content=json.dumps(REPORT), headers=JSON_HEADERS)
                posts[response.status_code] += 1

        await asyncio.gather(*(reader() for _ in range(4)), poster())
    return reads, posts


def test_four_clients_reading_the_largest_answer_cost_concurrent_posts_no_503(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """With a full day of series, 4 clients reading the largest allowed answer for 10 s: every POST 201."""
    api = start_api(valkey_url)
    _fill_a_day(valkey_url, "chinautla")
    cap = _points_cap(api)
    largest = httpx.get(api.url + "/api/municipalities/chinautla", params={"points": cap}, timeout=30)
    assert largest.status_code == 200
    assert len(largest.json()["series"]) == cap
    reads, posts = asyncio.run(_read_and_post(api, cap, seconds=10))
    assert set(posts) == {201}, posts
    assert set(reads) == {200}, reads
    assert posts[201] >= 10


def test_points_over_the_cap_are_a_problem_naming_the_parameter(api: Api) -> None:
    """`points` above the documented cap is a 400 problem naming `points`, not a larger answer."""
    cap = _points_cap(api)
    assert cap <= 360
    padding = "x" * 4000  # an unknown parameter: the problem must not echo the query string
    response = httpx.get(
        api.url + "/api/municipalities/chinautla", params={"points": cap + 1, "pad": padding}, timeout=10
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["points"]
    assert padding not in response.text


def test_names_over_the_length_limit_are_refused_before_normalising(api: Api, valkey_url: str) -> None:
    """A name that would normalise to an accepted one is refused when it is over 64 characters.

    `chinautla` followed by combining accents normalises to `chinautla`: at 64 characters it is
    accepted, at 65 it is refused without being normalised (which is what bounds its cost).
    """
    accent = "\u0301"
    at_limit = "chinautla" + accent * (NAME_LIMIT - len("chinautla"))
    over = at_limit + accent
    weather_over = "sunny" + accent * (NAME_LIMIT + 1 - len("sunny"))
    client = valkey.Valkey.from_url(valkey_url)

    def post(report: dict[str, object]) -> httpx.Response:
        return httpx.post(api.url + "/api/weather", content=json.dumps(report), headers=JSON_HEADERS, timeout=10)

    assert post({**REPORT, "municipality": at_limit}).status_code == 201
    for report, field in (
        ({**REPORT, "municipality": over}, "$.municipality"),
        ({**REPORT, "weather": weather_over}, "$.weather"),
        ({**REPORT, "municipality": "\ufdfa" * 10_000}, "$.municipality"),  # 60 KB as \u escapes
    ):
        response = post(report)
        assert response.status_code == 400, report
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert client.hgetall("weather:counts") == {b"chinautla": b"1"}

    assert httpx.get(f"{api.url}/api/municipalities/{at_limit}", timeout=10).status_code == 200
    response = httpx.get(f"{api.url}/api/municipalities/{over}", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    long_path = httpx.get(f"{api.url}/api/municipalities/{'x' * 8000}", timeout=10)
    assert long_path.status_code == 404
    assert len(long_path.content) < 1000  # the name is not echoed back in full


def test_a_configured_municipality_over_the_length_limit_is_a_settings_error() -> None:
    """A name no request could ever match is refused at startup (exit 2), naming the variable."""
    result = _serve_and_fail(WEATHER_MUNICIPALITIES="mixco," + "x" * (NAME_LIMIT + 1))
    assert "WEATHER_MUNICIPALITIES" in result.stderr


def test_access_lines_keep_a_bounded_part_of_the_path(start_api: Callable[..., Api], valkey_url: str) -> None:
    """A 6,000-character path is logged as its first 256 characters, marked as cut."""
    api = start_api(valkey_url, WEATHER_ACCESS_LOG="on")
    path = "/" + "p" * 6000
    assert httpx.get(api.url + path, timeout=10).status_code == 404

    def logged() -> list[dict[str, str]]:
        lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
        return [line["http"] for line in lines if line["logger"] == "weather_api.access"]

    wait_until(lambda: any(h["route"] == "unmatched" for h in logged()), 10, "the access line of the 404")
    (line,) = [h for h in logged() if h["route"] == "unmatched"]
    assert line["path"] == path[:PATH_LIMIT] + "..."
