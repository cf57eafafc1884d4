"""Pass/fail thresholds of a run, and the short summary printed at its end.

Pure: the locustfile hands in numbers read from Locust's stats and the ledger. A limit below 0
is switched off.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.ledger import Ledger


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits a run must stay within (defaults documented in loadtest/README.md)."""

    max_failure_ratio: float = 0.01
    """Failed requests / all requests (Locust's count: retries and invalid probes included)."""
    max_p95_ms: float = 100.0
    """95th percentile response time, milliseconds."""
    max_p99_ms: float = 250.0
    """99th percentile response time, milliseconds."""


@dataclass(frozen=True, slots=True)
class Observed:
    """What a run measured, over all request names."""

    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    seconds: float

    @property
    def failure_ratio(self) -> float:
        """Failed / all requests; 0 when there were none."""
        return self.failures / self.requests if self.requests else 0.0


def broken(limits: Thresholds, seen: Observed) -> list[str]:
    """One message per broken threshold, naming it and its option; empty when the run passes."""
    if seen.requests == 0:
        return ["no requests were made (is the host reachable and the budget non-zero?)"]
    problems = []
    if 0 <= limits.max_failure_ratio < seen.failure_ratio:
        problems.append(
            f"failure ratio {seen.failure_ratio:.2%} ({seen.failures} of {seen.requests}) "
            f"> limit {limits.max_failure_ratio:.2%} (--max-failure-ratio {limits.max_failure_ratio:g})"
        )
    for label, value, limit, option in (
        ("p95", seen.p95_ms, limits.max_p95_ms, "--max-p95-ms"),
        ("p99", seen.p99_ms, limits.max_p99_ms, "--max-p99-ms"),
    ):
        if 0 <= limit < value:
            problems.append(f"{label} response time {value:g} ms > limit {limit:g} ms ({option} {limit:g})")
    return problems


def summary(seen: Observed, ledger: Ledger, planned: int | None) -> list[str]:
    """A few lines a person reads at the end of a run."""
    rate = seen.requests / seen.seconds if seen.seconds > 0 else 0.0
    plan = f" of {planned} planned" if planned else ""
    by_municipality = ", ".join(
        f"{m} {sum(row.values())}" for m, row in sorted(ledger.accepted.items(), key=lambda kv: -sum(kv[1].values()))
    )
    rejected = (
        ", ".join(
            f"{'no connection' if status == '0' else status}: {n}" for status, n in sorted(ledger.rejected.items())
        )
        or "none"
    )
    return [
        (
            f"logical requests {ledger.requests}{plan}; HTTP requests {seen.requests} in {seen.seconds:.1f} s "
            f"({rate:.0f}/s)"
        ),
        f"failures {seen.failures} ({seen.failure_ratio:.2%})",
        (
            f"response time p50 {seen.p50_ms:.4g} ms, p95 {seen.p95_ms:.4g} ms, p99 {seen.p99_ms:.4g} ms, "
            f"max {seen.max_ms:.4g} ms"
        ),
        (
            f"reports accepted {ledger.total_accepted} ({by_municipality or 'none'}); "
            f"fate unknown {ledger.total_unknown}; requests refused {rejected}"
        ),
    ]
