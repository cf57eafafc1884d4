"""Grafana's Redis data source plugin (``redis-datasource`` 2.2.0), as far as our dashboards use it.

Three things live here because they must agree with each other:

- ``RedisQuery``: the query model the plugin reads from a panel target (``pkg/types.go``
  ``queryModel``; JSON names such as ``keyName``, ``zrangeQuery``), as a grafana-foundation-sdk
  builder, since the SDK has no types for this plugin.
- ``COMMANDS``: which commands the plugin's backend runs for ``type: "command"`` and what each
  needs (``pkg/query.go`` switch, ``src/redis/command.ts`` ``CommandParameters``). Module commands
  (RedisTimeSeries, RediSearch, RedisGears, RedisGraph, RedisJSON) are left out on purpose:
  Valkey does not ship those modules.
- ``execute``: runs a target against a real Valkey the way the plugin does, with the same
  arguments, defaults and data-frame shape, so tests can check what a panel would show without
  a Grafana (which cannot run on the CI machines).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from typing import Any, Protocol, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

from weather_dashboards import templating

PLUGIN_ID = "redis-datasource"
PLUGIN_VERSION = "2.2.0"

# The plugin's frontend (src/data-source/data-source.ts applyTemplateVariables) interpolates
# dashboard variables in these query fields only; a `$var` anywhere else reaches Valkey verbatim.
INTERPOLATED_FIELDS = frozenset(
    {"keyName", "query", "field", "filter", "legend", "value", "searchQuery", "path", "cypher"}
)


@dataclasses.dataclass(frozen=True)
class Command:
    """A command of the plugin's ``type: "command"`` mode and the query fields it reads."""

    name: str
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()


def _command(name: str, required: str = "", optional: str = "") -> Command:
    return Command(name, frozenset(required.split()), frozenset(optional.split()))


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        _command("get", "keyName"),
        _command("hget", "keyName field"),
        _command("hgetall", "keyName"),
        _command("hkeys", "keyName"),
        _command("hlen", "keyName"),
        _command("hmget", "keyName field"),
        _command("llen", "keyName"),
        _command("scard", "keyName"),
        _command("smembers", "keyName"),
        _command("ttl", "keyName"),
        _command("type", "keyName"),
        _command("zrange", "keyName min max", "zrangeQuery"),
        _command("xinfoStream", "keyName"),
        _command("xlen", "keyName"),
        _command("xrange", "keyName", "start end count"),
        _command("xrevrange", "keyName", "start end count"),
        _command("info", "", "section"),
        _command("clientList"),
        _command("slowlogGet", "", "size"),
        _command("clusterInfo"),
        _command("clusterNodes"),
        _command("tmscan", "", "cursor match count samples size"),
    )
}

ZRANGE_MODES = frozenset({"", "BYSCORE", "BYLEX"})

# Fields every target may carry whatever its command.
COMMON_FIELDS = frozenset({"refId", "datasource", "type", "command", "query", "streaming", "hide"})

# Read-only commands accepted in a variable's or CLI target's free-text `query`, which the
# plugin sends verbatim (pkg/redis-custom.go). Our Valkey ACL user may run only reads anyway.
READ_COMMANDS = frozenset(
    {"GET", "HGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HMGET", "LLEN", "LRANGE", "SCARD",
     "SMEMBERS", "ZRANGE", "ZREVRANGE", "ZSCORE", "ZCARD", "XLEN", "XRANGE", "XREVRANGE",
     "TYPE", "TTL", "EXISTS", "INFO", "PING"}
)  # fmt: skip


# --- the query model as a grafana-foundation-sdk builder -----------------------------------


class RedisQuery(cogvariants.Dataquery):
    """One target of the Redis data source: ``type: "command"`` with a command and its fields."""

    def __init__(self, command: str, **fields: str | int | bool) -> None:
        self.ref_id = "A"
        self.command = command
        self.fields = fields

    def to_json(self) -> dict[str, object]:
        """Serialise with the JSON names of the plugin's pkg/types.go queryModel."""
        return {"refId": self.ref_id, "type": "command", "command": self.command, **self.fields}


class Redis(cogbuilder.Builder[RedisQuery]):
    """Builder for ``RedisQuery``, in the style of the SDK's own query builders."""

    def __init__(self, command: str, key: str | None = None) -> None:
        self._internal = RedisQuery(command, **({"keyName": key} if key is not None else {}))

    def build(self) -> RedisQuery:
        """Build the object."""
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        """Set the target's reference id (A, B, ...)."""
        self._internal.ref_id = ref_id
        return self

    def field(self, field: str) -> Self:
        """Set the hash field of HGET, or the space-separated fields of HMGET."""
        self._internal.fields["field"] = field
        return self

    def index_range(self, start: int, stop: int) -> Self:
        """ZRANGE by rank: 0 is the lowest score, -1 the highest."""
        self._internal.fields.update(min=str(start), max=str(stop), zrangeQuery="")
        return self

    def stream_range(self, start: str | None = None, end: str | None = None) -> Self:
        """XRANGE bounds; left unset, the plugin uses the dashboard's time range."""
        if start is not None:
            self._internal.fields["start"] = start
        if end is not None:
            self._internal.fields["end"] = end
        return self

    def count(self, count: int) -> Self:
        """XRANGE / XREVRANGE COUNT."""
        self._internal.fields["count"] = count
        return self


def datasource_ref(uid: str) -> dashboard.DataSourceRef:
    """A reference to a provisioned Redis data source."""
    return dashboard.DataSourceRef(type_val=PLUGIN_ID, uid=uid)


# --- running a target the way the plugin does ----------------------------------------------


class Client(Protocol):
    """The part of a valkey-py / redis-py client the emulator needs."""

    def execute_command(self, *args: Any, **options: Any) -> Any:  # noqa: ANN401 (any reply)
        """Send one command; return the reply."""


@dataclasses.dataclass
class Field:
    """A column of a data frame: numbers where the plugin parses floats, else strings."""

    name: str
    values: list[Any]


@dataclasses.dataclass
class Frame:
    """The data frame the plugin returns for one target."""

    name: str
    fields: list[Field]

    def field(self, name: str) -> Field:
        """The field called ``name``; KeyError when the frame has none."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Field names in frame order."""
        return [f.name for f in self.fields]


class QueryError(Exception):
    """The plugin would answer this target with an error (or no frame)."""


def interpolate(target: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """Apply dashboard variables to the fields the plugin's frontend interpolates."""
    return {
        name: templating.substitute(value, variables)
        if name in INTERPOLATED_FIELDS and isinstance(value, str)
        else value
        for name, value in target.items()
    }


def execute(
    client: Client,
    target: Mapping[str, Any],
    variables: Mapping[str, str],
    time_range_ms: tuple[int, int],
) -> Frame:
    """Run ``target`` against Valkey as redis-datasource 2.2.0 would and return its frame."""
    query = interpolate(target, variables)
    if query.get("query"):
        return _custom(client, query["query"])
    command = query.get("command", "")
    key = query.get("keyName", "")
    handler = _HANDLERS.get(command)
    if handler is None:
        msg = f"command {command!r} is not emulated (or not supported by the plugin)"
        raise QueryError(msg)
    return handler(client, key, query, time_range_ms)


def _text(value: bytes | str | float) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number_or_text(value: bytes | str) -> float | str:
    # Go's strconv.ParseFloat accepts what Python's float() accepts for Redis replies.
    text = _text(value)
    try:
        return float(text)
    except ValueError:
        return text


def _run(client: Client, *args: str | int) -> Any:  # noqa: ANN401 (a raw Valkey reply)
    # NEVER_DECODE keeps replies as bytes whatever the client's decode_responses is.
    return client.execute_command(*args, NEVER_DECODE=True)


def _hgetall(client: Client, key: str, _q: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    reply = _run(client, "HGETALL", key)
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    return Frame("hgetall", [Field(_text(k), [_number_or_text(v)]) for k, v in pairs])


def _hget(client: Client, key: str, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    value = _run(client, "HGET", key, query["field"])
    if value is None:
        msg = f"HGET {key} {query['field']}: nil"
        raise QueryError(msg)
    return Frame(key, [Field(query["field"], [_number_or_text(value)])])


def _hmget(client: Client, key: str, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    names = shlex.split(query["field"])
    values = _run(client, "HMGET", key, *names)
    return Frame("hmget", [Field(n, [_number_or_text(v or b"")]) for n, v in zip(names, values, strict=True)])


def _members(client: Client, key: str, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    reply = _run(client, query["command"].upper(), key)
    return Frame(key, [Field("Value", sorted(_text(v) for v in reply))])


def _value(client: Client, key: str, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    value = _run(client, query["command"].upper(), key)
    if value is None:
        msg = f"{query['command'].upper()} {key}: nil"
        raise QueryError(msg)
    return Frame(key, [Field("Value", [_number_or_text(_text(value))])])


def _zrange(client: Client, key: str, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    mode = query.get("zrangeQuery", "")
    args = [key, query["min"], query["max"], *([mode] if mode else []), "WITHSCORES"]
    reply = _run(client, "ZRANGE", *args)
    pairs = zip(reply[::2], reply[1::2], strict=True) if reply and not isinstance(reply[0], list) else reply
    return Frame("zrange", [Field(_text(m), [_number_or_text(_text(s))]) for m, s in pairs])


def _xrange(client: Client, key: str, query: Mapping[str, Any], time_range_ms: tuple[int, int]) -> Frame:
    reverse = query["command"] == "xrevrange"
    start = query.get("start") or f"{time_range_ms[0]}-0"
    end = query.get("end") or f"{time_range_ms[1]}-0"
    args: list[str | int] = [key, end, start] if reverse else [key, start, end]
    if int(query.get("count") or 0) > 0:
        args += ["COUNT", int(query["count"])]
    entries = _run(client, "XREVRANGE" if reverse else "XRANGE", *args)
    ids, times, columns = [], [], {}  # type: ignore[var-annotated]
    for row, (entry_id, raw_fields) in enumerate(entries):
        ids.append(_text(entry_id))
        times.append(int(_text(entry_id).split("-")[0]))
        pairs = (
            raw_fields.items() if isinstance(raw_fields, dict) else zip(raw_fields[::2], raw_fields[1::2], strict=True)
        )
        for name, raw in pairs:
            value = _number_or_text(raw)
            column = columns.setdefault(_text(name), [0.0 if isinstance(value, float) else ""] * row)
            column.append(value)
        for column in columns.values():  # entries lacking a field get 0 / "" like the plugin
            if len(column) < row + 1:
                column.append(0.0 if column and isinstance(column[0], float) else "")
    return Frame(
        query["command"], [Field("$streamId", ids), Field("$time", times)] + [Field(n, v) for n, v in columns.items()]
    )


def _custom(client: Client, text: str) -> Frame:
    words = shlex.split(text)
    if not words:
        raise QueryError("empty query")
    reply = _run(client, *words)
    if isinstance(reply, list | set):
        values = [_text(v) for v in reply]
        return Frame("", [Field("Value", sorted(values) if isinstance(reply, set) else values)])
    if reply is None:
        msg = f"{text}: wrong command (nil reply)"
        raise QueryError(msg)
    return Frame("", [Field("Value", [_number_or_text(_text(reply))])])


_HANDLERS = {
    "hgetall": _hgetall,
    "hget": _hget,
    "hmget": _hmget,
    "smembers": _members,
    "hkeys": _members,
    "get": _value,
    "type": _value,
    "ttl": _value,
    "hlen": _value,
    "xlen": _value,
    "llen": _value,
    "scard": _value,
    "zrange": _zrange,
    "xrange": _xrange,
    "xrevrange": _xrange,
}
