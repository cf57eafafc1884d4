"""Honest accounting on a real process: clients that leave, unknown methods, repeated headers, big batches."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable

import httpx
import valkey
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, dump, wait_until
from tests.otlp import OtlpReceiver, exporting_to
from tests.support import samples

REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
JSON_HEADERS = {"Content-Type": "application/json"}
KNOWN = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
"""HTTP methods the OpenTelemetry semantic conventions name; any other is `_OTHER`."""


def _requests(api: Api) -> dict[tuple[str, str, str], float]:
    """`http_server_request_duration_seconds_count` by (method, route, status_code), scraped."""
    text = httpx.get(api.url + "/metrics", timeout=10).text
    return {
        (s.labels["method"], s.labels["route"], s.labels["status_code"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "http_server_request_duration_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }


def _hang_up_mid_upload(api: Api, path: str) -> None:
    """Announce a 1,000-byte body, send 20 bytes of it, and close the connection."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"municipality": "ch',
        )


def test_a_client_that_hangs_up_mid_upload_is_recorded_as_499_not_5xx(api: Api, valkey_url: str) -> None:
    """Two uploads abandoned halfway: two 499s in the request metrics, no 5xx, nothing refused or logged as an error, nothing written."""
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    _hang_up_mid_upload(api, "/api/weather")
    _hang_up_mid_upload(api, "/api/weather/batch")

    def recorded() -> dict[tuple[str, str, str], float]:
        return {k: v for k, v in _requests(api).items() if k[0] == "POST"}

    wait_until(lambda: sum(recorded().values()) >= 2, 10, "both abandoned uploads to be recorded")
    assert recorded() == {("POST", "/api/weather", "499"): 1, ("POST", "/api/weather/batch", "499"): 1}
    assert not [k for k in _requests(api) if k[2].startswith("5")]
    assert not any(samples(api, "weather_reports_rejected_total").values())  # nothing was refused
    assert '"level":"error"' not in api.output()  # an abandoned upload is the client's doing, not a failure
    assert dump(client) == before


def test_unknown_methods_are_one_other_label_and_span_name(start_api: Callable[..., Api], valkey_url: str) -> None:
    """PROPFIND, MKCOL, LOCK ... become `_OTHER` in labels; their spans are named `HTTP` with the original kept."""
    with OtlpReceiver() as receiver:
        api = start_api(valkey_url, OTEL_TRACES_SAMPLER="always_on", **exporting_to(receiver))
        for method in ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "PROPPATCH", "COPY", "MOVE", "SEARCH"):
            for path in ("/api/weather", "/stats", "/no/such/path"):
                assert httpx.request(method, api.url + path, timeout=10).status_code in {404, 405}
        methods = {k[0] for k in _requests(api)}
        assert "_OTHER" in methods
        assert methods <= KNOWN | {"_OTHER"}, methods

        def others() -> list[str]:
            return [s.name for s in receiver.spans() if s.attributes.get("http.request.method") == "_OTHER"]

        wait_until(lambda: len(others()) >= 24, 10, "the spans of the 24 requests with unknown methods")
        assert set(others()) == {"HTTP"}
        originals = {s.attributes["http.request.method_original"] for s in receiver.spans() if s.name == "HTTP"}
        assert originals == {"PROPFIND", "MKCOL", "LOCK", "UNLOCK", "PROPPATCH", "COPY", "MOVE", "SEARCH"}


def test_two_idempotency_key_headers_are_a_400_problem_and_change_nothing(api: Api, valkey_url: str) -> None:
    """Which key would the client mean? Neither is used: 400, and Valkey is unchanged."""
    client = valkey.Valkey.from_url(valkey_url)
    before = dump(client)
    for path, body in (("/api/weather", REPORT), ("/api/weather/batch", [REPORT])):
        headers = [*JSON_HEADERS.items(), ("Idempotency-Key", "first"), ("Idempotency-Key", "second")]
        response = httpx.post(api.url + path, content=json.dumps(body), headers=headers, timeout=10)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert "Idempotency-Key" in response.json()["detail"]
    assert dump(client) == before


def test_the_largest_batch_fits_the_body_limit_when_indented(api: Api, valkey_url: str) -> None:
    """500 reports as json.dumps(indent=4) writes them, 17-digit numbers and escaped accents: 201."""
    rng = random.Random(5)
    reports = [
        {
            "municipality": "Amatitlán",
            "temperature": -rng.uniform(10, 89.9) - 1e-13,
            "humidity": rng.uniform(10, 99.9) + 1e-13,
            "weather": "cloudy",
        }
        for _ in range(500)
    ]
    body = json.dumps(reports, indent=4).encode()
    assert len(body) > 80_000  # about 165 bytes a report: over the old limit of 64 KiB
    response = httpx.post(api.url + "/api/weather/batch", content=body, headers=JSON_HEADERS, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["count"] == 500
    assert valkey.Valkey.from_url(valkey_url).hget("weather:counts", "amatitlan") == b"500"
