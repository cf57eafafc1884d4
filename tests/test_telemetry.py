"""Metrics, traces and logs: exemplars that name real traces, bounded series, trace context."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as classic_families

from tests.conftest import Api
from weather_api.app import create_app
from weather_api.settings import Settings
from weather_api.telemetry import Metrics
from weather_api.tracing import tracer_provider

REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class Traced:
    """An app with its own registry and an in-memory span exporter, sampling everything."""

    def __init__(self, valkey_url: str) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = Metrics()
        settings = Settings(valkey_url=valkey_url, access_log=False)
        self.app: Litestar = create_app(settings, metrics=self.metrics, tracer_provider=provider)

    def run(self, scenario: Callable[[AsyncTestClient[Litestar]], Awaitable[Any]]) -> Any:  # noqa: ANN401
        """Run a scenario against the app (lifespan included) and return its result."""

        async def main() -> Any:  # noqa: ANN401
            async with AsyncTestClient(self.app) as client:
                return await scenario(client)

        return asyncio.run(main())

    def server_spans(self) -> list[ReadableSpan]:
        """Finished server spans."""
        return [s for s in self.spans.get_finished_spans() if s.kind == SpanKind.SERVER]


def _samples(metrics: Metrics) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every series of the request and report metrics (name and labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in metrics.registry.collect()
        if family.name.startswith(("http_server_", "weather_reports_"))
        for s in family.samples
    }


def test_exemplars_carry_the_trace_id_of_the_request(valkey_url: str) -> None:
    """An OpenMetrics scrape shows an exemplar whose trace_id is the request's server span's."""
    traced = Traced(valkey_url)

    async def scenario(client: AsyncTestClient[Litestar]) -> httpx.Response:
        assert (await client.post("/api/weather", json=REPORT)).status_code == 201
        return await client.get("/metrics", headers={"Accept": OPENMETRICS})

    scrape = traced.run(scenario)
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = [
        s.exemplar
        for family in text_string_to_metric_families(scrape.text)
        if family.name == "http_server_request_duration_seconds"
        for s in family.samples
        if s.exemplar and s.labels.get("route") == "/api/weather"
    ]
    (post_span,) = [s for s in traced.server_spans() if s.name == "POST /api/weather"]
    assert len(exemplars) == 1
    assert exemplars[0].labels["trace_id"] == f"{post_span.context.trace_id:032x}"


def test_traceparent_in_makes_child_spans_and_comes_back_out(valkey_url: str) -> None:
    """The server span is the caller's child, the Valkey span the server span's child."""
    traced = Traced(valkey_url)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    async def scenario(client: AsyncTestClient[Litestar]) -> httpx.Response:
        return await client.post("/api/weather", json=REPORT, headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})

    response = traced.run(scenario)
    assert response.status_code == 201
    (server,) = traced.server_spans()
    assert server.name == "POST /api/weather"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/weather"
    assert f"{server.context.trace_id:032x}" == trace_id
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == parent_id
    (valkey_span,) = [s for s in traced.spans.get_finished_spans() if s.name == "valkey record"]
    assert valkey_span.kind == SpanKind.CLIENT
    assert valkey_span.parent is not None
    assert valkey_span.parent.span_id == server.context.span_id
    assert response.headers["traceparent"] == f"00-{trace_id}-{server.context.span_id:016x}-01"


def test_unrouted_requests_get_a_span_named_by_method_only(valkey_url: str) -> None:
    """A 404's span name does not carry the raw path (it would be unbounded)."""
    traced = Traced(valkey_url)
    traced.run(lambda client: client.get("/no/such/thing"))
    (server,) = traced.server_spans()
    assert server.name == "GET"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404


def test_unknown_paths_and_bogus_municipalities_add_a_fixed_number_of_series(valkey_url: str) -> None:
    """20,000 distinct bad paths and names add no more than a few series."""
    traced = Traced(valkey_url)

    async def scenario(client: AsyncTestClient[Litestar]) -> None:
        await client.post("/api/weather", json=REPORT)
        await client.get("/api/municipalities/mixco")
        await client.get("/no/such/path")
        await client.post("/api/weather", json={**REPORT, "municipality": "bogus"})
        await client.get("/api/municipalities/bogus")
        before = _samples(traced.metrics)
        for i in range(10_000):
            assert (await client.get(f"/unknown/{i}")).status_code == 404
            assert (await client.post("/api/weather", json={**REPORT, "municipality": f"bogus-{i}"})).status_code == 400
            assert (await client.get(f"/api/municipalities/bogus-{i}")).status_code == 404
        after = _samples(traced.metrics)
        assert len(after - before) <= 10, sorted(after - before)

    traced.run(scenario)


def test_404_405_and_rejections_are_counted(valkey_url: str) -> None:
    """Litestar's Prometheus plugin misses these; ours counts each with a bounded route label."""
    traced = Traced(valkey_url)

    async def scenario(client: AsyncTestClient[Litestar]) -> None:
        await client.get("/nowhere")
        await client.delete("/api/weather")
        await client.post("/api/weather", content=b"{}", headers={"Content-Type": "text/plain"})
        await client.post("/api/weather", json={**REPORT, "temperature": "hot"})
        await client.post(
            "/api/weather", content=b"[" + b"1," * 80_000 + b"1]", headers={"Content-Type": "application/json"}
        )

    traced.run(scenario)
    registry = traced.metrics.registry
    assert (
        registry.get_sample_value(
            "http_server_request_duration_seconds_count", {"method": "GET", "route": "unmatched", "status_code": "404"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "http_server_request_duration_seconds_count",
            {"method": "DELETE", "route": "unmatched", "status_code": "405"},
        )
        == 1
    )
    for reason in ("unsupported_media_type", "invalid_report", "body_too_large"):
        assert registry.get_sample_value("weather_reports_rejected_total", {"reason": reason}) == 1, reason
    for status in ("400", "413", "415"):
        labels = {"method": "POST", "route": "/api/weather", "status_code": status}
        assert registry.get_sample_value("http_server_request_duration_seconds_count", labels) == 1, status


def test_two_apps_in_one_process_keep_separate_metrics(valkey_url: str) -> None:
    """Each app has its own registry: no clash at creation, no counts leaking between them."""
    first, second = Traced(valkey_url), Traced(valkey_url)
    first.run(lambda client: client.post("/api/weather", json=REPORT))
    labels = {"municipality": "chinautla"}
    assert first.metrics.registry.get_sample_value("weather_reports_accepted_total", labels) == 1
    assert second.metrics.registry.get_sample_value("weather_reports_accepted_total", labels) is None


def test_metrics_are_classic_text_unless_openmetrics_is_asked_for(valkey_url: str) -> None:
    """Plain scrapers get the 0.0.4 text format, without exemplars; build info is there."""
    traced = Traced(valkey_url)

    async def scenario(client: AsyncTestClient[Litestar]) -> httpx.Response:
        await client.post("/api/weather", json=REPORT)
        return await client.get("/metrics")

    scrape = traced.run(scenario)
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# {" not in scrape.text
    names = {f.name for f in classic_families(scrape.text)}
    expected = {
        "http_server_request_duration_seconds",
        "http_server_requests_in_flight",
        "weather_reports_accepted",
        "weather_valkey_command_duration_seconds",
        "weather_build_info",
        "process_cpu_seconds",
    }
    assert expected <= names


def test_exporter_comes_from_the_standard_variables() -> None:
    """No OTEL_* variables: no exporter; an endpoint adds OTLP (the sampler: tests/test_sampling.py)."""
    quiet = tracer_provider({}, sampled_parents_per_second=10)
    assert quiet._active_span_processor._span_processors == ()  # noqa: SLF001 - no public accessor
    exporting = tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, sampled_parents_per_second=10)
    (processor,) = exporting._active_span_processor._span_processors  # noqa: SLF001
    assert isinstance(processor, BatchSpanProcessor)
    exporting.shutdown()


def test_valkey_errors_are_counted_and_ready_fails(valkey_url: str) -> None:
    """With Valkey unreachable: /ready 503, /health 200, connection errors counted."""
    del valkey_url
    metrics = Metrics()
    app = create_app(Settings(valkey_url="redis://127.0.0.1:9", access_log=False, telemetry=True), metrics=metrics)

    async def main() -> tuple[int, int]:
        async with AsyncTestClient(app) as client:
            return (await client.get("/ready")).status_code, (await client.get("/health")).status_code

    assert asyncio.run(main()) == (503, 200)
    errors = metrics.registry.get_sample_value(
        "weather_valkey_errors_total", {"operation": "load", "error": "connection"}
    )
    assert errors is not None
    assert errors >= 1


@pytest.mark.parametrize("access_log", ["on", "off"])
def test_logs_are_json_lines_with_trace_ids(start_api: Callable[..., Api], valkey_url: str, access_log: str) -> None:
    """One JSON access line per request with trace and span ids, or none when turned off."""
    api = start_api(valkey_url, WEATHER_ACCESS_LOG=access_log, OTEL_TRACES_SAMPLER="always_on")
    for _ in range(3):
        httpx.post(api.url + "/api/weather", json=REPORT)
    api.process.terminate()
    api.process.wait(timeout=30)
    lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
    assert lines, api.output()
    requests = [line for line in lines if line["logger"] == "weather_api.access"]
    posts = [r for r in requests if r["http"]["route"] == "/api/weather"]
    if access_log == "off":
        assert requests == []
        return
    assert len(posts) == 3
    assert all(len(p["trace_id"]) == 32 and len(p["span_id"]) == 16 for p in posts)
    assert len({p["trace_id"] for p in posts}) == 3
