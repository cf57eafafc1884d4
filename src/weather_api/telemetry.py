"""Metrics, traces and logs for the service.

What comes from the libraries, and what is ours and why:

- Tracing uses the OpenTelemetry SDK (tracer provider, ParentBased(TraceIdRatio) sampler, W3C
  propagator, OTLP exporter). Litestar's OpenTelemetryPlugin (the OpenTelemetry ASGI
  middleware) is not used: it cost about 140 us of CPU per request here, half of what serving a
  report costs (measured with `python bench/overhead.py`, see docs/performance.md), and it
  names the span from the raw path before routing. `RequestTelemetry` starts the server span,
  renames it `METHOD /route/{template}` once Litestar has routed the request, and returns
  `traceparent` on the response.
- Litestar's PrometheusPlugin is not used, for three reasons, each covered by a test in
  tests/test_telemetry.py: it runs after routing, so 404 and 405 are never counted; it labels by
  raw path unless `group_path` is set; and it keeps its metric objects in a class-level dict
  bound to the global registry, so a second app in one process (every test) reuses or clashes
  with the first one's metrics. `RequestTelemetry` is the small ASGI middleware that replaces it;
  metric objects live in a `Metrics` instance with its own registry.
- `/metrics` content negotiation (classic text, or OpenMetrics with exemplars) is
  prometheus-client's own `choose_encoder`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from weather_api import __version__

# Fit for a service whose p99 should be a few milliseconds, with 0.1 s (the latency SLO) as
# a bucket boundary so the SLO is read off exactly.
HTTP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VALKEY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0)
UNMATCHED = "unmatched"
"""Route label of requests that matched no route: one series, whatever the path."""

DEFAULT_SAMPLE_RATIO = 0.01
"""1 % of requests without a sampled parent are traced: at the load Locust drives that is still
dozens of traces a second, and a recorded request costs about ten times an unrecorded one
(measured side by side: 10 % sampling took ~15 us more CPU per request than 1 %)."""

ACCESS_LOGGER = "weather_api.access"
"""The `logger` field of access lines."""

ANSWERED = "weather_api.answered"
"""ASGI scope extension set by the server (`weather_api.server`) when it ended a request itself,
e.g. a body with broken framing: `{"status": 400}`. What the app then tries to send never reaches
the client, so this status is recorded instead."""


class Metrics:
    """Every metric of the service, registered in one (injectable) registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Time from request start to the last byte of the response.",
            ["method", "route", "status_code"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "http_server_requests_in_flight",
            "Requests being served now.",
            registry=r,
        )
        # A plain counter read at scrape time: two locked updates per request saved (the event
        # loop's single thread is the only writer).
        self.serving = 0
        self.in_flight.set_function(lambda: self.serving)
        self.accepted = Counter(
            "weather_reports_accepted",
            "Weather reports applied to the aggregates (replays of an Idempotency-Key excluded).",
            ["municipality"],
            registry=r,
        )
        self.rejected = Counter(
            "weather_reports_rejected",
            "Requests to the report endpoints refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.valkey_duration = Histogram(
            "weather_valkey_command_duration_seconds",
            "Duration of one Valkey round trip, deadline included.",
            ["operation"],
            buckets=VALKEY_BUCKETS,
            registry=r,
        )
        self.valkey_errors = Counter(
            "weather_valkey_errors",
            "Valkey calls that failed, by kind of failure.",
            ["operation", "error"],
            registry=r,
        )
        build = Gauge(
            "weather_build_info",
            "Always 1; labels name the running build.",
            ["version", "python"],
            registry=r,
        )
        build.labels(__version__, sys.version.split()[0]).set(1)

    def observe_valkey(self, operation: str, seconds: float, error: str | None) -> None:
        """Record one Valkey call (the store's observer)."""
        self.valkey_duration.labels(operation).observe(seconds)
        if error is not None:
            self.valkey_errors.labels(operation, error).inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _Http(msgspec.Struct):
    """The request, as the access line shows it."""

    method: str
    route: str
    path: str
    status: int


class _AccessLine(msgspec.Struct):
    """The fields of JsonFormatter's lines, then the request's."""

    time: str
    http: _Http
    duration_ms: float
    trace_id: str | None
    span_id: str | None
    level: str = "info"
    logger: str = ACCESS_LOGGER
    message: str = "request"


_ENCODER = msgspec.json.Encoder()


class AccessLog:
    """One JSON line per request, in the format of JsonFormatter, written in bulk.

    Not the logging module: a LogRecord, a formatter and a flushed write per request cost about
    50 us of the service's ~160 us per report (measured with `task bench` against the same
    build with the access log off); this encodes with msgspec into a buffer that is written out
    when it passes 64 KiB, every second (`flush`, from the app's ticker) and at shutdown.
    """

    LIMIT = 65536

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._second = -1
        self._stamp = ""

    def write(self, http: _Http, duration: float, trace_id: str | None, span_id: str | None) -> None:
        """Add one line."""
        now = time.time()
        if (second := int(now)) != self._second:  # the date and time change once a second
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = f"{self._stamp}.{int(now % 1 * 1000):03d}Z"
        line = _AccessLine(stamp, http=http, duration_ms=round(duration * 1000, 3), trace_id=trace_id, span_id=span_id)
        self._buffer += _ENCODER.encode(line)
        self._buffer += b"\n"
        if len(self._buffer) >= self.LIMIT:
            self.flush()

    def flush(self) -> None:
        """Write out what is buffered."""
        if self._buffer:
            stream = self._stream or sys.stderr.buffer
            stream.write(self._buffer)
            stream.flush()
            self._buffer.clear()


class RequestTelemetry:
    """ASGI middleware around the whole app: server span, request metrics, access log line."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        tracer: trace.Tracer,
        access_log: AccessLog | None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._tracer = tracer
        self._access_log = access_log
        self._histograms: dict[tuple[str, str, int], Histogram] = {}

    def around(self, app: ASGIApp) -> RequestTelemetry:
        """The same telemetry around another ASGI app (the server's over-capacity answer)."""
        return RequestTelemetry(app, self._metrics, self._tracer, self._access_log)

    def _histogram(self, method: str, route: str, status: int) -> Histogram:
        # labels() takes a lock and builds a key on every call; the children are cached here.
        key = (method, route, status)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = self._metrics.request_duration.labels(method, route, str(status))
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request inside its span, then record duration, route and status."""
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope["method"]
        parent = _extract(scope["headers"])
        # Named by method until routing names the route (semantic conventions for HTTP spans).
        span = self._tracer.start_span(method, parent, trace.SpanKind.SERVER)
        context = span.get_span_context()
        recording = span.is_recording()
        # The trace context goes back when there is a trace to find (sampled) or the caller
        # sent one; an unsampled trace of our own making names nothing anyone can look up.
        answer_context = context.is_valid and (context.trace_flags.sampled or parent is not None)
        status = 500  # what the client sees if the app fails before answering

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if answer_context:
                    traceparent = (b"traceparent", _traceparent(context).encode())
                    message["headers"] = [*message.get("headers", ()), traceparent]
            await send(message)

        self._metrics.serving += 1
        # Only a recorded span becomes current: children of an unrecorded one are never
        # recorded either (ParentBased), so they need not find it.
        token = otel_context.attach(trace.set_span_in_context(span, parent)) if recording else None
        try:
            await self._app(scope, receive, send_with_context)
        finally:
            if token is not None:
                otel_context.detach(token)
            route = scope.get("path_template") or UNMATCHED
            if (extensions := scope.get("extensions")) and ANSWERED in extensions:
                status = extensions[ANSWERED]["status"]  # type: ignore[assignment]
            if recording:
                _finish(span, method, route, scope["path"], status)
            duration = time.perf_counter() - start
            self._metrics.serving -= 1
            sampled = context.trace_flags.sampled
            trace_id = f"{context.trace_id:032x}" if sampled else None
            self._histogram(method, route, status).observe(duration, {"trace_id": trace_id} if trace_id else None)
            if self._access_log is not None:
                http = _Http(method, route, scope["path"], status)
                self._access_log.write(http, duration, trace_id, f"{context.span_id:016x}" if sampled else None)


def _finish(span: trace.Span, method: str, route: str, path: str, status: int) -> None:
    """Name and describe a recorded server span once the answer is known, and end it."""
    if route != UNMATCHED:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attributes({"http.request.method": method, "url.path": path, "http.response.status_code": status})
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)
    span.end()


_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")


def _extract(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context | None:
    """The caller's trace context from a W3C `traceparent` (and `tracestate`) header, if any."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS}
    return _PROPAGATOR.extract(carrier) if carrier else None


def _traceparent(context: trace.SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def sampler_from(env: Mapping[str, str]) -> Sampler | None:
    """Our default sampler, unless the standard OTEL_TRACES_SAMPLER variable chooses one."""
    if "OTEL_TRACES_SAMPLER" in env:
        return None  # the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG itself
    return ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))


def tracer_provider(env: Mapping[str, str], sampler: Sampler | None = None) -> TracerProvider:
    """A tracer provider configured by the standard OTEL_* variables; no endpoint, no exporter."""
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "weather-api")})
    provider = TracerProvider(resource=resource, sampler=sampler or sampler_from(env))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and env.get("OTEL_TRACES_EXPORTER", "otlp") != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415 - only when exporting
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids when there are any."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "asctime",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        """Render the record and any `extra` fields."""
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        if "trace_id" not in line:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                line["trace_id"] = f"{context.trace_id:032x}"
                line["span_id"] = f"{context.span_id:016x}"
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line, enc_hook=str).decode()


JsonFormatter.converter = time.gmtime


def configure_logging(level: str) -> None:
    """JSON lines on stderr for our loggers and uvicorn's (the access log is `AccessLog`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
