"""The POST endpoints' own ASGI app (weather_api.ingest.Ingest) does what Litestar's pipeline did.

Litestar routes the two endpoints and documents them; `Ingest`, their route middleware, reads the
request itself. Where it replaces a Litestar feature, Litestar itself is the reference: its
Content-Type parser, its guards.
"""

from __future__ import annotations

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
