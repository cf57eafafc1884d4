"""The OpenAPI document: every answer the service sends, per operation, as it sends it.

Litestar generates the document from the handlers: paths, parameters, the success answers and
their schemas. What it cannot see, this module adds, and `tests/test_openapi.py` holds the two to
each other (a property-based client of the document against a real `weather-api serve`):

- The POST bodies: the handlers read them themselves, strictly (`weather_api.ingest`), so
  Litestar sees no body type. `OneReport` and `ManyReports` document them and the
  Idempotency-Key header.
- Every error answer, per operation, as `application/problem+json` (`Problem`): the handlers'
  (`weather_api.errors`), Litestar's own (a query parameter out of range is a 400 problem, not
  the `application/json` ValidationException body Litestar documents by default), and those of
  the server in front of the app (`weather_api.server`) that concern a request for an
  operation: 408 when a POST body does not arrive in time, 431 for a head over the limits, 503
  over capacity (except /health and /metrics, which are never shed). Every 503 says
  `Retry-After`.
- `/metrics` as the two text formats it serves (Prometheus text, OpenMetrics), not JSON.
- What depends on the settings (`document`): municipality and weather names as enums of the
  canonical names (the matching, case- and accent-insensitive, is in their description; an
  empty name is not schema-valid), the temperature and humidity ranges, the batch size.

Not per operation, but in the document's description: what answers a request that names no
operation (404, 405), is not HTTP (400), or whose head does not arrive in time (408).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)

from weather_api import __version__
from weather_api.docs_page import render_plugin
from weather_api.ingest import MAX_IDEMPOTENCY_KEY
from weather_api.responses import JSON, PROBLEM, Problem
from weather_api.settings import Settings

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
PROMETHEUS_TEXT_1 = "text/plain; version=1.0.0"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"

MUNICIPALITY = "#/components/schemas/MunicipalityName"
WEATHER = "#/components/schemas/Weather"
REPORT = "#/components/schemas/Report"
REPORTS = "#/components/schemas/Reports"

DESCRIPTION = """Weather reports in, exact live aggregates in Valkey out.

Every error is an RFC 9457 problem document (`application/problem+json`), also where no
operation is involved: a path that names none gets 404 (under `/schema/`, Litestar's HTML page),
a method the path does not serve 405
(with `Allow`), a request that is not HTTP/1.1 400, a request head that does not arrive within
`WEATHER_HEADER_TIMEOUT` 408; the connection is closed after 400, 408 and 431."""

_NAMES = (
    "Matched case- and accent-insensitively (`Amatitlán`, `CHINAUTLA`) and answered in the canonical "
    "form listed here; the list is the service's WEATHER_MUNICIPALITIES"
)


def _problem(description: str) -> ResponseSpec:
    # No generated examples: Litestar's are random strings, which read like answers.
    return ResponseSpec(Problem, description=description, media_type=PROBLEM, generate_examples=False)


_HEAD_TOO_LARGE = _problem("The request head is over WEATHER_MAX_HEAD_BYTES or WEATHER_MAX_HEADERS lines; closed")
_INTERNAL = _problem("A bug in the service; its log has the traceback")
_UNAVAILABLE = "Valkey is unavailable, or the service is over WEATHER_MAX_CONCURRENCY requests in progress"

REPORT_ERRORS = {
    400: _problem("Malformed JSON, an invalid report (`errors` names each field), or an invalid Idempotency-Key"),
    408: _problem("The body did not arrive within WEATHER_BODY_TIMEOUT; the connection is closed"),
    413: _problem("The body is over WEATHER_MAX_BODY_BYTES"),
    415: _problem("Content-Type is not application/json"),
    422: _problem("The Idempotency-Key was used with other reports"),
    431: _HEAD_TOO_LARGE,
    500: _INTERNAL,
    503: _problem(
        f"{_UNAVAILABLE}. `outcome` says whether the reports may have been applied (`unknown`) or were not "
        "(`not_applied`); retry with the same Idempotency-Key after Retry-After"
    ),
}
"""The error answers of both POST endpoints.

Without generated examples (`ResponseSpec` makes them by default, though none reaches this
document: `Problem` is a reference): making them imports polyfactory and Faker, which grew the
process by ~50 MiB the first time anyone read /schema (docs/performance.md, Memory)."""

READ_ERRORS = {
    431: _HEAD_TOO_LARGE,
    500: _INTERNAL,
    503: _problem(f"{_UNAVAILABLE}; retry after Retry-After"),
}
"""The error answers of an endpoint that reads Valkey."""

MUNICIPALITY_ERRORS = {
    **READ_ERRORS,
    400: _problem("`points` is not an integer in its range (`errors` names it)"),
    404: _problem("Not one of the accepted municipalities"),
}

READY_ERRORS = {
    **READ_ERRORS,
    503: _problem(
        "Not ready: Valkey is unreachable, refuses writes or lacks the function library; "
        "or the service is over WEATHER_MAX_CONCURRENCY requests in progress. Retry after Retry-After"
    ),
}

UNSHED_ERRORS = {431: _HEAD_TOO_LARGE, 500: _INTERNAL}
"""/health and /metrics: served even over capacity, never touch Valkey."""

_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    description="Seconds to wait before retrying",
    required=True,
)
_REPLAYED = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
    description="Present on the first answer to this Idempotency-Key, replayed: nothing was written",
)


@dataclass
class Documented(Operation):
    """Any operation: every 503 carries `Retry-After` (Litestar's ResponseSpec takes no headers)."""

    def __post_init__(self) -> None:
        for status, response in (self.responses or {}).items():
            if status == "503" and isinstance(response, OpenAPIResponse):
                response.headers = {"Retry-After": _RETRY_AFTER}


_IDEMPOTENCY = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    required=False,
    description=(
        f"1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters (no leading or trailing space: HTTP drops them); "
        "a retry with the same key within a day gets the first answer, and changes nothing"
    ),
    schema=Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        pattern="^[!-~]([ -~]*[!-~])?$",
    ),
)
_EXAMPLE = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}


def _reports(schema: str, example: object) -> RequestBody:
    return RequestBody(
        required=True,
        content={JSON: OpenAPIMediaType(schema=Reference(schema), examples={"report": Example(value=example)})},
    )


@dataclass
class OneReport(Documented):
    """POST /api/weather: the handler reads the body itself (strict decoding); this documents it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = _reports(REPORT, _EXAMPLE)
        self.parameters = [*(self.parameters or []), _IDEMPOTENCY]
        _replayable(self)


@dataclass
class ManyReports(Documented):
    """POST /api/weather/batch: a non-empty array of reports, all applied or none."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = _reports(REPORTS, [_EXAMPLE])
        self.parameters = [*(self.parameters or []), _IDEMPOTENCY]
        _replayable(self)


def _replayable(operation: Operation) -> None:
    created = (operation.responses or {}).get("201")
    if isinstance(created, OpenAPIResponse):
        created.headers = {"Idempotent-Replayed": _REPLAYED}


@dataclass
class OneMunicipality(Documented):
    """GET /api/municipalities/{municipality}: the path names one of the accepted municipalities."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for parameter in self.parameters or []:
            if isinstance(parameter, Parameter) and parameter.name == "municipality":
                parameter.schema = Reference(MUNICIPALITY)


@dataclass
class Exposition(Documented):
    """GET /metrics: Prometheus text by default, OpenMetrics (with exemplars) when the Accept header asks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        text = Schema(type=OpenAPIType.STRING)
        (self.responses or {})["200"] = OpenAPIResponse(
            description=(
                "The format the Accept header asks for, as prometheus_client's `choose_encoder` picks it: "
                "OpenMetrics 1.0.0, with exemplars, for `application/openmetrics-text` (as Prometheus asks; a "
                "later version asked for, such as 2.0.0, is answered with that version); Prometheus text 1.0.0 "
                "for `text/plain; version=1.0.0`; otherwise Prometheus text 0.0.4. The answer's Content-Type "
                "adds `charset=utf-8`, and `escaping=...` where a version 1.0.0 format was asked for"
            ),
            content={
                media: OpenAPIMediaType(schema=text) for media in (PROMETHEUS_TEXT, PROMETHEUS_TEXT_1, OPENMETRICS)
            },
        )


def document(openapi: OpenAPI, settings: Settings) -> None:
    """Add what depends on the settings to the generated document: names as enums, ranges, the batch size."""
    schemas = openapi.components.schemas
    low, high = settings.temperature_range
    driest, wettest = settings.humidity_range
    schemas["MunicipalityName"] = Schema(
        type=OpenAPIType.STRING, enum=list(settings.municipalities), description=_NAMES
    )
    schemas["Weather"] = Schema(
        type=OpenAPIType.STRING,
        enum=list(settings.weathers),
        description="Matched case- and accent-insensitively, answered in the form listed here",
    )
    schemas["Report"] = Schema(
        type=OpenAPIType.OBJECT,
        required=["municipality", "temperature", "humidity", "weather"],
        additional_properties=False,
        description="One weather report; each key once, no other key",
        properties={
            "municipality": Reference(MUNICIPALITY),
            "temperature": Schema(type=OpenAPIType.NUMBER, minimum=low, maximum=high, description="°C"),
            "humidity": Schema(type=OpenAPIType.NUMBER, minimum=driest, maximum=wettest, description="% relative"),
            "weather": Reference(WEATHER),
        },
    )
    schemas["Reports"] = Schema(
        type=OpenAPIType.ARRAY,
        items=Reference(REPORT),
        min_items=1,
        max_items=settings.max_batch,
        description="Reports applied together, or none of them",
    )
    # The answers name municipalities and weathers in canonical form: the same enums.
    details = schemas["Municipality"].properties or {}
    details["municipality"] = Reference(MUNICIPALITY)
    conditions = schemas["Conditions"].properties or {}
    for extreme in ("most_common", "least_common"):
        conditions[extreme] = Schema(one_of=[Reference(WEATHER), Schema(type=OpenAPIType.NULL)])


def openapi_config(swagger_ui: Path) -> OpenAPIConfig:
    """The document's metadata and where it is served: /schema/openapi.json, the docs page at /schema."""
    return OpenAPIConfig(
        title="weather-api",
        version=__version__,
        description=DESCRIPTION,
        path="/schema",
        render_plugins=[render_plugin(swagger_ui)],
    )
