"""The write path of both POST endpoints: check the request, record its reports once, answer.

Content type and Idempotency-Key are checked before the body is read; the body is decoded
strictly (`weather_api.model`), every report gets a UUIDv7, and `Store.record` applies them all
in one round trip. The exceptions raised here are answered by `weather_api.errors`.

What comes from Litestar, and what is ours and why:

- Litestar routes both endpoints (its route trie: 404, 405 with `Allow`, OPTIONS), documents
  them (their `@post` declarations in `weather_api.routes`) and answers what is raised here
  (its exception handling calls `weather_api.errors.to_problem`).
- Litestar's pipeline for an HTTP handler (a `Request`, the signature model and its kwargs,
  the return value made a `Response`, then an `ASGIResponse`) cost ~40 us of CPU per request
  here, as much as everything else a report costs (bench/bare.py as it is, against the same
  handler as an ASGI app: docs/performance.md). `Ingest` serves the two routes instead, as
  their route handler's ASGI middleware (so Litestar still routes to it by method): headers
  read from the scope, the body from `receive`, an answer pre-encoded but for its id. What
  Litestar did on this path it does the same way: the handler's guards run first
  (`authorize_connection`, as Litestar's ASGI routes do), the body limit is the handler's
  `request_max_body_size` (413 from Content-Length, and while streaming: Litestar's
  `RequestEntityTooLarge`), a client gone mid-body is Litestar's "client disconnected
  prematurely", and Content-Type is parsed as `Request.content_type` parses it.
  An `@asgi` route was the other way; it takes every method (405, OPTIONS and their
  accounting as unmatched would be redone here) and is left out of the OpenAPI document.
  Tests: every POST test (tests/test_api.py, test_accounting.py, ...) and tests/test_ingest.py.
- UUIDv7 ids (RFC 9562) are made here: the standard library has them only from Python 3.14.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from typing import cast

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from weather_api.model import Report, Validator
from weather_api.responses import JSON
from weather_api.store import Store
from weather_api.telemetry import Metrics

MAX_IDEMPOTENCY_KEY = 255


class UnsupportedMediaType(Exception):  # noqa: N818
    """The request body is not declared as application/json."""


class BadIdempotencyKey(ValueError):  # noqa: N818
    """The Idempotency-Key header is empty, too long, not printable ASCII, or sent more than once."""


class ServedByMiddleware(RuntimeError):  # noqa: N818 - says what happened instead
    """What the declared POST handlers raise if they were ever called: `Ingest` answers first."""


def uuid7s(n: int) -> list[str]:
    """Time-ordered UUIDs (RFC 9562 version 7), `n` consecutive ones: unique across replicas and restarts.

    Consecutive (RFC 9562 section 6.2, method 2: the random part counts up), so the first id
    names them all: that is all an Idempotency-Key's record keeps (see `ids_from`). The counted
    part has 61 random bits, far from overflowing into the variant bits for any batch.
    """
    ms = time.time_ns() // 1_000_000
    rand_a, rand_b = int.from_bytes(os.urandom(2), "big") >> 4, int.from_bytes(os.urandom(8), "big") >> 3
    first = ms << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b  # version 7, RFC 9562 variant
    return [_uuid(first + i) for i in range(n)]


def ids_from(first: str, n: int) -> list[str]:
    """The n ids `uuid7s` made together with `first`."""
    start = int(first.replace("-", ""), 16)
    return [_uuid(start + i) for i in range(n)]


def _uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_ONE_HEAD = b'{"status":"success","id":"'
_ONE_TAIL = b'"}'


def _answer(ids: list[str], batch: bool) -> bytes:
    if batch:
        return msgspec.json.encode({"status": "success", "ids": ids, "count": len(ids)})
    # The same bytes msgspec writes for {"status": "success", "id": id}: ids are plain ASCII.
    return b"".join((_ONE_HEAD, ids[0].encode(), _ONE_TAIL))


_HEADERS = [(b"content-type", JSON.encode())]
_REPLAYED = (b"idempotent-replayed", b"true")


class _Head:
    """The request headers the write path reads, in one pass over the scope's list."""

    __slots__ = ("content_length", "content_type", "keys")

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        content_type: bytes | None = None
        content_length: bytes | None = None
        keys: list[bytes] = []
        for name, value in headers:
            if name == b"content-type":
                if content_type is None:  # the first one, as Litestar's `headers.get`
                    content_type = value
            elif name == b"content-length":
                if content_length is None:
                    content_length = value
            elif name == b"idempotency-key":
                keys.append(value)
        self.content_type = content_type
        self.content_length = content_length
        self.keys = keys

    def check_media_type(self) -> None:
        """415 unless the body is declared as JSON (parameters such as charset allowed)."""
        value = self.content_type
        if value == b"application/json":
            return
        # Litestar's `parse_content_header`: the part before any `;`, stripped, lower-cased.
        media_type = (value or b"").decode("latin-1").partition(";")[0].strip().lower()
        if media_type != JSON:
            raise UnsupportedMediaType

    def idempotency_key(self) -> str | None:
        """The Idempotency-Key, checked; None without one."""
        if not self.keys:
            return None
        if len(self.keys) > 1:
            # Which one would the client mean? Using the first silently could replay another request.
            msg = f"send one Idempotency-Key header, not {len(self.keys)}"
            raise BadIdempotencyKey(msg)
        key = self.keys[0].decode("latin-1")
        if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
            msg = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            raise BadIdempotencyKey(msg)
        return key

    def announced_length(self) -> int | None:
        """Content-Length, as Litestar's `Request.content_length` reads it."""
        if self.content_length is None:
            return None
        text = self.content_length.decode("latin-1")
        try:
            return int(text)
        except ValueError:
            msg = f"Invalid content-length: {text!r}"
            raise ClientException(msg) from None


async def _body(receive: Receive, announced: int | None, limit: float) -> bytes:
    """The whole body, refused with 413 past `limit` bytes: announced, or as it streams in."""
    if announced is not None and announced > limit:
        raise RequestEntityTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message["body"]
            if not message.get("more_body", False) and not chunks:
                if len(chunk) > limit:
                    raise RequestEntityTooLarge
                return chunk  # the usual case: the whole body in one message
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")


class Ingest:
    """Both POST endpoints as an ASGI app: the route handler's middleware, which answers itself.

    The handler it wraps (`weather_api.routes`) declares the route and documents it; this serves
    it (see the module docstring for why).
    """

    def __init__(self, app: ASGIApp, batch: bool) -> None:
        self._app = app  # the declared handler, never called: this app answers
        self._batch = batch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, record once, answer 201; raise what `weather_api.errors` answers otherwise."""
        handler = cast("HTTPRouteHandler", scope["route_handler"])
        if handler.resolve_guards():
            await handler.authorize_connection(ASGIConnection(scope, receive))
        state = scope["litestar_app"].state
        head = _Head(scope["headers"])
        head.check_media_type()
        key = head.idempotency_key()
        limit = handler.resolve_request_max_body_size() or float("inf")
        body = await _body(receive, head.announced_length(), limit)
        validator: Validator = state.validator
        reports = validator.many(body) if self._batch else [validator.one(body)]
        ids = uuid7s(len(reports))
        idempotency = None
        if key is not None:
            # The fingerprint covers the reports as understood, not their bytes: the same reports
            # re-sent with other whitespace are a retry, not a conflict. The path is the route's.
            path = scope.get("root_path", "") + scope["path"]
            fingerprint = hashlib.sha256(path.encode() + msgspec.json.encode(reports)).hexdigest()
            idempotency = (key, fingerprint)
        store: Store = state.store
        # A replay needs only the first id (the same fingerprint means the same reports, so as
        # many ids): a key's record stays ~240 bytes of Valkey memory whatever the size of the batch.
        outcome = await store.record(reports, ids, ids[0].encode(), idempotency)
        headers = list(_HEADERS)
        if outcome.replayed:
            replay = outcome.replay or b""
            # A record written before records were this small holds the whole answer.
            answer = replay if replay.startswith(b"{") else _answer(ids_from(replay.decode(), len(ids)), self._batch)
            headers.append(_REPLAYED)
        else:
            answer = _answer(ids, self._batch)
            _count(state.metrics, reports)
        headers.append((b"content-length", b"%d" % len(answer)))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer, "more_body": False})


def _count(metrics: Metrics, reports: list[Report]) -> None:
    for report in reports:
        metrics.accepted_in(report.municipality).inc()


def one(app: ASGIApp) -> ASGIApp:
    """`Ingest` for POST /api/weather (Litestar calls route middleware with the app it wraps)."""
    return Ingest(app, batch=False)


def batch(app: ASGIApp) -> ASGIApp:
    """`Ingest` for POST /api/weather/batch."""
    return Ingest(app, batch=True)
