"""Skip the mutants outside the definitions that `[cosmic-ray.filters.scope]` names.

cosmic-ray mutates whole modules; each listed module also holds code the fast test subset is
not meant to judge (OpenAPI declarations in routes.py, the sender's lifecycle in store.py, ...).
Run with cosmic-ray's own Python (it imports `cosmic_ray`): `uv tool run --from cosmic-ray==...
python mutation/scope.py SESSION CONFIG`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from cosmic_ray.config import load_config
from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def line_ranges(path: Path, names: list[str]) -> list[tuple[int, int]]:
    """First and last line of each named top-level function, class, or method (`Class.method`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, tuple[int, int]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found[node.name] = (start, node.end_lineno or node.lineno)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        found[f"{node.name}.{item.name}"] = (item.lineno, item.end_lineno or item.lineno)
    missing = sorted(set(names) - set(found))
    if missing:
        sys.exit(f"scope: {path} has no {', '.join(missing)} (update mutation/cosmic-ray.toml)")
    return [found[n] for n in names]


def main(session: str, config_path: str) -> int:
    """Mark every pending mutant outside the scope as skipped; print what is left."""
    scope = load_config(config_path).sub("filters", "scope")
    ranges = {Path(module): line_ranges(Path(module), list(names)) for module, names in scope.items()}
    kept = skipped = 0
    with use_db(session) as db:
        for item in list(db.pending_work_items):
            inside = all(
                any(start <= m.start_pos[0] <= end for start, end in ranges.get(Path(m.module_path), []))
                for m in item.mutations
            )
            if inside:
                kept += 1
            else:
                skipped += 1
                db.set_result(item.job_id, WorkResult(output="outside scope", worker_outcome=WorkerOutcome.SKIPPED))
    print(f"scope: {kept} mutants to test, {skipped} outside the scope skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
