"""Valkey: client lifecycle, the function library, one atomic round trip per write.

Every call runs under one deadline (`Settings.valkey_timeout`) that covers waiting for a pooled
connection, connecting and the reply; past it, or when Valkey cannot be reached, the call raises
`StoreUnavailable`. Writes are never retried here: a write that timed out may still have been
applied, and only the client's `Idempotency-Key` makes a retry safe.

What comes from valkey-py, and what is ours and why:

- How valkey-py connects (options, refusals named by class, the Sentinel pool, the guard against
  writing to a closed transport) is `weather_api.connection`'s; this module maps failures by
  those classes, never by message text.
- A Valkey call that timed out while the event loop itself was blocked (a stall measured by
  `weather_api.loop.LoopMonitor`, passed in as `stalled`) is reported as `event_loop`, not as a
  Valkey `timeout`: Valkey's answer may have been waiting, unread, in the socket.
- The one hot command, the record FCALL, skips valkey-py's `execute_command`: its constant part
  is packed once (`_record_command`), it is sent and read on a pooled connection as
  `execute_command` would (`_packed`), and the library answers one JSON string rather than a
  nested array (valkey-py's parser reads those element by element). valkey-py's socket timeout
  is off (`weather_api.connection`): `_call`'s deadline already covers every reply. Each saved
  ~3, ~4 (per request) and ~12 us (per round trip) of CPU: `python -m bench.micro`,
  docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any, TypeVar

import msgspec
import valkey.asyncio as avalkey
from opentelemetry import trace
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import NoPermissionError, ValkeyError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from weather_api.connection import NOTHING_RAN, FunctionNotFound, NotSent
from weather_api.model import Report
from weather_api.settings import Settings

T = TypeVar("T")

_TEMPLATE = resources.files("weather_api").joinpath("valkey/weather.lua").read_text("utf-8")
LIBRARY = "weather_" + hashlib.sha256(_TEMPLATE.encode()).hexdigest()[:12]
"""Library name: changes whenever the Lua source does, so versions load side by side."""
_SOURCE = _TEMPLATE.replace("__LIB__", LIBRARY)


class StoreUnavailable(Exception):  # noqa: N818 - reads as a state, like asyncio's names
    """Valkey could not be reached, or did not answer within the deadline."""

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"valkey {operation}: {reason}")
        self.operation = operation
        self.reason = reason


class OutcomeUnknown(StoreUnavailable):
    """A write was handed to Valkey and no answer came back: it may or may not have been applied."""


class IdempotencyConflict(Exception):  # noqa: N818
    """The Idempotency-Key was used before with a different request body."""


Observer = Callable[[str, float, str | None], None]
"""Called after every Valkey call with (operation, seconds, error kind or None)."""


def _no_observer(_operation: str, _seconds: float, _error: str | None) -> None:
    return None


def _never_stalled() -> float:
    return 0.0


BLOCKED_SHARE = 0.25
"""A call that timed out while the event loop was blocked for this share of the deadline or
more is counted as `event_loop`, not as a Valkey `timeout` (Valkey may have answered in time)."""

HOLD_SECONDS = 0.1
"""Longest the sender keeps one pooled connection across consecutive FCALLs (see `Store._packed`)."""

MAX_REPORTS_PER_CALL = 1000
"""Reports per FCALL: bounds how long one script holds Valkey (about 10 ms)."""

GROUP_SPAN = 0.005
"""Seconds within which queued requests share one deadline, and one timer for it: each request
still waits at most `valkey_timeout`, and at least that less this."""

_Request = tuple[str, str, str, list[tuple[str, str, str, str, str]]]
"""One record() call as the library's `record` takes it: (idempotency key, fingerprint, replay, rows)."""


class _Expired(Exception):  # noqa: N818 - a state, like StoreUnavailable
    """A group's deadline passed before its answer came."""


@dataclass(slots=True)
class _Group:
    """record() calls queued together: one deadline and one timer for all, a future each.

    A timer (`asyncio.timeout`) per request cost ~3 us of its ~100 (docs/performance.md); the
    futures stay one per request, so that a cancelled caller cancels nobody else's wait.
    """

    deadline: float
    stalled: float
    """The loop monitor's reading when the group opened (see `Store._timed_out`)."""
    requests: list[_Request] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    reports: int = 0
    sent: bool = False
    expired: bool = False
    timer: asyncio.TimerHandle | None = None

    def takes(self, deadline: float) -> bool:
        """Whether a request due at `deadline` may join (the group is not sent: it is queued)."""
        return self.reports < MAX_REPORTS_PER_CALL and self.deadline >= deadline - GROUP_SPAN

    def expire(self) -> None:
        """The deadline passed: every caller still waiting hears of it."""
        self.expired = True
        for future in self.futures:
            if not future.done():
                future.set_exception(_Expired())

    def settle(self, results: Sequence[Any], start: int) -> None:
        """Hand each caller its result, from `results[start]` on."""
        if self.timer is not None:
            self.timer.cancel()
        for i, future in enumerate(self.futures, start):
            if not future.done():
                future.set_result(results[i])

    def fail(self, exc: BaseException) -> None:
        """Every caller still waiting gets `exc`."""
        if self.timer is not None:
            self.timer.cancel()
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `record` did: applied now, or replayed (what the first request with its key kept)."""

    replayed: bool
    replay: bytes | None


_RESULTS = msgspec.json.Decoder(list[list[str]])
"""The reply of the library's `record`: one entry per request (see weather.lua)."""


class Store:
    """The weather aggregates in Valkey: record reports, read them back."""

    def __init__(
        self,
        client: avalkey.Valkey,
        settings: Settings,
        observe: Observer = _no_observer,
        tracer: trace.Tracer | None = None,
        stalled: Callable[[], float] = _never_stalled,
    ) -> None:
        self._client = client
        self._tracer = tracer or trace.NoOpTracer()
        self._settings = settings
        self._observe = observe
        self._stalled = stalled
        self._prefix = settings.key_prefix
        self._count_key = f"{self._prefix}:count"
        self._loaded = False
        self._may_load = True
        self._queue: deque[_Group] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._held: Any = None
        """The pooled connection the sender keeps between FCALLs (see `_packed`)."""
        self._held_since = 0.0
        self._idle: asyncio.Future[None] | None = None
        """What the sender awaits while the queue is empty."""
        self._config = msgspec.json.encode(
            {
                "prefix": self._prefix,
                "interval": settings.series_interval * 1000,
                "series_maxlen": settings.series_maxlen,
                "recent_maxlen": settings.recent_maxlen,
                "weathers": settings.weathers,
                "ttl": settings.idempotency_ttl,
            },
        )

        encode = self._client.connection_pool.get_encoder().encode  # type: ignore[no-untyped-call]
        function = f"{LIBRARY}_record"
        head = [b"FCALL", encode(function), b"1", encode(self._count_key), self._config]
        self._record_prefix = b"*6\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in head)

    @property
    def client(self) -> avalkey.Valkey:
        """The underlying client (for tools and tests)."""
        return self._client

    def _command(self, *args: object) -> Awaitable[Any]:
        """One raw command (valkey-py leaves execute_command untyped)."""
        return self._client.execute_command(*args)  # type: ignore[no-untyped-call]

    def _span(self, operation: str) -> trace.Span | None:
        """A client span under the current request's span, if that one is recorded.

        A child of an unsampled request is never sampled (ParentBased), so skipping it saves
        its cost on most requests; in the sender task there is no current span at all.
        """
        if not trace.get_current_span().is_recording():
            return None
        return self._tracer.start_span(
            f"valkey {operation}",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system.name": "valkey", "db.operation.name": operation},
        )

    def _timed_out(self, stalled: float) -> str:
        """Why a deadline passed: Valkey, or the event loop standing still since `stalled`."""
        blocked = self._stalled() - stalled
        if blocked < BLOCKED_SHARE * self._settings.valkey_timeout:
            return "timed out"
        return f"timed out (event loop blocked {blocked:.2f} s)"

    async def _call(self, operation: str, func: Callable[[], Awaitable[T]]) -> T:
        """Run one Valkey call under the deadline, map failures, report its duration."""
        start = time.perf_counter()
        stalled = self._stalled()
        error: str | None = None
        span = self._span(operation)
        try:
            async with asyncio.timeout(self._settings.valkey_timeout):
                return await func()
        except (TimeoutError, ValkeyTimeoutError) as exc:
            reason = self._timed_out(stalled)
            error = "timeout" if reason == "timed out" else "event_loop"
            raise StoreUnavailable(operation, reason) from exc
        except NOTHING_RAN as exc:
            # Valkey refused before running anything (see _REFUSALS) and will accept again, as
            # after a Sentinel failover, a replica's promotion or memory freed: 503, not 500.
            error = "unavailable"
            raise StoreUnavailable(operation, f"refused: {exc}") from exc
        except (ValkeyConnectionError, OSError) as exc:
            error = "connection"
            raise StoreUnavailable(operation, str(exc) or type(exc).__name__) from exc
        except FunctionNotFound:
            error = "not_loaded"
            raise
        except ValkeyError:
            error = "response"
            raise
        finally:
            self._observe(operation, time.perf_counter() - start, error)
            if span is not None:
                if error is not None:
                    span.set_status(trace.StatusCode.ERROR, error)
                span.end()

    async def install(self) -> None:
        """FUNCTION LOAD this version's library (REPLACE: idempotent); needs that permission."""
        await self._call("load", lambda: self._command("FUNCTION", "LOAD", "REPLACE", _SOURCE))

    async def load(self) -> None:
        """Make sure the function library is there, and register every municipality.

        A Valkey user that may not FUNCTION LOAD (NOPERM: a least-privilege ACL) uses the
        library an administrator loaded (`weather-api load-library`) and never tries again;
        until the library is there, every call is `StoreUnavailable`.
        """
        self._loaded = False
        if self._may_load:
            try:
                await self.install()
            except NoPermissionError:
                self._may_load = False
        try:
            prepare = self._fcall_args("prepare", self._config, *self._settings.municipalities)
            await self._call("load", lambda: self._command(*prepare))
        except FunctionNotFound:
            reason = f"function library {LIBRARY} not loaded and this Valkey user may not load it (NOPERM)"
            raise StoreUnavailable("load", f"{reason}: run `weather-api load-library`") from None
        self._loaded = True

    def _fcall_args(self, function: str, *args: str | bytes) -> tuple[str | bytes | int, ...]:
        return ("FCALL", f"{LIBRARY}_{function}", 1, self._count_key, *args)

    async def prepare(self) -> None:
        """Close time-series buckets whose interval ended (and re-register municipalities)."""
        await self._fcall("flush", "prepare", self._config, *self._settings.municipalities)

    async def _fcall(self, operation: str, function: str, *args: str | bytes) -> Any:  # noqa: ANN401
        """FCALL a library function, loading the library first when Valkey lacks it."""
        command = self._fcall_args(function, *args)
        return await self._with_library(operation, lambda: self._command(*command))

    async def _with_library(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """`_call` of an FCALL, loading the library first when Valkey lacks it."""
        if not self._loaded:
            await self.load()
        try:
            return await self._call(operation, call)
        except FunctionNotFound:
            # Valkey rejects an unknown function before running anything, so calling again
            # after loading cannot apply a report twice.
            await self.load()
            return await self._call(operation, call)

    def _record_command(self, payload: bytes) -> bytes:
        """The FCALL of `record` for this payload, packed (RESP): the constant part is packed once.

        valkey-py packs each argument of each command anew (~4 us for this one); these are the
        same bytes (RESP: an array of bulk strings), as every test that posts a report shows.
        """
        return b"%s$%d\r\n%s\r\n" % (self._record_prefix, len(payload), payload)

    async def _packed(self, command: bytes) -> Any:  # noqa: ANN401
        """Send a packed command on a pooled connection and read its reply, as `execute_command` does.

        Without its per-command extras (client-side cache lookup, retry wrapper, reply callbacks),
        none of which this service uses. A failed write or read closes the connection (valkey-py).

        For the sender only (one FCALL at a time): it keeps the connection for the next FCALL, for
        `HOLD_SECONDS` at most from taking it. Taking it from the pool and giving it back cost ~20 us
        per round trip (a lock, a timer, and a zero-timeout read to check it is clean), as much as
        the round trip itself; the pool still sees the connection often enough to move it to a new
        primary after a Sentinel failover (`weather_api.connection`) within `HOLD_SECONDS` more, and
        a connection that failed goes back at once (valkey-py closed it if it is unusable).
        """
        pool = self._client.connection_pool
        connection, self._held = self._held, None
        now = time.monotonic()
        if connection is not None and now - self._held_since > HOLD_SECONDS:
            await pool.release(connection)
            connection = None
        if connection is None:
            connection = await pool.get_connection("FCALL")  # type: ignore[no-untyped-call]
            self._held_since = now
        try:
            await connection.send_packed_command(command)
            reply = await connection.read_response()
        except BaseException:
            await pool.release(connection)
            raise
        self._held = connection
        return reply

    def _enqueue(self, request: _Request) -> tuple[_Group, asyncio.Future[Any]]:
        """Queue one record() call in the open group (or a new one) and wake the sender."""
        loop = asyncio.get_running_loop()
        group = self._queue[-1] if self._queue else None
        deadline = loop.time() + self._settings.valkey_timeout
        if group is None or not group.takes(deadline):
            group = _Group(deadline, self._stalled())
            group.timer = loop.call_at(group.deadline, group.expire)
            self._queue.append(group)
        future = loop.create_future()
        group.requests.append(request)
        group.futures.append(future)
        group.reports += len(request[3])
        if self._idle is not None:
            if not self._idle.done():
                self._idle.set_result(None)  # the sender waits for work: this is work
        elif self._sender is None or self._sender.done():
            # A context of its own: the sender serves many requests, so it must not carry
            # (and parent its spans under) the trace of the one that happened to start it.
            self._sender = asyncio.create_task(self._send(), context=contextvars.Context())
        return group, future

    async def record(
        self,
        reports: Sequence[Report],
        ids: Sequence[str],
        replay: bytes,
        idempotency: tuple[str, str] | None = None,
    ) -> Outcome:
        """Apply reports atomically; with (key, fingerprint), at most once per key.

        `replay` is what a later request with the same key gets back (`Outcome.replay`): it is
        kept in Valkey as long as the key, so keep it small (the app keeps the first id only).
        Concurrent calls share Valkey round trips (see `_send`); each call still waits at
        most `valkey_timeout`, and one that times out before its turn is never sent.
        """
        key, fingerprint = ("", "")
        if idempotency is not None:
            digest = hashlib.sha256(idempotency[0].encode()).hexdigest()
            key, fingerprint = f"{self._prefix}:idem:{digest}", idempotency[1]
        rows = [
            (i, r.municipality, repr(r.temperature), repr(r.humidity), r.weather)
            for i, r in zip(ids, reports, strict=True)
        ]
        group, future = self._enqueue((key, fingerprint, replay.decode(), rows))
        span = self._span("record")
        try:
            result = await future
        except _Expired:
            reason = self._timed_out(group.stalled)
            if group.sent:
                raise OutcomeUnknown("record", reason + ", outcome unknown") from None
            raise StoreUnavailable("record", reason + " before sending") from None
        except StoreUnavailable as exc:
            if exc.operation != "record" or isinstance(exc.__cause__, (*NOTHING_RAN, NotSent)):
                raise  # the library could not be loaded, Valkey refused the call, or it was not sent
            raise OutcomeUnknown(exc.operation, exc.reason) from exc  # the connection failed mid-call
        finally:
            if span is not None:
                span.end()
        status = result[0]
        if status == "applied":
            return Outcome(replayed=False, replay=None)
        if status == "replayed":
            return Outcome(replayed=True, replay=result[1].encode())
        raise IdempotencyConflict

    async def _send(self) -> None:
        """Send queued requests, as many as arrived meanwhile per FCALL, one FCALL at a time.

        Group commit: under load many requests wait together, and one round trip (one script
        run, still atomic per request) serves them all; alone, a request goes out at once.
        The task lives as long as the store (`close` ends it): waking it when a request comes
        costs less than a new task per burst of requests (~3 us a request with 5 per FCALL).
        """
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._idle = loop.create_future()
                try:
                    await self._idle
                finally:
                    self._idle = None
            await self._send_queued()

    async def _send_queued(self) -> None:
        """Send what is queued, until nothing is."""
        while self._queue:
            groups: list[_Group] = []
            reports = 0
            while self._queue and reports < MAX_REPORTS_PER_CALL:
                group = self._queue.popleft()
                if not group.expired:  # its callers gave up: never send it
                    group.sent = True
                    groups.append(group)
                    reports += group.reports
            if not groups:
                continue
            command = self._record_command(msgspec.json.encode([request for g in groups for request in g.requests]))
            try:
                results = _RESULTS.decode(await self._with_library("record", partial(self._packed, command)))
            except Exception as exc:  # noqa: BLE001 - whatever failed, every caller must hear of it
                for group in groups:
                    group.fail(exc)
                continue
            start = 0
            for group in groups:
                group.settle(results, start)
                start += len(group.futures)

    async def ping(self) -> None:
        """Succeed only when Valkey would accept a report now and this version's library is loaded.

        The library's `version` function carries no `no-writes` flag, so Valkey refuses it
        exactly when it would refuse a report: full, a replica, short of replicas, ...
        """
        version = await self._fcall("ping", "version")
        if version != LIBRARY.encode():  # pragma: no cover - would be a Valkey bug
            raise StoreUnavailable("ping", f"unexpected library version {version!r}")

    async def _read(self, commands: Callable[[Any], object]) -> list[Any]:
        """Run read commands in one MULTI/EXEC round trip: one consistent snapshot."""

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                commands(pipe)
                result: list[Any] = await pipe.execute()
                return result

        return await self._call("read", run)

    async def stats(self) -> tuple[int, dict[str, int]]:
        """Total number of reports, and the number per municipality."""
        total, counts = await self._read(
            lambda pipe: (pipe.get(self._count_key), pipe.hgetall(f"{self._prefix}:counts")),
        )
        return int(total or 0), {k.decode(): int(v) for k, v in counts.items()}

    async def averages(self) -> dict[str, dict[str, float]]:
        """Mean temperature and humidity per municipality."""
        p = self._prefix
        temps, hums = await self._read(
            lambda pipe: (pipe.hgetall(f"{p}:avg:temperature"), pipe.hgetall(f"{p}:avg:humidity")),
        )
        return {m.decode(): {"temperature": float(t), "humidity": float(hums.get(m, b"nan"))} for m, t in temps.items()}

    async def municipality(self, name: str, points: int) -> dict[str, Any]:
        """Everything the dashboard shows for one municipality (raw Valkey replies)."""
        p = self._prefix

        def commands(pipe: Any) -> None:  # noqa: ANN401
            pipe.hget(f"{p}:counts", name)
            pipe.hget(f"{p}:sum:temperature", name)
            pipe.hget(f"{p}:sum:humidity", name)
            pipe.zrange(f"{p}:min:{name}", 0, -1, withscores=True)
            pipe.zrange(f"{p}:max:{name}", 0, -1, withscores=True)
            pipe.zrange(f"{p}:conditions:{name}", 0, -1, withscores=True)
            pipe.xrevrange(f"{p}:series:{name}", count=points)
            pipe.hgetall(f"{p}:bucket:{name}")

        names = ("count", "temperature_sum", "humidity_sum", "min", "max", "conditions", "series", "bucket")
        return dict(zip(names, await self._read(commands), strict=True))

    async def close(self) -> None:
        """End the sender, close every pooled connection, the Sentinel clients' too."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self._held is not None:
            connection, self._held = self._held, None
            await self._client.connection_pool.release(connection)
        await self._client.aclose(close_connection_pool=True)
        manager = getattr(self._client.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose(close_connection_pool=True)
