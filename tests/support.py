"""Small helpers of the tests that talk to a real `weather-api serve`: requests, scrapes, the docs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api

JSON_HEADERS = {"Content-Type": "application/json"}
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def report(municipality: str, temperature: float, humidity: float, weather: str = "sunny") -> dict[str, Any]:
    """One report body."""
    return {"municipality": municipality, "temperature": temperature, "humidity": humidity, "weather": weather}


def send(api: Api, body: Any, path: str = "/api/weather", **headers: str) -> httpx.Response:  # noqa: ANN401
    """POST a JSON document (or raw bytes) as a client would."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(api.url + path, content=content, headers={**JSON_HEADERS, **headers}, timeout=10)


def samples(api: Api, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` in a scrape of the API's /metrics: sorted labels -> value."""
    text = httpx.get(api.url + "/metrics", timeout=5).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def documented_label_values(metric: str, label: str) -> set[str]:
    """The values docs/architecture.md's metrics table lists for one label of one metric."""
    for row in ARCHITECTURE.read_text().splitlines():
        if row.startswith(f"| `{metric}` |"):
            found = re.search(rf"`{label}` \(([^)]*)\)", row)
            assert found, f"no value list for {label} in the row of {metric}"
            return set(re.findall(r"`([^`]+)`", found.group(1)))
    msg = f"{metric} is not in docs/architecture.md's metrics table"
    raise AssertionError(msg)
