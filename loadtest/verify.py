"""`task loadtest:verify`: check that Valkey holds exactly what the last load test saw accepted.

Compares the run's ledger with the aggregates, per municipality and weather: `weather:counts`,
the `weather:conditions:<m>` zsets, and the sums, minimum and maximum of the measurements. Prints
lost (accepted but missing) and duplicated (counted more often than accepted) reports and exits
0 only when both are 0 and nothing else disagrees.

Needs a store that held nothing before the run (`task loadtest:reset -- --yes` first) and no
other writer during it: whatever else was written shows up as duplicated.

Exit codes: 0 exact, 1 a difference (or reports of unknown fate), 2 nothing to compare.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from valkey.exceptions import ValkeyError

from loadtest.ledger import Ledger
from loadtest.reports import WEATHERS
from loadtest.store import NoValkey, connect, redacted, resolve_url

RESULTS = Path("loadtest/results")
MAX_DETAILS = 20


@dataclass(frozen=True, slots=True)
class Cell:
    """One municipality and weather: reports in the ledger and in Valkey."""

    municipality: str
    weather: str
    accepted: int
    unknown: int
    stored: int

    @property
    def lost(self) -> int:
        """Accepted but not stored."""
        return max(0, self.accepted - self.stored)

    @property
    def duplicated(self) -> int:
        """Stored beyond what was accepted or may have been (unknown fate)."""
        return max(0, self.stored - self.accepted - self.unknown)


@dataclass
class Comparison:
    """The outcome of comparing a ledger with Valkey."""

    cells: list[Cell] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Disagreements beyond the per-weather counts (sums, totals, extremes)."""

    @property
    def lost(self) -> int:
        """Reports lost, all cells."""
        return sum(c.lost for c in self.cells)

    @property
    def duplicated(self) -> int:
        """Reports duplicated, all cells."""
        return sum(c.duplicated for c in self.cells)

    @property
    def unknown(self) -> int:
        """Reports of unknown fate, all cells."""
        return sum(c.unknown for c in self.cells)

    @property
    def exact(self) -> bool:
        """Nothing lost, duplicated, uncertain or otherwise different."""
        return self.lost == 0 and self.duplicated == 0 and self.unknown == 0 and not self.problems


def latest_ledger(results: Path) -> Path:
    """The ledger of the newest run under `results` (folders are named by start time)."""
    runs = sorted(p.parent for p in results.glob("*/ledger.json") if p.parent.name != "latest")
    if not runs:
        msg = f"no ledger under {results}: run `task loadtest` first, or pass --ledger"
        raise FileNotFoundError(msg)
    return runs[-1] / "ledger.json"


def _numbers(mapping: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in mapping.items()}


def read_store(client: Any, prefix: str, municipalities: Iterable[str]) -> dict[str, Any]:  # noqa: ANN401
    """Everything verify compares, in one pipeline (one round trip)."""
    names = list(municipalities)
    pipe = client.pipeline(transaction=False)
    for m in names:
        pipe.zrange(f"{prefix}:conditions:{m}", 0, -1, withscores=True)
    pipe.hgetall(f"{prefix}:counts")
    pipe.get(f"{prefix}:count")
    pipe.zrange(f"{prefix}:conditions", 0, -1, withscores=True)
    pipe.hgetall(f"{prefix}:sum:temperature")
    pipe.hgetall(f"{prefix}:sum:humidity")
    pipe.zrange(f"{prefix}:max", 0, -1, withscores=True)
    pipe.zrange(f"{prefix}:min", 0, -1, withscores=True)
    answers = pipe.execute()
    per_m, rest = answers[: len(names)], answers[len(names) :]
    return {
        "conditions": {m: dict(z) for m, z in zip(names, per_m, strict=True)},
        "counts": _numbers(rest[0]),
        "count": float(rest[1] or 0),
        "all_conditions": dict(rest[2]),
        "sum": {"temperature": _numbers(rest[3]), "humidity": _numbers(rest[4])},
        "max": dict(rest[5]),
        "min": dict(rest[6]),
    }


def _close(a: float, b: float, n: int) -> bool:
    """Float sums agree up to rounding (HINCRBYFLOAT keeps about 17 digits per step)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6 * max(1, n))


def compare(ledger: Ledger, store: Mapping[str, Any]) -> Comparison:
    """Per-cell counts plus the totals, sums and extremes that must agree with them."""
    result = Comparison()
    conditions: Mapping[str, Mapping[str, float]] = store["conditions"]
    for m in sorted(conditions):
        weathers = sorted(set(WEATHERS) | set(conditions[m]) | set(ledger.accepted.get(m, {})))
        for w in weathers:
            result.cells.append(
                Cell(
                    m,
                    w,
                    ledger.accepted.get(m, {}).get(w, 0),
                    ledger.unknown.get(m, {}).get(w, 0),
                    int(conditions[m].get(w, 0)),
                )
            )
    stored_by_m = {m: sum(c.stored for c in result.cells if c.municipality == m) for m in conditions}
    for m, n in sorted(stored_by_m.items()):
        counted = int(store["counts"].get(m, 0))
        if counted != n:
            result.problems.append(f"{m}: weather:counts says {counted}, its conditions zset {n}")
    total = int(store["count"])
    if total != sum(stored_by_m.values()):
        result.problems.append(f"weather:count says {total}, the municipalities {sum(stored_by_m.values())}")
    for w in WEATHERS:
        overall = int(store["all_conditions"].get(w, 0))
        parts = sum(c.stored for c in result.cells if c.weather == w)
        if overall != parts:
            result.problems.append(f"weather:conditions says {overall} {w}, the municipalities {parts}")
    if ledger.total_unknown == 0:
        result.problems += _measurements(ledger, store)
    return result


def _measurements(ledger: Ledger, store: Mapping[str, Any]) -> list[str]:
    """Sums per municipality and overall extremes must be those of the accepted reports."""
    problems = []
    for name, summaries in (("temperature", ledger.temperature), ("humidity", ledger.humidity)):
        stored = store["sum"][name]
        for m in sorted(set(summaries) | set(stored)):
            n = sum(ledger.accepted.get(m, {}).values())
            mine = summaries[m].sum if m in summaries else 0.0
            theirs = stored.get(m, 0.0)
            if not _close(mine, theirs, n):
                problems.append(f"{m}: sum of {name} {theirs:.6f} in Valkey, {mine:.6f} accepted")
        if not summaries:
            continue
        for label, extreme in (
            ("max", max(s.max for s in summaries.values())),
            ("min", min(s.min for s in summaries.values())),
        ):
            theirs = store[label].get(name)
            if theirs is None or not _close(extreme, float(theirs), 1):
                problems.append(f"{label} {name} {theirs} in Valkey, {extreme:g} accepted")
    return problems


def report(ledger: Ledger, path: Path, where: str, result: Comparison) -> list[str]:
    """The lines verify prints."""
    meta = ledger.meta
    lines = [
        (
            f"ledger  {path} (profile {meta.get('profile', '?')}, {ledger.requests} requests, "
            f"{ledger.total_accepted} reports accepted{'' if meta.get('complete', True) else ', INCOMPLETE'})"
        ),
        f"valkey  {where}",
        "",
        f"{'municipality':<14}{'accepted':>10}{'in valkey':>11}{'lost':>7}{'duplicated':>12}{'unknown':>9}",
    ]
    municipalities = sorted({c.municipality for c in result.cells})
    for m in [*municipalities, "total"]:
        cells = [c for c in result.cells if m in ("total", c.municipality)]
        lines.append(
            f"{m:<14}{sum(c.accepted for c in cells):>10}{sum(c.stored for c in cells):>11}"
            f"{sum(c.lost for c in cells):>7}{sum(c.duplicated for c in cells):>12}{sum(c.unknown for c in cells):>9}"
        )
    lines.append("")
    details = [
        f"  {c.municipality}/{c.weather}: accepted {c.accepted}, in Valkey {c.stored}, unknown fate {c.unknown}"
        for c in result.cells
        if c.lost or c.duplicated
    ] + [f"  {problem}" for problem in result.problems]
    lines += details[:MAX_DETAILS]
    if len(details) > MAX_DETAILS:
        lines.append(f"  ... and {len(details) - MAX_DETAILS} more differences")
    lines.append(f"lost {result.lost}, duplicated {result.duplicated}")
    if not meta.get("complete", True):
        lines.append("WARNING: the ledger is incomplete (the run was cut short); differences may be its own")
    if result.unknown:
        lines.append(
            f"INCONCLUSIVE: {result.unknown} reports of unknown fate "
            "(timeouts or 503 outcome unknown, without a retry that settled them)"
        )
    if result.duplicated and not result.lost:
        lines.append("hint: was the store empty before the run? `task loadtest:reset -- --yes` empties it")
    lines.append("OK: Valkey holds exactly the accepted reports" if result.exact else "FAILED")
    return lines


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", type=Path, help="ledger file (default: the newest under --results)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    parser.add_argument("--valkey-url", help="default: WEATHER_VALKEY_URL, else $WEATHER_DATA_DIR/valkey.url")
    parser.add_argument("--prefix", help="key prefix (default: WEATHER_KEY_PREFIX, else weather)")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    try:
        path = args.ledger or latest_ledger(args.results)
        ledger = Ledger.read(path)
        url = resolve_url(args.valkey_url, env)
        prefix = args.prefix or env.get("WEATHER_KEY_PREFIX") or "weather"
        client = connect(url)
        try:
            registered = cast("set[str]", client.smembers(f"{prefix}:municipalities"))
            municipalities = sorted(set(registered) | set(ledger.accepted) | set(ledger.unknown))
            store = read_store(client, prefix, municipalities)
        finally:
            client.close()  # type: ignore[no-untyped-call]
    except (FileNotFoundError, ValueError, NoValkey, ValkeyError) as exc:
        print(f"verify: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    result = compare(ledger, store)
    print("\n".join(report(ledger, path, f"{redacted(url)} (prefix {prefix})", result)))  # noqa: T201
    return 0 if result.exact else 1


if __name__ == "__main__":
    sys.exit(main())
