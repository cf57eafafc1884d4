"""The check runner of the image test: one PASS or FAIL line per check, details under a failure."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator


class CheckError(Exception):
    """A check found the image wrong; the message says how."""


class Checks:
    """Runs checks one by one, each printing one PASS or FAIL line."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[list[str]]:
        """A check: the block passes unless it raises; what it appends to the list is shown."""
        notes: list[str] = []
        start = time.monotonic()
        try:
            yield notes
        except Exception as exc:  # noqa: BLE001 - any failure of a check is reported, then the next runs
            self._line("FAIL", name, start, [])
            for line in f"{type(exc).__name__}: {exc}".splitlines():
                print(f"        {line}")
            self.failed.append(name)
        else:
            self._line("PASS", name, start, notes)
            self.passed.append(name)

    def ok(self, *names: str) -> bool:
        """Whether these checks passed (later checks need what they made)."""
        return not set(names) & set(self.failed)

    @staticmethod
    def _line(verdict: str, name: str, start: float, notes: list[str]) -> None:
        """`PASS  name: note (1.2 s)`; several notes go on lines of their own below."""
        inline = f": {notes[0]}" if len(notes) == 1 else ""
        print(f"{verdict}  {name}{inline} ({time.monotonic() - start:.1f} s)", flush=True)
        for note in notes if len(notes) > 1 else []:
            print(f"        {note}", flush=True)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; CheckError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CheckError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
