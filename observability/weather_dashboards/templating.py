"""Grafana's template-variable syntax: find references and substitute values.

Grafana recognises three spellings of a variable reference (public/app/features/variables/utils.ts,
``variableRegex``): ``$name``, ``${name}`` / ``${name:format}`` / ``${name.field}`` and the
deprecated ``[[name]]`` / ``[[name:format]]``. The checker uses ``references`` to find undefined
variables; the Valkey query emulator and the end-to-end test use ``substitute`` to run a panel's
query the way Grafana would send it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

VARIABLE_RE = re.compile(
    r"\$(?P<plain>\w+)"
    r"|\[\[(?P<bracket>[\s\S]+?)(?::(?P<bracket_format>\w+))?\]\]"
    r"|\$\{(?P<braced>\w+)(?:\.(?P<field>[^:^}]+))?(?::(?P<format>[^}]+))?\}"
)


def is_builtin(name: str) -> bool:
    """Return whether ``name`` is one of Grafana's global variables ($__interval, $__range ...)."""
    return name.startswith("__")


def references(text: str) -> Iterator[str]:
    """Yield the name of every variable that ``text`` refers to, in order."""
    for match in VARIABLE_RE.finditer(text):
        yield match.group("plain") or match.group("bracket") or match.group("braced")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every reference to a variable in ``values``; leave unknown ones untouched."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("plain") or match.group("bracket") or match.group("braced")
        return values.get(name, match.group(0))

    return VARIABLE_RE.sub(replace, text)
