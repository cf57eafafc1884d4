"""Command line: ``python -m weather_dashboards {generate,check}`` (run from observability/)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from weather_dashboards import checks, generate


def _datasource_problems() -> list[checks.Problem]:
    """The data sources against the Prometheus and Tempo configurations they query."""
    sources = [
        source
        for path in sorted(generate.DATASOURCE_DIR.glob("*.y*ml"))
        for source in (yaml.safe_load(path.read_text()) or {}).get("datasources", [])
    ]
    prometheus = {path.name: yaml.safe_load(path.read_text()) for path in generate.PROMETHEUS_CONFIGS}
    tempo = yaml.safe_load(generate.TEMPO_CONFIG.read_text())
    return checks.check_scrape_interval(sources, prometheus) + checks.check_tempo_links(sources, tempo)


def _check() -> int:
    defined, problems = checks.provisioned_datasources(generate.DATASOURCE_DIR)
    problems += _datasource_problems()
    for path in sorted((generate.OBSERVABILITY / "grafana" / "provisioning").rglob("*.y*ml")):
        if path.parent != generate.DATASOURCE_DIR:
            problems += checks.check_provisioning_text(path.read_text(), path.name)
    for name in generate.stale():
        problems.append(checks.Problem("drift", name, "differs from the generator: run `task dashboards`"))
    for name in generate.BUILDERS:
        path = generate.DASHBOARD_DIR / name
        if path.exists():
            problems += checks.check_dashboard(json.loads(path.read_text()), defined)
    for problem in problems:
        sys.stderr.write(f"{problem}\n")
    sys.stdout.write(f"{len(generate.BUILDERS)} dashboards, {len(problems)} problems\n")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="weather_dashboards", description=__doc__)
    parser.add_argument("action", choices=["generate", "check"])
    parser.add_argument("--out", type=Path, default=generate.DASHBOARD_DIR, help="where `generate` writes")
    args = parser.parse_args(argv)
    if args.action == "generate":
        for path in generate.write(args.out):
            sys.stdout.write(f"wrote {path}\n")
        return 0
    return _check()


if __name__ == "__main__":
    sys.exit(main())
