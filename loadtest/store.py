"""Valkey access for `verify` and `reset`: which server, and a client for it.

The URL comes from `--valkey-url`, else WEATHER_VALKEY_URL, else the file that `weather-api
serve` writes for its embedded Valkey (`$WEATHER_DATA_DIR/valkey.url`, by default
`.weather-data/valkey.url`), the server that `task up` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import valkey
from valkey.sentinel import Sentinel


class NoValkey(Exception):  # noqa: N818 - names what the user lacks
    """No Valkey URL could be found."""


def resolve_url(explicit: str | None, env: Mapping[str, str]) -> str:
    """The Valkey URL to use, or NoValkey saying where it was looked for."""
    if explicit:
        return explicit
    if env.get("WEATHER_VALKEY_URL"):
        return env["WEATHER_VALKEY_URL"]
    url_file = Path(env.get("WEATHER_DATA_DIR") or ".weather-data") / "valkey.url"
    try:
        url = url_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        url = ""
    if url:
        return url
    msg = (
        f"no Valkey to talk to: pass --valkey-url, set WEATHER_VALKEY_URL, or start the service "
        f"(`task up`), which writes {url_file}"
    )
    raise NoValkey(msg)


def connect(url: str, timeout: float = 5.0) -> valkey.Valkey:
    """A client for redis://, rediss:// or redis+sentinel://user:pass@host:port,.../service."""
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        return valkey.Valkey.from_url(url, socket_timeout=timeout, decode_responses=True)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        nodes.append((host or host_port, int(port or 26379)))
    sentinel = Sentinel(nodes, socket_timeout=timeout)  # type: ignore[no-untyped-call]
    return sentinel.master_for(  # type: ignore[no-any-return,no-untyped-call]
        parts.path.strip("/") or "weather",
        socket_timeout=timeout,
        decode_responses=True,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def redacted(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
