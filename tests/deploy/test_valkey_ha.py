"""High availability and cluster security of deploy/'s Valkey, tried on loopback with the shipped scripts.

Each test starts three Valkey nodes and three Sentinels with valkey-start.sh and
sentinel-start.sh (tests/deploy/loopback.py), then does what an SRE or an attacker inside the
cluster would: fail over, stop and restart processes in bad orders, run the preStop hook, and
send commands with no or the wrong credentials. Acknowledged means WAIT-acknowledged by a
replica where the scenario needs the write to be on two nodes, as min-replicas-to-write 1
guarantees for the API's writes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import valkey

from tests.conftest import Api, load_library
from tests.deploy.conftest import DEPLOY
from tests.deploy.loopback import SERVICE, Cluster, Process, wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes and three Sentinels (nothing started yet); everything stopped afterwards."""
    result = Cluster(tmp_path)
    try:
        yield result
    finally:
        result.stop_all()


def acknowledged_write(cluster: Cluster, primary: Process, key: str) -> None:
    """SET on the primary, acknowledged by at least one replica (WAIT 1)."""
    with cluster.admin(primary) as admin:
        admin.set(key, "acknowledged")
        assert admin.wait(1, 5000) >= 1


def failover(cluster: Cluster, old: Process) -> Process:
    """SENTINEL FAILOVER away from `old`; the new primary once a replica follows it in sync.

    (The old primary is converted later, at the Sentinels' next look at it: up to 10 s.)
    """
    with cluster.as_user(cluster.sentinels[0], "sentinel") as sentinel:
        assert sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)  # type: ignore[no-untyped-call]
    wait_for(lambda: cluster.primary_by_sentinels() not in {None, old.address}, "the failover", cluster.logs)
    address = cluster.primary_by_sentinels()
    assert address is not None
    new = cluster.node_at(address)

    def followed() -> bool:
        with cluster.admin(new) as admin:
            info = admin.info("replication")
        return bool(
            info["role"] == "master"
            and any(info.get(f"slave{i}", {}).get("state") == "online" for i in range(int(info["connected_slaves"])))
        )

    wait_for(followed, "a replica to follow the new primary", cluster.logs)
    return new


def holds(cluster: Cluster, node: Process, key: str) -> bool:
    """Whether `node` has the key (read as admin, on a replica too)."""
    with cluster.admin(node) as admin:
        return admin.get(key) == "acknowledged"


def logged(node: Process, text: str) -> bool:
    """Whether the node's start script printed `text` since the test began."""
    return text in node.log.read_text(errors="replace")


def test_a_node_restarted_while_no_sentinel_answers_follows_the_current_primary(cluster: Cluster) -> None:
    """Promote B, stop A, write to B (acknowledged), stop the Sentinels, restart A: A replicates B.

    Before, valkey-start.sh made the first node primary whenever no Sentinel answered: A came
    up as a second primary with stale data, and B, restarted as its replica, lost the write.
    """
    a = cluster.start_all()
    b = failover(cluster, a)
    a.stop()
    acknowledged_write(cluster, b, "weather:split-brain")
    for sentinel in cluster.sentinels:
        sentinel.stop()

    cluster.start_node(cluster.nodes.index(a))
    wait_for(lambda: cluster.role(a) == f"slave {b.address} up", "A to replicate B", cluster.logs)
    assert holds(cluster, a, "weather:split-brain")
    assert cluster.role(b) == "master"
    assert logged(a, f"{a.address} starts waiting")
    # Nothing made A primary on the way: a primary would have taken a new replication id.
    with cluster.admin(a) as admin, cluster.admin(b) as primary:
        assert admin.info("replication")["master_replid"] == primary.info("replication")["master_replid"]


def test_a_full_restart_in_the_worst_order_loses_no_acknowledged_write(cluster: Cluster) -> None:
    """Everything stops; the stale first node starts first, the last primary last, Sentinels after all.

    The nodes hold data and no Sentinel answers, so none of them may choose a primary: they
    wait, read-only. The Sentinels come back with the state on their volumes and name the last
    primary, which every node then follows.
    """
    first = cluster.start_all()
    last = failover(cluster, first)
    first.stop()  # misses the next write: stale
    acknowledged_write(cluster, last, "weather:full-restart")
    third = next(n for n in cluster.nodes if n not in {first, last})
    for process in (*cluster.sentinels, third, last):
        process.stop()

    for node in (first, third, last):
        cluster.start_node(cluster.nodes.index(node))
    for node in cluster.nodes:
        wait_for(lambda node=node: logged(node, f"{node.address} starts waiting"), "the nodes to wait", cluster.logs)
    wait_for(
        lambda: all(logged(n, "no Sentinel majority") for n in cluster.nodes),
        "every node to find no rule",
        cluster.logs,
    )
    assert [cluster.role(n) for n in cluster.nodes] == ["slave 127.0.0.1:0 down"] * 3

    for i in range(3):
        cluster.start_sentinel(i)
    assert cluster.wait_settled("the Sentinels' primary to be followed") is last
    for node in cluster.nodes:
        assert holds(cluster, node, "weather:full-restart"), node.name
    assert cluster.primary_by_sentinels() == last.address


def test_a_primary_restarted_with_an_empty_volume_does_not_wipe_its_replicas(cluster: Cluster) -> None:
    """The Sentinels still name it primary, but it holds nothing and its replicas do: it waits.

    An empty primary would make both replicas drop everything at their next sync. The node
    stays a read-only replica with priority 0 until the Sentinels fail over to a replica that
    has the data, then follows it.
    """
    # Sentinels slow to notice on their own (5 s): the restart comes while they still name it.
    cluster.down_after_ms = 5000
    primary = cluster.start_all()
    acknowledged_write(cluster, primary, "weather:volume")
    primary.stop()
    for item in (primary.folder / "data").iterdir():
        if item.is_dir():
            for file in item.iterdir():
                file.unlink()
            item.rmdir()
        else:
            item.unlink()

    cluster.start_node(cluster.nodes.index(primary))
    new = cluster.wait_settled("a failover to a replica with the data, followed by the emptied node")
    assert new is not primary
    for node in cluster.nodes:
        assert holds(cluster, node, "weather:volume"), node.name
    assert logged(primary, "holds no data and a peer does")


def test_prestop_hands_the_primary_role_over_before_the_pod_stops(cluster: Cluster) -> None:
    """valkey-prestop.sh on the primary: Sentinel failover, and it returns once it is a replica.

    On a replica it returns at once and changes nothing.
    """
    primary = cluster.start_all()
    replica = next(n for n in cluster.nodes if n is not primary)

    def prestop(node: Process) -> subprocess.CompletedProcess[str]:
        env = cluster.environment(node, PORT=str(node.port), LOCAL_HOST=node.host, WAIT_SECONDS="15")
        return subprocess.run(  # noqa: S603 - our own script
            ["sh", str(DEPLOY / "base" / "valkey" / "valkey-prestop.sh")],  # noqa: S607 - sh from PATH
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    assert prestop(replica).stdout == ""
    assert cluster.role(primary) == "master"
    out = prestop(primary)
    assert "asking the Sentinels for a failover" in out.stdout
    assert cluster.role(primary).startswith("slave ")
    assert cluster.primary_by_sentinels() != primary.address


def test_sentinels_refuse_configuration_without_credentials_and_from_the_api_user(cluster: Cluster) -> None:
    """SENTINEL SET/REMOVE/MONITOR: NOAUTH without a user, NOPERM as `api`; `api` may only look.

    The API pods are the internet-facing component and reach port 26379: their credential
    finds the primary and nothing more.
    """
    cluster.start_all()
    sentinel = cluster.sentinels[0]
    changes = (
        ("SENTINEL", "SET", SERVICE, "down-after-milliseconds", "100"),
        ("SENTINEL", "REMOVE", SERVICE),
        ("SENTINEL", "MONITOR", "evil", "127.0.0.1", "1", "1"),
        ("SENTINEL", "FAILOVER", SERVICE),
        ("SENTINEL", "RESET", "*"),
        ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "no"),
    )
    with sentinel.client() as anonymous:
        for command in changes:
            # NOAUTH (valkey-py strips the prefix and raises AuthenticationError for it)
            with pytest.raises(valkey.AuthenticationError, match="Authentication required"):
                anonymous.execute_command(*command)  # type: ignore[no-untyped-call]
        with pytest.raises(valkey.AuthenticationError, match="Authentication required"):
            anonymous.sentinel_get_master_addr_by_name(SERVICE)
    with sentinel.client("sentinel", "wrong-password-0123") as wrong, pytest.raises(valkey.AuthenticationError):
        wrong.ping()
    with cluster.as_user(sentinel, "api") as api:
        for command in changes:
            with pytest.raises(valkey.exceptions.NoPermissionError, match="no permissions"):
                api.execute_command(*command)  # type: ignore[no-untyped-call]
        assert api.sentinel_get_master_addr_by_name(SERVICE) is not None
        assert SERVICE in api.sentinel_masters()
    with cluster.as_user(sentinel, "sentinel") as operator:
        assert operator.sentinel_master(SERVICE)["down-after-milliseconds"] == cluster.down_after_ms


def test_the_api_finds_the_primary_through_authenticated_sentinels_and_follows_a_failover(
    cluster: Cluster, start_api: Callable[..., Api]
) -> None:
    """With Sentinel credentials in its URL, the API writes to the new primary within a second of a failover.

    The URL's query carries the Sentinel user and password. The Sentinels convert the old primary up to 10 s after the promotion, and it accepts writes
    meanwhile: an API still writing there would acknowledge reports the new primary never gets.
    """
    primary = cluster.start_all()
    sentinels = ",".join(s.address for s in cluster.sentinels)
    api_password = cluster.passwords["VALKEY_API_PASSWORD"]
    query = f"sentinel_username=api&sentinel_password={api_password}"
    # The library is loaded with the admin credential by the command the valkey-library Job
    # runs in Kubernetes; the API itself is the least-privilege `api` user, which may not.
    admin_url = f"redis+sentinel://admin:{cluster.passwords['VALKEY_ADMIN_PASSWORD']}@{sentinels}/{SERVICE}?{query}"
    loaded = load_library(admin_url)
    assert loaded.returncode == 0, loaded.stderr
    api = start_api(f"redis+sentinel://api:{api_password}@{sentinels}/{SERVICE}?{query}")
    report = {"municipality": "mixco", "temperature": 20.5, "humidity": 70, "weather": "cloudy"}
    assert httpx.post(f"{api.url}/api/weather", json=report, timeout=5).status_code == 201

    new = failover(cluster, primary)
    assert cluster.role(primary) == "master"  # not converted yet: the dangerous window
    # Posts in the next second may still reach the old primary (and be lost): the window the
    # pool's once-a-second question to the Sentinels bounds (deploy/README.md).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        httpx.post(f"{api.url}/api/weather", json=report, timeout=5)
    with cluster.admin(new) as admin:
        before = int(admin.get("weather:count") or 0)
    posts = 20
    for i in range(posts):
        # While the replicas reconnect to the new primary it may refuse writes for a moment
        # (NOREPLICAS: min-replicas-to-write): 503, nothing written; the retry with the same
        # key is the client's part, and the count below proves nothing was applied twice.
        key = {"Idempotency-Key": f"after-failover-{i}"}
        deadline = time.monotonic() + 15
        while (answer := httpx.post(f"{api.url}/api/weather", json=report, headers=key, timeout=5)).status_code == 503:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
        assert answer.status_code == 201, answer.text
    with cluster.admin(new) as admin:
        assert int(admin.get("weather:count") or 0) == before + posts


def test_the_start_scripts_refuse_example_short_and_unsafe_passwords(cluster: Cluster) -> None:
    """`change-me` (the example), fewer than 16 characters, URL-unsafe characters, a missing one: exit 1."""
    node = cluster.nodes[0]
    sentinel = cluster.sentinels[0]

    def run(script: str, process: Process, **env: str) -> subprocess.CompletedProcess[str]:
        config = "valkey" if script == "valkey-start.sh" else "sentinel"
        environment = cluster.environment(
            process,
            CONFIG_DIR=str(DEPLOY / "base" / config),
            RUN_DIR=str(process.folder / "run"),
            PORT=str(process.port),
            SELF=process.host,
            SENTINELS="",
            **env,
        )
        environment = {k: v for k, v in environment.items() if v != "<unset>"}
        return subprocess.run(  # noqa: S603 - our own script
            ["sh", str(DEPLOY / "base" / config / script)],  # noqa: S607 - sh from PATH
            env=environment,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    for script, process in (("valkey-start.sh", node), ("sentinel-start.sh", sentinel)):
        for value, message in (
            ("change-me", "is the example value"),
            ("short-1234", "shorter than 16 characters"),
            ("with space and $dollar", "only letters, digits"),
            ("<unset>", "VALKEY_SENTINEL_PASSWORD must be set"),
        ):
            out = run(script, process, VALKEY_SENTINEL_PASSWORD=value)
            assert out.returncode == 1, (script, value, out.stdout)
            assert message in out.stderr, (script, value, out.stderr)
    # A good set of passwords passes, and the ACL file names every user with its password.
    ok = run("valkey-start.sh", node)
    assert ok.returncode == 0, ok.stderr
    acl = (node.folder / "run" / "users.acl").read_text()
    for user in ("admin", "api", "grafana", "replica", "sentinel", "exporter"):
        assert f"user {user} " in acl
        assert f">{cluster.passwords[f'VALKEY_{user.upper()}_PASSWORD']}" in acl
    assert (node.folder / "run" / "users.acl").stat().st_mode & 0o077 == 0
