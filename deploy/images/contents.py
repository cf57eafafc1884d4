"""What an image holds, compared with uv.lock: its Python distributions, and what must not be in it.

INSPECT runs in the image with the image's own Python; the lock is read with `uv export` (the
same flags as the Dockerfile's `uv sync`), its environment markers evaluated in the image's
environment (packaging's Marker, given the values INSPECT reports), so a package the lock
keeps for another platform or Python is not expected.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

from packaging.markers import Marker

REPO = Path(__file__).resolve().parents[2]
# Executables of the dev dependency groups, of the build stage, and compilers.
DEV_TOOLS = ("uv", "uvx", "pytest", "ruff", "mypy", "task", "kubectl", "hadolint", "locust", "gcc", "cc")

# Runs in the image: what is installed, the marker environment to evaluate uv.lock's markers
# in, and what must not be there.
INSPECT = """
import importlib.metadata as m, importlib.util, json, os, platform, shutil, sys
tools = sys.argv[1].split(",")
weather = next((d for d in m.distributions() if d.metadata["Name"] == "weather-api"), None)
print(json.dumps({
    "distributions": {d.metadata["Name"]: d.version for d in m.distributions()},
    "direct_url": json.loads(weather.read_text("direct_url.json") or "{}") if weather else None,
    "weather_api": getattr(importlib.util.find_spec("weather_api"), "origin", None),
    "tests": importlib.util.find_spec("tests") is not None,
    "paths": [p for p in ("/src", "/tests", "/app/src", "/app/tests") if os.path.exists(p)],
    "tools": {t: shutil.which(t) for t in tools if shutil.which(t)},
    "markers": {
        "implementation_name": sys.implementation.name,
        "implementation_version": platform.python_version(),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"""


def normalize(name: str) -> str:
    """A distribution name in its canonical form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(*export_args: str) -> list[tuple[str, str, str]]:
    """(name, version, marker) of each package `uv export --frozen ARGS` lists from uv.lock."""
    uv = os.environ.get("UV") or "uv"
    out = subprocess.run(  # noqa: S603 - uv on our own lock file
        [uv, "export", "--frozen", "--no-hashes", "--no-header", "--no-annotate", "--no-emit-project", *export_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages = []
    for line in out.splitlines():
        match = re.match(r"^([A-Za-z0-9][\w.-]*)==(\S+)(?:\s*;\s*(.+))?$", line.strip())
        if match:
            packages.append((normalize(match.group(1)), match.group(2), match.group(3) or ""))
    return packages


def applicable(packages: list[tuple[str, str, str]], markers: dict[str, str]) -> dict[str, str]:
    """Map name -> version of the packages whose marker holds in an image's environment."""
    return {name: version for name, version, marker in packages if not marker or Marker(marker).evaluate(markers)}


def project_version() -> str:
    """pyproject.toml's version."""
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def difference(installed: dict[str, str], expected: dict[str, str]) -> str:
    """What differs between the image's distributions and the lock's, in one line."""
    missing = sorted(set(expected) - set(installed))
    extra = sorted(set(installed) - set(expected))
    other = sorted(
        f"{n} {installed[n]} (lock {expected[n]})"
        for n in set(installed) & set(expected)
        if installed[n] != expected[n]
    )
    return f"missing from the image {missing}; not in the lock's set {extra}; other versions {other}"
