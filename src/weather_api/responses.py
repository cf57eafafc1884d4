"""What the service answers: media types and the response bodies' types (msgspec structs).

Pure data: the routes build these, Litestar encodes them and documents them in the OpenAPI
document. Errors are `Problem`s (RFC 9457), answered by `weather_api.errors`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

JSON = "application/json"
PROBLEM = "application/problem+json"


class FieldProblem(msgspec.Struct):
    """What is wrong with one field of the request."""

    field: Annotated[str, msgspec.Meta(description="Where: `$.temperature`, `$[3].weather`, `points`")]
    message: str


class Problem(msgspec.Struct):
    """RFC 9457 problem details, as every error is answered."""

    type: Annotated[
        str,
        msgspec.Meta(description="`urn:weather-api:problem:<kind>`, or `about:blank` for plain HTTP errors"),
    ]
    title: str
    status: Annotated[int, msgspec.Meta(ge=400, le=599, description="The HTTP status code, repeated")]
    detail: str
    errors: list[FieldProblem] | None = None
    outcome: (
        Annotated[
            Literal["unknown", "not_applied"],
            msgspec.Meta(description="503 to a POST: whether the reports may have been applied (`unknown`)"),
        ]
        | None
    ) = None


class Accepted(msgspec.Struct):
    """A report accepted: its id."""

    status: str
    id: str


class BatchAccepted(msgspec.Struct):
    """A batch accepted: one id per report, in order."""

    status: str
    ids: list[str]
    count: int


class Stats(msgspec.Struct):
    """Number of reports, in total and per municipality."""

    total: int
    municipalities: dict[str, int]


class Measure(msgspec.Struct):
    """Mean, lowest and highest of one quantity (null before the first report)."""

    mean: float | None
    min: float | None
    max: float | None


class Conditions(msgspec.Struct):
    """Reports per weather; ties for most or least common go to the alphabetically last or first."""

    counts: dict[str, int]
    most_common: str | None
    least_common: str | None


class Point(msgspec.Struct):
    """One time-series bucket: means over `[start, start + interval)`."""

    start: datetime
    temperature: float
    humidity: float
    count: int
    complete: bool


class Municipality(msgspec.Struct):
    """Everything the dashboard shows for one municipality."""

    municipality: str
    count: int
    temperature: Measure
    humidity: Measure
    weather: Conditions
    series: list[Point]
