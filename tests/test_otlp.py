"""Traces leave the service: a real OTLP/HTTP receiver on loopback, and the traceparent rules.

The receiver is a small HTTP server that decodes what the service's exporter posts to
`/v1/traces` as the collector would, with the `opentelemetry-proto` message types
(ExportTraceServiceRequest); nothing in the service is replaced. The service runs as
`weather-api serve` with the standard OTEL_* variables.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.conftest import Api, wait_until
from tests.otlp import OtlpReceiver
from tests.support import report, send

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP trace receiver (protobuf) on a loopback port."""
    with OtlpReceiver() as received:
        yield received


def test_spans_reach_an_otlp_receiver_with_the_callers_trace(
    start_api: Callable[..., Api], valkey_url: str, receiver: OtlpReceiver
) -> None:
    """Default sampler, a sampled caller: the server span (caller's child) and its Valkey span arrive over OTLP."""
    api = start_api(
        valkey_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="weather-api-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    response = send(api, report("mixco", 20, 50), traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert response.status_code == 201
    read = httpx.get(api.url + "/stats", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, timeout=10)
    assert read.status_code == 200
    wait_until(lambda: bool(receiver.named("valkey record") and receiver.named("valkey read")), 10, "the spans")
    (server,) = receiver.named("POST /api/weather")
    (client,) = receiver.named("valkey record")
    assert (server.service, server.kind, server.trace_id, server.parent_span_id) == (
        "weather-api-test",
        Span.SPAN_KIND_SERVER,
        TRACE_ID,
        PARENT_ID,
    )
    assert (client.kind, client.trace_id, client.parent_span_id) == (Span.SPAN_KIND_CLIENT, TRACE_ID, server.span_id)
    (reader,) = receiver.named("valkey read")
    assert reader.parent_span_id == receiver.named("GET /stats")[0].span_id
    assert server.status == client.status == reader.status == Status.STATUS_CODE_UNSET  # nothing failed
    assert _sampled(response.headers["traceparent"], f"00-{TRACE_ID}-{server.span_id}")


def test_traces_exporter_none_sends_nothing_even_with_an_endpoint(
    start_api: Callable[..., Api], valkey_url: str, receiver: OtlpReceiver
) -> None:
    """OTEL_TRACES_EXPORTER=none: sampled requests, an endpoint set, and yet no export, not even at shutdown."""
    api = start_api(
        valkey_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_TRACES_EXPORTER="none",
        OTEL_TRACES_SAMPLER="always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    for _ in range(3):
        assert send(api, report("mixco", 20, 50)).status_code == 201
    api.process.send_signal(signal.SIGTERM)  # shutting down flushes whatever an exporter holds
    assert api.process.wait(timeout=30) == 128 + signal.SIGTERM
    assert receiver.requests == 0


def _sampled(traceparent: str, prefix: str) -> bool:
    """Whether `traceparent` starts with `prefix` and carries the sampled flag (other flags may be set)."""
    head, _, flags = traceparent.rpartition("-")
    return head == prefix and int(flags, 16) & 1 == 1


def _traceparent(api: Api, sent: str | None) -> str | None:
    headers = {"traceparent": sent} if sent else {}
    response = httpx.get(api.url + "/health", headers=headers, timeout=10)
    assert response.status_code == 200
    return response.headers.get("traceparent")


def test_traceparent_comes_back_when_the_request_is_traced_or_the_caller_sent_one(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """Not traced and none sent: no header. Sent one (sampled or not): the same trace back. Traced: its trace."""
    never = start_api(valkey_url, OTEL_TRACES_SAMPLER="always_off")
    assert _traceparent(never, None) is None
    back = _traceparent(never, f"00-{TRACE_ID}-{PARENT_ID}-00")
    assert back is not None
    version, trace_id, span_id, flags = back.split("-")
    assert (version, trace_id, int(flags, 16) & 1) == ("00", TRACE_ID, 0)
    assert span_id != PARENT_ID  # the server span's id, not the caller's

    always = start_api(valkey_url, OTEL_TRACES_SAMPLER="always_on")
    traced = _traceparent(always, None)
    assert traced is not None
    version, trace_id, span_id, flags = traced.split("-")
    assert (version, len(trace_id), len(span_id), int(flags, 16) & 1) == ("00", 32, 16, 1)
    assert trace_id != TRACE_ID
