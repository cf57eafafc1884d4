"""Event-loop lag: how late a periodic timer fires, as a metric and as evidence for the store.

All requests share one event loop. While something holds it (a handler's CPU work, a long
garbage collection, a stopped process), nothing else runs: Valkey's answers wait unread in their
sockets and their deadlines pass. A task that sleeps `interval` and wakes `lag` seconds late saw
the loop held for about that long (a hold shorter than what was left of its sleep goes unseen, so
short holds are under-counted by up to `interval`).

Nothing in the libraries does this for an asyncio loop (uvloop exposes no loop-delay statistic;
Node's `monitorEventLoopDelay` is the same idea). The cost is one timer every `interval`: 0.14 %
of a core on an idle process, about 70 us per tick, mostly for waking it up (`uv run python
bench/loop_lag.py`); a busy loop is awake anyway. Test: tests/test_loop.py stops a real process
(SIGSTOP) and reads the metric and the error label.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

INTERVAL = 0.05
"""Seconds between ticks: the finest hold the monitor resolves."""


class LoopMonitor:
    """Measures how late the loop runs a timer; `stalled()` is a clock that moves only while it is late."""

    def __init__(self, observe: Callable[[float], None], interval: float = INTERVAL) -> None:
        self._observe = observe
        self._interval = interval
        self._total = 0.0
        self._due: float | None = None

    def stalled(self) -> float:
        """Seconds the loop has stood still so far, the hold still going on included.

        The difference of two readings is how long the loop was held in between, even when read
        right after a hold, before the monitor's own timer had its turn.
        """
        if self._due is None:
            return self._total
        return self._total + max(0.0, time.monotonic() - self._due)

    async def run(self) -> None:
        """Tick until cancelled, observing each tick's lateness."""
        self._due = time.monotonic() + self._interval
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            lag = max(0.0, now - self._due)
            # Both in one step (no await between): a reader never counts this lag twice.
            self._total += lag
            self._due = now + self._interval
            self._observe(lag)
