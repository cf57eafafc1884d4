"""What the Weather dashboard should show, computed from the reports a client actually sent.

The end-to-end test records every report Locust got a 201 for and holds each Valkey panel to
these numbers; the unit tests write the same aggregates into Valkey by hand (``write_layout``)
to prove the panel checks themselves.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import valkey

WEATHERS = ("sunny", "cloudy", "rainy", "foggy")
MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")
METRICS = ("temperature", "humidity")


def canonical(name: str) -> str:
    """The stored form of a municipality or weather: accents stripped, case folded."""
    decomposed = unicodedata.normalize("NFKD", name.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@dataclasses.dataclass(frozen=True)
class Report:
    """One accepted report, canonicalised."""

    municipality: str
    weather: str
    temperature: float
    humidity: float

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Report:
        """Build from a request body as the API accepts it."""
        return cls(
            canonical(body["municipality"]),
            canonical(body["weather"]),
            float(body["temperature"]),
            float(body["humidity"]),
        )


@dataclasses.dataclass
class Expected:
    """Aggregates of a set of reports, in the terms of the Valkey key layout."""

    municipalities: tuple[str, ...] = MUNICIPALITIES
    count: Counter[str] = dataclasses.field(default_factory=Counter)
    sums: dict[str, dict[str, float]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    highest: dict[str, float] = dataclasses.field(default_factory=dict)
    lowest: dict[str, float] = dataclasses.field(default_factory=dict)
    conditions: Counter[str] = dataclasses.field(default_factory=Counter)
    conditions_in: dict[str, Counter[str]] = dataclasses.field(default_factory=lambda: defaultdict(Counter))

    @classmethod
    def from_reports(cls, reports: Iterable[Report], municipalities: tuple[str, ...] = MUNICIPALITIES) -> Expected:
        """Aggregate ``reports``."""
        expected = cls(municipalities)
        for report in reports:
            expected.add(report)
        return expected

    @classmethod
    def from_ledger(cls, ledger: Mapping[str, Any], municipalities: tuple[str, ...] = MUNICIPALITIES) -> Expected:
        """Aggregate the accepted reports of a Locust run's ledger (loadtest/ledger.py, format 1).

        The ledger keeps, per municipality, counts per weather and sum/min/max of each
        measurement of the reports the service answered 201 for: all the dashboard needs.
        """
        if ledger.get("format") != 1:
            msg = f"ledger format {ledger.get('format')!r} is not 1"
            raise ValueError(msg)
        expected = cls(municipalities)
        for municipality, row in ledger["accepted"].items():
            m = canonical(municipality)
            for weather, n in row.items():
                expected.count[m] += n
                expected.conditions[canonical(weather)] += n
                expected.conditions_in[m][canonical(weather)] += n
        for metric in METRICS:
            for municipality, summary in ledger[metric].items():
                if summary.get("max") is None:
                    continue
                m = canonical(municipality)
                expected.sums[m][metric] += float(summary["sum"])
                expected.highest[metric] = max(expected.highest.get(metric, summary["max"]), float(summary["max"]))
                expected.lowest[metric] = min(expected.lowest.get(metric, summary["min"]), float(summary["min"]))
        return expected

    def add(self, report: Report) -> None:
        """Count one report."""
        self.count[report.municipality] += 1
        self.conditions[report.weather] += 1
        self.conditions_in[report.municipality][report.weather] += 1
        for metric in METRICS:
            value = getattr(report, metric)
            self.sums[report.municipality][metric] += value
            self.highest[metric] = max(self.highest.get(metric, value), value)
            self.lowest[metric] = min(self.lowest.get(metric, value), value)

    def mean(self, metric: str) -> dict[str, float]:
        """Mean of ``metric`` per municipality that has reports."""
        return {m: self.sums[m][metric] / n for m, n in self.count.items()}

    def ranked_conditions(self, municipality: str) -> list[tuple[str, int]]:
        """Weathers of ``municipality`` in ZRANGE order: by count, ties by name; zeros included."""
        counts = self.conditions_in[municipality]
        return sorted(((w, counts[w]) for w in WEATHERS), key=lambda item: (item[1], item[0]))


def write_layout(
    client: valkey.Valkey, reports: Iterable[Report], prefix: str = "weather", *, bucket_ms: int, now_ms: int
) -> Expected:
    """Write the docs/architecture.md key layout for ``reports`` directly into Valkey.

    A stand-in for the API's Valkey function, for tests of the dashboard checks that must not
    depend on the app. Reports are spread one per bucket ending at ``now_ms``; the last one
    stays in the open bucket (weather:bucket:<m>), like a bucket that has not rolled over yet.
    """
    reports = list(reports)
    expected = Expected.from_reports(reports)
    pipe = client.pipeline()
    pipe.sadd(f"{prefix}:municipalities", *expected.municipalities)
    pipe.zadd(f"{prefix}:conditions", {w: expected.conditions[w] for w in WEATHERS})
    for m in expected.municipalities:
        pipe.zadd(f"{prefix}:conditions:{m}", {w: expected.conditions_in[m][w] for w in WEATHERS})
    for metric in METRICS:
        means = expected.mean(metric)
        if means:
            pipe.hset(f"{prefix}:avg:{metric}", mapping=means)
            pipe.hset(f"{prefix}:sum:{metric}", mapping={m: expected.sums[m][metric] for m in means})
    if expected.highest:
        pipe.zadd(f"{prefix}:max", expected.highest)
        pipe.zadd(f"{prefix}:min", expected.lowest)
    if expected.count:
        pipe.hset(f"{prefix}:counts", mapping=dict(expected.count))
    pipe.set(f"{prefix}:count", sum(expected.count.values()))
    by_municipality: dict[str, list[Report]] = defaultdict(list)
    for report in reports:
        by_municipality[report.municipality].append(report)
    for m, items in by_municipality.items():
        closed, open_bucket = items[:-1], items[-1]
        start = now_ms - len(items) * bucket_ms
        for i, report in enumerate(closed):
            pipe.xadd(
                f"{prefix}:series:{m}",
                {"temperature": report.temperature, "humidity": report.humidity, "count": 1},
                id=f"{start + i * bucket_ms}-0",
            )
        pipe.hset(
            f"{prefix}:bucket:{m}",
            mapping={
                "start": now_ms - bucket_ms,
                "count": 1,
                "temperature_sum": open_bucket.temperature,
                "humidity_sum": open_bucket.humidity,
            },
        )
    pipe.execute()  # type: ignore[no-untyped-call]  # valkey-py leaves Pipeline.execute untyped
    return expected
