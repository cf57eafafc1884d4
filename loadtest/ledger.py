"""The ledger: what the load test saw the service accept, for `verify` to compare with Valkey.

A report enters the ledger once, when the logical request that carried it ends: accepted (a 201,
first or replayed), rejected (an answer that says nothing was written), or unknown (no answer, or a 503 saying
`"outcome": "unknown"`: the service may or may not have applied it). Workers of a
distributed run send their ledgers to the master in pieces (`to_dict`/`merge`); the master or a
standalone run writes the one file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.reports import Report

FORMAT = 1


@dataclass
class Summary:
    """Sum, minimum and maximum of one measurement over the accepted reports."""

    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, value: float) -> None:
        """Account for one more value."""
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def merge(self, other: Summary) -> None:
        """Account for the values of another summary."""
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def to_dict(self) -> dict[str, float | None]:
        """JSON form; an empty summary has no minimum or maximum."""
        empty = math.isinf(self.min)
        return {"sum": self.sum, "min": None if empty else self.min, "max": None if empty else self.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Inverse of `to_dict`."""
        low, high = data.get("min"), data.get("max")
        return cls(
            float(data["sum"]),
            math.inf if low is None else float(low),
            -math.inf if high is None else float(high),
        )


def _add_count(table: dict[str, dict[str, int]], municipality: str, weather: str, n: int = 1) -> None:
    row = table.setdefault(municipality, {})
    row[weather] = row.get(weather, 0) + n


@dataclass
class Ledger:
    """Outcomes of the logical requests of one run (or of one worker's share of it)."""

    requests: int = 0
    """Logical requests that ended (a retried request counts once)."""
    accepted: dict[str, dict[str, int]] = field(default_factory=dict)
    """municipality -> weather -> reports accepted."""
    temperature: dict[str, Summary] = field(default_factory=dict)
    """municipality -> temperature of the accepted reports."""
    humidity: dict[str, Summary] = field(default_factory=dict)
    """municipality -> humidity of the accepted reports."""
    unknown: dict[str, dict[str, int]] = field(default_factory=dict)
    """municipality -> weather -> reports whose fate the load test could not learn."""
    rejected: dict[str, int] = field(default_factory=dict)
    """status code (as text; "0" for no answer) -> logical requests refused or given up."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Facts about the run: host, profile, times (written by the master only)."""

    def accept(self, reports: Iterable[Report]) -> None:
        """Reports the service acknowledged with 201."""
        for report in reports:
            _add_count(self.accepted, report.municipality, report.weather)
            self.temperature.setdefault(report.municipality, Summary()).add(report.temperature)
            self.humidity.setdefault(report.municipality, Summary()).add(report.humidity)

    def lose_track(self, reports: Iterable[Report]) -> None:
        """Reports sent without learning whether they were applied."""
        for report in reports:
            _add_count(self.unknown, report.municipality, report.weather)

    def reject(self, status: int) -> None:
        """A logical request refused with `status` (nothing written, per the contract)."""
        key = str(status)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def finish(self, n: int = 1) -> None:
        """`n` logical requests ended."""
        self.requests += n

    @property
    def total_accepted(self) -> int:
        """Reports accepted, all municipalities."""
        return sum(sum(row.values()) for row in self.accepted.values())

    @property
    def total_unknown(self) -> int:
        """Reports of unknown fate, all municipalities."""
        return sum(sum(row.values()) for row in self.unknown.values())

    def is_empty(self) -> bool:
        """True when nothing has been recorded since creation (or the last `take`)."""
        return self.requests == 0 and not (self.accepted or self.unknown or self.rejected)

    def merge(self, other: Ledger) -> None:
        """Add another ledger's outcomes (a worker's piece) to this one."""
        self.requests += other.requests
        for table, theirs in ((self.accepted, other.accepted), (self.unknown, other.unknown)):
            for municipality, row in theirs.items():
                for weather, n in row.items():
                    _add_count(table, municipality, weather, n)
        for mine, summaries in ((self.temperature, other.temperature), (self.humidity, other.humidity)):
            for municipality, summary in summaries.items():
                mine.setdefault(municipality, Summary()).merge(summary)
        for status, n in other.rejected.items():
            self.rejected[status] = self.rejected.get(status, 0) + n

    def take(self) -> Ledger:
        """Return the outcomes so far and start empty (for sending a piece to the master)."""
        piece = Ledger(self.requests, self.accepted, self.temperature, self.humidity, self.unknown, self.rejected)
        self.requests, self.accepted, self.temperature, self.humidity = 0, {}, {}, {}
        self.unknown, self.rejected = {}, {}
        return piece

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with totals for people reading the file."""
        return {
            "format": FORMAT,
            "meta": self.meta,
            "requests": self.requests,
            "accepted_total": self.total_accepted,
            "unknown_total": self.total_unknown,
            "accepted": self.accepted,
            "temperature": {m: s.to_dict() for m, s in sorted(self.temperature.items())},
            "humidity": {m: s.to_dict() for m, s in sorted(self.humidity.items())},
            "unknown": self.unknown,
            "rejected": self.rejected,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        """Inverse of `to_dict`; refuses other formats."""
        if data.get("format", FORMAT) != FORMAT:
            msg = f"ledger format {data.get('format')!r} is not {FORMAT}"
            raise ValueError(msg)
        return cls(
            requests=int(data.get("requests", 0)),
            accepted={m: {w: int(n) for w, n in row.items()} for m, row in data.get("accepted", {}).items()},
            temperature={m: Summary.from_dict(s) for m, s in data.get("temperature", {}).items()},
            humidity={m: Summary.from_dict(s) for m, s in data.get("humidity", {}).items()},
            unknown={m: {w: int(n) for w, n in row.items()} for m, row in data.get("unknown", {}).items()},
            rejected={s: int(n) for s, n in data.get("rejected", {}).items()},
            meta=dict(data.get("meta", {})),
        )

    def write(self, path: Path) -> None:
        """Write the JSON file (atomically: a reader never sees half a ledger)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> Ledger:
        """Read a ledger file."""
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
