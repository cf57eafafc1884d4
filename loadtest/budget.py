"""The request budget: exactly N logical requests across all users, processes and machines.

One `Pool` (in the standalone process, or in the master) hands out tickets; a user takes one
before each logical request and returns it when the request has ended (retries included). When
no ticket is left (the count is reached, or the deadline has passed) and every ticket handed out
has come back, the pool is drained and the run can stop without cutting a request in half, so
the ledger holds the fate of every request that was sent.

Workers fetch tickets from the master in blocks and return them together with the ledger piece
of the requests they stand for: when the master has all tickets back, it has the whole ledger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent.event

from loadtest.ledger import Ledger

logger = logging.getLogger(__name__)

REQUEST = "weather_budget_request"
GRANT = "weather_budget_grant"
DONE = "weather_budget_done"


class Budget(Protocol):
    """What a user sees: take a ticket before a logical request, finish it afterwards."""

    def take(self) -> bool:
        """A ticket, or False when the run has no more requests to make."""
        ...

    def finish(self) -> None:
        """The request of a ticket has ended and its outcome is in the ledger."""
        ...


class Pool:
    """The tickets of a run: at most `limit` (None: no limit), none after `deadline`."""

    def __init__(
        self,
        limit: int | None,
        deadline: float | None,
        on_drained: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.deadline = deadline
        self.granted = 0
        self.done = 0
        self._closed = False
        self._drained = False
        self.interrupted = False
        """Closed by `close()` before the limit or the deadline was reached."""
        self._on_drained = on_drained
        self._clock = clock

    @property
    def closed(self) -> bool:
        """No more tickets will be handed out."""
        if not self._closed:
            reached = self.limit is not None and self.granted >= self.limit
            late = self.deadline is not None and self._clock() >= self.deadline
            self._closed = reached or late
        return self._closed

    @property
    def drained(self) -> bool:
        """Closed, and every ticket handed out has come back."""
        return self._drained

    def close(self) -> None:
        """Hand out no more tickets (the run is being stopped)."""
        if not self.closed:
            self.interrupted = True
            self._closed = True
        self._check()

    def grant(self, want: int) -> int:
        """Up to `want` tickets; 0 once the pool is closed."""
        n = 0 if self.closed else want
        if self.limit is not None:
            n = min(n, self.limit - self.granted)
        self.granted += n
        self._check()
        return n

    def complete(self, n: int) -> None:
        """`n` tickets came back."""
        self.done += n
        self._check()

    def _check(self) -> None:
        if self.closed and self.done >= self.granted and not self._drained:
            self._drained = True
            self._on_drained()


class LocalBudget:
    """Tickets straight from the pool of this process (standalone run)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def take(self) -> bool:
        """One ticket from the pool."""
        return self._pool.grant(1) == 1

    def finish(self) -> None:
        """Return the ticket."""
        self._pool.complete(1)


class WorkerBudget:
    """Tickets fetched from the master in blocks; returned with this worker's ledger pieces."""

    def __init__(
        self,
        send: Callable[[str, dict[str, Any]], None],
        ledger: Ledger,
        block: int = 10,
        patience: float = 60.0,
    ) -> None:
        self._send = send
        self._ledger = ledger
        self._block = block
        self._patience = patience
        self._available = 0
        self._in_flight = 0
        self._unreported = 0
        self._exhausted = False
        self._pending: gevent.event.AsyncResult | None = None

    def take(self) -> bool:
        """One ticket: from the block at hand, or from the master (one question at a time)."""
        while self._available == 0:
            if self._exhausted:
                return False
            pending = self._pending
            if pending is None:
                pending = self._pending = gevent.event.AsyncResult()
                self._send(REQUEST, {"want": self._block})  # the answer may come before this returns
            try:
                pending.get(timeout=self._patience)
            except gevent.Timeout:
                logger.warning("the master granted no tickets within %ss; this worker stops", self._patience)
                self._exhausted = True
        self._available -= 1
        self._in_flight += 1
        return True

    def on_grant(self, n: int) -> None:
        """The master's answer to a ticket request."""
        self._available += n
        self._exhausted = n == 0
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.set(n)

    def finish(self) -> None:
        """Return the ticket: report now when nothing is in flight or a block's worth is due."""
        self._in_flight -= 1
        self._unreported += 1
        if self._in_flight == 0 or self._unreported >= self._block:
            self.flush()

    def flush(self) -> None:
        """Send the finished tickets and their ledger piece to the master."""
        if self._unreported == 0 and self._ledger.is_empty():
            return
        self._send(DONE, {"done": self._unreported, "ledger": self._ledger.take().to_dict()})
        self._unreported = 0
