"""Helpers of the load-test tests: running `python -m loadtest.*` from the repository root."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The `loadtest` package sits at the repository root, which pytest does not put on sys.path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def loadtest(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m loadtest.<module> args` from the repository root; output captured."""
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_args(api_url: str, results: Path, *extra: str) -> Sequence[str]:
    """Arguments of `loadtest.run` for a short run against the test API, no metrics ports."""
    return (
        "loadtest.run",
        "--host",
        api_url,
        "--results",
        str(results),
        "--metrics-port",
        "0",
        "--spawn-rate",
        "100",
        *extra,
    )
