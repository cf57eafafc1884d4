"""Grafana's Redis data source plugin (``redis-datasource`` 2.2.1), as far as our dashboards use it.

Three things live here because they must agree with each other:

- ``RedisQuery``: the query model the plugin reads from a panel target (``pkg/types.go``
  ``queryModel``; JSON names such as ``keyName``, ``zrangeQuery``), as a grafana-foundation-sdk
  builder, since the SDK has no types for this plugin.
- ``COMMANDS``: which commands the plugin's backend runs (``pkg/query.go``, the ``switch`` on
  ``qm.Command``) and which query fields each reads (``src/redis/command.ts``,
  ``CommandParameters``). Module commands (RedisTimeSeries, RediSearch, RedisGears, RedisGraph,
  RedisJSON) are listed apart: the plugin sends them, Valkey answers "unknown command".
- ``execute``: runs a target against a real Valkey the way the plugin does, with the same
  arguments, defaults, errors and data-frame shape, so tests can check what a panel would show
  without a Grafana (which cannot run on the CI machines).

Read from the plugin's source at tag v2.2.0 (RedisGrafana/grafana-redis-datasource); 2.2.1
(release PR #340, merged 2026-08-18) changes only the frontend's interpolation (``searchQuery``,
PRs #337/#338), CI and signing, so the backend behaviour below is 2.2.0's, file by file:

- ``src/datasource/datasource.ts`` ``applyTemplateVariables``: replaces dashboard variables in
  ``keyName``, ``query``, ``field``, ``filter``, ``legend``, ``value``, ``path``, ``cypher`` (and
  ``searchQuery`` from 2.2.1) and sets each of them to ``''`` when it is empty or missing; every
  other field (``min``, ``max``, ``start``, ``count`` ...) reaches the backend verbatim.
- ``pkg/datasource.go``: the target's JSON is decoded into ``queryModel``; a field of the wrong
  JSON type (``"count": "5"``) fails the whole query.
- ``pkg/query.go``: a non-empty ``query`` runs as a custom command (``pkg/redis-custom.go``),
  whatever ``type`` and ``command`` say; otherwise the ``switch`` on ``command``; an unknown
  command falls to ``default:`` and returns an empty response, no frame and no error.
- ``pkg/redis-zset.go``: ``ZRANGE key min max [zrangeQuery] WITHSCORES``: ``WITHSCORES`` always,
  so ``BYLEX`` always fails (Valkey: WITHSCORES not supported in combination with BYLEX).
- ``pkg/redis-hash.go``, ``pkg/redis-set.go``, ``pkg/redis-stream.go``, ``pkg/data-frame.go``:
  frame names and field types (``strconv.ParseFloat`` decides number or string).
- A nil reply decoded into a Go ``string`` (radix v3 ``resp2.Any``) is the empty string.
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
PLUGIN_VERSION = "2.2.1"

# src/datasource/datasource.ts applyTemplateVariables (2.2.0), plus searchQuery (2.2.1, #337).
INTERPOLATED_FIELDS = frozenset(
    {"keyName", "query", "field", "filter", "legend", "value", "path", "cypher", "searchQuery"}
)

# pkg/types.go queryModel: fields decoded as Go int or bool; any other JSON type fails the query.
INT_FIELDS = frozenset({"bucket", "size", "count", "samples", "offset"})
BOOL_FIELDS = frozenset({"fill", "streaming", "cli", "unblocking"})


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

# Commands of Redis modules the plugin's backend knows (pkg/models/*.go); Valkey has none of the
# modules, so each ends in "unknown command" there.
MODULE_COMMANDS = frozenset(
    {"ts.get", "ts.mget", "ts.info", "ts.queryindex", "ts.range", "ts.mrange", "ft.info", "ft.search",
     "rg.pystats", "rg.dumpregistrations", "rg.pyexecute", "rg.pydumpreqs", "graph.config",
     "graph.explain", "graph.profile", "graph.query", "graph.slowlog", "json.type", "json.get",
     "json.objkeys", "json.objlen", "json.arrlen"}
)  # fmt: skip

# zrangeQuery values that work: the plugin appends WITHSCORES, which Valkey refuses with BYLEX.
ZRANGE_MODES = frozenset({"", "BYSCORE"})

# Fields every target may carry whatever its command.
COMMON_FIELDS = frozenset({"refId", "datasource", "type", "command", "query", "streaming", "hide"})

# Read-only commands accepted in a variable's or CLI target's free-text `query`, which the
# plugin sends as typed (pkg/redis-custom.go). Our Valkey ACL user may run only reads anyway.
READ_COMMANDS = frozenset(
    {"GET", "HGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HMGET", "LLEN", "LRANGE", "SCARD",
     "SMEMBERS", "ZRANGE", "ZREVRANGE", "ZSCORE", "ZCARD", "XLEN", "XRANGE", "XREVRANGE",
     "TYPE", "TTL", "EXISTS", "INFO", "PING"}
)  # fmt: skip

# pkg/redis-custom.go: what an empty array reply becomes.
EMPTY_ARRAY = "(empty array)"


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
    """The part of a valkey-py / redis-py client the emulator needs: its connection pool."""

    @property
    def connection_pool(self) -> Any:  # noqa: ANN401 (valkey-py's ConnectionPool)
        """The pool to borrow a raw connection from."""


@dataclasses.dataclass
class Field:
    """A column of a data frame: numbers where the plugin parses floats, else strings."""

    name: str
    values: list[Any]


@dataclasses.dataclass
class Frame:
    """The data frame the plugin returns for one target (no fields: the empty response)."""

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
    """The plugin would answer this target with an error (the panel shows it, and no data)."""


def interpolate(target: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """The target as the plugin's frontend sends it: variables applied, empty fields ``''``."""
    query = dict(target)
    for name in INTERPOLATED_FIELDS:
        value = target.get(name)
        query[name] = templating.substitute(str(value), variables) if value else ""
    return query


def _check_json_types(query: Mapping[str, Any]) -> None:
    for name, value in query.items():
        wrong_int = name in INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int))
        wrong_bool = name in BOOL_FIELDS and not isinstance(value, bool)
        if wrong_int or wrong_bool:
            msg = f"json: cannot unmarshal {type(value).__name__} {value!r} into queryModel.{name}"
            raise QueryError(msg)


def execute(
    client: Client,
    target: Mapping[str, Any],
    variables: Mapping[str, str],
    time_range_ms: tuple[int, int],
) -> Frame:
    """Run ``target`` against Valkey as redis-datasource 2.2.1 would and return its frame."""
    query = interpolate(target, variables)
    _check_json_types(query)
    if query["query"]:
        return _custom(client, query)
    command = str(query.get("command", ""))
    handler = _HANDLERS.get(command)
    if handler is None and command in MODULE_COMMANDS:
        handler = _module
    if handler is None:  # pkg/query.go default: an empty response, no error
        return Frame("", [])
    return handler(client, query, time_range_ms)


def _run(client: Client, *args: str | int) -> Any:  # noqa: ANN401 (a raw RESP2 reply)
    """Send one command and read the raw RESP2 reply: no client-side parsing, like radix."""
    pool = client.connection_pool
    connection = pool.get_connection("_")
    try:
        connection.send_command(*args)
        return connection.read_response(disable_decoding=True)
    except Exception as error:
        if type(error).__name__ == "ResponseError":  # Valkey's error reply: response.Error
            raise QueryError(str(error)) from error
        raise
    finally:
        pool.release(connection)


def _text(value: bytes | str | float) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number_or_text(value: bytes | str | None) -> float | str:
    # Go's strconv.ParseFloat accepts what Python's float() accepts for Redis replies; a nil
    # reply decoded into a Go string is "".
    text = "" if value is None else _text(value)
    try:
        return float(text)
    except ValueError:
        return text


def _pairs(reply: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(reply[::2], reply[1::2], strict=True))


def _hgetall(client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    reply = _run(client, query["command"], query["keyName"])
    return Frame(query["command"], [Field(_text(k), [_number_or_text(v)]) for k, v in _pairs(reply)])


def _hget(client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    value = _run(client, query["command"], query["keyName"], query["field"])
    return Frame(query["field"], [Field(query["field"], [_number_or_text(value)])])


def _hmget(client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    names = shlex.split(query["field"])
    values = _run(client, query["command"], query["keyName"], *names)
    return Frame(query["command"], [Field(n, [_number_or_text(v)]) for n, v in zip(names, values, strict=True)])


def _members(client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    reply = _run(client, query["command"], query["keyName"])
    return Frame(query["keyName"], [Field("Value", [_text(v) for v in reply])])  # Valkey's reply order


def _value(client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    value = _run(client, query["command"], query["keyName"])
    return Frame(query["keyName"], [Field("Value", [_number_or_text(value)])])


def _zrange(client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    mode = query.get("zrangeQuery") or ""
    args = [query["keyName"], query.get("min", ""), query.get("max", ""), *([mode] if mode else []), "WITHSCORES"]
    reply = _run(client, query["command"], *args)
    return Frame(query["command"], [Field(_text(m), [_number_or_text(s)]) for m, s in _pairs(reply)])


def _xrange(client: Client, query: Mapping[str, Any], time_range_ms: tuple[int, int]) -> Frame:
    reverse = query["command"] == "xrevrange"
    start = query.get("start") or f"{time_range_ms[0]}-0"
    end = query.get("end") or f"{time_range_ms[1]}-0"
    args: list[str | int] = [query["keyName"], end, start] if reverse else [query["keyName"], start, end]
    if int(query.get("count") or 0) > 0:
        args += ["COUNT", int(query["count"])]
    entries = _run(client, "XREVRANGE" if reverse else "XRANGE", *args)
    ids: list[str] = []
    times: list[int] = []
    columns: dict[str, list[Any]] = {}
    numeric: dict[str, bool] = {}  # a field's type is fixed by its first value (pkg/redis-stream.go)
    for row, (entry_id, raw_fields) in enumerate(entries):
        ids.append(_text(entry_id))
        times.append(int(_text(entry_id).split("-")[0]))
        for raw_name, raw in _pairs(raw_fields):
            name, value = _text(raw_name), _number_or_text(raw)
            if name not in columns:
                numeric[name] = isinstance(value, float)
                columns[name] = [0.0 if numeric[name] else ""] * row
            if numeric[name]:
                columns[name].append(value if isinstance(value, float) else 0.0)
            else:
                columns[name].append(_text(raw))
        for name, column in columns.items():  # entries lacking a field get 0 / "" like the plugin
            if len(column) < row + 1:
                column.append(0.0 if numeric[name] else "")
    return Frame(
        query["command"], [Field("$streamId", ids), Field("$time", times)] + [Field(n, v) for n, v in columns.items()]
    )


def _module(_client: Client, query: Mapping[str, Any], _t: tuple[int, int]) -> Frame:
    msg = f"ERR unknown command '{query['command']}' (a Redis module command; Valkey has no modules)"
    raise QueryError(msg)


def _flatten(reply: list[Any]) -> list[str]:
    values: list[str] = []
    for element in reply:
        if isinstance(element, list):
            values += _flatten(element) or [EMPTY_ARRAY]
        else:
            values.append(_text(element))
    return values


def _custom(client: Client, query: Mapping[str, Any]) -> Frame:
    words = shlex.split(query["query"])
    name = query["keyName"]  # "" for a variable's query: the frontend sets missing fields to ''
    reply = _run(client, *words)
    if isinstance(reply, int):
        return Frame(name, [Field("Value", [reply])])
    if isinstance(reply, bytes):
        lines = reply.decode().replace("\r\n", "\n").split("\n")
        if len(lines) == 1:
            return Frame(name, [Field("Value", [_number_or_text(lines[0])])])
        return Frame(name, [Field("Value", lines)])
    if isinstance(reply, list):
        return Frame(name, [Field("Value", _flatten(reply) if reply else [EMPTY_ARRAY])])
    if reply is None:
        msg = f"{query['query']}: wrong command"
        raise QueryError(msg)
    return Frame(name, [Field("Value", [_number_or_text(_text(reply))])])


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
