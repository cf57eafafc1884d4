"""What `weather_api.server.Protocol` adds per request to uvicorn's `HttpToolsProtocol`, in isolation.

`uv run python -m bench.protocol`: both protocols parse the same keep-alive POST (head and body in
one read) and run a trivial ASGI app that answers 201, on a uvloop loop, with a transport that
only collects what is written; CPU time per request, alternating the two in several rounds.
The difference is the cost of the deadlines, head budget and caps, without wrk, Valkey or the
kernel around it (`task bench --systems "telemetry on" "uvicorn protocol"` measures it whole).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.transport import Transport
from weather_api.server import protocol
from weather_api.settings import Settings

REQUEST = (
    b"POST /api/weather HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\nAccept: */*\r\n"
    b"Content-Type: application/json\r\nContent-Length: 78\r\n\r\n"
    b'{"municipality":"chinautla","temperature":25,"humidity":60,"weather":"sunny"}\n'
)


async def _app(_scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _per_request(cls: type[HttpToolsProtocol], requests: int) -> float:
    config = Config(app=_app, lifespan="off", log_config=None, access_log=False)
    config.load()
    state = ServerState()
    proto = cls(config=config, server_state=state, app_state={})
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    start = time.process_time()
    for _ in range(requests):
        proto.data_received(REQUEST)
        for task in list(state.tasks):  # the request's task runs and answers
            await task
    spent = time.process_time() - start
    if state.total_requests != requests or transport.closed:
        msg = f"bench: {cls.__name__} answered {state.total_requests} of {requests} requests"
        raise SystemExit(msg)
    proto.connection_lost(None)
    return spent / requests * 1e6


def main() -> None:
    """Print microseconds of CPU per request for both protocols, and the difference."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    ours = protocol(Settings(), app=None)
    results: dict[str, list[float]] = {"uvicorn HttpToolsProtocol": [], "weather_api Protocol": []}
    for _ in range(args.rounds):
        for name, cls in (("uvicorn HttpToolsProtocol", HttpToolsProtocol), ("weather_api Protocol", ours)):
            results[name].append(uvloop.run(_per_request(cls, args.requests)))
    for name, values in results.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:<28} {statistics.median(values):6.2f} us/request  (rounds: {rounds})")
    diff = statistics.median(results["weather_api Protocol"]) - statistics.median(results["uvicorn HttpToolsProtocol"])
    print(f"difference                   {diff:+6.2f} us/request")


if __name__ == "__main__":
    main()
