"""CPU cost of weather_api.loop.LoopMonitor: an idle uvloop with and without it, 10 s each.

    uv run python bench/loop_lag.py [seconds]

Prints the process CPU time each run used and the difference per second of wall time (the
monitor's cost on an idle process; under load a tick costs the same and the loop is busier).
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop

from weather_api.loop import LoopMonitor
from weather_api.telemetry import Metrics


async def idle(seconds: float, monitored: bool) -> float:
    """CPU seconds this process used while its loop idled `seconds` (with the monitor or not)."""
    metrics = Metrics()
    task = asyncio.create_task(LoopMonitor(metrics.loop_lag.observe).run()) if monitored else None
    start = time.process_time()
    await asyncio.sleep(seconds)
    used = time.process_time() - start
    if task is not None:
        task.cancel()
    return used


def main() -> None:
    """Run both and print the monitor's share of one core."""
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    without = uvloop.run(idle(seconds, monitored=False))
    with_monitor = uvloop.run(idle(seconds, monitored=True))
    share = (with_monitor - without) / seconds
    print(f"idle {seconds:.0f} s: {without * 1000:.1f} ms CPU without, {with_monitor * 1000:.1f} ms with the monitor")
    print(f"monitor: {share * 100:.3f} % of a core, {share / 20 * 1e6:.1f} us per tick (20 ticks/s)")


if __name__ == "__main__":
    main()
