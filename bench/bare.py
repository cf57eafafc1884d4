"""The framework's ceiling: a bare Litestar handler that only decodes and validates the body.

Same server (uvicorn, uvloop, httptools), same report type and validator as weather-api, no
Valkey, no telemetry: what is left when the service's own work is taken away.
"""

from __future__ import annotations

from litestar import Litestar, Request, Response, post

from weather_api.model import Validator
from weather_api.settings import Settings

_validator = Validator(Settings().municipalities)


@post("/api/weather", status_code=201)
async def ingest(request: Request[object, object, object]) -> Response[bytes]:
    """Validate and answer as weather-api does, without storing anything."""
    _validator.one(await request.body())
    return Response(b'{"status":"success","id":"0"}', status_code=201, media_type="application/json")


app = Litestar([ingest], logging_config=None)
