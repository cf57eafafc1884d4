"""`weather-api serve` on uvicorn's own HTTP protocol: what weather_api.server.Protocol costs.

`python -m bench.plain [--http httptools|h11] --port N`: exactly `weather-api serve` (same CLI,
environment, app, logging and uvicorn settings), except that uvicorn gets its own
`HttpToolsProtocol` (or `H11Protocol`, which bounds a head with h11's default 16 KiB
`max_incomplete_event_size`) instead of `weather_api.server.Protocol`: no deadlines, no head
budget, no request cap.
"""

from __future__ import annotations

import argparse
import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from weather_api import cli, server

PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"httptools": HttpToolsProtocol, "h11": H11Protocol}


def main() -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", choices=list(PROTOCOLS), default="httptools")
    parser.add_argument("--port", required=True)
    args = parser.parse_args()
    chosen = PROTOCOLS[args.http]
    server.protocol = lambda _settings, _app: chosen  # type: ignore[assignment,return-value]  # the one difference
    cli.main(["serve", "--port", args.port])


if __name__ == "__main__":
    main()
