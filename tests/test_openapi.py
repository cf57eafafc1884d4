"""The OpenAPI document is the behaviour: a property-based client of /schema/openapi.json, against a real service.

schemathesis (its CLI, pinned in uv.lock) generates requests from the document served by a
real `weather-api serve` on a real Valkey: schema-valid ones (positive) and ones that break it
(negative), from the document's examples, from its boundaries (the coverage phase) and at
random (fuzzing). Every answer must have a documented status, content type and headers and a
body that matches its schema; a schema-valid request must succeed (201 for a report, 200 for a
read). Seeded, deterministic and without an example database: a run sends the same requests
every time, so it cannot flake on what it happened to generate.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
from litestar.serialization import encode_json

from tests.conftest import Api, free_port, in_flight, wait_until
from weather_api.app import create_app
from weather_api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
request-timeout = 10.0

[cache]
enabled = false

[generation]
mode = "all"
max-examples = 100
deterministic = true
database = "none"

[checks]
# All of schemathesis' checks of an answer against the document, but one: names outside the
# enums (`MIXCO`, `Amatitlán`) are accepted on purpose, so a schema-invalid request may succeed.
negative_data_rejection.enabled = false

[phases.stateful]
enabled = false

[[operations]]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [201]

[[operations]]
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = [200]
"""


def schemathesis(api: Api, work: Path) -> subprocess.CompletedProcess[str]:
    """Run schemathesis' CLI against `api`, in `work` (its files stay there)."""
    config = work / "schemathesis.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
    return subprocess.run(  # noqa: S603
        [*command, "--checks", "all", api.url + "/schema/openapi.json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_answer_is_documented_and_valid_requests_succeed(
    start_api: Callable[..., Api], valkey_url: str, tmp_path: Path
) -> None:
    """Generated requests, valid and invalid, to every operation get only what the document says."""
    api = start_api(valkey_url, WEATHER_VALKEY_TIMEOUT="5")  # a busy CI machine must not make a 503
    run = schemathesis(api, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


# --- what schemathesis cannot provoke, held to the document the same way --------------------------

REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
JSON_BODY = {"Content-Type": "application/json"}


def _document(api: Api) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(api.url + "/schema/openapi.json", timeout=10).json()
    return document


def _parameters(media_type: str) -> tuple[str, set[str]]:
    essence, *parameters = (part.strip().lower() for part in media_type.split(";"))
    return essence, set(parameters)


def _matches(received: str, documented: str) -> bool:
    """Same type and subtype, and every parameter the document names (`version=0.0.4`) with its value."""
    (essence, parameters), (wanted, named) = _parameters(received), _parameters(documented)
    return essence == wanted and named <= parameters


def assert_documented(
    document: dict[str, Any], method: str, path: str, *, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """The answer's status, content type (with its parameters), required headers and body are what `document` says."""
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, documented: {sorted(responses)}"
    documented = responses[str(status)]
    content_type = headers["content-type"]
    media = [m for m in documented["content"] if _matches(content_type, m)]
    assert media, f"{method} {path} {status}: {content_type!r} is none of {sorted(documented['content'])}"
    for name, header in documented.get("headers", {}).items():
        assert not header.get("required") or name.lower() in {h.lower() for h in headers}, f"{name} missing"
    if content_type.endswith("json"):
        # The document's components travel with the schema, so that its `$ref`s resolve.
        schema = documented["content"][media[0]]["schema"]
        jsonschema.validate(json.loads(body), {**schema, "components": document["components"]})


def _check(document: dict[str, Any], method: str, path: str, response: httpx.Response) -> int:
    template = next(t for t in document["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path))
    assert_documented(
        document, method, template, status=response.status_code, headers=response.headers, body=response.content
    )
    return response.status_code


def test_refusals_of_reports_and_reads_are_documented_as_sent(start_api: Callable[..., Api], valkey_url: str) -> None:
    """415, 413, 422, a bad Idempotency-Key, an unknown municipality, points out of range: each as documented."""
    api = start_api(valkey_url, WEATHER_MAX_BODY_BYTES="1024")
    document = _document(api)
    post = partial(httpx.post, timeout=10)
    body = json.dumps(REPORT)
    answers = [
        _check(document, "POST", "/api/weather", post(api.url + "/api/weather", content=body)),  # no Content-Type
        _check(document, "POST", "/api/weather", post(api.url + "/api/weather", content="x" * 2000, headers=JSON_BODY)),
        _check(
            document,
            "POST",
            "/api/weather",
            post(api.url + "/api/weather", content=body, headers={**JSON_BODY, "Idempotency-Key": "k"}),
        ),
        _check(
            document,
            "POST",
            "/api/weather",
            post(
                api.url + "/api/weather",
                content=json.dumps({**REPORT, "humidity": 61}),
                headers={**JSON_BODY, "Idempotency-Key": "k"},
            ),
        ),
        _check(
            document,
            "POST",
            "/api/weather/batch",
            post(
                api.url + "/api/weather/batch", content=f"[{body}]", headers={**JSON_BODY, "Idempotency-Key": "k" * 256}
            ),
        ),
        _check(
            document,
            "GET",
            "/api/municipalities/atlantis",
            httpx.get(api.url + "/api/municipalities/atlantis", timeout=10),
        ),
        _check(
            document,
            "GET",
            "/api/municipalities/mixco",
            httpx.get(api.url + "/api/municipalities/mixco?points=0", timeout=10),
        ),
    ]
    assert answers == [415, 413, 201, 422, 400, 404, 400]


def test_answers_while_valkey_is_away_are_documented(start_api: Callable[..., Api]) -> None:
    """With nothing listening at the Valkey URL: 503 with Retry-After wherever Valkey is read, as documented."""
    api = start_api(f"redis://127.0.0.1:{free_port()}", ready=False, WEATHER_VALKEY_TIMEOUT="0.2")
    document = _document(api)
    reads = ["/ready", "/stats", "/averages", "/api/municipalities/mixco"]
    statuses = [_check(document, "GET", path, httpx.get(api.url + path, timeout=10)) for path in reads]
    report = httpx.post(api.url + "/api/weather", content=json.dumps(REPORT), headers=JSON_BODY, timeout=10)
    assert [*statuses, _check(document, "POST", "/api/weather", report)] == [503] * 5
    assert _check(document, "GET", "/health", httpx.get(api.url + "/health", timeout=10)) == 200


def _connect(api: Api) -> socket.socket:
    address = urlsplit(api.url)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_the_servers_own_answers_to_an_operation_are_documented(start_api: Callable[..., Api], valkey_url: str) -> None:
    """431 for an oversized head, 503 over capacity (not /health, /metrics), 408 for a stalled body: as documented."""
    api = start_api(valkey_url, WEATHER_MAX_CONCURRENCY="1", WEATHER_BODY_TIMEOUT="1")
    document = _document(api)
    huge = {"X-Padding": "x" * 20_000}
    for path in ("/stats", "/health"):
        assert _check(document, "GET", path, httpx.get(api.url + path, headers=huge, timeout=10)) == 431
    with _connect(api) as upload:
        head = b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"
        upload.sendall(head + b'{"munic')  # the one request the cap allows, in progress until its body times out
        wait_until(lambda: in_flight(api) >= 1, 10, "the upload to be in progress")
        shed = httpx.get(api.url + "/stats", timeout=10)
        served = [httpx.get(api.url + path, timeout=10) for path in ("/health", "/metrics")]
        status, headers, body = _read_answer(upload)
    assert _check(document, "GET", "/stats", shed) == 503
    assert [_check(document, "GET", r.url.path, r) for r in served] == [200, 200]
    assert_documented(document, "POST", "/api/weather", status=status, headers=headers, body=body)
    assert status == 408


def test_metrics_answer_in_the_documented_formats(api: Api) -> None:
    """/metrics: Prometheus text by default, OpenMetrics when asked, each with a documented content type exactly."""
    document = _document(api)
    # Nothing; what Prometheus 3 sends; what Prometheus 2 sent; Prometheus text 1.0.0.
    accepts = [
        None,
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ),
        "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "text/plain; version=1.0.0",
    ]
    answers = [httpx.get(api.url + "/metrics", headers={"Accept": a} if a else {}, timeout=10) for a in accepts]
    for answer in answers:
        _check(document, "GET", "/metrics", answer)
    essences = [_parameters(a.headers["content-type"])[0] for a in answers]
    assert essences == ["text/plain", "application/openmetrics-text", "application/openmetrics-text", "text/plain"]
    for answer in answers:  # each parameter once (Litestar used to add a second charset)
        names = [p.split("=")[0].strip() for p in answer.headers["content-type"].split(";")[1:]]
        assert len(names) == len(set(names)), answer.headers["content-type"]


def test_names_and_limits_in_the_document_come_from_the_settings() -> None:
    """Municipality and weather enums, ranges and batch size follow the settings; "" is never schema-valid."""
    settings = Settings(
        municipalities=("xela", "san marcos"), temperature_range=(-10.0, 45.0), max_batch=7, telemetry=False
    )
    schemas = json.loads(encode_json(create_app(settings).openapi_schema.to_schema()))["components"]["schemas"]
    assert schemas["MunicipalityName"]["enum"] == ["xela", "san marcos"]
    assert schemas["Weather"]["enum"] == list(settings.weathers)
    temperature = schemas["Report"]["properties"]["temperature"]
    assert (temperature["minimum"], temperature["maximum"]) == (-10.0, 45.0)
    assert schemas["Reports"]["maxItems"] == 7
    names = {"components": {"schemas": schemas}, "$ref": "#/components/schemas/MunicipalityName"}
    assert not jsonschema.Draft202012Validator(names).is_valid("")
