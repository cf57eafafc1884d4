"""What a real `weather-api serve` writes on a connection (weather_api.server's `_Writer`).

uvicorn writes a response's head and its body with two system calls; the service's protocol
sends them in one. The process runs under strace, which records every write it makes; the
answers that must not wait for a body (`100 Continue`, an answer to HEAD) are tried on raw
sockets: held back, they would never arrive.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Api, free_port, require_binary, stop_process, wait_until

REPORT = b'{"municipality":"chinautla","temperature":25,"humidity":60,"weather":"sunny"}'
WRITES = re.compile(r"^\d+\s+(?:write|writev|sendto|sendmsg)\((\d+), (.*)\) = (\d+)$", re.MULTILINE)


@pytest.fixture
def traced(tmp_path: Path, valkey_url: str) -> Iterator[tuple[Api, Path]]:
    """`weather-api serve` started by strace, which logs every write of the process (and its threads)."""
    strace = require_binary("strace")
    port = free_port()
    trace = tmp_path / "writes.trace"
    environ = {**os.environ, "WEATHER_VALKEY_URL": valkey_url, "WEATHER_ACCESS_LOG": "off"}
    command = [strace, "-f", "-qq", "-s", "4096", "-e", "trace=write,writev,sendto,sendmsg", "-o", str(trace)]
    command += [sys.executable, "-m", "weather_api", "serve", "--port", str(port)]
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    api = Api(f"http://127.0.0.1:{port}", process, tmp_path / "api.log")
    try:
        wait_until(lambda: _ready(api.url), 60, "the traced API to answer /ready")
        yield api, trace
    finally:
        # strace's child is the API: stopped by SIGTERM as usual, strace then exits with it.
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        for pid in children.read_text().split() if children.exists() else ():
            os.kill(int(pid), signal.SIGTERM)
        stop_process(process)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_answer_is_one_write_head_and_body_together(traced: tuple[Api, Path]) -> None:
    """A report's 201, a 415 problem, /health and /metrics: each answer leaves in one write, body included."""
    api, trace = traced
    with httpx.Client(base_url=api.url, timeout=10) as client:
        assert (
            client.post("/api/weather", content=REPORT, headers={"Content-Type": "application/json"}).status_code == 201
        )
        assert client.post("/api/weather", content=REPORT, headers={"Content-Type": "text/plain"}).status_code == 415
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
    writes = [data for _fd, data, _n in WRITES.findall(trace.read_text())]
    answers = [w for w in writes if w.startswith('"HTTP/1.1 ') and " 100 Continue" not in w]
    assert len(answers) >= 5, writes  # /ready (the fixture's), then the four above
    for status, body in (("201", "success"), ("415", "unsupported-media-type"), ("200", '"status\\":\\"ok')):
        assert any(a.startswith(f'"HTTP/1.1 {status} ') and body in a for a in answers), (status, answers)
    assert any(a.startswith('"HTTP/1.1 200 ') and "# HELP" in a for a in answers), answers
    # No write is a head alone: every one that ends a head carries bytes after it.
    assert not [a for a in answers if a.endswith('\\r\\n\\r\\n"')], answers


def _raw(api: Api) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_100_continue_and_an_answer_to_head_are_not_held_back(traced: tuple[Api, Path]) -> None:
    """A client that waits for `100 Continue` gets it before sending its body; a HEAD answer arrives whole."""
    api, _trace = traced
    with _raw(api) as sock:
        sock.sendall(
            b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(REPORT)
        )
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # times out (5 s) if held
        sock.sendall(REPORT)
        assert sock.recv(4096).startswith(b"HTTP/1.1 201 ")
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(4096)  # times out if held: a HEAD answer has no body to wait for
        assert head.startswith(b"HTTP/1.1 ")
        assert head.endswith(b"\r\n\r\n")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection goes on
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
