"""The OpenAPI document: what Litestar cannot infer from the handlers, and the docs pages.

The POST handlers read their body themselves (strict decoding, `weather_api.ingest`), so
Litestar sees no body type: their operation classes document the report schema and the
Idempotency-Key header. Error answers are documented as `Problem`s.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Example, OpenAPIMediaType, OpenAPIType, Operation, Parameter, RequestBody, Schema

from weather_api import __version__
from weather_api.ingest import MAX_IDEMPOTENCY_KEY
from weather_api.model import WEATHERS
from weather_api.responses import JSON, PROBLEM, Problem
from weather_api.settings import DEFAULT_MUNICIPALITIES


def _report_schema() -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["municipality", "temperature", "humidity", "weather"],
        additional_properties=False,
        properties={
            "municipality": Schema(
                type=OpenAPIType.STRING,
                description="Matched case- and accent-insensitively (`Amatitlán`); the list is configurable",
                examples=list(DEFAULT_MUNICIPALITIES),
            ),
            "temperature": Schema(type=OpenAPIType.NUMBER, minimum=-90, maximum=60, description="°C"),
            "humidity": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=100, description="% relative"),
            "weather": Schema(type=OpenAPIType.STRING, enum=list(WEATHERS)),
        },
    )


def _body(schema: Schema, example: object) -> RequestBody:
    return RequestBody(
        required=True,
        content={JSON: OpenAPIMediaType(schema=schema, examples={"report": Example(value=example)})},
    )


_EXAMPLE = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}


@dataclass
class OneReport(Operation):
    """The handlers read the body themselves (strict decoding); this documents it."""

    def __post_init__(self) -> None:
        self.request_body = _body(_report_schema(), _EXAMPLE)
        self.parameters = [*(self.parameters or []), *_IDEMPOTENCY]


@dataclass
class ManyReports(Operation):
    """The batch endpoint's body: a non-empty array of reports."""

    def __post_init__(self) -> None:
        batch = Schema(type=OpenAPIType.ARRAY, items=_report_schema(), min_items=1)
        self.request_body = _body(batch, [_EXAMPLE])
        self.parameters = [*(self.parameters or []), *_IDEMPOTENCY]


REPORT_ERRORS = {
    status: ResponseSpec(Problem, description=description, media_type=PROBLEM, generate_examples=False)
    for status, description in (
        (400, "Malformed JSON or an invalid report"),
        (413, "Body over the size limit"),
        (415, "Content-Type is not application/json"),
        (422, "Idempotency-Key reused with other reports"),
        (503, "Valkey unavailable, nothing written; see Retry-After"),
    )
}
"""The error answers of both POST endpoints.

Without generated examples (`ResponseSpec` makes them by default, though none reaches this
document: `Problem` is a reference): making them imports polyfactory and Faker, which grew the
process by ~50 MiB the first time anyone read /schema (docs/performance.md, Memory)."""

_IDEMPOTENCY = [
    Parameter(
        name="Idempotency-Key",
        param_in=ParamType.HEADER,
        required=False,
        description="1 to 255 printable ASCII characters; a retry with the same key returns the first answer",
        schema=Schema(type=OpenAPIType.STRING, max_length=MAX_IDEMPOTENCY_KEY),
    ),
]


def openapi_config() -> OpenAPIConfig:
    """The document's metadata and where it is served: /schema (Scalar), /schema/swagger."""
    return OpenAPIConfig(
        title="weather-api",
        version=__version__,
        description="Weather reports in, exact live aggregates in Valkey out.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin()],
    )
