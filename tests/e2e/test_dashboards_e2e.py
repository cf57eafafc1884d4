"""Both dashboards against the real thing: every panel query, after a real Locust run.

Grafana cannot run on these machines, so the dashboards are proven piece by piece:

1. embedded Valkey, the API (`python -m weather_api serve`), redis_exporter, and a real
   Prometheus using the committed prometheus.yml and rules (targets and intervals rewritten);
2. a headless Locust run of the project's locustfile (default profile) for at least 15 s,
   writing its ledger: what the API acknowledged with 201;
3. every Prometheus target of the Service dashboard, with its variables and Grafana's globals
   substituted, returns at least one series over the run, every metric name it selects exists
   in Prometheus (``or on() vector(0)`` hides a misspelled one from the first check, not from
   this one), and the targets with exemplars on get exemplars carrying a trace_id, among them
   exactly the trace ids of requests the test sent with its own ``traceparent`` (what the
   heatmap links to Tempo with); a deliberately misspelled metric and a trace id one bit off are
   reported, so both checks can fail;
4. every Valkey target of the Weather dashboard, run as the redis-datasource plugin runs it,
   returns the shape its panel needs and exactly the aggregates of the ledger, for every
   municipality the variable offers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey
import yaml

from tests.conftest import free_port, require_binary, wait_until

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
sys.path.insert(0, str(OBSERVABILITY))  # the generator package lives beside the config it checks

from weather_dashboards import checks, generate, queries, verify  # noqa: E402
from weather_dashboards.aggregates import Expected  # noqa: E402

LOAD_SECONDS = 16
SERIES_INTERVAL = 2  # seconds per time-series bucket: several closed buckets in one run
SCRAPE_SECONDS = 1
MUNICIPALITY = "chinautla"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _wait_http(url: str, seconds: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            if response.status == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {seconds} s:\n{_tail(log)}")


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the block's duration, output to ``log``; stop it however the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # noqa: S603
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _prometheus_config(path: Path, targets: dict[str, str]) -> Path:
    """The committed prometheus.yml with these targets, 1 s intervals and absolute rule paths."""
    source = OBSERVABILITY / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(source.read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s", evaluation_interval=f"{SCRAPE_SECONDS}s")
    config["rule_files"] = [str(source.parent / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path.write_text(yaml.safe_dump(config))
    return path


@dataclasses.dataclass
class System:
    """The running pieces, and where they write."""

    valkey_url: str
    api: str
    prometheus: str
    locust_port: int
    env: dict[str, str]
    logs: Path


@pytest.fixture
def system(valkey_url: str, tmp_path: Path) -> Iterator[System]:
    """API on the session's Valkey, redis_exporter and Prometheus, all on loopback."""
    prometheus = require_binary("prometheus")
    exporter = require_binary("prometheus-redis-exporter")
    ports = {name: free_port() for name in ("api", "prometheus", "exporter", "locust")}
    env = {
        **os.environ,
        "WEATHER_VALKEY_URL": valkey_url,
        "WEATHER_SERIES_INTERVAL": str(SERIES_INTERVAL),
        "WEATHER_ACCESS_LOG": "off",
        "WEATHER_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        # Every request sampled: every exemplar carries a trace id, ours included.
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    targets = {
        "weather-api": f"127.0.0.1:{ports['api']}",
        "valkey": f"127.0.0.1:{ports['exporter']}",
        "locust": f"127.0.0.1:{ports['locust']}",
        "prometheus": f"127.0.0.1:{ports['prometheus']}",
    }
    config = _prometheus_config(tmp_path / "prometheus.yml", targets)
    with contextlib.ExitStack() as stack:
        api = [sys.executable, "-m", "weather_api", "serve", "--port", str(ports["api"])]
        app = stack.enter_context(_process(api, tmp_path / "api.log", env))
        _wait_http(f"http://{targets['weather-api']}/ready", 30, app, tmp_path / "api.log")
        scraper = [exporter, f"--redis.addr={valkey_url}", f"--web.listen-address={targets['valkey']}"]
        redis_exporter = stack.enter_context(_process(scraper, tmp_path / "exporter.log"))
        _wait_http(f"http://{targets['valkey']}/metrics", 15, redis_exporter, tmp_path / "exporter.log")
        server = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={targets['prometheus']}",
            "--enable-feature=exemplar-storage",
        ]
        prom = stack.enter_context(_process(server, tmp_path / "prometheus.log"))
        _wait_http(f"http://{targets['prometheus']}/-/ready", 30, prom, tmp_path / "prometheus.log")
        yield System(
            valkey_url,
            f"http://{targets['weather-api']}",
            f"http://{targets['prometheus']}",
            ports["locust"],
            env,
            tmp_path,
        )


def _run_locust(system: System) -> tuple[float, float, dict[str, Any]]:
    """A headless run of loadtest/locustfile.py; its start, end and ledger."""
    ledger = system.logs / "ledger.json"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "--host", system.api, "--users", "5", "--spawn-rate", "5",
        "--duration", f"{LOAD_SECONDS}s", "--run-time", f"{LOAD_SECONDS + 30}s",
        "--municipality", MUNICIPALITY, "--wait-ms", "10",
        "--metrics-port", str(system.locust_port), "--metrics-host", "127.0.0.1",
        "--ledger", str(ledger), "--csv", str(system.logs / "locust"), "--only-summary",
        "--max-failure-ratio", "-1", "--max-p95-ms", "-1", "--max-p99-ms", "-1",
    ]  # fmt: skip
    log = system.logs / "locust.log"
    started = time.time()
    with _process(command, log, system.env) as locust:
        try:
            code = locust.wait(timeout=LOAD_SECONDS + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Locust did not finish:\n{_tail(log)}")
    ended = time.time()
    assert code == 0, _tail(log)
    assert ended - started >= 15
    return started, ended, json.loads(ledger.read_text())


def _wait_buckets_closed(client: valkey.Valkey, municipalities: tuple[str, ...], seconds: float) -> None:
    """After the load, the API's flusher closes every open bucket, a quiet municipality's too."""

    def closed() -> bool:
        return all(int(client.hget(f"weather:bucket:{m}", "count") or 0) == 0 for m in municipalities)  # type: ignore[arg-type]

    wait_until(closed, seconds, "the API to close every open time-series bucket")


def _traced_requests(system: System, scraped: Callable[[str], bool], count: int = 3) -> frozenset[str]:
    """Requests on the heatmap's route with our own sampled traceparent; their trace ids.

    Invalid reports (400): they reach /api/weather's handler (so its route and histogram) and
    change nothing in Valkey, so the ledger's aggregates still hold. The API answers with the
    traceparent of its server span, a child in our trace. A histogram bucket keeps only its
    latest exemplar, so each request waits until Prometheus has scraped the one before.
    """
    trace_ids = set()
    for _ in range(count):
        trace_id = secrets.token_hex(16)
        sent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        response = httpx.post(f"{system.api}/api/weather", json={}, headers={"traceparent": sent}, timeout=10)
        assert response.status_code == 400, response.text
        assert response.headers["traceparent"].split("-")[1] == trace_id
        wait_until(lambda: scraped(trace_id), 15, f"Prometheus to scrape the exemplar of trace {trace_id}")  # noqa: B023 (called at once)
        trace_ids.add(trace_id)
    return frozenset(trace_ids)


def _one_bit_off(trace_id: str) -> str:
    return f"{int(trace_id, 16) ^ 1:032x}"


def _misspelled(board: dict[str, Any]) -> dict[str, Any]:
    """The Service dashboard with one metric of an `or on() vector(0)` query misspelled."""
    broken = copy.deepcopy(board)
    for panel in queries.panels(broken):
        for target in panel.get("targets", []):
            if "weather_valkey_errors_total" in target.get("expr", ""):
                target["expr"] = target["expr"].replace("weather_valkey_errors_total", "weather_valkey_erors_total")
                return broken
    pytest.fail("no query of weather_valkey_errors_total to misspell")


def _service_problems(system: System, datasources: dict[str, str], started: float, ended: float) -> list[str]:
    board = json.loads((generate.DASHBOARD_DIR / "service.json").read_text())
    targets = [t for t in queries.targets(board, datasources) if t.datasource_type == "prometheus"]
    assert len(targets) >= 30, "the Service dashboard's queries were not found"
    builtins = queries.grafana_builtins(
        rate_interval=f"{4 * SCRAPE_SECONDS + 1}s", interval=f"{SCRAPE_SECONDS}s", range_seconds=int(ended - started)
    )

    def check() -> verify.PrometheusCheck:
        return verify.PrometheusCheck(system.prometheus, datasources, (started, time.time()), builtins)

    traced = _traced_requests(system, lambda trace_id: check().exemplar_problems(board, frozenset({trace_id})) == [])
    # The checks can fail: a misspelled metric under `or on() vector(0)` still returns a series,
    # and a trace id one bit off is no exemplar.
    broken = _misspelled(board)
    assert check().problems(broken) == []
    assert [p.rule for p in check().metric_name_problems(broken)] == ["metric"]
    off = frozenset({_one_bit_off(min(traced))})
    missed = check().exemplar_problems(board, off)
    assert missed
    assert all(p.rule == "exemplar" and min(off) in p.message for p in missed)
    now = check()
    problems = (
        now.problems(board)
        + now.metric_name_problems(board)
        + now.variable_problems(board)
        + now.exemplar_problems(board, traced)
    )
    return [str(p) for p in problems]


def _weather_problems(system: System, datasources: dict[str, str], started: float, ledger: dict[str, Any]) -> list[str]:
    assert ledger["unknown_total"] == 0, "reports of unknown fate: exact expectations impossible"
    assert ledger["accepted_total"] > 0
    expected = Expected.from_ledger(ledger)
    board = json.loads((generate.DASHBOARD_DIR / "weather.json").read_text())
    targets = [t for t in queries.targets(board, datasources) if t.datasource_type == "redis-datasource"]
    assert len(targets) == 10, "the Weather dashboard's queries were not found"
    client = valkey.Valkey.from_url(system.valkey_url)
    try:
        _wait_buckets_closed(client, expected.municipalities, 4 * SERIES_INTERVAL)
        window = (int(started * 1000) - 3600_000, int(time.time() * 1000) + 1000)
        check = verify.ValkeyCheck(client, expected, datasources, window)
        return [str(p) for m in expected.municipalities for p in check.problems(board, {"municipality": m})]
    finally:
        client.close()


def test_every_dashboard_panel_shows_live_data_after_a_locust_run(system: System) -> None:
    """After ≥15 s of Locust load, each Prometheus panel query has series and each Valkey panel the exact aggregates."""
    started, ended, ledger = _run_locust(system)
    time.sleep(3 * SCRAPE_SECONDS)  # a last scrape and rule evaluation after the load
    datasources, problems = checks.provisioned_datasources(generate.DATASOURCE_DIR)
    assert problems == []
    service = _service_problems(system, datasources, started, ended)
    assert service == [], "\n".join(service)
    weather = _weather_problems(system, datasources, started, ledger)
    assert weather == [], "\n".join(weather)
