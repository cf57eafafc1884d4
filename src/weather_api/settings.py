"""Settings: one frozen dataclass, built from the environment only at the CLI edge."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from weather_api.model import MAX_NAME_LENGTH, WEATHERS, canonical

DEFAULT_MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "on", "true", "yes"}:
        return True
    if lowered in {"0", "off", "false", "no"}:
        return False
    msg = f"{name}={value!r}: expected on/off"
    raise SettingsError(msg)


def _number(value: str, name: str, kind: type[int | float], low: float) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        msg = f"{name}={value!r}: expected a {kind.__name__}"
        raise SettingsError(msg) from None
    if not number >= low:  # also rejects NaN
        msg = f"{name}={value!r}: must be at least {low}"
        raise SettingsError(msg)
    return number


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told; defaults suit one laptop."""

    valkey_url: str | None = None
    """Valkey to use (redis://, rediss://, redis+sentinel://); None starts an embedded one."""

    data_dir: Path = Path(".weather-data")
    """Where the embedded Valkey keeps its append-only file and snapshots."""

    key_prefix: str = "weather"
    """Namespace of every key; `{weather}` hash-tags all keys into one cluster slot."""

    municipalities: tuple[str, ...] = DEFAULT_MUNICIPALITIES
    """Accepted municipalities, canonical (lower-case ASCII) names."""

    weathers: tuple[str, ...] = WEATHERS
    """Accepted weather conditions."""

    valkey_timeout: float = 1.0
    """Seconds any Valkey call may take, the reply included (its deadline); connecting gets half of it."""

    valkey_max_connections: int = 64
    """Connection pool cap; a request waits at most `valkey_timeout` for a free connection."""

    max_body_bytes: int = 98304
    """Larger request bodies are refused with 413 before they are read in full.

    96 KiB: the largest batch (500 reports) indented as json.dumps(indent=4) writes it, with
    17-digit numbers, is about 85 KB; and the Ingress's 128 KiB stays above it, so that clients
    get this service's 413 problem, not nginx's page."""

    max_batch: int = 500
    """Most reports in one batch request."""

    series_interval: int = 10
    """Seconds per time-series bucket."""

    series_maxlen: int = 8640
    """Closed buckets kept per municipality (24 h at 10 s)."""

    recent_maxlen: int = 1000
    """Raw reports kept per municipality (approximately: MAXLEN ~)."""

    max_concurrency: int = 1024
    """Requests in progress at once; past it 503 + Retry-After instead of queueing (not /health, /metrics)."""

    shutdown_timeout: int = 20
    """Seconds SIGTERM waits for in-flight requests before closing connections."""

    telemetry: bool = True
    """Metrics and tracing middleware; off only to measure their cost."""

    access_log: bool = True
    """One JSON line per request."""

    log_level: str = "info"
    """Level of the service's own logger."""

    temperature_range: tuple[float, float] = (-90.0, 60.0)
    """Plausible temperatures in °C, inclusive."""

    humidity_range: tuple[float, float] = (0.0, 100.0)
    """Relative humidity in %, inclusive."""

    idempotency_ttl: int = 86400
    """Seconds an Idempotency-Key's first answer is kept."""

    sampled_parents_per_second: float = 10.0
    """Most traces a second started because a caller's `traceparent` asked for sampling.

    The ceiling on what clients can make the service trace: without it, a client sending
    `traceparent: ...-01` on every request had every request traced (~28 % more CPU per
    request, and a flood of spans for the collector)."""

    header_timeout: float = 10.0
    """Seconds a request head may take: from a connection's opening, or from the first bytes of a
    kept-alive connection's next request; past it the connection is closed (408 if part came)."""

    body_timeout: float = 10.0
    """Seconds a request body may take after its head; past it: 408, connection closed."""

    max_head_bytes: int = 16384
    """Largest request head (request line and headers); a larger one gets 431, unread."""

    max_headers: int = 100
    """Most header lines in a request head; more get 431."""

    max_connections: int = 2048
    """Open client connections; a new one past it closes the connection idle the longest."""

    keep_alive_timeout: float = 5.0
    """Seconds a kept-alive connection may wait for its next request before it is closed (uvicorn's
    `timeout_keep_alive`). Behind a proxy that reuses connections, set it above the proxy's own
    idle timeout: the proxy must close first, or it may send a request on a connection being
    closed and answer 502 (deploy/ sets 75 s against ingress-nginx's 60)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from `WEATHER_*` variables; unknown values raise SettingsError."""
        values: dict[str, object] = {}
        if url := env.get("WEATHER_VALKEY_URL", "").strip():
            values["valkey_url"] = url
        if data_dir := env.get("WEATHER_DATA_DIR"):
            values["data_dir"] = Path(data_dir)
        if prefix := env.get("WEATHER_KEY_PREFIX"):
            values["key_prefix"] = prefix
        if names := env.get("WEATHER_MUNICIPALITIES"):
            parsed = tuple(dict.fromkeys(canonical(n.strip()) for n in names.split(",") if n.strip()))
            if not parsed:
                msg = "WEATHER_MUNICIPALITIES is empty"
                raise SettingsError(msg)
            if too_long := [n for n in parsed if len(n) > MAX_NAME_LENGTH]:
                msg = f"WEATHER_MUNICIPALITIES: {too_long[0][:MAX_NAME_LENGTH]}... is over {MAX_NAME_LENGTH} characters"
                raise SettingsError(msg)
            values["municipalities"] = parsed
        values.update(_numbers(env))
        for var, attr in (("WEATHER_TELEMETRY", "telemetry"), ("WEATHER_ACCESS_LOG", "access_log")):
            if (raw := env.get(var)) is not None:
                values[attr] = _flag(raw, var)
        if level := env.get("WEATHER_LOG_LEVEL"):
            values["log_level"] = level.lower()
        return dataclasses.replace(cls(), **values)  # type: ignore[arg-type]


_NUMBERS: dict[str, tuple[str, type[int | float], float]] = {
    "WEATHER_VALKEY_TIMEOUT": ("valkey_timeout", float, 0.01),
    "WEATHER_VALKEY_MAX_CONNECTIONS": ("valkey_max_connections", int, 1),
    "WEATHER_MAX_CONCURRENCY": ("max_concurrency", int, 1),
    "WEATHER_SHUTDOWN_TIMEOUT": ("shutdown_timeout", int, 0),
    "WEATHER_MAX_BODY_BYTES": ("max_body_bytes", int, 256),
    "WEATHER_MAX_BATCH": ("max_batch", int, 1),
    "WEATHER_SERIES_INTERVAL": ("series_interval", int, 1),
    "WEATHER_SERIES_MAXLEN": ("series_maxlen", int, 1),
    "WEATHER_RECENT_MAXLEN": ("recent_maxlen", int, 1),
    "WEATHER_SAMPLED_PARENTS_PER_SECOND": ("sampled_parents_per_second", float, 0),
    "WEATHER_HEADER_TIMEOUT": ("header_timeout", float, 0.1),
    "WEATHER_BODY_TIMEOUT": ("body_timeout", float, 0.1),
    "WEATHER_MAX_HEAD_BYTES": ("max_head_bytes", int, 1024),
    "WEATHER_MAX_HEADERS": ("max_headers", int, 8),
    "WEATHER_MAX_CONNECTIONS": ("max_connections", int, 1),
    "WEATHER_KEEP_ALIVE_TIMEOUT": ("keep_alive_timeout", float, 0.1),
}
"""Numeric variables: (Settings field, type, lowest accepted value)."""


def _numbers(env: Mapping[str, str]) -> dict[str, int | float]:
    return {attr: _number(env[var], var, kind, low) for var, (attr, kind, low) in _NUMBERS.items() if var in env}
