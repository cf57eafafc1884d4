"""Sampling: about 1 % of requests traced, callers' sampled `traceparent`s followed up to a ceiling.

The in-process tests drive the tracer provider the service builds (`tracing.tracer_provider`,
as `create_app` calls it) with many spans, so the bounds are wide in standard deviations yet
tight enough to catch a wrong ratio; the others try the same against a real `weather-api serve`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tests.conftest import Api
from tests.test_cli import _serve_and_fail
from weather_api.settings import Settings
from weather_api.tracing import tracer_provider

RATIO = 0.01
"""The documented default share of requests traced (docs/architecture.md, OTEL row)."""
CEILING = Settings().sampled_parents_per_second
RARE_FOR_RATIO = 0xF0F0F0F0F0F0F0F0_FFFFFFFFFFFFFFFF
"""A trace id whose low 64 bits are the largest: a ratio sampler at any ratio below 1 drops it."""
COMMON_FOR_RATIO = 0xF0F0F0F0F0F0F0F0_0000000000000001
"""A trace id whose low 64 bits are tiny: a ratio sampler at any ratio above 0 keeps it."""


def _provider(env: dict[str, str] | None = None, ceiling: float = CEILING) -> TracerProvider:
    return tracer_provider(env or {}, sampled_parents_per_second=ceiling)


def _caller(trace_id: int, sampled: bool) -> Context:
    """The context a caller's `traceparent` becomes: a remote parent, sampled or not."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(trace_id, 0x00F067AA0BA902B7, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _sampled(provider: TracerProvider, n: int, parent: Context | None = None) -> int:
    tracer = provider.get_tracer("test")
    count = 0
    for _ in range(n):
        span = tracer.start_span("GET /health", parent, trace.SpanKind.SERVER)
        count += span.get_span_context().trace_flags.sampled
        span.end()
    return count


def test_about_one_percent_of_requests_without_a_trace_context_are_traced() -> None:
    """20,000 root spans: 200 expected at 1 %; 100..300 is over 7 standard deviations either side."""
    provider = _provider()
    assert 100 <= _sampled(provider, 20_000) <= 300
    provider.shutdown()


def test_a_sampled_caller_is_followed_and_an_unsampled_one_is_not() -> None:
    """Within the ceiling the caller decides, whatever its trace id would make of the ratio."""
    provider = _provider()
    assert _sampled(provider, 5, _caller(RARE_FOR_RATIO, sampled=True)) == 5
    assert _sampled(provider, 5, _caller(COMMON_FOR_RATIO, sampled=False)) == 0
    provider.shutdown()


def test_sampled_callers_cannot_raise_the_rate_above_the_ceiling() -> None:
    """5,000 sampled callers as fast as they come: at most the ceiling's burst plus its rate over the time taken."""
    provider = _provider()
    start = time.monotonic()
    followed = _sampled(provider, 5_000, _caller(RARE_FOR_RATIO, sampled=True))
    elapsed = time.monotonic() - start
    assert CEILING <= followed <= CEILING + CEILING * elapsed + 1
    provider.shutdown()


def test_a_zero_ceiling_follows_no_sampled_caller() -> None:
    """`WEATHER_SAMPLED_PARENTS_PER_SECOND=0`: only the service's own ratio decides."""
    provider = _provider(ceiling=0)
    assert _sampled(provider, 100, _caller(RARE_FOR_RATIO, sampled=True)) == 0
    provider.shutdown()


def test_the_standard_ratio_variable_keeps_the_ceiling() -> None:
    """OTEL_TRACES_SAMPLER=parentbased_traceidratio with ARG 0.5: half the roots, callers still capped."""
    provider = _provider({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert 4_000 <= _sampled(provider, 10_000) <= 6_000
    start = time.monotonic()
    followed = _sampled(provider, 5_000, _caller(RARE_FOR_RATIO, sampled=True))
    assert followed <= CEILING + CEILING * (time.monotonic() - start) + 1
    provider.shutdown()


def test_a_ratio_outside_0_to_1_falls_back_to_one_percent_not_to_everything() -> None:
    """OTEL_TRACES_SAMPLER_ARG=2 is refused (the SDK would trace every request); 1 % stays."""
    provider = _provider({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"})
    assert 100 <= _sampled(provider, 20_000) <= 300
    provider.shutdown()


def _traceparents(api: Api, n: int, traceparent: str | None) -> list[str | None]:
    """The `traceparent` of each of `n` answers to GET /health (None when there is none)."""
    headers = {"traceparent": traceparent} if traceparent else {}
    with httpx.Client(base_url=api.url, timeout=10) as client:
        return [client.get("/health", headers=headers).headers.get("traceparent") for _ in range(n)]


def _sampled_flag(traceparent: str) -> bool:
    """The sampled bit of a `traceparent`'s flags (W3C Trace Context; other bits may be set)."""
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 0x01)


def test_a_real_process_traces_about_one_percent(start_api: Callable[..., Api], valkey_url: str) -> None:
    """2,000 requests without a trace context: 20 expected; 1..60 answers carry a (sampled) traceparent."""
    api = start_api(valkey_url)
    answers = [t for t in _traceparents(api, 2_000, None) if t is not None]
    assert 1 <= len(answers) <= 60
    assert all(_sampled_flag(t) for t in answers)


def test_a_real_process_follows_sampled_callers_only_up_to_the_ceiling(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """300 requests with `traceparent ...-01` and a ceiling of 5 a second: at most 5 + 5 per second traced."""
    api = start_api(valkey_url, WEATHER_SAMPLED_PARENTS_PER_SECOND="5")
    trace_id = f"{RARE_FOR_RATIO:032x}"
    start = time.monotonic()
    answers = _traceparents(api, 300, f"00-{trace_id}-00f067aa0ba902b7-01")
    elapsed = time.monotonic() - start
    assert all(t is not None and t.startswith(f"00-{trace_id}-") for t in answers)
    followed = sum(t is not None and _sampled_flag(t) for t in answers)
    assert 5 <= followed <= 5 + 5 * elapsed + 1, (followed, elapsed)


def test_a_negative_ceiling_is_a_settings_error() -> None:
    """WEATHER_SAMPLED_PARENTS_PER_SECOND=-1 stops `serve` with exit 2, naming the variable."""
    result = _serve_and_fail(WEATHER_SAMPLED_PARENTS_PER_SECOND="-1")
    assert "WEATHER_SAMPLED_PARENTS_PER_SECOND" in result.stderr
