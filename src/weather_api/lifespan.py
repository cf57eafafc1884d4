"""What runs beside the requests for as long as the app does: the store, the ticker, the loop monitor.

Start: connect to Valkey and load the function library (the process stays up if it cannot),
start the once-a-second ticker and the event-loop monitor. Stop: cancel both, close the store,
flush the access log, shut the tracer provider down (exporting what it holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from litestar import Litestar
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from weather_api.connection import connect
from weather_api.logs import AccessLog
from weather_api.loop import LoopMonitor
from weather_api.settings import Settings
from weather_api.store import Store, StoreUnavailable
from weather_api.telemetry import Metrics

log = logging.getLogger("weather_api")


async def _every_second(store: Store, access_log: AccessLog | None) -> None:
    """Close finished time-series buckets (even of a quiet municipality); write access lines.

    Also the one place that logs Valkey going away and coming back: once per change, not
    once per refused request.
    """
    available = True
    while True:
        await asyncio.sleep(1)
        if access_log is not None:
            access_log.flush()
        try:
            await store.prepare()
        except StoreUnavailable as exc:
            if available:
                log.warning("valkey unavailable; answering 503", extra={"reason": exc.reason})
            available = False
        else:
            if not available:
                log.warning("valkey available again")
            available = True


def lifespan(
    settings: Settings,
    metrics: Metrics,
    tracer: trace.Tracer,
    tracer_provider: TracerProvider | None,
    access_log: AccessLog | None,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app's lifespan: sets `app.state.store` while it runs."""

    @contextlib.asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        monitor = LoopMonitor(metrics.loop_lag.observe)
        store = Store(connect(settings), settings, metrics.observe_valkey, tracer, monitor.stalled)
        app.state.store = store
        lag = asyncio.create_task(monitor.run())
        try:
            await store.load()
        except StoreUnavailable as exc:
            # Unreachable, or refusing (full, a replica, no library and no right to load it):
            # the process stays up, /ready says 503, and the ticker loads it as soon as it can.
            log.warning("valkey unavailable at startup; will retry", extra={"reason": exc.reason})
        flusher = asyncio.create_task(_every_second(store, access_log))
        # Everything built so far (modules, the app, its routes) lives as long as the process:
        # taking it out of the garbage collector's generations spares every full collection
        # from scanning it again, which shows in p99 latency.
        gc.freeze()
        try:
            yield
        finally:
            for task in (flusher, lag):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.close()
            if access_log is not None:
                access_log.flush()
            if tracer_provider is not None:
                tracer_provider.shutdown()

    return run
