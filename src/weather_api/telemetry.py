"""Request telemetry: metrics, the server span, the access line (tracing: `tracing`, logs: `logs`).

What comes from the libraries, and what is ours and why:

- Litestar's OpenTelemetryPlugin (the OpenTelemetry ASGI middleware) is not used: it cost
  about 140 us of CPU per request here, half of what serving a report costs (measured with
  `python bench/overhead.py`, see docs/performance.md), and it names the span from the raw path
  before routing. `RequestTelemetry` starts the server span, renames it
  `METHOD /route/{template}` once Litestar has routed the request, and returns `traceparent` on
  the response.
- Litestar's PrometheusPlugin is not used, for three reasons, each covered by a test in
  tests/test_telemetry.py: it runs after routing, so 404 and 405 are never counted; it labels by
  raw path unless `group_path` is set; and it keeps its metric objects in a class-level dict
  bound to the global registry, so a second app in one process (every test) reuses or clashes
  with the first one's metrics. `RequestTelemetry` is the small ASGI middleware that replaces it;
  metric objects live in a `Metrics` instance with its own registry.
- Accounting follows OpenTelemetry's HTTP semantic conventions where they speak (unknown
  methods are `_OTHER`, their spans `HTTP`), and nginx's where they do not: a client that
  disconnects before its answer is complete is recorded as 499, never as the 500 Litestar
  makes of it (tests/test_accounting.py).
- `/metrics` content negotiation (classic text, or OpenMetrics with exemplars) is
  prometheus-client's own `choose_encoder`.
"""

from __future__ import annotations

import sys
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry import trace
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
from weather_api.logs import AccessLog, HttpFields
from weather_api.tracing import ROOT, extract, traceparent

# Fit for a service whose p99 should be a few milliseconds, with 0.1 s (the latency SLO) as
# a bucket boundary so the SLO is read off exactly.
HTTP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VALKEY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0)
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED = "unmatched"
"""Route label of requests that matched no route: one series, whatever the path."""

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})
"""Methods named as sent in labels and span names; any other is `OTHER_METHOD`.

OpenTelemetry's HTTP semantic conventions (`http.request.method`): RFC 9110's methods, PATCH
(RFC 5789) and QUERY, matched exactly (methods are case-sensitive). The same list as
`opentelemetry.util.http.sanitize_method`, which is not used because it upper-cases first (so
`get` would be counted as GET) and reads the environment on every call."""

OTHER_METHOD = "_OTHER"
"""The `method` label and `http.request.method` of any method not in `KNOWN_METHODS`."""

CLIENT_CLOSED = 499
"""Status recorded when the client disconnected before the response was complete (nginx's)."""

MAX_LOGGED_PATH = 256
"""Characters of the path (and method) kept in access lines and spans; longer ones are cut."""

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
        self._accepted: dict[str, Counter] = {}
        self._valkey: dict[str, Histogram] = {}
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
        self.loop_lag = Histogram(
            "weather_event_loop_lag_seconds",
            "How late the event loop ran a 50 ms timer; the rate of the sum is the share of time it was held.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        build = Gauge(
            "weather_build_info",
            "Always 1; labels name the running build.",
            ["version", "python"],
            registry=r,
        )
        build.labels(__version__, sys.version.split()[0]).set(1)

    def accepted_in(self, municipality: str) -> Counter:
        """The accepted-reports counter of one (validated, so bounded) municipality.

        `labels()` takes a lock and builds a key on every call; the children are cached here.
        """
        child = self._accepted.get(municipality)
        if child is None:
            child = self._accepted[municipality] = self.accepted.labels(municipality)
        return child

    def observe_valkey(self, operation: str, seconds: float, error: str | None) -> None:
        """Record one Valkey call (the store's observer); operations are the store's few names."""
        child = self._valkey.get(operation)
        if child is None:
            child = self._valkey[operation] = self.valkey_duration.labels(operation)
        child.observe(seconds)
        if error is not None:
            self.valkey_errors.labels(operation, error).inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


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
        sent_method = scope["method"]
        method = sent_method if sent_method in KNOWN_METHODS else OTHER_METHOD
        parent = extract(scope["headers"])
        # Named by method until routing names the route (semantic conventions for HTTP spans).
        # Without a caller's context, a new trace: the empty context says so (and spares the SDK
        # two lookups of the current one, ~0.3 us).
        span = self._tracer.start_span(_span_name(method, None), parent or ROOT, trace.SpanKind.SERVER)
        context = span.get_span_context()
        recording = span.is_recording()
        # The trace context goes back when there is a trace to find (sampled) or the caller
        # sent one; an unsampled trace of our own making names nothing anyone can look up.
        answer_context = context.is_valid and (context.trace_flags.sampled or parent is not None)
        exchange = _Exchange(receive, send, traceparent(context).encode() if answer_context else None)
        self._metrics.serving += 1
        # Only a recorded span becomes current: children of an unrecorded one are never
        # recorded either (ParentBased), so they need not find it.
        token = otel_context.attach(trace.set_span_in_context(span, parent or ROOT)) if recording else None
        try:
            await self._app(scope, exchange.receive, exchange.send)
        finally:
            if token is not None:
                otel_context.detach(token)
            status = exchange.outcome()
            route = scope.get("path_template") or UNMATCHED
            path = _bounded(scope["path"])
            if (extensions := scope.get("extensions")) and ANSWERED in extensions:
                status = extensions[ANSWERED]["status"]  # type: ignore[assignment]
            if recording:
                _finish(span, sent_method, route, path, status)
            duration = time.perf_counter() - start
            self._metrics.serving -= 1
            sampled = context.trace_flags.sampled
            trace_id = f"{context.trace_id:032x}" if sampled else None
            self._histogram(method, route, status).observe(duration, {"trace_id": trace_id} if trace_id else None)
            if self._access_log is not None:
                http = HttpFields(_bounded(sent_method), route, path, status)
                self._access_log.write(http, duration, trace_id, f"{context.span_id:016x}" if sampled else None)


class _Exchange:
    """One request's ASGI messages as the middleware watches them: the status, and a client gone early."""

    __slots__ = ("_complete", "_gone", "_receive", "_send", "_status", "_traceparent")

    def __init__(self, receive: Receive, send: Send, traceparent: bytes | None) -> None:
        self._receive = receive
        self._send = send
        self._traceparent = traceparent
        self._status = 500  # what the client sees if the app fails before answering
        self._complete = False  # the last byte of the answer went to the server
        self._gone = False  # the server said the client disconnected before that

    async def receive(self) -> ReceiveMessage:
        """The server's message, noting a disconnect that came before the answer was complete."""
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self._complete:
            self._gone = True
        return message

    async def send(self, message: Message) -> None:
        """Note the status and the end of the answer; add `traceparent` to its head."""
        if message["type"] == "http.response.start":
            self._status = message["status"]
            if self._traceparent is not None:
                message["headers"] = [*message.get("headers", ()), (b"traceparent", self._traceparent)]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self._complete = True
        await self._send(message)

    def outcome(self) -> int:
        """The status to record.

        A client that left before its answer was complete received none, whatever the app made
        of it (Litestar raises a 500 when the client goes while it reads the body): nginx's 499,
        which is no 5xx and so stays out of the availability SLO.
        """
        return CLIENT_CLOSED if self._gone else self._status


def _finish(span: trace.Span, sent_method: str, route: str, path: str, status: int) -> None:
    """Name and describe a recorded server span once the answer is known, and end it."""
    method = sent_method if sent_method in KNOWN_METHODS else OTHER_METHOD
    if route != UNMATCHED:
        span.update_name(_span_name(method, route))
        span.set_attribute("http.route", route)
    if method == OTHER_METHOD:
        span.set_attribute("http.request.method_original", _bounded(sent_method))
    span.set_attributes({"http.request.method": method, "url.path": path, "http.response.status_code": status})
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)
    span.end()


def _span_name(method: str, route: str | None) -> str:
    """`{method} {route}`, where an unknown method reads `HTTP` (semantic conventions, span name)."""
    name = "HTTP" if method == OTHER_METHOD else method
    return f"{name} {route}" if route else name


def _bounded(text: str) -> str:
    """At most `MAX_LOGGED_PATH` characters of a path (or method) for a log line or a span."""
    return text if len(text) <= MAX_LOGGED_PATH else text[:MAX_LOGGED_PATH] + "..."
