"""The time series of a municipality: open and closed buckets, `complete`, `?points=`.

A real `weather-api serve` with one-second buckets on the real Valkey; expected values are the
reports' own, worked out by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Api, wait_until
from tests.support import report, send


@pytest.fixture
def api(start_api: Callable[..., Api], valkey_url: str) -> Api:
    """The API on the emptied session Valkey, with buckets of one second."""
    return start_api(valkey_url, WEATHER_SERIES_INTERVAL="1")


def details(api: Api, municipality: str, **params: str) -> dict[str, Any]:
    """GET /api/municipalities/{municipality}, asserting 200."""
    response = httpx.get(f"{api.url}/api/municipalities/{municipality}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


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
    start = datetime.fromisoformat(closed["start"])
    assert start.microsecond == 0  # a one-second bucket starts on a whole second
    assert abs(datetime.now(UTC) - start) < timedelta(minutes=1)


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
    assert temperatures("360") == temperatures("60")  # the largest accepted
    starts = [p["start"] for p in details(api, "chinautla")["series"]]
    assert starts == sorted(starts)
    assert len(set(starts)) == 4
    for bad in ("0", "361", "-1", "many"):
        response = httpx.get(f"{api.url}/api/municipalities/chinautla", params={"points": bad})
        assert response.status_code == 400, bad
        assert response.headers["content-type"] == "application/problem+json"
