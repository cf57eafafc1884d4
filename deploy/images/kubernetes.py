"""The manifests of deploy/base, read to run the images as Kubernetes would: user, volumes, env, args.

No kubelet runs here: a ConfigMap volume is laid out as the kubelet lays it out (files as
symlinks into `..data/`), an emptyDir is a new folder with mode 0777, and podman mounts them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
API_MANIFEST = REPO / "deploy/base/api/deployment.yaml"
LOCUST_MANIFEST = REPO / "deploy/base/locust/deployment-master.yaml"
LOCUST_KUSTOMIZATION = REPO / "deploy/base/locust/kustomization.yaml"


def configmap_volume(files: list[Path], directory: Path) -> Path:
    """Lay `files` out in `directory` as the kubelet mounts a ConfigMap: symlinks into ..data."""
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.000000001")
    (directory / stamp).mkdir(parents=True)
    for file in files:
        (directory / stamp / file.name).write_bytes(file.read_bytes())
        (directory / stamp / file.name).chmod(0o644)
        (directory / file.name).symlink_to(Path("..data") / file.name)
    (directory / "..data").symlink_to(stamp)
    for folder in (directory, directory / stamp):
        folder.chmod(0o755)
    return directory


def loadtest_files() -> list[Path]:
    """The files of the `locust-loadtest` ConfigMap, found as kustomize does from deploy/base/locust/."""
    files = _generator_files(LOCUST_KUSTOMIZATION.parent, "locust-loadtest")
    if files is None:
        msg = f"no configMapGenerator locust-loadtest under {LOCUST_KUSTOMIZATION.parent}"
        raise LookupError(msg)
    return files


def _generator_files(folder: Path, name: str) -> list[Path] | None:
    """The files of the ConfigMap generator `name` in this kustomization or one it references."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for generator in kustomization.get("configMapGenerator", []):
        if generator["name"] == name:
            return [(folder / path).resolve() for path in generator["files"]]
    for resource in kustomization.get("resources", []):
        if (folder / resource / "kustomization.yaml").is_file():
            found = _generator_files((folder / resource).resolve(), name)
            if found is not None:
                return found
    return None


def container_spec(manifest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, first container) of a Deployment manifest."""
    pod = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def volumes(work: Path, name: str, pod: dict[str, Any], spec: dict[str, Any], configmaps: dict[str, Path]) -> list[str]:
    """The `--volume` options for a container's volumeMounts, as the kubelet would mount them.

    An emptyDir is a new folder with mode 0777 (as the kubelet makes it), a ConfigMap the
    folder given for its name (see configmap_volume).
    """
    by_name = {volume["name"]: volume for volume in pod["volumes"]}
    options = []
    for mount in spec["volumeMounts"]:
        volume = by_name[mount["name"]]
        if "emptyDir" in volume:
            source = work / f"{name}-{mount['name']}"
            source.mkdir()
            source.chmod(0o777)
        else:
            source = configmaps[volume["configMap"]["name"]]
        options.append(f"--volume={source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}")
    return options
