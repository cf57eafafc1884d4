"""Metrics, traces and logs for the service.

What comes from the libraries, and what is ours and why:

- Tracing is Litestar's OpenTelemetryPlugin (the OpenTelemetry ASGI middleware around the whole
  app, so 404s get spans too). It names a span before routing, from the raw path: unbounded
  span names. We name it `METHOD` at the start, as the semantic conventions say for unrouted
  requests, and rename it `METHOD /route/{template}` with `http.route` once Litestar has routed
  it (`name_span`, a before_request hook).
- Litestar's PrometheusPlugin is not used, for three reasons, each covered by a test in
  tests/test_telemetry.py: it runs after routing, so 404 and 405 are never counted; it labels by
  raw path unless `group_path` is set; and it keeps its metric objects in a class-level dict
  bound to the global registry, so a second app in one process (every test) reuses or clashes
  with the first one's metrics. `RequestMetrics` is the small ASGI middleware that replaces it;
  metric objects live in a `Metrics` instance with its own registry.
- `/metrics` content negotiation (classic text, or OpenMetrics with exemplars) is
  prometheus-client's own `choose_encoder`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from litestar.enums import ScopeType
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.instrumentation.propagators import (
    ResponsePropagator,
    TraceResponsePropagator,
    set_global_response_propagator,
)
from opentelemetry.propagators.textmap import CarrierT, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
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

SPAN_KEY = "weather.span_context"
"""Scope key where the tracing hook leaves the server span's context for metrics and logs."""

DEFAULT_SAMPLE_RATIO = 0.1


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


class RequestMetrics:
    """ASGI middleware around the whole app: request metrics and the access log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: logging.Logger | None) -> None:
        self._app = app
        self._metrics = metrics
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then record its duration, route and status."""
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self._metrics.in_flight.inc()
        try:
            await self._app(scope, receive, send_status)
        finally:
            duration = time.perf_counter() - start
            self._metrics.in_flight.dec()
            route = scope.get("path_template") or UNMATCHED
            span: trace.SpanContext | None = scope.get(SPAN_KEY)  # type: ignore[assignment]
            trace_id = span_id = None
            if span is not None and span.trace_flags.sampled:
                trace_id, span_id = f"{span.trace_id:032x}", f"{span.span_id:016x}"
            exemplar = {"trace_id": trace_id} if trace_id else None
            method = scope["method"]
            self._metrics.request_duration.labels(method, route, str(status)).observe(duration, exemplar)
            if self._access_log is not None:
                self._access_log.info(
                    "request",
                    extra={
                        "http": {"method": method, "route": route, "path": scope["path"], "status": status},
                        "duration_ms": round(duration * 1000, 3),
                        "trace_id": trace_id,
                        "span_id": span_id,
                    },
                )


class TraceparentResponsePropagator(ResponsePropagator):
    """Returns the server span's context as `traceparent` (and the draft `traceresponse`)."""

    def __init__(self) -> None:
        self._traceparent = TraceContextTextMapPropagator()
        self._traceresponse = TraceResponsePropagator()

    def inject(self, carrier: CarrierT, context: Any = None, setter: Setter[CarrierT] | None = None) -> None:  # noqa: ANN401
        """Write both headers into the response headers."""
        if setter is None:  # pragma: no cover - the ASGI middleware always passes its setter
            return
        self._traceparent.inject(carrier, context, setter)
        self._traceresponse.inject(carrier, context, setter)


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


def _remember_span(span: trace.Span, scope: dict[str, Any]) -> None:
    scope[SPAN_KEY] = span.get_span_context()


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    # Before routing only the method is known; see name_span.
    return str(scope.get("method", scope["type"])), {}


def name_span(request: Any) -> None:  # noqa: ANN401 - a Litestar before_request hook
    """Name the server span after the route template, now that routing is done."""
    span = trace.get_current_span()
    if span.is_recording():
        template = request.scope["path_template"]
        span.update_name(f"{request.method} {template}")
        span.set_attribute(HTTP_ROUTE, template)


def otel_config(provider: TracerProvider) -> OpenTelemetryConfig:
    """Litestar's OpenTelemetry plugin configured for bounded names and low overhead."""
    set_global_response_propagator(TraceparentResponsePropagator())  # type: ignore[no-untyped-call]
    return OpenTelemetryConfig(
        tracer_provider=provider,
        scope_span_details_extractor=_span_details,
        server_request_hook_handler=_remember_span,
        exclude_spans=["receive", "send"],
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids when there are any."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

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
        return json.dumps(line, default=str)


JsonFormatter.converter = time.gmtime


def configure_logging(level: str) -> None:
    """JSON lines on stderr for our loggers and uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
