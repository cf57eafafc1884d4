"""The POST endpoints' own ASGI app (weather_api.ingest.Ingest) does what Litestar's pipeline did.

Litestar routes the two endpoints and documents them; `Ingest`, their route middleware, reads the
request itself. Where it replaces a Litestar feature, Litestar itself is the reference: its
Content-Type parser, its guards. And the ids it makes stay unique across a fork.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar._multipart import parse_content_header  # what `Request.content_type` uses
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.testing import TestClient

from tests.conftest import Api
from weather_api.ingest import uuid7s
from weather_api.routes import HANDLERS

REPORT = b'{"municipality":"chinautla","temperature":25,"humidity":60,"weather":"sunny"}'

CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"Application/JSON",
    b"application/json  ;charset=utf-8",
    b"application/json\t; q=1",
    b"application/json;",
    b"application/json\xa0",  # latin-1 no-break space: stripped by str.strip, as Litestar decodes it
    b"\x85application/json",
    b"application/json, text/plain",
    b"application/jsonx",
    b"application/problem+json",
    b"text/json",
    b"application/ json",
    b"",
]


@pytest.mark.parametrize("value", CONTENT_TYPES, ids=repr)
def test_content_type_is_accepted_exactly_when_litestar_reads_it_as_json(api: Api, value: bytes) -> None:
    """415 unless Litestar's own header parser (`Request.content_type`) makes `application/json` of it."""
    json = parse_content_header(value.decode("latin-1"))[0] == "application/json"
    headers = [(b"Content-Type", value)] if value else []
    response = httpx.post(api.url + "/api/weather", content=REPORT, headers=headers, timeout=10)
    assert response.status_code == (201 if json else 415), response.text


def test_the_route_guards_run_before_the_request_is_read() -> None:
    """A guard on the app (or a route) refuses the request before `Ingest` reads or stores anything."""
    seen: list[str] = []

    def deny(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        seen.append(connection.scope["path"])
        raise NotAuthorizedException

    app = Litestar(route_handlers=HANDLERS, guards=[deny])  # no store, no validator: nothing else may run
    with TestClient(app) as client:
        for path in ("/api/weather", "/api/weather/batch"):
            response = client.post(path, content=REPORT, headers={"Content-Type": "application/json"})
            assert response.status_code == 401
    assert seen == ["/api/weather", "/api/weather/batch"]


def test_ids_stay_unique_across_the_entropy_buffer_and_a_fork() -> None:
    """Random bits are read 4 KiB at a time; a forked child draws its own, never its parent's next ones."""
    ids = [uuid7s(3) for _ in range(1000)]  # ~7 refills of the buffer
    flat = [i for batch in ids for i in batch]
    assert len(set(flat)) == len(flat)
    for batch in ids:
        assert all(i[14] == "7" and i[19] in "89ab" for i in batch)  # version 7, RFC 9562 variant
        first, *rest = (int(i.replace("-", ""), 16) for i in batch)
        assert rest == [first + 1, first + 2]  # consecutive: the first id names the batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running the parent's cleanup
        os.write(write, uuid7s(1)[0].encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    parent = uuid7s(1)[0]
    assert child[15:] != parent[15:]  # the random parts (the time part may well be equal)
