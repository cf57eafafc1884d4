"""Valkey's key count and memory do not grow with the number of reports.

The bound is the one docs/architecture.md states: 10 + 6 x municipalities keys, and for the data
set at most RECENT_MAXLEN raw reports and SERIES_MAXLEN buckets per municipality.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import httpx
import valkey

from tests.conftest import Api

MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")
WEATHERS = ("sunny", "cloudy", "rainy", "foggy")
RECENT, SERIES = 200, 3
MEMORY_BOUND = 2 * 1024 * 1024
"""Bytes of the whole data set with these settings (see docs/architecture.md for the formula)."""


def _send(api: Api, n: int, rng: random.Random) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for _ in range(n // 500):
            batch = [
                {
                    "municipality": rng.choice(MUNICIPALITIES),
                    "temperature": round(rng.uniform(-10, 40), 2),
                    "humidity": rng.randint(0, 100),
                    "weather": rng.choice(WEATHERS),
                }
                for _ in range(500)
            ]
            response = client.post(
                "/api/weather/batch", content=json.dumps(batch), headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 201, response.text


def _footprint(client: valkey.Valkey) -> tuple[set[str], int]:
    keys = list(client.scan_iter(count=1000))
    return {k.decode() for k in keys}, sum(client.memory_usage(k, samples=0) or 0 for k in keys)


GLOBAL_KEYS = ("count", "counts", "sum:temperature", "sum:humidity", "avg:temperature", "avg:humidity")
PER_MUNICIPALITY = ("conditions", "max", "min", "series", "bucket", "recent")
ALL_KEYS = {
    *(f"weather:{k}" for k in (*GLOBAL_KEYS, "max", "min", "conditions", "municipalities")),
    *(f"weather:{k}:{m}" for k in PER_MUNICIPALITY for m in MUNICIPALITIES),
}
"""Every key the data can ever have: 10 + 6 per municipality (a closed bucket's key comes and goes)."""


def test_two_hundred_thousand_reports_stay_within_a_fixed_bound(start_api: Callable[..., Api], valkey_url: str) -> None:
    """Keys and memory after 200,000 reports equal those after 20,000, under the documented bound."""
    api = start_api(
        valkey_url,
        WEATHER_RECENT_MAXLEN=str(RECENT),
        WEATHER_SERIES_MAXLEN=str(SERIES),
        WEATHER_SERIES_INTERVAL="1",
    )
    client = valkey.Valkey.from_url(valkey_url)
    rng = random.Random(3)
    _send(api, 20_000, rng)
    keys_early, _ = _footprint(client)
    assert len(keys_early) >= 10 + 5 * len(MUNICIPALITIES)
    _send(api, 180_000, rng)
    keys, memory = _footprint(client)

    assert int(client.get("weather:count")) == 200_000
    assert len(ALL_KEYS) == 10 + 6 * len(MUNICIPALITIES)
    assert keys_early <= ALL_KEYS
    assert keys <= ALL_KEYS
    assert memory < MEMORY_BOUND
    for m in MUNICIPALITIES:
        # MAXLEN ~ trims whole stream nodes (100 entries), so a little over RECENT may remain.
        assert client.xlen(f"weather:recent:{m}") <= RECENT + 100
        assert client.xlen(f"weather:series:{m}") <= SERIES
