"""The package's modules import one another one way: cli -> app -> ... -> store -> settings."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import weather_api

PACKAGE = Path(weather_api.__file__).parent
BOTTOM = {"model", "tracing", "logs", "loop"}
"""Modules that import no other module of the package (the version in `__init__` aside)."""


def _imports(path: Path) -> set[str]:
    """The package's modules that `path` imports, at the top or inside a function."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "weather_api":
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("weather_api."):
            found.add(str(node.module).split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("weather_api.")}
    return found - {path.stem}


def _graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def test_imports_between_modules_form_no_cycle() -> None:
    """A module never imports, directly or through others, a module that imports it."""
    order = list(graphlib.TopologicalSorter(_graph()).static_order())  # raises CycleError on a cycle
    assert "app" in order
    assert order.index("store") < order.index("app")


def test_the_bottom_layer_imports_nothing_of_the_package() -> None:
    """The bottom layer depends on no other module of the service; telemetry only on tracing and logs."""
    graph = _graph()
    assert {name: graph[name] for name in BOTTOM if graph[name]} == {}
    assert graph["telemetry"] == {"tracing", "logs"}


def test_only_the_command_line_builds_the_app() -> None:
    """`app` is imported by `cli` alone (and the tests): nothing below reaches back up to it."""
    importers = {name for name, imported in _graph().items() if "app" in imported}
    assert importers == {"cli"}
