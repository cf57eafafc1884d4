"""weather-api on uvicorn's own HTTP protocol, as it was served before weather_api.server.

`python -m bench.plain --port N [--http httptools|h11]`: the same app and settings as
`weather-api serve` (environment included), on uvicorn's `HttpToolsProtocol` with
`limit_concurrency` (or its h11 protocol with a 16 KiB `h11_max_incomplete_event_size`), without
the deadlines, head limits and caps of `weather_api.server.Protocol`: what those cost.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from weather_api.app import create_app
from weather_api.settings import Settings


def main() -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", choices=["httptools", "h11"], default="httptools")
    args = parser.parse_args()
    settings = Settings.from_env(os.environ)
    uvicorn.run(
        create_app(settings, env=os.environ),
        port=args.port,
        loop="uvloop",
        http=args.http,
        h11_max_incomplete_event_size=settings.max_head_bytes,
        log_config=None,
        access_log=False,
        limit_concurrency=settings.max_concurrency,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        server_header=False,
    )


if __name__ == "__main__":
    main()
