"""Both images built from the real Dockerfile and run, as issue 12 asks (deploy/images/check.py).

The whole image test needs root, podman, runc and debootstrap: skipped with the reason where
one is missing, a failure under CI=true (.ci/run installs them). It takes about half a minute
with the stand-in bases cached, two to three minutes without (deploy/README.md). The other tests
here check the parts of deploy/images/ that need no container engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.images.bases import debian_mirror, dockerfile_bases, qualified
from deploy.images.kubernetes import configmap_volume, loadtest_files
from tests.conftest import require_binary
from tests.deploy.conftest import REPO


def test_both_images_build_and_pass_every_check() -> None:
    """`python -m deploy.images.check` (task image:test) builds both targets and every check passes.

    Its output, one PASS or FAIL line per check, is the assertion message.
    """
    for tool in ("podman", "runc", "debootstrap"):
        require_binary(tool)
    if os.geteuid() != 0:
        message = "the image test needs root (debootstrap, rootful podman)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [sys.executable, "-m", "deploy.images.check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def test_locustfile_imports_its_package_from_a_configmap_volume(tmp_path: Path) -> None:
    """In a ConfigMap volume each file is a symlink into `..data/`: the locustfile still finds `loadtest`."""
    locust = require_binary("locust")
    volume = configmap_volume(loadtest_files(), tmp_path / "mnt" / "loadtest")
    assert (volume / "locustfile.py").is_symlink()
    result = subprocess.run(  # noqa: S603 - the locust of our environment
        [locust, "-f", str(volume / "locustfile.py"), "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "ReportUser" in result.stdout


def test_configmap_files_are_every_loadtest_module() -> None:
    """The files mounted for Locust are the ConfigMap's list, and that list is all of loadtest/*.py."""
    assert {path.name for path in loadtest_files()} == {path.name for path in (REPO / "loadtest").glob("*.py")}


def test_stand_ins_are_named_after_the_dockerfile_from_lines() -> None:
    """The stand-in bases carry the exact (qualified) names and versions the Dockerfile's FROM lines give."""
    text = (REPO / "Dockerfile").read_text()
    bases = dockerfile_bases(REPO / "Dockerfile")
    assert f"ARG PYTHON_VERSION={bases.python_version}\n" in text
    assert f"ARG UV_VERSION={bases.uv_version}\n" in text
    assert f"ARG LOCUST_VERSION={bases.locust_version}\n" in text
    assert bases.python == f"docker.io/library/python:{bases.python_version}-slim-{bases.suite}"
    assert bases.uv == f"ghcr.io/astral-sh/uv:{bases.uv_version}"
    assert bases.locust == f"docker.io/locustio/locust:{bases.locust_version}"
    assert qualified("localhost/weather-api:dev") == "localhost/weather-api:dev"


def test_debian_mirror_is_the_one_apt_uses(tmp_path: Path) -> None:
    """The suite's archive from deb822 or one-line sources, never the security archive; else deb.debian.org."""
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian trixie main\n")
    assert debian_mirror("trixie", tmp_path) == "http://other.example/debian"
    assert debian_mirror("bookworm", tmp_path) == "http://deb.debian.org/debian"
