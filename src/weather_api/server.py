"""How the service takes connections: time, size and number limits on uvicorn's HTTP/1.1 protocol.

What comes from uvicorn (0.54.0 with httptools 0.9.0; read in .venv: uvicorn/protocols/http/
httptools_impl.py, h11_impl.py, flow_control.py, config.py, server.py), and what is ours and why:

- uvicorn parses requests with httptools (llhttp) in `HttpToolsProtocol`. It arms no timer before a
  connection's first response (`timeout_keep_alive` starts in `on_response_complete` and stops at
  the next byte), so a connection that sends nothing, or a head at 1 byte/s, lives for ever; and
  httptools concatenates a header's pieces however long it grows (`_on_header_value` in
  httptools' parser.pyx), so a 64 MiB header is buffered and answered. uvicorn's h11 protocol
  bounds the head (`h11_max_incomplete_event_size`) but has no head timer either and parses in
  pure Python: 70-80 us more CPU per request than httptools here (`task bench`, see
  docs/performance.md). `Protocol` subclasses `HttpToolsProtocol` and adds, through its callbacks:
  a head deadline, a body deadline, a byte budget for each request head, counted as bytes arrive
  and enforced before they reach the parser, and a cap on header lines.
- uvicorn's `limit_concurrency` compares open connections, idle ones included, with the cap, and
  answers a plain-text 503 (`flow_control.service_unavailable`) that the application never sees:
  25 idle connections make `/health` fail. Here the cap counts requests in progress (uvicorn's
  own task set); over it a request gets a problem document with `Retry-After`, measured by the
  application's `RequestTelemetry` like any other answer, and `/health` and `/metrics` are still
  served. Connections have their own, larger cap: a new connection over it closes the connection
  that has been idle longest (waiting for, or half-way through, a head), so idle connections
  cannot keep new clients out.
- uvicorn answers a request it cannot parse with a plain-text 400 (`send_400_response`), written
  even in the middle of another response, and a request whose body breaks the framing is then
  recorded by the application as a 500 (it reads `http.disconnect`). Here the answer is a problem
  document, never interleaved with a response in progress, and the request is recorded with the
  status its client got (`telemetry.ANSWERED`).

Cost: ~0.9 us of CPU per request over plain `HttpToolsProtocol` (`python -m bench.protocol`;
within the noise of `task bench --systems "telemetry on" "uvicorn protocol"`), see
docs/performance.md. Tests: tests/test_connections.py, against real `weather-api serve` processes.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import msgspec
import uvicorn
from litestar import Litestar
from litestar.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from weather_api.settings import Settings
from weather_api.telemetry import ANSWERED, RequestTelemetry

log = logging.getLogger("weather_api")

RETRY_AFTER = b"1"
"""Seconds a shed client is told to wait: requests last milliseconds, so capacity frees fast."""

UNSHED = frozenset({b"/health", b"/metrics"})
"""Served even over the request cap: liveness must not fail because the process is busy (a
restart would only add load), and the scrape that shows the overload must not fail with it."""

SHED_WARNING_INTERVAL = 10.0
"""Seconds between two log lines about shed requests."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection and all of them together may take."""

    header_timeout: float
    body_timeout: float
    max_head_bytes: int
    max_headers: int
    max_connections: int
    max_requests: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits these settings name."""
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_head_bytes=settings.max_head_bytes,
            max_headers=settings.max_headers,
            max_connections=settings.max_connections,
            max_requests=settings.max_concurrency,
        )


class _Problem(msgspec.Struct):
    """RFC 9457 problem details, the fields weather_api.errors' answers carry."""

    type: str
    title: str
    status: int
    detail: str


def _document(status: int, detail: str, type_: str = "about:blank", title: str | None = None) -> bytes:
    """A problem document; `about:blank` problems are titled by the status phrase (RFC 9457, 4.2.1)."""
    title = title or http.HTTPStatus(status).phrase
    return msgspec.json.encode(_Problem(type_, title, status, detail))


_DOCUMENTS = {
    400: _document(400, "the request is not valid HTTP/1.1 (request line, header or body framing)"),
    408: _document(408, "the request did not arrive in time; the connection is closed"),
    431: _document(431, "the request head is over the size limit (bytes or header lines)"),
}
_OVER_CAPACITY = _document(
    503,
    "the service is serving as many requests as it takes at once; retry after Retry-After seconds",
    "urn:weather-api:problem:over-capacity",
    "Over capacity",
)
_OVER_CAPACITY_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"content-length", str(len(_OVER_CAPACITY)).encode()),
    (b"retry-after", RETRY_AFTER),
]


async def over_capacity(_scope: Scope, _receive: Receive, send: Send) -> None:
    """The answer to a request over the cap: 503, a problem document, Retry-After."""
    await send({"type": "http.response.start", "status": 503, "headers": _OVER_CAPACITY_HEADERS})
    await send({"type": "http.response.body", "body": _OVER_CAPACITY, "more_body": False})


class _TooManyHeaders(Exception):  # noqa: N818 - raised inside httptools to stop the parse
    """The head has more header lines than allowed."""


class _Shared:
    """What the connections of one server share: limits, the over-capacity app, who is open and idle."""

    def __init__(self, limits: Limits, shed_app: ASGIApp) -> None:
        self.limits = limits
        self.shed_app = shed_app
        self.open = 0
        self.idle: dict[Protocol, None] = {}
        """Connections serving no request, the longest idle first (dicts keep insertion order)."""
        self.shed = 0
        self.next_warning = 0.0


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a head size limit and caps that keep idle clients out.

    State of a connection: `_head_left` is the byte budget of the head being read (None while a
    body is read); `_timer` is the head or the body deadline, whichever applies now. A kept-alive
    connection waiting for its next request has neither: uvicorn's keep-alive timer closes it
    unless a byte comes, and the first bytes of a head that does not complete start the head
    deadline.

    The callbacks every request goes through call `HttpToolsProtocol`'s directly rather than
    through `super()`: half of what this class adds per request (~0.9 us instead of ~1.7 us with
    `python -m bench.protocol`).
    """

    shared: ClassVar[_Shared]

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - uvicorn's signature
        super().__init__(*args, **kwargs)
        self.limits = self.shared.limits
        self._head_left: int | None = self.limits.max_head_bytes
        self._heads = 0
        self._timer: asyncio.TimerHandle | None = None
        self._live = False
        self._too_many_headers = False
        self._pending: int | None = None
        """Status owed to a request behind the one in progress, answered when that one is done."""

    # Connections: counted, capped, idle ones evicted oldest first.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection, make room for it if needed, and start its head deadline."""
        super().connection_made(transport)
        shared = self.shared
        shared.open += 1
        self._live = True
        if shared.open > self.limits.max_connections:
            oldest = next(iter(shared.idle), self)
            oldest.close()
            if oldest is self:  # every other connection is serving a request
                return
        shared.idle[self] = None
        self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        super().connection_lost(exc)
        self._release()

    def close(self) -> None:
        """Close the connection, without an answer."""
        self._release()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._live:
            self._live = False
            self.shared.open -= 1
            self.shared.idle.pop(self, None)

    # Bytes in: the head budget is charged before the parser sees them.

    def data_received(self, data: bytes) -> None:
        """Feed the parser, at most the head budget while a head is being read."""
        left = self._head_left
        if left is None:  # a body
            HttpToolsProtocol.data_received(self, data)
            if self._head_left is None and self._timer is None and self._live:
                self._timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)
            return
        if len(data) > left:
            self._feed_within_budget(data, left)
            return
        self._head_left = left - len(data)
        HttpToolsProtocol.data_received(self, data)
        if self._timer is None and self._live:
            if self._head_left is None:  # the head is done, its body is not
                self._timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)
            elif self._head_left < self.limits.max_head_bytes:  # part of a head: the rest has a deadline
                self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _feed_within_budget(self, data: bytes, left: int) -> None:
        heads = self._heads
        self._head_left = 0
        HttpToolsProtocol.data_received(self, data[:left])
        if self.transport.is_closing() or self._pending is not None:  # already refused
            return
        if self._heads == heads:  # the budget is spent and the head goes on
            log.warning("request head over %d bytes; answered 431", self.limits.max_head_bytes)
            self._end(431)
            return
        self.data_received(data[left:])  # the head ended within the budget: the rest is body or next requests

    def on_headers_complete(self) -> None:
        """The head is in: stop its deadline; run the app, or the over-capacity answer, or refuse it."""
        if len(self.headers) > self.limits.max_headers:
            # Counted here, not per header: the byte budget already bounds what was kept.
            self._too_many_headers = True
            raise _TooManyHeaders  # httptools stops; uvicorn answers through send_400_response
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._head_left = None
        self._heads += 1
        self.shared.idle.pop(self, None)
        if len(self.tasks) < self.limits.max_requests or self.url.partition(b"?")[0] in UNSHED:
            HttpToolsProtocol.on_headers_complete(self)
            return
        # uvicorn takes `self.app` for the request it starts here; for this one, the answer.
        app = self.app
        self.app = cast("Any", self.shared.shed_app)  # litestar's and uvicorn's ASGI types differ in spelling only
        try:
            HttpToolsProtocol.on_headers_complete(self)
        finally:
            self.app = app
        self._warn_shed()

    def _warn_shed(self) -> None:
        shared = self.shared
        shared.shed += 1
        now = self.loop.time()
        if now >= shared.next_warning:
            log.warning(
                "over capacity: answered 503 to %d request(s) since the last warning (WEATHER_MAX_CONCURRENCY=%d)",
                shared.shed,
                self.limits.max_requests,
            )
            shared.shed = 0
            shared.next_warning = now + SHED_WARNING_INTERVAL

    def on_message_complete(self) -> None:
        """The body is in: stop its deadline; what comes next is a new head."""
        HttpToolsProtocol.on_message_complete(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._head_left = self.limits.max_head_bytes

    def on_response_complete(self) -> None:
        """Back to waiting for a request: the connection becomes idle (the newest)."""
        HttpToolsProtocol.on_response_complete(self)
        if self._live and self.timeout_keep_alive_task is not None:  # uvicorn waits for the next request
            if self._pending is not None:
                self._answer(self._pending)
                return
            self.shared.idle[self] = None

    # Ending a request the parser or a deadline refused.

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002 - uvicorn's fixed message
        """Answer what httptools cannot parse: a problem document (431 for too many headers)."""
        self._end(431 if self._too_many_headers else 400)

    def _head_timeout(self) -> None:
        self._timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a pipelined head behind a request in progress: uvicorn's keep-alive timer follows
        if self._head_left is not None and self._head_left < self.limits.max_head_bytes:
            self._end(408)  # part of a head came: tell the (slow) client why
        else:
            self.close()

    def _body_timeout(self) -> None:
        self._timer = None
        self._end(408)

    def _end(self, status: int) -> None:
        """Answer `status` for the request being read, as a problem document, and close."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._head_left is not None:
                # The next request's head is at fault, and answers go in order: this one is owed
                # once the request in progress is answered; nothing more is read meanwhile.
                self._pending = status
                self.flow.pause_reading()
                return
            if cycle.response_started:  # mid-answer: closing is all that is left
                self.close()
                return
            # The app reading this body gets `http.disconnect`; its telemetry records `status`.
            extensions = cycle.scope.setdefault("extensions", {})
            extensions[ANSWERED] = {"status": status}
        elif self._head_left is None:  # a body after its answer (shed, 413): nothing to say
            self.close()
            return
        self._answer(status)

    def _answer(self, status: int) -> None:
        """Write `status` as a problem document and close."""
        body = _DOCUMENTS[status]
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        head += [b"%s: %s\r\n" % (name, value) for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/problem+json\r\ncontent-length: %d\r\n" % len(body))
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.close()


def protocol(settings: Settings, app: object) -> type[Protocol]:
    """A `Protocol` class for uvicorn's `http=`: these settings' limits, its own connection table.

    Over-capacity answers go through the app's `RequestTelemetry` (when it has one), so they are
    measured, traced and logged like the app's own.
    """
    handler = getattr(app, "asgi_handler", None)
    shed = handler.around(over_capacity) if isinstance(handler, RequestTelemetry) else over_capacity

    class Configured(Protocol):
        shared = _Shared(Limits.from_settings(settings), shed)

    return Configured


def raise_file_limit(settings: Settings) -> None:
    """Let the process open as many files as the connection caps need (soft limit up to the hard one)."""
    needed = settings.max_connections + settings.valkey_max_connections + 64  # + listeners, logs, AOF...
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open files are limited to %d; WEATHER_MAX_CONNECTIONS=%d needs about %d",
            target,
            settings.max_connections,
            needed,
        )


def run(app: Litestar, settings: Settings, host: str, port: int) -> None:
    """Serve `app` with uvicorn (uvloop, httptools through `Protocol`) until a signal stops it."""
    raise_file_limit(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=protocol(settings, app),
        # No WebSocket routes. And uvicorn hands an upgraded connection to another protocol
        # without `connection_lost`, which would leave it counted here for ever.
        ws="none",
        log_config=None,
        access_log=False,  # ours is one JSON line with the trace id (WEATHER_ACCESS_LOG)
        timeout_graceful_shutdown=settings.shutdown_timeout,
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]  # typed int, used as a delay
        server_header=False,
    )
