"""Logs: JSON lines on stderr, and the access log written in bulk.

What comes from the libraries, and what is ours and why:

- Our loggers and uvicorn's write through the standard `logging` module, one JSON object per
  line (`JsonFormatter`), with the current trace and span ids.
- The access log does not: a LogRecord, a formatter and a flushed write per request cost about
  50 us of the service's ~160 us per report; `AccessLog` encodes the same line with msgspec
  into a buffer written out in bulk.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, BinaryIO

import msgspec
from opentelemetry import trace

ACCESS_LOGGER = "weather_api.access"
"""The `logger` field of access lines."""


class HttpFields(msgspec.Struct):
    """The request, as the access line shows it."""

    method: str
    route: str
    path: str
    status: int


class _AccessLine(msgspec.Struct):
    """The fields of JsonFormatter's lines, then the request's."""

    time: str
    http: HttpFields
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

    def write(self, http: HttpFields, duration: float, trace_id: str | None, span_id: str | None) -> None:
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
