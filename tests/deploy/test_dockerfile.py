"""The Dockerfile builds what issue 6 asks for: uv from the lock, slim, non-root, healthy, labelled.

No Docker engine runs here, so these tests read the Dockerfile (hadolint and checkov read it too,
in test_validators.py); what they check is what a build would do.
"""

from __future__ import annotations

import re
import tomllib

from tests.deploy.conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    """Stage name -> its instructions (the text up to the next FROM)."""
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]
    result = {}
    for part in parts:
        header = part.splitlines()[0]
        name = header.split(" AS ")[-1].strip() if " AS " in header else header
        result[name] = "FROM " + part
    return result


def locked_version(package: str) -> str:
    """The version of `package` in uv.lock."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (version,) = {p["version"] for p in lock["package"] if p["name"] == package}
    return str(version)


def test_dependencies_come_from_the_lock_without_dev_groups() -> None:
    """The builder installs with `uv sync --frozen --no-dev`, dependencies first for layer caching."""
    builder = stages()["builder"]
    syncs = re.findall(r"uv sync ([^\n]+)", builder)
    assert syncs == ["--frozen --no-dev --no-install-project", "--frozen --no-dev --no-editable"]
    assert builder.index("COPY pyproject.toml uv.lock") < builder.index("COPY src")


def test_runtime_is_slim_non_root_and_the_last_stage() -> None:
    """The default target is the runtime: python slim, the venv copied in, numeric non-root user."""
    names = list(stages())
    assert names[-1] == "runtime"
    runtime = stages()["runtime"]
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", runtime, re.MULTILINE)
    assert "COPY --from=builder /app/.venv /app/.venv" in runtime
    assert "uv" not in re.findall(r"^COPY --from=(\S+)", runtime, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", runtime, re.MULTILINE)
    assert users == ["10001:10001"]


def test_runtime_serves_on_8000_and_checks_health_with_the_standard_library() -> None:
    """`weather-api serve --host 0.0.0.0 --port 8000`, and a HEALTHCHECK without curl."""
    runtime = stages()["runtime"]
    assert 'ENTRYPOINT ["weather-api"]' in runtime
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in runtime
    assert "EXPOSE 8000" in runtime
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:\s+.*\n)*", runtime, re.MULTILINE)
    assert healthcheck
    assert "urllib.request" in healthcheck.group(0)
    assert "/health" in healthcheck.group(0)
    instructions = "\n".join(line for line in runtime.splitlines() if not line.startswith("#"))
    assert "curl" not in instructions


def test_runtime_writes_only_to_its_data_volume() -> None:
    """Read-only root filesystem: bytecode precompiled, WEATHER_DATA_DIR on a volume."""
    runtime = stages()["runtime"]
    assert "UV_COMPILE_BYTECODE=1" in stages()["builder"]
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    assert "WEATHER_DATA_DIR=/data" in runtime
    assert 'VOLUME ["/data"]' in runtime


def test_images_carry_oci_labels() -> None:
    """Title, version, revision, created, source and licence on the API image."""
    runtime = stages()["runtime"]
    for label in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in runtime, label


def test_loadtest_image_matches_the_locked_locust_and_prometheus_client() -> None:
    """The Locust image's versions are uv.lock's, so the cluster runs what the tests ran."""
    assert re.search(rf"^ARG LOCUST_VERSION={re.escape(locked_version('locust'))}$", DOCKERFILE, re.MULTILINE)
    prometheus_client = locked_version("prometheus-client")
    assert re.search(rf"^ARG PROMETHEUS_CLIENT_VERSION={re.escape(prometheus_client)}$", DOCKERFILE, re.MULTILINE)
    loadtest = stages()["loadtest"]
    assert loadtest.startswith("FROM locustio/locust:${LOCUST_VERSION}")
    assert re.findall(r"^USER (\S+)", loadtest, re.MULTILINE)[-1] == "1000:1000"


def test_build_context_is_only_what_the_build_needs() -> None:
    """.dockerignore excludes everything, then lets back the four inputs of the build."""
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {"!pyproject.toml", "!uv.lock", "!README.md", "!src/"}
    copied = set(re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE, re.MULTILINE))
    sources = {source for line in copied for source in line.split()}
    assert sources <= {"pyproject.toml", "uv.lock", "README.md", "src"}
