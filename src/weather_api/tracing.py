"""Tracing: the tracer provider, the sampler, W3C trace context.

What comes from the libraries, and what is ours and why:

- Tracing uses the OpenTelemetry SDK (tracer provider, ParentBased(TraceIdRatio) sampler, W3C
  propagator, OTLP exporter). One piece is ours: `RateLimited`, the SDK sampler interface
  filled with a token bucket (the Python SDK has none), composed into the SDK's ParentBased
  for callers' sampled `traceparent`s, so that clients cannot raise the tracing rate (and its
  cost) above a ceiling; tests/test_sampling.py tries it against a real process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

log = logging.getLogger("weather_api")

DEFAULT_SAMPLE_RATIO = 0.01
"""1 % of requests without a sampled parent are traced: at the load Locust drives that is still
dozens of traces a second, and a recorded request costs about ten times an unrecorded one
(measured side by side: 10 % sampling took ~15 us more CPU per request than 1 %)."""

_PROPAGATOR = TraceContextTextMapPropagator()
ROOT = otel_context.Context()
"""The empty context: a server span without a caller's trace starts a new trace from it."""
_TRACE_HEADERS = (b"traceparent", b"tracestate")


def extract(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context | None:
    """The caller's trace context from a W3C `traceparent` (and `tracestate`) header, if any."""
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS}
    return _PROPAGATOR.extract(carrier) if carrier else None


def traceparent(context: trace.SpanContext) -> str:
    """The W3C `traceparent` header value of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class RateLimited(Sampler):
    """Samples at most `per_second` traces a second, in bursts of at most one second's worth.

    A token bucket. The OpenTelemetry Python SDK has no rate-limiting sampler (Jaeger's remote
    sampler and Java's contrib have one); this one only decides, and is composed into the SDK's
    `ParentBased` as the sampler for callers' sampled `traceparent`s, so that what a client
    sends cannot raise the share of requests traced above the ceiling.
    """

    def __init__(self, per_second: float) -> None:
        self._rate = per_second
        self._capacity = max(per_second, 1.0) if per_second > 0 else 0.0
        self._tokens = self._capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()  # samplers may be called from any thread

    def should_sample(  # noqa: PLR0913, PLR0917 - the SDK's signature
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,  # noqa: ARG002
        name: str,  # noqa: ARG002
        kind: trace.SpanKind | None = None,  # noqa: ARG002
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,  # noqa: ARG002
        trace_state: trace.TraceState | None = None,  # noqa: ARG002
    ) -> SamplingResult:
        """Sample while the bucket holds a token."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            sample = self._tokens >= 1
            if sample:
                self._tokens -= 1
        parent_state = trace.get_current_span(parent_context).get_span_context().trace_state
        if sample:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)
        return SamplingResult(Decision.DROP, None, parent_state)

    def get_description(self) -> str:
        """Name and ceiling, as the SDK's samplers describe themselves."""
        return f"RateLimited{{{self._rate}/s}}"


def sampler_from(env: Mapping[str, str], sampled_parents_per_second: float) -> Sampler | None:
    """Our sampler, unless the standard OTEL_TRACES_SAMPLER variable chooses another kind.

    `parentbased_traceidratio` (the default): a request without a trace context is traced with
    probability `DEFAULT_SAMPLE_RATIO` (or OTEL_TRACES_SAMPLER_ARG, when OTEL_TRACES_SAMPLER
    names this sampler); a caller's unsampled `traceparent` is followed, and its sampled
    `traceparent` too, but for at most `sampled_parents_per_second` traces a second.
    """
    kind = env.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio").strip().lower()
    if kind != "parentbased_traceidratio":
        return None  # the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG itself
    ratio = DEFAULT_SAMPLE_RATIO
    if "OTEL_TRACES_SAMPLER" in env and (arg := env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()):
        try:
            ratio = float(arg)
            TraceIdRatioBased(ratio)  # raises outside 0..1
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio from 0 to 1; using %s", arg, DEFAULT_SAMPLE_RATIO)
            ratio = DEFAULT_SAMPLE_RATIO
    return ParentBased(TraceIdRatioBased(ratio), remote_parent_sampled=RateLimited(sampled_parents_per_second))


def tracer_provider(
    env: Mapping[str, str],
    sampler: Sampler | None = None,
    *,
    sampled_parents_per_second: float,
) -> TracerProvider:
    """A tracer provider configured by the standard OTEL_* variables; no endpoint, no exporter."""
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "weather-api")})
    provider = TracerProvider(resource=resource, sampler=sampler or sampler_from(env, sampled_parents_per_second))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and env.get("OTEL_TRACES_EXPORTER", "otlp") != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415 - only when exporting
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
