"""The Valkey and Sentinel configuration of deploy/ works on real servers, as the pods start them.

deploy/base/valkey/valkey-start.sh and deploy/base/sentinel/sentinel-start.sh run here exactly
as in the containers (tests/deploy/loopback.py: three nodes and three Sentinels on loopback,
a new deployment electing its first node). The ACL rules are checked with ACL DRYRUN and, for
what must be refused, with the real server's NOPERM; the API's own Store reads through the
Sentinels with its `api` user. (Failover and restarts: test_valkey_ha.py.)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import valkey

from tests.conftest import load_library
from tests.deploy.conftest import REPO
from tests.deploy.loopback import Cluster, Process, wait_for
from weather_api import store
from weather_api.connection import connect
from weather_api.settings import Settings
from weather_api.store import Store, StoreUnavailable

LUA = sorted((REPO / "src" / "weather_api" / "valkey").glob("*.lua"))

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


@dataclass
class Deployed:
    """The loopback cluster, seen as a primary, one replica and one Sentinel."""

    cluster: Cluster
    primary: Process
    replica: Process
    sentinel: Process

    @property
    def passwords(self) -> dict[str, str]:
        """The passwords the scripts were given."""
        return self.cluster.passwords

    def as_user(self, server: Process, user: str) -> valkey.Valkey:
        """A client of `server` authenticated as ACL user `user` (replies as bytes)."""
        return self.cluster.as_user(server, user, text=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """Three nodes and three Sentinels, each started by its deploy/ script, as a new deployment."""
    loopback = Cluster(tmp_path_factory.mktemp("valkey-deploy"))
    try:
        primary = loopback.start_all()
        replica = next(n for n in loopback.nodes if n is not primary)
        yield Deployed(loopback, primary, replica, loopback.sentinels[0])
    finally:
        loopback.stop_all()


def dry_run(cluster: Deployed, user: str, *command: str) -> str:
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


def test_the_api_user_may_run_every_command_of_the_function_library_on_weather_keys(cluster: Deployed) -> None:
    """Valkey checks the caller's ACL inside functions: the library's commands must be granted."""
    commands = library_commands()
    assert commands, "no redis.call found in src/weather_api/valkey/*.lua"
    unknown = commands - set(SAMPLE_ARGS)
    assert not unknown, f"new commands in the library: grant them in users.acl.in, add them here: {unknown}"
    for command in sorted(commands):
        assert dry_run(cluster, "api", *with_key(command, "weather:counts")) == "OK", command


def test_the_api_user_may_call_functions_and_read_but_nothing_else(cluster: Deployed) -> None:
    """FCALL and reads on weather keys yes; loading code, other keys, admin and key scans no."""
    for command in (
        ["FCALL", "weather_x_record", "1", "weather:count"],
        ["FCALL", "weather_x_version", "0"],
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
        ["FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n"],
        ["FUNCTION", "LIST"],
        ["FCALL_RO", "weather_x_version", "0"],  # unused since /ready's version call may write
        ["SCRIPT", "LOAD", "return 1"],
        ["CONFIG", "GET", "masterauth"],
        ["INFO"],
    ):
        assert dry_run(cluster, "api", *command) != "OK", command


def test_the_api_user_is_refused_code_loading_and_configuration_on_a_real_server(cluster: Deployed) -> None:
    """NOPERM from the server itself: FUNCTION LOAD/DELETE/FLUSH, SCRIPT, EVAL, CONFIG; FCALL works.

    A user that could load a function could run a loop that blocks Valkey for every client;
    the library is loaded with the admin credential instead (the valkey-library Job).
    """
    with cluster.as_user(cluster.primary, "admin") as admin:
        admin.function_load(store._SOURCE, replace=True)  # noqa: SLF001 - the library source, as loaded
    evil = "#!lua name=" + store.LIBRARY + "\nserver.register_function('spin', function() while true do end end)"
    with cluster.as_user(cluster.primary, "api") as api:
        for command in (
            ("FUNCTION", "LOAD", "REPLACE", evil),
            ("FUNCTION", "DELETE", store.LIBRARY),
            ("FUNCTION", "FLUSH"),
            ("SCRIPT", "LOAD", "return 1"),
            ("SCRIPT", "FLUSH"),
            ("EVAL", "while true do end", "0"),
            ("CONFIG", "GET", "*"),
            ("CONFIG", "SET", "maxmemory", "1"),
        ):
            with pytest.raises(valkey.exceptions.NoPermissionError):
                api.execute_command(*command)  # type: ignore[no-untyped-call]
        assert api.fcall(f"{store.LIBRARY}_version", 0) == store.LIBRARY.encode()


def test_a_new_library_version_loads_beside_the_old_one_which_keeps_serving(cluster: Deployed) -> None:
    """A rolling update: the Job's `load-library` adds this version and leaves the running one in place.

    Old pods keep calling their library's functions (as the `api` user) while the new version is
    loaded by the admin credential, and both answer afterwards.
    """
    old = "weather_000000000000"  # an earlier build's library: another hash of the source
    with cluster.as_user(cluster.primary, "admin") as admin:
        admin.function_load(store._TEMPLATE.replace("__LIB__", old), replace=True)  # noqa: SLF001
        if admin.function_list(store.LIBRARY):
            admin.function_delete(store.LIBRARY)  # an earlier test loaded it: the Job must, here
    sentinels = cluster.sentinel.address
    admin_password = cluster.passwords["VALKEY_ADMIN_PASSWORD"]
    api_password = cluster.passwords["VALKEY_API_PASSWORD"]
    url = f"redis+sentinel://admin:{admin_password}@{sentinels}/weather?sentinel_username=api&sentinel_password={api_password}"
    loaded = load_library(url)
    assert loaded.returncode == 0, loaded.stderr
    with cluster.as_user(cluster.primary, "api") as api:
        assert api.fcall(f"{old}_version", 0) == old.encode()
        assert api.fcall(f"{store.LIBRARY}_version", 0) == store.LIBRARY.encode()
    with cluster.as_user(cluster.primary, "admin") as admin:
        names = {dict(zip(entry[::2], entry[1::2], strict=True))[b"library_name"] for entry in admin.function_list()}
        assert {old.encode(), store.LIBRARY.encode()} <= names
        admin.function_delete(old)


def test_the_exporter_and_replica_users_read_no_credential_and_no_key(cluster: Deployed) -> None:
    """The exporter and replica credentials cannot read a secret or a key, on a real server.

    The exporter gets INFO but not CONFIG GET masterauth, SLOWLOG GET or keys; the replica
    password is good for replication (PSYNC) and PING only.
    """
    with cluster.as_user(cluster.primary, "exporter") as exporter:
        assert "used_memory" in exporter.info("memory")
        for command in (
            ("CONFIG", "GET", "masterauth"),
            ("CONFIG", "GET", "*"),
            ("SLOWLOG", "GET", "10"),
            ("ACL", "LIST"),
            ("GET", "weather:count"),
            ("SCAN", "0"),
            ("MONITOR",),
            ("CLIENT", "KILL", "TYPE", "normal"),
        ):
            with pytest.raises(valkey.exceptions.NoPermissionError):
                exporter.execute_command(*command)  # type: ignore[no-untyped-call]
    with cluster.as_user(cluster.primary, "replica") as replica:
        assert replica.ping()
        for command in (("ROLE",), ("INFO",), ("GET", "weather:count"), ("CONFIG", "GET", "masterauth"), ("KEYS", "*")):
            with pytest.raises(valkey.exceptions.NoPermissionError):
                replica.execute_command(*command)  # type: ignore[no-untyped-call]


def test_the_grafana_user_only_reads_weather_keys(cluster: Deployed) -> None:
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


def test_the_service_users_have_what_their_programs_need_and_no_data_access(cluster: Deployed) -> None:
    """replica, sentinel and exporter run their protocols but read no weather data."""
    allowed = {
        "replica": [["PSYNC", "?", "-1"], ["REPLCONF", "listening-port", "6379"], ["PING"]],
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
            ["SLOWLOG", "LEN"],
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


def test_nobody_gets_in_without_a_user_and_password(cluster: Deployed) -> None:
    """The `default` user is off: an unauthenticated client can do nothing, a wrong password neither."""
    with cluster.primary.client() as anonymous, pytest.raises(valkey.AuthenticationError):
        anonymous.ping()
    with cluster.primary.client("api", "wrong") as wrong, pytest.raises(valkey.AuthenticationError):
        wrong.ping()
    with cluster.as_user(cluster.primary, "admin") as admin:
        default = admin.acl_getuser("default")
    assert "off" in default["flags"]
    assert default["passwords"] == []


def test_the_rendered_configuration_keeps_aof_and_min_replicas_to_write(cluster: Deployed) -> None:
    """AOF every second, and a primary that needs one replica at most 10 s behind to accept writes."""
    with cluster.as_user(cluster.primary, "admin") as admin:
        config = admin.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["min-replicas-to-write"] == "1"
    assert config["min-replicas-max-lag"] == "10"
    # Idempotency records (TTL) may be evicted, aggregates (no TTL) never (issue 9).
    assert config["maxmemory-policy"] == "volatile-ttl"
    with cluster.as_user(cluster.replica, "admin") as admin:
        replication = admin.info("replication")
    assert replication["role"] == "slave"
    assert replication["master_link_status"] == "up"


def test_the_sentinel_monitors_the_primary_and_finds_both_replicas(cluster: Deployed) -> None:
    """sentinel-start.sh's configuration authenticates (user `sentinel`) and sees every node."""
    with cluster.cluster.as_user(cluster.sentinel, "sentinel") as sentinel:
        master = sentinel.sentinel_master("weather")
        assert master["is_master"]
        assert not master["is_sdown"]
        assert sentinel.sentinel_get_master_addr_by_name("weather") == (cluster.primary.host, cluster.primary.port)
        replicas = {(r["ip"], r["port"]) for r in sentinel.sentinel_slaves("weather")}
    others = {(n.host, n.port) for n in cluster.cluster.nodes if n is not cluster.primary}
    assert replicas == others


def test_the_api_store_works_through_the_sentinel_with_its_acl_users(cluster: Deployed) -> None:
    """weather-api's Store, given the Kubernetes-style URL, reads through the primary the Sentinels name.

    The library is loaded (FUNCTION LOAD and its `prepare`, which registers the
    municipalities) with the admin credential, as the valkey-library Job does; the `api` user
    then finds the primary through the Sentinels (its Sentinel credential in the URL's query)
    and reads in MULTI/EXEC. Every command `record` runs is covered by ACL DRYRUN above.
    """
    sentinels = ",".join(s.address for s in cluster.cluster.sentinels)
    api = cluster.passwords["VALKEY_API_PASSWORD"]
    admin = cluster.passwords["VALKEY_ADMIN_PASSWORD"]
    query = f"sentinel_username=api&sentinel_password={api}"

    async def scenario() -> tuple[int, dict[str, int]]:
        loader_settings = Settings(
            valkey_url=f"redis+sentinel://admin:{admin}@{sentinels}/weather?{query}",
            municipalities=("mixco", "chinautla"),
        )
        loader = Store(connect(loader_settings), loader_settings)
        settings = Settings(valkey_url=f"redis+sentinel://api:{api}@{sentinels}/weather?{query}")
        reader = Store(connect(settings), settings)
        try:
            await loader.load()
            return await reader.stats()
        finally:
            await loader.close()
            await reader.close()  # the Sentinel clients' connections too

    total, _ = asyncio.run(scenario())
    assert total == 0
    # The library's writes reached a replica, where Grafana's read-only user sees them.
    with cluster.as_user(cluster.replica, "grafana") as grafana:
        wait_for(
            lambda: set(grafana.smembers("weather:municipalities")) == {b"mixco", b"chinautla"},
            "replication of the registered municipalities",
            cluster.cluster.logs,
        )


def test_the_api_cannot_reach_sentinels_without_its_sentinel_credential(cluster: Deployed) -> None:
    """A redis+sentinel:// URL without sentinel_username/password: the Sentinels refuse (503)."""
    sentinels = ",".join(s.address for s in cluster.cluster.sentinels)
    api = cluster.passwords["VALKEY_API_PASSWORD"]
    settings = Settings(valkey_url=f"redis+sentinel://api:{api}@{sentinels}/weather")

    async def scenario() -> None:
        reader = Store(connect(settings), settings)
        try:
            await reader.stats()
        finally:
            await reader.close()

    with pytest.raises(StoreUnavailable):
        asyncio.run(scenario())
