"""`weather-api serve`: the only place that reads the process environment.

With no WEATHER_VALKEY_URL it starts a real Valkey server (`weather_api.embedded`) with
persistence on, under WEATHER_DATA_DIR, and stops it after the API has drained its requests.

`weather-api load-library`: load the Valkey function library with the credentials of
WEATHER_VALKEY_URL and exit (0, or 1 with one line on stderr), for a deployment whose API user
may not FUNCTION LOAD.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from weather_api import __version__
from weather_api.settings import Settings, SettingsError

log = logging.getLogger("weather_api")


class CliError(Exception):
    """A problem to report in one line and exit 2."""


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _hang_up(signum: int, frame: FrameType | None) -> None:
    """SIGHUP (the terminal closed) stops the service as SIGTERM does.

    While uvicorn runs, its SIGTERM handler drains the requests in flight, then raises the
    signal it was given (SIGHUP) again once it has stopped, which lands here and exits 129.
    """
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler) and handler is not _exit_on_signal:
        handler(signum, frame)
    else:
        _exit_on_signal(signum, frame)


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API (and, without a Valkey URL, an embedded Valkey) until SIGINT/SIGTERM."""
    from weather_api.app import create_app  # noqa: PLC0415
    from weather_api.logs import configure_logging  # noqa: PLC0415
    from weather_api.server import run  # noqa: PLC0415

    configure_logging(settings.log_level)
    # uvicorn drains in-flight requests on SIGINT and SIGTERM, then raises the signal again for
    # the default action, which would end the process before the embedded Valkey is stopped.
    # Raising SystemExit instead leaves through the ExitStack, with the usual status 128 + n
    # (130, 143; 129 for SIGHUP, which uvicorn does not handle: see _hang_up). Set before the
    # embedded Valkey starts, so that a signal during its start stops it too.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_on_signal)
    signal.signal(signal.SIGHUP, _hang_up)
    with contextlib.ExitStack() as stack:
        if settings.valkey_url is None:
            from weather_api.embedded import EmbeddedValkeyError, embedded_valkey  # noqa: PLC0415

            try:
                url = stack.enter_context(embedded_valkey(settings.data_dir))
            except EmbeddedValkeyError as exc:
                raise CliError(str(exc)) from None
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
        run(create_app(settings, env=os.environ), settings, host, port)


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

    from weather_api.connection import connect  # noqa: PLC0415
    from weather_api.store import LIBRARY, Store, StoreUnavailable  # noqa: PLC0415

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
