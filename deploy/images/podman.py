"""podman, run with this folder's containers.conf (runc, cgroupfs, the caller's ulimits)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CONTAINERS_CONF = Path(__file__).resolve().parent / "containers.conf"


class PodmanError(RuntimeError):
    """A podman command failed; the message holds the command and its stderr."""


class Podman:
    """Runs podman commands; every one gets CONTAINERS_CONF, so the machine's settings stay as they are."""

    def __init__(self, executable: str | None = None) -> None:
        found = executable or shutil.which("podman")
        if found is None:
            raise PodmanError("podman is not installed (apt-get install podman runc)")
        self.executable = found
        self.env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS`, capturing its output; raise PodmanError if it fails and `check`."""
        result = subprocess.run(  # noqa: S603 - podman with arguments built by this package
            [self.executable, *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:4])} ... exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def version(self) -> str:
        """The version of podman, for the report."""
        return self("version", "--format", "{{.Client.Version}}").stdout.strip()
