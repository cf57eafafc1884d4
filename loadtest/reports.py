"""Report payloads: plausible valid ones, and invalid ones with the status each must get.

Pure: no I/O, no Locust. The share of the favourite municipality and the value ranges are those
of the original system's load test.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

WEATHERS = ("sunny", "cloudy", "rainy", "foggy")
MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")


@dataclass(frozen=True, slots=True)
class Report:
    """One valid report, in canonical names (as the service stores it)."""

    municipality: str
    temperature: float
    humidity: int
    weather: str

    def to_json(self) -> dict[str, object]:
        """The request body of this report."""
        return {
            "municipality": self.municipality,
            "temperature": self.temperature,
            "humidity": self.humidity,
            "weather": self.weather,
        }


class ReportFactory:
    """Draws reports: `share` of them for `favourite`, the rest spread evenly over the others."""

    def __init__(
        self,
        municipalities: tuple[str, ...],
        favourite: str,
        share: float = 0.7,
        rng: random.Random | None = None,
    ) -> None:
        if favourite not in municipalities:
            msg = f"municipality {favourite!r} is not one of {', '.join(municipalities)}"
            raise ValueError(msg)
        if not 0.0 <= share <= 1.0:
            msg = f"share {share} is not within 0..1"
            raise ValueError(msg)
        self.favourite = favourite
        self.share = share
        self.others = tuple(m for m in municipalities if m != favourite)
        self._rng = rng or random.Random()  # noqa: S311 - test data, not secrets

    def municipality(self) -> str:
        """The favourite with probability `share`, otherwise one of the others."""
        if not self.others or self._rng.random() < self.share:
            return self.favourite
        return self._rng.choice(self.others)

    def report(self) -> Report:
        """One plausible report: 5..35 °C with one decimal, 20..100 % humidity."""
        return Report(
            municipality=self.municipality(),
            temperature=round(self._rng.uniform(5.0, 35.0), 1),
            humidity=self._rng.randint(20, 100),
            weather=self._rng.choice(WEATHERS),
        )

    def batch(self, size: int) -> list[Report]:
        """`size` independent reports."""
        return [self.report() for _ in range(size)]


@dataclass(frozen=True, slots=True)
class InvalidCase:
    """A request the service must refuse, and the statuses that count as refusing it right."""

    name: str
    path: str
    body: bytes
    content_type: str
    expected: frozenset[int]
    headers: tuple[tuple[str, str], ...] = ()


def _body(value: object) -> bytes:
    return json.dumps(value).encode()


def invalid_cases(good: Report, max_body_bytes: int = 98304) -> list[InvalidCase]:
    """One of each kind of bad request, built around a valid report."""
    report = good.to_json()
    bad_request = frozenset({400})
    single, batch = "/api/weather", "/api/weather/batch"
    return [
        InvalidCase("malformed_json", single, b'{"municipality": ', "application/json", bad_request),
        InvalidCase("not_an_object", single, _body([1, 2]), "application/json", bad_request),
        InvalidCase(
            "unknown_municipality",
            single,
            _body({**report, "municipality": "atlantis"}),
            "application/json",
            bad_request,
        ),
        InvalidCase("unknown_weather", single, _body({**report, "weather": "snowy"}), "application/json", bad_request),
        InvalidCase("humidity_range", single, _body({**report, "humidity": 150}), "application/json", bad_request),
        InvalidCase(
            "temperature_string", single, _body({**report, "temperature": "20"}), "application/json", bad_request
        ),
        InvalidCase("boolean", single, _body({**report, "humidity": True}), "application/json", bad_request),
        InvalidCase(
            "nan",
            single,
            json.dumps({**report, "temperature": float("nan")}).encode(),
            "application/json",
            bad_request,
        ),
        InvalidCase("unknown_field", single, _body({**report, "wind": 3}), "application/json", bad_request),
        InvalidCase(
            "missing_field",
            single,
            _body({k: v for k, v in report.items() if k != "weather"}),
            "application/json",
            bad_request,
        ),
        InvalidCase("wrong_content_type", single, _body(report), "text/plain", frozenset({415})),
        InvalidCase(
            "body_too_large",
            single,
            _body({**report, "padding": "x" * max_body_bytes}),
            "application/json",
            frozenset({413}),
        ),
        InvalidCase(
            "idempotency_key_too_long",
            single,
            _body(report),
            "application/json",
            bad_request,
            (("Idempotency-Key", "k" * 1000),),
        ),
        InvalidCase("empty_batch", batch, b"[]", "application/json", bad_request),
        # All-or-nothing: the valid first report must not be stored either (verify checks that).
        InvalidCase(
            "batch_with_one_bad",
            batch,
            _body([report, {**report, "humidity": -1}]),
            "application/json",
            bad_request,
        ),
    ]
