"""Valkey's key count and memory do not grow with the number of reports.

The bound is the one docs/architecture.md states: the keys of its "Valkey keys" table (10 + 6 x
municipalities), and for the data set at most RECENT_MAXLEN raw reports and SERIES_MAXLEN buckets
per municipality. The key set is read from that table, not restated here, so the test holds the
code to the documentation.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

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


ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
GROWTH = 1.5
"""Memory after 200,000 reports may exceed that after 20,000 by this factor at most: the capped
streams are trimmed by whole nodes (MAXLEN ~) and the series fill up to SERIES buckets, so the
total wobbles (70 to 92 KiB measured) but does not grow with the reports (ten times as many)."""


def documented_keys() -> set[str]:
    """The keys of docs/architecture.md's "Valkey keys" table, `<m>` expanded, Idempotency-Key records left out."""
    text = ARCHITECTURE.read_text()
    table = text.split("## Valkey keys", 1)[1].split("\n\n", 2)[1]
    names = [name for row in table.splitlines() for name in re.findall(r"`([^`]+)`", row.split("|")[1])]
    keys = {n.replace("<m>", m) for n in names if ":idem:" not in n for m in MUNICIPALITIES}
    assert re.search(r"Bound: `10 \+ 6 \u00d7 municipalities` keys", text), "the documented bound moved"
    return keys


def test_two_hundred_thousand_reports_stay_within_a_fixed_bound(start_api: Callable[..., Api], valkey_url: str) -> None:
    """After 200,000 reports: only the documented keys, memory as after 20,000 and under the bound."""
    api = start_api(
        valkey_url,
        WEATHER_RECENT_MAXLEN=str(RECENT),
        WEATHER_SERIES_MAXLEN=str(SERIES),
        WEATHER_SERIES_INTERVAL="1",
    )
    documented = documented_keys()
    assert len(documented) == 10 + 6 * len(MUNICIPALITIES)
    # A closed bucket's key comes and goes; after several seconds of reports every other
    # documented key exists (a series appears when its first bucket closes).
    buckets = {f"weather:bucket:{m}" for m in MUNICIPALITIES}
    client = valkey.Valkey.from_url(valkey_url)
    rng = random.Random(3)
    _send(api, 20_000, rng)
    keys_early, memory_early = _footprint(client)
    assert keys_early <= documented
    _send(api, 180_000, rng)
    keys, memory = _footprint(client)

    assert int(client.get("weather:count")) == 200_000
    assert documented - buckets <= keys <= documented
    assert memory < MEMORY_BOUND
    assert memory <= GROWTH * memory_early, (memory, memory_early)
    for m in MUNICIPALITIES:
        # MAXLEN ~ trims whole stream nodes (100 entries), so a little over RECENT may remain.
        assert client.xlen(f"weather:recent:{m}") <= RECENT + 100
        assert client.xlen(f"weather:series:{m}") <= SERIES
