"""Fixtures for the load-test tests: the real API as a subprocess on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loadtest_support import ROOT, Api, free_port, stop, wait_for


@pytest.fixture
def api(valkey_url: str, tmp_path: Path) -> Iterator[Api]:
    """The real service on a free port, on the (just flushed) session Valkey."""
    if not (ROOT / "src" / "weather_api" / "app.py").exists():
        pytest.skip("the weather-api service is not there yet")
    port = free_port()
    log = tmp_path / "api.log"
    env = {
        **os.environ,
        "WEATHER_VALKEY_URL": valkey_url,
        "WEATHER_ACCESS_LOG": "off",
        "WEATHER_DATA_DIR": str(tmp_path),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "weather_api", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    service = Api(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(service.ready, 30, "weather-api to be ready")
        yield service
    finally:
        stop(process)
