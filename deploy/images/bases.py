"""Stand-in base images for the Dockerfile's FROM lines: no registry can be reached here.

The Dockerfile is built as it is, so images with the exact names of its FROM lines must exist
locally (`podman build --pull=never`). They are made here, each from a real part:

- `python:<version>-slim-<suite>`: a Debian root filesystem from debootstrap (minbase plus
  python3, python3-venv, python-is-python3, ca-certificates, netbase, tzdata) from the Debian
  mirror apt already uses, trimmed as a slim image is (no apt lists, man pages, locales), with
  this machine's CA bundle as the system's: downloads in the build go through the same
  TLS-inspecting proxy as this machine's, and both uv (the project's `system-certs = true`) and
  Debian's pip trust the system bundle. `podman import` makes it an image.
- `ghcr.io/astral-sh/uv:<version>`: /uv and /uvx of the pinned `uv` wheel for musl (the same
  static binary as the official image, which is FROM scratch), imported.
- `locustio/locust:<version>`: locust-standin.Containerfile on the Python stand-in.

The root filesystem and the uv image are cached as tar files in ~/.cache/weather-api/images
(or $XDG_CACHE_HOME/weather-api/images) and rebuilt when absent. Every stand-in carries a label
with the key of its recipe (this file, the Containerfile, the CA bundle, the mirror): a changed
recipe builds new ones. How they differ from the official images: deploy/README.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.images.podman import Podman

HERE = Path(__file__).resolve().parent
LOCUST_CONTAINERFILE = HERE / "locust-standin.Containerfile"
LABEL = "org.weather-api.stand-in"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase", "tzdata")


class StandInError(RuntimeError):
    """A stand-in base cannot be made (the message says why and what to do)."""


@dataclass(frozen=True)
class Bases:
    """The FROM images of the Dockerfile that need a stand-in, fully qualified."""

    python: str
    python_version: str
    suite: str
    uv: str
    uv_version: str
    locust: str
    locust_version: str


def qualified(reference: str) -> str:
    """A reference as podman stores it: `python:3.11` is docker.io/library/python:3.11."""
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference}" if "/" in reference else f"docker.io/library/{reference}"


def dockerfile_bases(dockerfile: Path) -> Bases:
    """Read the FROM lines (with the global ARG defaults substituted) that need stand-ins."""
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text.split("\nFROM ", 1)[0], re.MULTILINE))
    references = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        for ref in re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    ]
    found: dict[str, re.Match[str]] = {}
    patterns = {
        "python": r"(?:docker\.io/(?:library/)?)?python:(\d+\.\d+)-slim-(\w+)",
        "uv": r"ghcr\.io/astral-sh/uv:([\d.]+)",
        "locust": r"(?:docker\.io/)?locustio/locust:([\d.]+)",
    }
    for ref in references:
        for kind, pattern in patterns.items():
            match = re.fullmatch(pattern, ref)
            if match:
                found[kind] = match
    missing = set(patterns) - set(found)
    if missing:
        raise StandInError(
            f"the Dockerfile has no FROM for {', '.join(sorted(missing))}: update deploy/images/bases.py"
        )
    return Bases(
        python=qualified(found["python"].group(0)),
        python_version=found["python"].group(1),
        suite=found["python"].group(2),
        uv=qualified(found["uv"].group(0)),
        uv_version=found["uv"].group(1),
        locust=qualified(found["locust"].group(0)),
        locust_version=found["locust"].group(1),
    )


def debian_mirror(suite: str, apt: Path = Path("/etc/apt")) -> str:
    """The Debian archive that apt uses for `suite` (deb822 or one-line sources), else deb.debian.org."""
    entries: list[tuple[list[str], list[str]]] = []  # (URIs, suites)
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):[ \t]*(.*)$", stanza, re.MULTILINE))
            entries.append((fields.get("URIs", "").split(), fields.get("Suites", "").split()))
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append(([words[1]], [words[2]]))
    for uris, suites in entries:
        for uri in uris:
            if suite in suites and uri.rstrip("/").endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def ca_bundle() -> Path:
    """The CA bundle of this machine (the one its own downloads trust)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise StandInError("no CA bundle found on this machine (install ca-certificates)")


def cache_dir() -> Path:
    """Where the stand-in tar files live: outside the repository, kept between runs."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "weather-api" / "images"


def _key(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One preparation at a time per cache (two test runs may start together)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class StandIns:
    """Makes the stand-in bases of one Dockerfile, reusing what the cache and podman have."""

    def __init__(self, podman: Podman, dockerfile: Path, cache: Path | None = None, mirror: str | None = None) -> None:
        self.podman = podman
        self.bases = dockerfile_bases(dockerfile)
        self.cache = cache or cache_dir()
        self.mirror = mirror or debian_mirror(self.bases.suite)
        self.ca = ca_bundle()
        recipe = (Path(__file__).read_bytes(), LOCUST_CONTAINERFILE.read_bytes(), self.ca.read_bytes(), self.mirror)
        self.keys = {
            "python": _key(*recipe, self.bases.python),
            "uv": _key(*recipe, self.bases.uv),
        }
        self.keys["locust"] = _key(*recipe, self.bases.locust, self.keys["python"])

    def ensure(self) -> list[tuple[str, str, float]]:
        """Make every stand-in that podman lacks: (image, how it was had, seconds) for each."""
        if os.geteuid() != 0:
            raise StandInError("the stand-in bases need root (debootstrap, rootful podman)")
        done = []
        with _locked(self.cache):
            for kind, reference, make in (
                ("python", self.bases.python, self._python),
                ("uv", self.bases.uv, self._uv),
                ("locust", self.bases.locust, self._locust),
            ):
                start = time.monotonic()
                how = "in podman's storage" if self._current(reference, kind) else make()
                done.append((reference, how, time.monotonic() - start))
        return done

    def _current(self, reference: str, kind: str) -> bool:
        result = self.podman("image", "inspect", reference, check=False)
        if result.returncode != 0:
            return False
        labels = json.loads(result.stdout)[0].get("Labels") or {}
        return bool(labels.get(LABEL) == self.keys[kind])

    def _tar(self, name: str, kind: str) -> Path:
        return self.cache / f"{name}-{self.keys[kind]}.tar"

    def _import(self, tar: Path, reference: str, kind: str, *changes: str) -> None:
        flags = [arg for change in (*changes, f"LABEL {LABEL}={self.keys[kind]}") for arg in ("--change", change)]
        self.podman("import", *flags, str(tar), reference)

    def _python(self) -> str:
        tar = self._tar(f"python-{self.bases.python_version}-slim-{self.bases.suite}", "python")
        how = f"imported from {tar}"
        if not tar.exists():
            _forget_others(tar)
            self._debootstrap(tar)
            how = f"debootstrap {self.bases.suite} from {self.mirror}, cached in {tar}"
        self._import(tar, self.bases.python, "python", "ENV LANG=C.UTF-8", 'CMD ["python3"]')
        return how

    def _debootstrap(self, tar: Path) -> None:
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            raise StandInError("debootstrap is not installed (apt-get install debootstrap)")
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="rootfs-") as work:
            root = Path(work) / "root"
            try:
                _run(
                    debootstrap,
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    self.bases.suite,
                    str(root),
                    self.mirror,
                )
                version = _run(
                    "chroot", str(root), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"
                )
                if version.strip() != self.bases.python_version:
                    raise StandInError(
                        f"Debian {self.bases.suite} has Python {version.strip()}, the Dockerfile wants "
                        f"{self.bases.python_version}: no stand-in for that base"
                    )
                _slim(root)
                shutil.copyfile(self.ca, root / "etc/ssl/certs/ca-certificates.crt")
                partial = tar.with_suffix(".partial")
                _run("tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), ".")
                partial.replace(tar)
            finally:
                _unmount_below(root)

    def _uv(self) -> str:
        tar = self._tar(f"uv-{self.bases.uv_version}", "uv")
        how = f"imported from {tar}"
        if not tar.exists():
            _forget_others(tar)
            with tempfile.TemporaryDirectory(dir=self.cache, prefix="uv-") as work:
                target = Path(work) / "wheel"
                # The wheel for musl holds the static binary the official image ships.
                _run(
                    os.environ.get("UV") or shutil.which("uv") or "uv",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--target",
                    str(target),
                    "--python-platform",
                    f"{platform.machine()}-unknown-linux-musl",
                    f"uv=={self.bases.uv_version}",
                )
                partial = tar.with_suffix(".partial")
                _run("tar", "-C", str(target / "bin"), "--owner=0", "--group=0", "-cf", str(partial), "uv", "uvx")
                partial.replace(tar)
            how = f"uv {self.bases.uv_version} wheel's binary, cached in {tar}"
        self._import(tar, self.bases.uv, "uv", 'ENTRYPOINT ["/uv"]', "WORKDIR /io")
        return how

    def _locust(self) -> str:
        with tempfile.TemporaryDirectory(prefix="locust-context-") as context:
            self.podman(
                "build",
                "--pull=never",
                "--network=host",
                "--format=docker",
                "--build-arg",
                f"BASE={self.bases.python}",
                "--build-arg",
                f"LOCUST_VERSION={self.bases.locust_version}",
                "--label",
                f"{LABEL}={self.keys['locust']}",
                "--file",
                str(LOCUST_CONTAINERFILE),
                "--tag",
                self.bases.locust,
                context,
                timeout=900,
            )
        return f"pip install locust=={self.bases.locust_version} on the Python stand-in"


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)  # noqa: S603
    if result.returncode != 0:
        raise StandInError(f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _slim(root: Path) -> None:
    """What a slim image leaves out: package lists and caches, documentation, locales."""
    _run("chroot", str(root), "apt-get", "clean")
    for pattern in ("var/lib/apt/lists/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*"):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for path in (root / "usr/share/doc").rglob("*"):
        if path.name != "copyright" and (path.is_file() or path.is_symlink()):
            path.unlink()


def _forget_others(tar: Path) -> None:
    """Remove the cached tars of older recipes for the same image."""
    for old in tar.parent.glob(tar.name.rsplit("-", 1)[0] + "-*.tar"):
        if old != tar and re.fullmatch(r"[0-9a-f]{12}", old.stem.rsplit("-", 1)[1]):
            old.unlink()


def _unmount_below(root: Path) -> None:
    """Unmount what debootstrap mounted in the new root (/proc, /sys) and a failed run left."""
    prefix = str(root.resolve())
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)  # noqa: S603, S607 - util-linux umount
