"""Helpers of the load-test tests: free ports, polling with a deadline, child processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The `loadtest` package sits at the repository root, which pytest does not put on sys.path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child and reap it (SIGKILL if it will not go)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Api:
    """A running `weather-api serve` on loopback."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def ready(self) -> bool:
        """/ready answers 200 (and the process still runs)."""
        if self.process.poll() is not None:
            pytest.fail(f"weather-api exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


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
