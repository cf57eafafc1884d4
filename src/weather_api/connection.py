"""Valkey connections: the client's options, refusals named by class, the Sentinel pool.

What comes from valkey-py, and what is ours and why:

- valkey-py turns an error reply into an exception by its code (the reply's first word, RESP),
  from its parser's `EXCEPTION_CLASSES`, and strips the code from the message. It names only a
  few codes (`OOM`, `READONLY`, `LOADING`, ...); `NOREPLICAS`, `MASTERDOWN`, `BUSY`, `TRYAGAIN`
  and `MISCONF` become a plain `ResponseError`. `_Parser` is valkey-py's own parser (passed as
  the documented `parser_class` connection option) with every code that means "refused for now,
  nothing ran" mapped to a `Refused` class, and `ERR Function not found` to `FunctionNotFound`:
  `weather_api.store` maps failures by class, never by message text. The classes that
  valkey-py names itself stay subclasses of its own (`ReadOnlyError`: its Sentinel connection
  catches that one to find a demoted primary). Tests: tests/test_refusals.py, against a real
  Valkey full, demoted, short of replicas, busy, loading and unable to save.
- No socket timeout: every call runs under `Store._call`'s deadline, which covers the reply
  too; a pool that waits for a free connection, also behind Sentinel (`_BlockingSentinelPool`);
  connections that check the transport before valkey-py writes (`_Guarded`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, ClassVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

import valkey.asyncio as avalkey
from valkey.asyncio.connection import AbstractConnection, DefaultParser
from valkey.asyncio.retry import Retry
from valkey.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from valkey.backoff import NoBackoff
from valkey.exceptions import (
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    ValkeyError,
)
from valkey.exceptions import ConnectionError as ValkeyConnectionError

from weather_api.settings import Settings


class Refused(ResponseError):  # noqa: N818
    """Valkey refused the command before running it, for now: full, read-only, busy, failing over."""


class _OutOfMemory(OutOfMemoryError, Refused):  # noqa: N818 - named after its reply code, like the rest
    """OOM: over `maxmemory` with nothing it may evict."""


class _ReadOnly(ReadOnlyError, Refused):  # noqa: N818
    """READONLY: a replica (valkey-py's Sentinel connection catches `ReadOnlyError`)."""


class _Loading(BusyLoadingError):  # noqa: N818
    """LOADING: still reading its data set; refused like the rest, but not a `Refused`.

    valkey-py raises a `BusyLoadingError` at once, as the connection error it makes it, and
    closes the connection. A `ResponseError` would instead be collected by a MULTI/EXEC read,
    which then reads on from the closed connection ("Connection closed by server.": a
    `connection` error, not `unavailable`; tests/test_refusals.py, a Valkey loading its data).
    """


NOTHING_RAN = (Refused, _Loading)
"""What Valkey refuses before running anything, for now (see `_REFUSALS`)."""


class FunctionNotFound(ResponseError):  # noqa: N818
    """FCALL of a function this Valkey does not have: a fresh Valkey, or FUNCTION FLUSH."""


_REFUSALS: dict[str, type[ValkeyError]] = {
    "OOM": _OutOfMemory,
    "READONLY": _ReadOnly,
    "LOADING": _Loading,
    "NOREPLICAS": Refused,  # min-replicas-to-write unmet
    "MASTERDOWN": Refused,  # a replica cut off from its primary, told not to serve stale data
    "BUSY": Refused,  # a script or function running past busy-reply-threshold
    "TRYAGAIN": Refused,  # a cluster slot being migrated
    "MISCONF": Refused,  # a failed RDB save with stop-writes-on-bgsave-error
}
"""Error codes of a Valkey that refuses for now, not for good; nothing ran."""


class _Parser(DefaultParser):  # type: ignore[misc,valid-type]  # valkey-py's default parser class
    """valkey-py's reply parser, with the refusals and a missing function named by class."""

    EXCEPTION_CLASSES: ClassVar[dict[str, Any]] = {
        **DefaultParser.EXCEPTION_CLASSES,
        "ERR": {
            **cast("dict[str, Any]", DefaultParser.EXCEPTION_CLASSES["ERR"]),
            "Function not found": FunctionNotFound,
        },
    }

    @classmethod
    def parse_error(cls, response: str) -> ValkeyError:
        """The exception for an error reply; a refusal keeps its code in the message, for logs."""
        refusal = _REFUSALS.get(response.split(" ", 1)[0])
        if refusal is not None:
            return refusal(response)
        error: ValkeyError = super().parse_error(response)
        return error


class NotSent(ValkeyConnectionError):  # noqa: N818 - a state, like StoreUnavailable
    """The connection was found closed before a command was written: nothing ran."""


class _Guarded(AbstractConnection):
    """A connection that will not write to a socket the event loop already found closed.

    When Valkey resets a connection (killed with it in its accept queue, or with bytes unread)
    between two steps of a command, the event loop closes the transport before valkey-py
    writes: with uvloop (uvicorn's loop) that write raises `RuntimeError`, which valkey-py
    passes on as it is, so the request was answered 500. Checked here, with no `await` between
    the check and valkey-py's write, the same state is the `ConnectionError` it is (503, a
    connection error in the metrics; nothing was sent, so the 503 says `not_applied`):
    tests/test_store.py, under uvloop and a real Valkey.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:  # noqa: ANN401
        """valkey-py's, after (re)connecting and the health check, if the transport is still open."""
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        elif check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if self._writer is None or self._writer.transport.is_closing():
            await self.disconnect(nowait=True)
            msg = "the connection to Valkey was closed before the command was sent"
            raise NotSent(msg)
        await super().send_packed_command(command, check_health=False)


def _guarded(pool: Any) -> None:  # noqa: ANN401 - any valkey-py pool
    """Make the pool's connections `_Guarded`, whatever their class (TCP, TLS, Unix, Sentinel)."""
    base = pool.connection_class
    pool.connection_class = type(f"Guarded{base.__name__}", (_Guarded, base), {})


def connect(settings: Settings) -> avalkey.Valkey:
    """A client with explicit timeouts, a capped pool and no automatic retries."""
    options: dict[str, Any] = {
        # No socket timeout: every call runs under `Store._call`'s deadline, which covers the
        # reply too, and valkey-py's own would wrap each write in `asyncio.wait_for` (a task per
        # command) and each read in another timer, ~12 us per round trip (docs/performance.md).
        # A call cut off by the deadline closes its connection (valkey-py's read_response).
        "socket_timeout": None,
        "socket_connect_timeout": settings.valkey_timeout / 2,
        # A pooled connection idle for a second is pinged before use: after a Valkey restart
        # the ping (safe to retry) finds the dead socket instead of a write (unsafe to retry).
        "health_check_interval": 1,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "max_connections": settings.valkey_max_connections,
        "client_name": "weather-api",
        "parser_class": _Parser,
    }
    url = settings.valkey_url
    if url is None:
        msg = "no Valkey URL: the CLI starts an embedded server and passes its URL"
        raise ValueError(msg)
    parts = urlsplit(url)
    if parts.scheme == "redis+sentinel":
        return _sentinel_master(parts.netloc, parts.path, parts.query, options, settings.valkey_timeout)
    pool = avalkey.BlockingConnectionPool.from_url(url, timeout=settings.valkey_timeout, **options)
    _guarded(pool)
    return avalkey.Valkey(connection_pool=pool)


class _BlockingSentinelPool(SentinelConnectionPool, avalkey.BlockingConnectionPool):
    """The primary's pool: waits for a free connection, and leaves an old primary within a second.

    valkey-py's SentinelConnectionPool raises "Too many connections" at once when the pool is
    full. Only two methods differ between its base pool and BlockingConnectionPool (taking and
    returning a connection, under a condition), and the Sentinel pool overrides neither, so
    mixing the two in gives the Sentinel pool the blocking behaviour (tests/test_sentinel.py:
    40 concurrent reads through a pool of 4).

    It also asks the Sentinels for the primary once a second at most, not only when it opens a
    connection: after a failover the old primary keeps accepting writes until the Sentinels
    convert it (up to 10 s later), and every write sent there in between is acknowledged and
    then lost. Connections to an address that is no longer the primary are closed when they
    come back to the pool (tests/deploy/test_valkey_ha.py, the failover test).
    """

    RECHECK_SECONDS = 1.0

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._checked = 0.0

    async def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:  # noqa: ANN401
        """A connection to the current primary; the Sentinels are asked at most once a second."""
        now = time.monotonic()
        if now - self._checked >= self.RECHECK_SECONDS:
            self._checked = now
            # Closes idle connections when the primary moved; with no Sentinel answering, the
            # connections already open keep serving (the primary may well be fine).
            with contextlib.suppress(MasterNotFoundError):
                await self.get_master_address()  # type: ignore[no-untyped-call]
        return await super().get_connection(command_name, *keys, **options)  # type: ignore[no-untyped-call]

    async def release(self, connection: Any) -> None:  # noqa: ANN401
        """Return a connection; one to an old primary is closed first (it reconnects to the new)."""
        if self.master_address is not None and (connection.host, connection.port) != self.master_address:
            await connection.disconnect()
        await super().release(connection)


def _sentinel_master(netloc: str, path: str, query: str, options: dict[str, Any], timeout: float) -> avalkey.Valkey:
    """Client for the primary that the sentinels in the URL name; follows failovers.

    The URL's user and password are for the Valkey nodes; `sentinel_username` and
    `sentinel_password` query parameters (percent-encoded) are for the Sentinels themselves.
    """
    credentials, _, hosts = netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        nodes.append((host or host_port, int(port or 26379)))
    service = path.strip("/") or "weather"
    sentinel_options = {
        "socket_timeout": timeout,  # Sentinels are asked outside `Store._call` too (valkey-py's connect)
        "socket_connect_timeout": options["socket_connect_timeout"],
    }
    for name, values in parse_qs(query, strict_parsing=bool(query)).items():
        if name not in {"sentinel_username", "sentinel_password"}:
            msg = f"unknown parameter {name!r} in the redis+sentinel:// URL"
            raise ValueError(msg)
        sentinel_options[name.removeprefix("sentinel_")] = values[-1]
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client_options = dict(options)
    if username:
        client_options["username"] = unquote(username)
    if password:
        client_options["password"] = unquote(password)
    client: avalkey.Valkey = sentinel.master_for(
        service,
        connection_pool_class=_BlockingSentinelPool,
        timeout=timeout,
        **client_options,
    )
    _guarded(client.connection_pool)
    return client
