"""Fixtures for the deployment tests: every overlay rendered once per session, as CI sees it.

The overlays are rendered from a copy of deploy/, observability/ and loadtest/ in a temporary
directory, with the Secret inputs (deploy/base/secrets/*.env, git-ignored) made from the committed
*.env.example files with fresh random values: the repository is never written to, and the tests
know every secret value, so they can prove that none leaks outside its Secret.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = sorted(path.name for path in (DEPLOY / "overlays").iterdir() if path.is_dir())
# Render exactly as deploy/Taskfile.yml and `kubectl apply -k` do: kustomize's default load
# restrictor (observability/ and loadtest/ carry their own kustomizations).
RENDER = ("kustomize",)


@dataclass
class Rendered:
    """One overlay's manifests, parsed, plus the secret values its generators were given."""

    overlay: str
    path: Path
    text: str
    objects: list[dict[str, Any]]
    secret_values: dict[str, str] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of one kind."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object of this kind whose name is `name` (or, for generated ones, `name-<hash>`)."""
        for obj in self.of_kind(kind):
            actual = obj["metadata"]["name"]
            if actual == name or (actual.startswith(f"{name}-") and kind in {"ConfigMap", "Secret"}):
                return obj
        msg = f"no {kind} {name} in overlay {self.overlay}"
        raise LookupError(msg)

    def workloads(self) -> list[dict[str, Any]]:
        """Deployments, StatefulSets and Jobs."""
        return self.of_kind("Deployment") + self.of_kind("StatefulSet") + self.of_kind("Job")

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(workload name, pod spec) of every workload."""
        return [(obj["metadata"]["name"], obj["spec"]["template"]["spec"]) for obj in self.workloads()]


def _fake_secrets(tree: Path) -> dict[str, str]:
    """Write secrets/*.env beside each *.env.example, with random values; return them all."""
    values: dict[str, str] = {}
    for example in sorted(tree.glob("deploy/**/secrets/*.env.example")):
        lines = []
        for line in example.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key = line.split("=", 1)[0]
                values[key] = f"test{secrets.token_hex(16)}"
                lines.append(f"{key}={values[key]}")
            else:
                lines.append(line)
        example.with_suffix("").write_text("\n".join(lines) + "\n")
    return values


@pytest.fixture(scope="session")
def render_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of what the overlays read, with fake secret inputs."""
    tree = tmp_path_factory.mktemp("render")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # A developer's real secrets stay where they are; caches and results are not inputs.
        skip = {"__pycache__", "results", ".task"}
        if Path(folder).name == "secrets":
            skip |= {name for name in names if name.endswith(".env")}
        return skip & set(names) | {name for name in names if name in skip}

    for part in ("deploy", "observability", "loadtest"):
        shutil.copytree(REPO / part, tree / part, ignore=ignore)
    return tree, _fake_secrets(tree)


@pytest.fixture(scope="session")
def rendered_all(render_tree: tuple[Path, dict[str, str]]) -> dict[str, Rendered]:
    """Every overlay rendered with kubectl's kustomize (the overlay name is the key)."""
    kubectl = require_binary("kubectl")
    tree, values = render_tree
    result = {}
    for overlay in OVERLAYS:
        out = subprocess.run(  # noqa: S603 - kubectl on our own overlays
            [kubectl, *RENDER, str(tree / "deploy" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"overlay {overlay} does not render:\n{out.stderr}"
        path = tree / f"{overlay}.yaml"
        path.write_text(out.stdout)
        objects = [obj for obj in yaml.safe_load_all(out.stdout) if obj]
        result[overlay] = Rendered(overlay, path, out.stdout, objects, values)
    return result


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    """Each overlay in turn."""
    return rendered_all[request.param]
