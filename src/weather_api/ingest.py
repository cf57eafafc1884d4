"""The write path of both POST endpoints: check the request, record its reports once, answer.

Content type and Idempotency-Key are checked before the body is read; the body is decoded
strictly (`weather_api.model`), every report gets a UUIDv7, and `Store.record` applies them all
in one round trip. The exceptions raised here are answered by `weather_api.errors`.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import State

from weather_api.model import Validator
from weather_api.responses import JSON
from weather_api.store import Store
from weather_api.telemetry import Metrics

MAX_IDEMPOTENCY_KEY = 255


class UnsupportedMediaType(Exception):  # noqa: N818
    """The request body is not declared as application/json."""


class BadIdempotencyKey(ValueError):  # noqa: N818
    """The Idempotency-Key header is empty, too long, not printable ASCII, or sent more than once."""


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


def _answer(ids: list[str], batch: bool) -> bytes:
    return msgspec.json.encode(
        {"status": "success", "ids": ids, "count": len(ids)} if batch else {"status": "success", "id": ids[0]},
    )


def _body_type(request: Request[Any, Any, Any]) -> None:
    media_type, _ = request.content_type
    if media_type != JSON:
        raise UnsupportedMediaType


def _idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    keys = request.headers.getall("idempotency-key", [])
    if not keys:
        return None
    if len(keys) > 1:
        # Which one would the client mean? Using the first silently could replay another request.
        msg = f"send one Idempotency-Key header, not {len(keys)}"
        raise BadIdempotencyKey(msg)
    key = keys[0]
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        msg = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        raise BadIdempotencyKey(msg)
    return key


async def ingest(request: Request[Any, Any, Any], state: State, batch: bool) -> Response[bytes]:
    """Shared path of both POST endpoints: check, record once, answer."""
    _body_type(request)
    key = _idempotency_key(request)
    body = await request.body()
    validator: Validator = state.validator
    reports = validator.many(body) if batch else [validator.one(body)]
    ids = uuid7s(len(reports))
    idempotency = None
    if key is not None:
        # The fingerprint covers the reports as understood, not their bytes: the same reports
        # re-sent with other whitespace are a retry, not a conflict.
        fingerprint = hashlib.sha256(request.url.path.encode() + msgspec.json.encode(reports)).hexdigest()
        idempotency = (key, fingerprint)
    store: Store = state.store
    # A replay needs only the first id (the same fingerprint means the same reports, so as
    # many ids): a key's record stays ~240 bytes of Valkey memory whatever the size of the batch.
    outcome = await store.record(reports, ids, ids[0].encode(), idempotency)
    headers = {}
    if outcome.replayed:
        replay = outcome.replay or b""
        # A record written before records were this small holds the whole answer.
        answer = replay if replay.startswith(b"{") else _answer(ids_from(replay.decode(), len(ids)), batch)
        headers["Idempotent-Replayed"] = "true"
    else:
        answer = _answer(ids, batch)
        metrics: Metrics = state.metrics
        for report in reports:
            metrics.accepted.labels(report.municipality).inc()
    return Response(answer, status_code=201, media_type=JSON, headers=headers)
