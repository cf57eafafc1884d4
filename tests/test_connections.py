"""Hostile connections against a real `weather-api serve` on real sockets (weather_api.server).

Each test opens TCP connections the way a slow, idle, oversized or broken client would, and checks
what the service answers, when it closes them, and what it records.
"""

from __future__ import annotations

import http.client
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Api, in_flight, wait_until
from weather_api.settings import Settings, SettingsError

REPORT = {"municipality": "chinautla", "temperature": 25, "humidity": 60, "weather": "sunny"}
PROBLEM_FIELDS = {"type", "title", "status", "detail"}
SLACK = 2.0
"""Seconds a deadline may be overrun by (scheduling on a shared machine), as the issue allows."""


def _connect(api: Api, timeout: float = 10) -> socket.socket:
    address = urlsplit(api.url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def _answer_and_body(sock: socket.socket) -> tuple[http.client.HTTPResponse, bytes]:
    """Read one HTTP response from the socket, with the standard library's client parser."""
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        return response, response.read()
    finally:
        response.close()  # its buffered reader; the socket stays open


def _answer(sock: socket.socket) -> http.client.HTTPResponse:
    return _answer_and_body(sock)[0]


def _split(stream: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in what a connection received, in order: (status, headers, body)."""
    responses = []
    while stream:
        head, _, stream = stream.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        responses.append((int(status_line.split()[1]), headers, stream[:length]))
        stream = stream[length:]
    return responses


def _assert_problem(response: http.client.HTTPResponse | httpx.Response, body: bytes, status: int) -> None:
    """The answer is an RFC 9457 problem document for `status`."""
    got = response.status if isinstance(response, http.client.HTTPResponse) else response.status_code
    assert got == status, body[:200]
    assert response.headers["content-type"] == "application/problem+json"
    document = json.loads(body)
    assert set(document) >= PROBLEM_FIELDS
    assert document["status"] == status


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it stays open longer."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while chunk := sock.recv(65536):
            received += chunk
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s (received {received[:80]!r})")
    except ConnectionResetError:
        pass
    return received


def _requests(api: Api) -> dict[tuple[str, str, str], float]:
    """http_server_request_duration_seconds_count from /metrics, by (method, route, status_code)."""
    counts = {}
    prefix = "http_server_request_duration_seconds_count{"
    for line in httpx.get(api.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            labels = dict(pair.split("=", 1) for pair in line[len(prefix) : line.index("}")].split(","))
            key = (labels["method"].strip('"'), labels["route"].strip('"'), labels["status_code"].strip('"'))
            counts[key] = float(line.rsplit(" ", 1)[1])
    return counts


@contextmanager
def _trickling(api: Api, count: int, data: bytes, interval: float = 1.0) -> Iterator[list[socket.socket]]:
    """`count` connections that each send `data` one byte every `interval` seconds (slowloris)."""
    sockets = [_connect(api) for _ in range(count)]
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # closed by the server: what the tests want
            if stop.wait(interval):
                return

    threads = [threading.Thread(target=trickle, args=(s,), daemon=True) for s in sockets]
    for thread in threads:
        thread.start()
    try:
        yield sockets
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """Idle from the start: closed, without an answer, within the header timeout (+ slack)."""
    api = start_api(valkey_url, WEATHER_HEADER_TIMEOUT="1")
    with _connect(api) as sock:
        opened = time.monotonic()
        assert _closed_within(sock, 1 + SLACK) == b""
        assert time.monotonic() - opened >= 0.9


def test_a_head_sent_one_byte_a_second_is_cut_off_with_408(start_api: Callable[..., Api], valkey_url: str) -> None:
    """Slowloris: a head that keeps trickling in is answered 408 (problem) and closed at the timeout."""
    api = start_api(valkey_url, WEATHER_HEADER_TIMEOUT="2")
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    with _trickling(api, 1, head, interval=0.5) as (sock,):
        received = _closed_within(sock, 2 + SLACK)
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers
    assert json.loads(body)["status"] == 408


def test_the_next_head_on_a_kept_alive_connection_has_the_same_deadline(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """After one answered request, a second head that stops half-way is cut off at the timeout too."""
    api = start_api(valkey_url, WEATHER_HEADER_TIMEOUT="1")
    with _connect(api) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(sock).status == 200
        sock.sendall(b"GET /hea")
        received = _closed_within(sock, 1 + SLACK)
    assert received.startswith(b"HTTP/1.1 408 ")


def test_an_idle_kept_alive_connection_closes_after_the_configured_keep_alive(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """WEATHER_KEEP_ALIVE_TIMEOUT sets how long a connection waits for its next request (uvicorn's is 5 s)."""
    api = start_api(valkey_url, WEATHER_KEEP_ALIVE_TIMEOUT="1")
    with _connect(api) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(sock).status == 200
        answered = time.monotonic()
        received = _closed_within(sock, 1 + SLACK)
    assert received == b""  # closed quietly: no request had started
    assert time.monotonic() - answered >= 1 - 0.1  # not before the keep-alive timeout


def test_a_64_mib_head_gets_431_unread_and_memory_stays_flat(start_api: Callable[..., Api], valkey_url: str) -> None:
    """One header of 64 MiB: 431 problem after the limit, the rest never read, peak RSS about unchanged."""
    api = start_api(valkey_url)
    peak_before = _peak_rss(api)
    sent = 0
    with _connect(api) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            for _ in range(1024):
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: what should happen
        response, body = _answer_and_body(sock)
    _assert_problem(response, body, 431)
    assert sent < 32 * 2**20, f"the server read {sent} bytes of one header"
    growth = _peak_rss(api) - peak_before
    assert growth < 16 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def _peak_rss(api: Api) -> int:
    """The API process's peak resident memory (VmHWM from /proc), in bytes."""
    status = Path(f"/proc/{api.process.pid}/status").read_text(encoding="ascii")
    fields = dict(row.split(":", 1) for row in status.splitlines())
    return int(fields["VmHWM"].split()[0]) * 1024


def test_head_limits_are_exact_enough_and_count_header_lines(start_api: Callable[..., Api], valkey_url: str) -> None:
    """A 15 KiB head is served; 17 KiB or 101 header lines get 431 (problem); so do they pipelined."""
    api = start_api(valkey_url)

    def ask(head: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        with _connect(api) as sock:
            sock.sendall(head)
            return _answer_and_body(sock)

    start = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    assert ask(start + b"X-Pad: " + b"a" * 15 * 1024 + b"\r\n\r\n")[0].status == 200
    _assert_problem(*ask(start + b"X-Pad: " + b"a" * 17 * 1024 + b"\r\n\r\n"), 431)
    _assert_problem(*ask(start + b"X: y\r\n" * 100 + b"\r\n"), 431)
    assert ask(start + b"X: y\r\n" * 90 + b"\r\n")[0].status == 200
    with _connect(api) as sock:  # a small request and a big one in one write: the first is served
        sock.sendall(start + b"\r\n" + start + b"X-Pad: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        (first, _, _), (second, headers, body) = _split(_closed_within(sock, SLACK))
    assert (first, second) == (200, 431)
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 431


def test_idle_and_slow_connections_do_not_take_health_down(start_api: Callable[..., Api], valkey_url: str) -> None:
    """Cap 20, 25 idle and 5 slow (1 byte/s) connections: /health 200 and a POST 201 at once; all 30 closed in time."""
    timeout = 3
    api = start_api(valkey_url, WEATHER_MAX_CONCURRENCY="20", WEATHER_HEADER_TIMEOUT=str(timeout))
    with ExitStack() as stack:
        idle = [stack.enter_context(_connect(api)) for _ in range(25)]
        slow = stack.enter_context(_trickling(api, 5, b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 10))
        started = time.monotonic()
        health = httpx.get(api.url + "/health", timeout=timeout + SLACK)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert httpx.post(api.url + "/api/weather", json=REPORT, timeout=timeout + SLACK).status_code == 201
        assert time.monotonic() - started < timeout + SLACK
        for sock in idle:
            assert _closed_within(sock, timeout + SLACK) == b""
        for sock in slow:
            assert _closed_within(sock, SLACK).startswith(b"HTTP/1.1 408 ")


UPLOAD_HEAD = b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"


@contextmanager
def _slow_uploads(api: Api, count: int) -> Iterator[list[socket.socket]]:
    """`count` POSTs whose head is in and whose body has only begun: requests in progress."""
    before = in_flight(api)
    with ExitStack() as stack:
        sockets = [stack.enter_context(_connect(api)) for _ in range(count)]
        for sock in sockets:
            sock.sendall(UPLOAD_HEAD + json.dumps(REPORT).encode()[:10])
        wait_until(lambda: in_flight(api) >= before + count, 10, f"{count} uploads in progress")
        yield sockets
    wait_until(lambda: in_flight(api) <= before, 10, "the uploads to end")


def test_over_capacity_is_a_counted_problem_with_retry_after(start_api: Callable[..., Api], valkey_url: str) -> None:
    """Cap 2 with 2 uploads in progress: a third request gets 503 problem + Retry-After, counted; probes still 200."""
    api = start_api(valkey_url, WEATHER_MAX_CONCURRENCY="2", WEATHER_BODY_TIMEOUT="60")
    with _slow_uploads(api, 2):
        shed = httpx.get(api.url + "/stats", timeout=10)
        _assert_problem(shed, shed.content, 503)
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["type"] == "urn:weather-api:problem:over-capacity"
        assert httpx.get(api.url + "/health", timeout=10).status_code == 200
        counted = _requests(api)
    assert counted[("GET", "unmatched", "503")] == 1
    assert httpx.get(api.url + "/stats", timeout=10).status_code == 200  # capacity is back once they are gone
    assert "over capacity: answered 503 to 1 request(s)" in api.output()


def test_a_body_that_stops_coming_is_408_and_recorded_as_408(start_api: Callable[..., Api], valkey_url: str) -> None:
    """An upload that stalls after its head: 408 problem at the body timeout, recorded 408, never 5xx."""
    api = start_api(valkey_url, WEATHER_BODY_TIMEOUT="1")
    with _connect(api, timeout=1 + SLACK) as sock:
        sock.sendall(UPLOAD_HEAD + json.dumps(REPORT).encode()[:10])
        response, body = _answer_and_body(sock)
    _assert_problem(response, body, 408)
    wait_until(lambda: ("POST", "/api/weather", "408") in _requests(api), 5, "the 408 to be recorded")
    assert not [key for key in _requests(api) if key[2].startswith("5")]


def test_malformed_requests_get_a_400_problem(start_api: Callable[..., Api], valkey_url: str) -> None:
    """A request line that is not HTTP, and a bad header, are answered 400 as problem documents."""
    api = start_api(valkey_url)
    for garbage in (b"GARBAGE\r\n\r\n", b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"):
        with _connect(api) as sock:
            sock.sendall(garbage)
            response, body = _answer_and_body(sock)
        _assert_problem(response, body, 400)


def test_a_malformed_chunked_body_is_answered_and_recorded_as_400(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """Broken chunk framing in a POST: the client gets a 400 problem and /metrics says 400, not 500."""
    api = start_api(valkey_url)
    with _connect(api) as sock:
        sock.sendall(
            b"POST /api/weather HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"mun\r\nNOT-A-CHUNK-SIZE\r\n',
        )
        response, body = _answer_and_body(sock)
    _assert_problem(response, body, 400)
    wait_until(lambda: ("POST", "/api/weather", "400") in _requests(api), 5, "the 400 to be recorded")
    assert not [key for key in _requests(api) if key[2].startswith("5")]


def test_a_malformed_request_behind_a_good_one_does_not_take_its_answer(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """Pipelined: a valid GET then garbage; the GET gets its 200 first, then the garbage its 400, then close."""
    api = start_api(valkey_url)
    with _connect(api) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        (first, _, body), (second, headers, problem) = _split(_closed_within(sock, SLACK))
    assert (first, json.loads(body)) == (200, {"status": "ok"})
    assert (second, headers["content-type"], json.loads(problem)["status"]) == (400, "application/problem+json", 400)


def test_a_connection_over_the_cap_closes_the_longest_idle_one(start_api: Callable[..., Api], valkey_url: str) -> None:
    """With 10 idle connections open and a cap of 10, a new client is served; the oldest idle one is closed."""
    api = start_api(valkey_url, WEATHER_MAX_CONNECTIONS="10", WEATHER_HEADER_TIMEOUT="60")
    with ExitStack() as stack:
        idle = [stack.enter_context(_connect(api)) for _ in range(10)]
        assert httpx.get(api.url + "/health", timeout=5).status_code == 200
        assert _closed_within(idle[0], SLACK) == b""
        idle[1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the next oldest is still served
        assert _answer(idle[1]).status == 200


def test_connection_settings_come_from_the_environment() -> None:
    """The new WEATHER_* variables set the limits; nonsense is refused."""
    settings = Settings.from_env(
        {
            "WEATHER_HEADER_TIMEOUT": "2.5",
            "WEATHER_BODY_TIMEOUT": "4",
            "WEATHER_MAX_HEAD_BYTES": "8192",
            "WEATHER_MAX_HEADERS": "50",
            "WEATHER_MAX_CONNECTIONS": "500",
            "WEATHER_KEEP_ALIVE_TIMEOUT": "75",
        },
    )
    assert (settings.header_timeout, settings.body_timeout) == (2.5, 4.0)
    assert (settings.max_head_bytes, settings.max_headers, settings.max_connections) == (8192, 50, 500)
    assert settings.keep_alive_timeout == 75.0
    defaults = Settings()
    assert defaults.header_timeout <= 10
    for bad in (
        {"WEATHER_HEADER_TIMEOUT": "0"},
        {"WEATHER_MAX_HEAD_BYTES": "16k"},
        {"WEATHER_KEEP_ALIVE_TIMEOUT": "0"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


def test_the_open_files_limit_is_raised_for_the_connection_cap() -> None:
    """A process started with 256 open files allowed raises its soft limit to what the caps need."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048 + 64 + 64:
        pytest.skip(f"the hard limit ({hard}) is below what the default caps need")
    script = (
        "import resource\n"
        "from weather_api.server import raise_file_limit\n"
        "from weather_api.settings import Settings\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "raise_file_limit(Settings())\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)  # noqa: S603
    assert int(out.stdout) >= 2048 + 64 + 64
