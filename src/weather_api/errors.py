"""The one place errors become HTTP answers: RFC 9457 problem details, mapped by exception class.

Each exception lives beside the code that raises it (`model`, `ingest`, `routes`, `store`);
Litestar's own HTTP errors (404, 405, 413, a parameter out of range) are answered here too.
A refused report request is counted by reason.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsException

from weather_api.ingest import BadIdempotencyKey, UnsupportedMediaType
from weather_api.model import InvalidReport
from weather_api.routes import UnknownMunicipality
from weather_api.store import IdempotencyConflict, OutcomeUnknown, StoreUnavailable
from weather_api.telemetry import Metrics

log = logging.getLogger("weather_api")


def _problem(status: int, title: str, detail: str, **extra: Any) -> ProblemDetailsException:  # noqa: ANN401
    # Our own problems get a URN naming their kind; plain HTTP errors are `about:blank`,
    # whose title is the status phrase (RFC 9457, section 4.2.1).
    type_ = extra.pop("type_", f"urn:weather-api:problem:{title.lower().replace(' ', '-')}")
    headers = extra.pop("headers", None)
    return ProblemDetailsException(
        status_code=status, title=title, detail=detail, type_=type_, headers=headers, extra=extra or None
    )


def _reject(request: Request[Any, Any, Any], reason: str) -> None:
    """Count a refused report request (only the report endpoints have reasons)."""
    metrics: Metrics = request.app.state.metrics
    metrics.rejected.labels(reason).inc()


def to_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every error the service answers, mapped to RFC 9457 problem details in one place."""
    if isinstance(exc, InvalidReport):
        _reject(request, exc.reason)
        errors = [{"field": e.field, "message": e.message} for e in exc.errors]
        problem = _problem(400, "Invalid report", str(exc), errors=errors)
    elif isinstance(exc, UnsupportedMediaType):
        _reject(request, "unsupported_media_type")
        problem = _problem(415, "Unsupported media type", "send the report as Content-Type: application/json")
    elif isinstance(exc, BadIdempotencyKey):
        _reject(request, "invalid_idempotency_key")
        problem = _problem(400, "Invalid Idempotency-Key", str(exc))
    elif isinstance(exc, IdempotencyConflict):
        _reject(request, "idempotency_conflict")
        problem = _problem(422, "Idempotency-Key reused", "this Idempotency-Key was used with a different request")
    elif isinstance(exc, StoreUnavailable):
        outcome = {}
        if request.method == "POST":
            _reject(request, "unavailable")
            # For clients that keep books (the load test's ledger): may the reports have been applied?
            outcome["outcome"] = "unknown" if isinstance(exc, OutcomeUnknown) else "not_applied"
        log.debug("valkey unavailable", extra={"operation": exc.operation, "reason": exc.reason})
        retry = "retry with the same Idempotency-Key" if request.method == "POST" else "retry later"
        detail = f"Valkey is unavailable ({exc.reason}); {retry}"
        problem = _problem(503, "Storage unavailable", detail, headers={"Retry-After": "1"}, **outcome)
    elif isinstance(exc, UnknownMunicipality):
        problem = _problem(404, "Unknown municipality", str(exc))
    elif isinstance(exc, HTTPException):
        problem = _http_problem(request, exc)
    else:
        log.error("unhandled error", exc_info=exc)
        problem = _problem(500, "Internal error", "the service failed; see its log")
    return problem.to_response(request)


def _http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> ProblemDetailsException:
    """Litestar's own HTTP errors (404, 405, 413, a query parameter out of range, ...)."""
    if isinstance(exc, ValidationException):
        # Litestar's detail repeats the whole URL, query string included; name the parameter.
        extra = exc.extra if isinstance(exc.extra, list) else []
        errors = [{"field": str(e.get("key")), "message": str(e.get("message"))} for e in extra if isinstance(e, dict)]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid parameter"
        return _problem(400, "Invalid parameter", detail, errors=errors)
    if exc.status_code == 413 and request.method == "POST":
        _reject(request, "body_too_large")
    title = str(exc.detail) if exc.detail else "Error"
    return _problem(exc.status_code, title, title, headers=exc.headers, type_="about:blank")
