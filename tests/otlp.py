"""A real OTLP/HTTP trace receiver for tests: what the service's exporter sends, decoded.

The protocol is the OpenTelemetry Collector's (`POST /v1/traces`, an `ExportTraceServiceRequest`
protobuf); the messages come from `opentelemetry-proto`, which the service's OTLP exporter uses
to encode them.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Span:
    """The parts of a received span the tests look at."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    status: int
    service: str
    attributes: dict[str, Any]


def _value(value: Any) -> Any:  # noqa: ANN401 - an AnyValue message
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(attributes: Any) -> dict[str, Any]:  # noqa: ANN401 - repeated KeyValue messages
    return {a.key: _value(a.value) for a in attributes}


class OtlpReceiver:
    """Listens on a loopback port; `spans()` returns every span received so far."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self.requests = 0
        """Export requests received (on the collector's path, as protobuf)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status = 404
                if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                    receiver.add(ExportTraceServiceRequest.FromString(body))
                    status = 200
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                del args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The collector's base URL (OTEL_EXPORTER_OTLP_ENDPOINT: the exporter adds /v1/traces)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def endpoint(self) -> str:
        """The traces URL to give the exporter (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)."""
        return f"{self.url}/v1/traces"

    def add(self, request: ExportTraceServiceRequest) -> None:
        """Keep the spans of one export request."""
        spans = [
            Span(
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                status=span.status.code,
                service=str(_attributes(resource.resource.attributes).get("service.name", "")),
                attributes=_attributes(span.attributes),
            )
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.requests += 1
            self._spans.extend(spans)

    def spans(self) -> list[Span]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def named(self, name: str) -> list[Span]:
        """The spans received so far with this name."""
        return [s for s in self.spans() if s.name == name]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def exporting_to(receiver: OtlpReceiver) -> dict[str, str]:
    """Environment for `weather-api serve` to export its spans to `receiver` within 0.1 s."""
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
