"""The HTTP application: routes, lifespan, and the one place errors become HTTP answers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import ParamType
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Example, OpenAPIMediaType, OpenAPIType, Operation, Parameter, RequestBody, Schema
from litestar.params import FromPath, QueryParameter
from litestar.plugins.problem_details import ProblemDetailsException
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from weather_api import __version__
from weather_api.loop import LoopMonitor
from weather_api.model import MAX_NAME_LENGTH, WEATHERS, InvalidReport, Validator
from weather_api.settings import DEFAULT_MUNICIPALITIES, Settings
from weather_api.store import IdempotencyConflict, Store, StoreUnavailable, connect
from weather_api.telemetry import AccessLog, Metrics, RequestTelemetry

log = logging.getLogger("weather_api")

PROBLEM = "application/problem+json"
JSON = "application/json"
MAX_IDEMPOTENCY_KEY = 255
MAX_POINTS = 360
"""Most time-series buckets one request returns (1 h at the default 10 s interval, ~44 KB).

Bounds the cost of the largest answer where it is incurred: 8,640 buckets (a day) took ~185 ms
of the event loop, mostly valkey-py decoding the reply, enough to make concurrent writes miss
their deadline; 360 take ~8 ms (`bench/series.py`; docs/architecture.md, Limits)."""


class UnsupportedMediaType(Exception):  # noqa: N818
    """The request body is not declared as application/json."""


class BadIdempotencyKey(ValueError):  # noqa: N818
    """The Idempotency-Key header is empty, too long, not printable ASCII, or sent more than once."""


class UnknownMunicipality(LookupError):  # noqa: N818
    """The path names a municipality the service does not accept."""


def uuid7s(n: int) -> list[str]:
    """Time-ordered UUIDs (RFC 9562 version 7), `n` consecutive ones: unique across replicas and restarts.

    Consecutive (RFC 9562 section 6.2, method 2: the random part counts up), so the first id
    names them all: that is all an Idempotency-Key's record keeps (see `ids_from`). The counted
    part has 61 random bits, far from overflowing into the variant bits for any batch.
    """
    ms = time.time_ns() // 1_000_000
    rand_a, rand_b = int.from_bytes(os.urandom(2), "big") >> 4, int.from_bytes(os.urandom(8), "big") >> 3
    first = ms << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b  # version 7, RFC 9562 variant
    return [_uuid(first + i) for i in range(n)]


def ids_from(first: str, n: int) -> list[str]:
    """The n ids `uuid7s` made together with `first`."""
    start = int(first.replace("-", ""), 16)
    return [_uuid(start + i) for i in range(n)]


def _uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _answer(ids: list[str], batch: bool) -> bytes:
    return msgspec.json.encode(
        {"status": "success", "ids": ids, "count": len(ids)} if batch else {"status": "success", "id": ids[0]},
    )


def _problem(status: int, title: str, detail: str, **extra: Any) -> ProblemDetailsException:  # noqa: ANN401
    # Our own problems get a URN naming their kind; plain HTTP errors are `about:blank`,
    # whose title is the status phrase (RFC 9457, section 4.2.1).
    type_ = extra.pop("type_", f"urn:weather-api:problem:{title.lower().replace(' ', '-')}")
    headers = extra.pop("headers", None)
    return ProblemDetailsException(
        status_code=status, title=title, detail=detail, type_=type_, headers=headers, extra=extra or None
    )


def _reject(request: Request[Any, Any, Any], reason: str) -> None:
    """Count a refused report request (only the report endpoints have reasons)."""
    metrics: Metrics = request.app.state.metrics
    metrics.rejected.labels(reason).inc()


def _to_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every error the service answers, mapped to RFC 9457 problem details in one place."""
    if isinstance(exc, InvalidReport):
        _reject(request, exc.reason)
        errors = [{"field": e.field, "message": e.message} for e in exc.errors]
        problem = _problem(400, "Invalid report", str(exc), errors=errors)
    elif isinstance(exc, UnsupportedMediaType):
        _reject(request, "unsupported_media_type")
        problem = _problem(415, "Unsupported media type", "send the report as Content-Type: application/json")
    elif isinstance(exc, BadIdempotencyKey):
        _reject(request, "invalid_idempotency_key")
        problem = _problem(400, "Invalid Idempotency-Key", str(exc))
    elif isinstance(exc, IdempotencyConflict):
        _reject(request, "idempotency_conflict")
        problem = _problem(422, "Idempotency-Key reused", "this Idempotency-Key was used with a different request")
    elif isinstance(exc, StoreUnavailable):
        if request.method == "POST":
            _reject(request, "unavailable")
        log.debug("valkey unavailable", extra={"operation": exc.operation, "reason": exc.reason})
        retry = "retry with the same Idempotency-Key" if request.method == "POST" else "retry later"
        detail = f"Valkey is unavailable ({exc.reason}); {retry}"
        problem = _problem(503, "Storage unavailable", detail, headers={"Retry-After": "1"})
    elif isinstance(exc, UnknownMunicipality):
        problem = _problem(404, "Unknown municipality", str(exc))
    elif isinstance(exc, HTTPException):
        problem = _http_problem(request, exc)
    else:
        log.error("unhandled error", exc_info=exc)
        problem = _problem(500, "Internal error", "the service failed; see its log")
    return problem.to_response(request)


def _http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> ProblemDetailsException:
    """Litestar's own HTTP errors (404, 405, 413, a query parameter out of range, ...)."""
    if isinstance(exc, ValidationException):
        # Litestar's detail repeats the whole URL, query string included; name the parameter.
        extra = exc.extra if isinstance(exc.extra, list) else []
        errors = [{"field": str(e.get("key")), "message": str(e.get("message"))} for e in extra if isinstance(e, dict)]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid parameter"
        return _problem(400, "Invalid parameter", detail, errors=errors)
    if exc.status_code == 413 and request.method == "POST":
        _reject(request, "body_too_large")
    title = str(exc.detail) if exc.detail else "Error"
    return _problem(exc.status_code, title, title, headers=exc.headers, type_="about:blank")


def _body_type(request: Request[Any, Any, Any]) -> None:
    media_type, _ = request.content_type
    if media_type != JSON:
        raise UnsupportedMediaType


def _idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    keys = request.headers.getall("idempotency-key", [])
    if not keys:
        return None
    if len(keys) > 1:
        # Which one would the client mean? Using the first silently could replay another request.
        msg = f"send one Idempotency-Key header, not {len(keys)}"
        raise BadIdempotencyKey(msg)
    key = keys[0]
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        msg = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        raise BadIdempotencyKey(msg)
    return key


async def _ingest(request: Request[Any, Any, Any], state: State, batch: bool) -> Response[bytes]:
    """Shared path of both POST endpoints: check, record once, answer."""
    _body_type(request)
    key = _idempotency_key(request)
    body = await request.body()
    validator: Validator = state.validator
    reports = validator.many(body) if batch else [validator.one(body)]
    ids = uuid7s(len(reports))
    idempotency = None
    if key is not None:
        # The fingerprint covers the reports as understood, not their bytes: the same reports
        # re-sent with other whitespace are a retry, not a conflict.
        fingerprint = hashlib.sha256(request.url.path.encode() + msgspec.json.encode(reports)).hexdigest()
        idempotency = (key, fingerprint)
    store: Store = state.store
    # A replay needs only the first id (the same fingerprint means the same reports, so as
    # many ids): a key's record stays ~240 bytes of Valkey memory whatever the size of the batch.
    outcome = await store.record(reports, ids, ids[0].encode(), idempotency)
    headers = {}
    if outcome.replayed:
        replay = outcome.replay or b""
        # A record written before records were this small holds the whole answer.
        answer = replay if replay.startswith(b"{") else _answer(ids_from(replay.decode(), len(ids)), batch)
        headers["Idempotent-Replayed"] = "true"
    else:
        answer = _answer(ids, batch)
        metrics: Metrics = state.metrics
        for report in reports:
            metrics.accepted.labels(report.municipality).inc()
    return Response(answer, status_code=201, media_type=JSON, headers=headers)


class Problem(msgspec.Struct):
    """RFC 9457 problem details, as every error is answered."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


class Accepted(msgspec.Struct):
    """A report accepted: its id."""

    status: str
    id: str


class BatchAccepted(msgspec.Struct):
    """A batch accepted: one id per report, in order."""

    status: str
    ids: list[str]
    count: int


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
class _OneReport(Operation):
    """The handlers read the body themselves (strict decoding); this documents it."""

    def __post_init__(self) -> None:
        self.request_body = _body(_report_schema(), _EXAMPLE)
        self.parameters = [*(self.parameters or []), *_IDEMPOTENCY]


@dataclass
class _ManyReports(Operation):
    def __post_init__(self) -> None:
        batch = Schema(type=OpenAPIType.ARRAY, items=_report_schema(), min_items=1)
        self.request_body = _body(batch, [_EXAMPLE])
        self.parameters = [*(self.parameters or []), *_IDEMPOTENCY]


_ERRORS = {
    400: ResponseSpec(Problem, description="Malformed JSON or an invalid report", media_type=PROBLEM),
    413: ResponseSpec(Problem, description="Body over the size limit", media_type=PROBLEM),
    415: ResponseSpec(Problem, description="Content-Type is not application/json", media_type=PROBLEM),
    422: ResponseSpec(Problem, description="Idempotency-Key reused with other reports", media_type=PROBLEM),
    503: ResponseSpec(Problem, description="Valkey unavailable, nothing written; see Retry-After", media_type=PROBLEM),
}
_IDEMPOTENCY = [
    Parameter(
        name="Idempotency-Key",
        param_in=ParamType.HEADER,
        required=False,
        description="1 to 255 printable ASCII characters; a retry with the same key returns the first answer",
        schema=Schema(type=OpenAPIType.STRING, max_length=MAX_IDEMPOTENCY_KEY),
    ),
]


@post(
    "/api/weather",
    status_code=201,
    operation_class=_OneReport,
    responses=_ERRORS,
    response_description="Accepted",
    summary="Ingest one weather report",
    description="Validates the report and updates every aggregate atomically. "
    "Send an `Idempotency-Key` header to make retries safe.",
    tags=["reports"],
)
async def post_weather(request: Request[Any, Any, Any], state: State) -> Response[Accepted]:
    """Ingest one report."""
    return await _ingest(request, state, batch=False)  # type: ignore[return-value]  # pre-encoded


@post(
    "/api/weather/batch",
    status_code=201,
    operation_class=_ManyReports,
    responses=_ERRORS,
    summary="Ingest a batch of weather reports",
    description="All reports are valid and applied together, or none is.",
    tags=["reports"],
)
async def post_weather_batch(request: Request[Any, Any, Any], state: State) -> Response[BatchAccepted]:
    """Ingest a batch, all or nothing."""
    return await _ingest(request, state, batch=True)  # type: ignore[return-value]  # pre-encoded


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


@get("/stats", summary="Number of reports per municipality", tags=["aggregates"])
async def stats(state: State) -> Stats:
    """Counts, as the original system's /stats."""
    total, counts = await state.store.stats()
    return Stats(total=total, municipalities=counts)


@get("/averages", summary="Mean temperature and humidity per municipality", tags=["aggregates"])
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


@get("/health", summary="Liveness: the process serves requests", tags=["probes"])
async def health() -> dict[str, str]:
    """Never touches Valkey: a Valkey outage must not get the API restarted."""
    return {"status": "ok"}


@get("/ready", summary="Readiness: Valkey accepts reports and the function library is loaded", tags=["probes"])
async def ready(state: State) -> dict[str, str]:
    """503 (problem details) while Valkey is unreachable or refuses writes, or the library is missing."""
    await state.store.ping()
    return {"status": "ready"}


@get(
    "/metrics",
    summary="Prometheus exposition (OpenMetrics with exemplars on request)",
    tags=["probes"],
    include_in_schema=True,
)
async def metrics_endpoint(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Classic text format, or OpenMetrics when the Accept header asks for it."""
    body, content_type = state.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


async def _every_second(store: Store, access_log: AccessLog | None) -> None:
    """Close finished time-series buckets (even of a quiet municipality); write access lines.

    Also the one place that logs Valkey going away and coming back: once per change, not
    once per refused request.
    """
    available = True
    while True:
        await asyncio.sleep(1)
        if access_log is not None:
            access_log.flush()
        try:
            await store.prepare()
        except StoreUnavailable as exc:
            if available:
                log.warning("valkey unavailable; answering 503", extra={"reason": exc.reason})
            available = False
        else:
            if not available:
                log.warning("valkey available again")
            available = True


def create_app(
    settings: Settings,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
    env: Mapping[str, str] | None = None,
) -> Litestar:
    """Build the application for these settings (its own metrics registry and tracer)."""
    metrics = metrics or Metrics()
    if tracer_provider is None and settings.telemetry:
        from weather_api.telemetry import tracer_provider as make_provider  # noqa: PLC0415

        tracer_provider = make_provider(env or {}, sampled_parents_per_second=settings.sampled_parents_per_second)
    tracer = tracer_provider.get_tracer("weather_api") if settings.telemetry and tracer_provider else trace.NoOpTracer()

    access_log = AccessLog() if settings.telemetry and settings.access_log else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        monitor = LoopMonitor(metrics.loop_lag.observe)
        store = Store(connect(settings), settings, metrics.observe_valkey, tracer, monitor.stalled)
        app.state.store = store
        lag = asyncio.create_task(monitor.run())
        try:
            await store.load()
        except StoreUnavailable as exc:
            # Unreachable, or refusing (full, a replica, no library and no right to load it):
            # the process stays up, /ready says 503, and the ticker loads it as soon as it can.
            log.warning("valkey unavailable at startup; will retry", extra={"reason": exc.reason})
        flusher = asyncio.create_task(_every_second(store, access_log))
        # Everything built so far (modules, the app, its routes) lives as long as the process:
        # taking it out of the garbage collector's generations spares every full collection
        # from scanning it again, which shows in p99 latency.
        gc.freeze()
        try:
            yield
        finally:
            for task in (flusher, lag):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.close()
            if access_log is not None:
                access_log.flush()
            if tracer_provider is not None:
                tracer_provider.shutdown()

    app = Litestar(
        route_handlers=[
            post_weather,
            post_weather_batch,
            stats,
            averages,
            municipality,
            health,
            ready,
            metrics_endpoint,
        ],
        state=State(
            {
                "settings": settings,
                "metrics": metrics,
                "validator": Validator(
                    settings.municipalities,
                    settings.weathers,
                    settings.temperature_range,
                    settings.humidity_range,
                    settings.max_batch,
                ),
            },
        ),
        lifespan=[lifespan],
        exception_handlers={Exception: _to_problem},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="weather-api",
            version=__version__,
            description="Weather reports in, exact live aggregates in Valkey out.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin()],
        ),
        debug=False,
        logging_config=None,  # logging is configured once, as JSON lines, by the CLI
    )
    if settings.telemetry:
        # Around everything Litestar does, routing and error handling included, so that 404,
        # 405 and refused requests are measured like the rest (see telemetry's docstring).
        app.asgi_handler = RequestTelemetry(app.asgi_handler, metrics, tracer, access_log)
    return app
