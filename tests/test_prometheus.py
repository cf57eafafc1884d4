"""A real Prometheus scrapes the running service: rates and exemplars come through."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Api, free_port, require_binary, wait_until

REPORT = {"municipality": "guatemala", "temperature": 18.5, "humidity": 80, "weather": "rainy"}


class Prometheus:
    """A Prometheus server with exemplar storage, scraping the given targets every second."""

    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            for job, target in targets.items()
        )
        config = tmp / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}")
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603
                [
                    require_binary("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--enable-feature=exemplar-storage",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, 30, "Prometheus to be ready")

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query: the result vector."""
        body = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=5).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def exemplars(self, promql: str) -> list[dict[str, Any]]:
        """Exemplars of the last minute for a selector."""
        response = httpx.get(self.url + "/api/v1/query_exemplars", params={"query": promql, "start": "0"}, timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]
        return result

    def stop(self) -> None:
        """Terminate and wait."""
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Prometheus]]:
    """Start Prometheus servers; stopped after the test."""
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        started.append(Prometheus(tmp_path, targets))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


def test_prometheus_finds_the_request_rate_and_latency_exemplars(
    start_api: Callable[..., Api],
    valkey_url: str,
    start_prometheus: Callable[[dict[str, str]], Prometheus],
) -> None:
    """During a burst, /api/v1/query sees the POST rate and query_exemplars returns trace ids."""
    api = start_api(valkey_url, OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5")
    prometheus = start_prometheus({"weather-api": api.url.removeprefix("http://")})
    stop = threading.Event()

    def burst() -> None:
        with httpx.Client(base_url=api.url) as client:
            while not stop.is_set():
                assert client.post("/api/weather", json=REPORT).status_code == 201

    sender = threading.Thread(target=burst, daemon=True)
    sender.start()
    rate = 'sum(rate(http_server_request_duration_seconds_count{job="weather-api",route="/api/weather",method="POST"}[10s]))'
    bucket = 'http_server_request_duration_seconds_bucket{job="weather-api",route="/api/weather"}'
    try:
        wait_until(lambda: any(float(r["value"][1]) > 0 for r in prometheus.query(rate)), 60, "a POST rate above 0")
        wait_until(lambda: bool(prometheus.exemplars(bucket)), 30, "latency exemplars")
    finally:
        stop.set()
        sender.join(10)
    exemplars = [e for series in prometheus.exemplars(bucket) for e in series["exemplars"]]
    assert all(len(e["labels"]["trace_id"]) == 32 for e in exemplars)
    assert prometheus.query('up{job="weather-api"}')[0]["value"][1] == "1"
