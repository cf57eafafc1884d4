"""The route handlers: two POST endpoints that ingest reports, the read endpoints, the probes.

Each handler does its job and raises; `weather_api.errors` turns what it raises into an answer.
The two POST handlers declare and document their routes; `weather_api.ingest.Ingest`, their
route middleware, serves them (why: that module's docstring).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.types import ControllerRouterHandler

from weather_api import ingest
from weather_api.model import MAX_NAME_LENGTH
from weather_api.openapi import (
    MUNICIPALITY_ERRORS,
    READ_ERRORS,
    READY_ERRORS,
    REPORT_ERRORS,
    UNSHED_ERRORS,
    Documented,
    Exposition,
    ManyReports,
    OneMunicipality,
    OneReport,
)
from weather_api.responses import Accepted, BatchAccepted, Conditions, Measure, Municipality, Point, Stats

MAX_POINTS = 360
"""Most time-series buckets one request returns (1 h at the default 10 s interval, ~44 KB).

Bounds the cost of the largest answer where it is incurred: 8,640 buckets (a day) took ~185 ms
of the event loop, mostly valkey-py decoding the reply, enough to make concurrent writes miss
their deadline; 360 take ~8 ms (`bench/series.py`; docs/architecture.md, Limits)."""


class UnknownMunicipality(LookupError):  # noqa: N818
    """The path names a municipality the service does not accept."""


@post(
    "/api/weather",
    status_code=201,
    operation_class=OneReport,
    responses=REPORT_ERRORS,
    response_description="Accepted",
    summary="Ingest one weather report",
    description="Validates the report and updates every aggregate atomically. "
    "Send an `Idempotency-Key` header to make retries safe.",
    tags=["reports"],
    middleware=[ingest.one],
)
async def post_weather() -> Response[Accepted]:
    """Ingest one report: declared here, served by `ingest.Ingest`, the route's ASGI middleware."""
    raise ingest.ServedByMiddleware


@post(
    "/api/weather/batch",
    status_code=201,
    operation_class=ManyReports,
    responses=REPORT_ERRORS,
    response_description="Accepted, one id per report in order",
    summary="Ingest a batch of weather reports",
    description="All reports are valid and applied together, or none is.",
    tags=["reports"],
    middleware=[ingest.batch],
)
async def post_weather_batch() -> Response[BatchAccepted]:
    """Ingest a batch, all or nothing: declared here, served by `ingest.Ingest`."""
    raise ingest.ServedByMiddleware


@get(
    "/stats",
    operation_class=Documented,
    responses=READ_ERRORS,
    summary="Number of reports per municipality",
    tags=["aggregates"],
)
async def stats(state: State) -> Stats:
    """Counts, as the original system's /stats."""
    total, counts = await state.store.stats()
    return Stats(total=total, municipalities=counts)


@get(
    "/averages",
    operation_class=Documented,
    responses=READ_ERRORS,
    summary="Mean temperature and humidity per municipality",
    tags=["aggregates"],
)
async def averages(state: State) -> dict[str, dict[str, float]]:
    """Averages, as the original system's /averages."""
    result: dict[str, dict[str, float]] = await state.store.averages()
    return result


def _series(closed: list[tuple[bytes, dict[bytes, bytes]]], bucket: dict[bytes, bytes], points: int) -> list[Point]:
    """The last `points` buckets, oldest first: closed ones (newest first from XREVRANGE), then the open one.

    Kept cheap per point (about 1 us: a datetime that msgspec encodes, no string formatting),
    since `MAX_POINTS` of them are built on the event loop.
    """
    series = [
        Point(
            _utc(int(entry_id.partition(b"-")[0])),  # ids are `<bucket start ms>-0`
            float(fields[b"temperature"]),
            float(fields[b"humidity"]),
            int(fields[b"count"]),
            True,  # noqa: FBT003 - positional for speed, like the fields above
        )
        for entry_id, fields in reversed(closed)
    ]
    if bucket:
        n = int(bucket[b"count"])
        start = _utc(int(bucket[b"start"]))
        series.append(
            Point(start, float(bucket[b"temperature_sum"]) / n, float(bucket[b"humidity_sum"]) / n, n, False),  # noqa: FBT003
        )
    return series[-points:]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _measure(
    total: bytes | None, count: int, lowest: dict[str, float], highest: dict[str, float], name: str
) -> Measure:
    if count == 0 or total is None:
        return Measure(None, None, None)
    return Measure(float(total) / count, lowest.get(name), highest.get(name))


@get(
    "/api/municipalities/{municipality:str}",
    operation_class=OneMunicipality,
    responses=MUNICIPALITY_ERRORS,
    summary="Everything the dashboard shows for one municipality",
    tags=["aggregates"],
)
async def municipality(
    state: State,
    municipality: FromPath[str],
    points: Annotated[
        int,
        QueryParameter(ge=1, le=MAX_POINTS, description=f"Time-series buckets to return (1 to {MAX_POINTS})"),
    ] = 60,
) -> Municipality:
    """Count, means, extremes, weather counts and recent series of one municipality."""
    name = state.validator.municipality(municipality)
    if name is None:
        shown = municipality if len(municipality) <= MAX_NAME_LENGTH else municipality[:MAX_NAME_LENGTH] + "..."
        msg = f"unknown municipality {shown!r}; accepted: {', '.join(state.validator.municipalities)}"
        raise UnknownMunicipality(msg)
    raw = await state.store.municipality(name, points)
    count = int(raw["count"] or 0)
    lowest = {k.decode(): v for k, v in raw["min"]}
    highest = {k.decode(): v for k, v in raw["max"]}
    conditions = [(k.decode(), int(v)) for k, v in raw["conditions"]]  # ascending by count
    counts = dict.fromkeys(state.settings.weathers, 0) | dict(conditions)
    seen = [w for w, c in conditions if c > 0]
    return Municipality(
        municipality=name,
        count=count,
        temperature=_measure(raw["temperature_sum"], count, lowest, highest, "temperature"),
        humidity=_measure(raw["humidity_sum"], count, lowest, highest, "humidity"),
        weather=Conditions(
            counts=counts,
            most_common=seen[-1] if seen else None,
            least_common=conditions[0][0] if seen else None,
        ),
        series=_series(raw["series"], raw["bucket"], points),
    )


@get(
    "/health",
    operation_class=Documented,
    responses=UNSHED_ERRORS,
    summary="Liveness: the process serves requests",
    tags=["probes"],
)
async def health() -> dict[str, str]:
    """Never touches Valkey: a Valkey outage must not get the API restarted."""
    return {"status": "ok"}


@get(
    "/ready",
    operation_class=Documented,
    responses=READY_ERRORS,
    summary="Readiness: Valkey accepts reports and the function library is loaded",
    tags=["probes"],
)
async def ready(state: State) -> dict[str, str]:
    """503 (problem details) while Valkey is unreachable or refuses writes, or the library is missing."""
    await state.store.ping()
    return {"status": "ready"}


@get(
    "/metrics",
    operation_class=Exposition,
    responses=UNSHED_ERRORS,
    summary="Prometheus exposition (OpenMetrics with exemplars on request)",
    tags=["probes"],
)
async def metrics_endpoint(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Classic text format, or OpenMetrics when the Accept header asks for it."""
    body, content_type = state.metrics.exposition(request.headers.get("accept"))
    # As the header, not as `media_type`: Litestar appends `; charset=utf-8` to any text/ media
    # type, and prometheus_client's already names it (the header said charset twice).
    return Response(body, media_type=content_type, headers={"content-type": content_type})


HANDLERS: list[ControllerRouterHandler] = [
    post_weather,
    post_weather_batch,
    stats,
    averages,
    municipality,
    health,
    ready,
    metrics_endpoint,
]
"""Every route of the service, in the order the OpenAPI document lists them."""
