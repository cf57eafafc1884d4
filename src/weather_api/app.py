"""`create_app(settings)`: the one factory that puts the service together.

The pieces, each in its module, imports running one way (app -> errors -> routes -> openapi ->
ingest -> store -> settings; model and telemetry at the bottom):

- `routes`: the handlers; `ingest`: the write path of both POST endpoints;
- `responses`: the answers' types; `openapi`: what the OpenAPI document adds to the handlers;
  `docs_page`: the docs page's pinned Swagger UI, served by the service;
- `errors`: exceptions to RFC 9457 problem details, in one place;
- `lifespan`: the store, the once-a-second ticker and the loop monitor, started and stopped.
"""

from __future__ import annotations

from collections.abc import Mapping

from litestar import Litestar
from litestar.datastructures import State
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from weather_api.docs_page import assets_router, swagger_ui_dist
from weather_api.errors import to_problem
from weather_api.lifespan import lifespan
from weather_api.logs import AccessLog
from weather_api.model import Validator
from weather_api.openapi import document, openapi_config
from weather_api.routes import HANDLERS
from weather_api.settings import Settings
from weather_api.telemetry import Metrics, RequestTelemetry


def create_app(
    settings: Settings,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
    env: Mapping[str, str] | None = None,
) -> Litestar:
    """Build the application for these settings (its own metrics registry and tracer)."""
    metrics = metrics or Metrics()
    if tracer_provider is None and settings.telemetry:
        from weather_api.tracing import tracer_provider as make_provider  # noqa: PLC0415

        tracer_provider = make_provider(env or {}, sampled_parents_per_second=settings.sampled_parents_per_second)
    tracer = tracer_provider.get_tracer("weather_api") if settings.telemetry and tracer_provider else trace.NoOpTracer()

    access_log = AccessLog() if settings.telemetry and settings.access_log else None
    swagger_ui = swagger_ui_dist()

    app = Litestar(
        route_handlers=[*HANDLERS, assets_router(swagger_ui)],
        state=State(
            {
                "settings": settings,
                "metrics": metrics,
                "validator": Validator(
                    settings.municipalities,
                    settings.weathers,
                    settings.temperature_range,
                    settings.humidity_range,
                    settings.max_batch,
                ),
            },
        ),
        lifespan=[lifespan(settings, metrics, tracer, tracer_provider, access_log)],
        exception_handlers={Exception: to_problem},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(swagger_ui),
        debug=False,
        logging_config=None,  # logging is configured once, as JSON lines, by the CLI
    )
    # Built now, not on the first request for it, with what depends on these settings.
    document(app.openapi_schema, settings)
    if settings.telemetry:
        # Around everything Litestar does, routing and error handling included, so that 404,
        # 405 and refused requests are measured like the rest (see telemetry's docstring).
        app.asgi_handler = RequestTelemetry(app.asgi_handler, metrics, tracer, access_log)
    return app
