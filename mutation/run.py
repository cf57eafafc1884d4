"""`task mutate`: a repeatable mutation-testing run with cosmic-ray, on a copy of the repository.

1. Copy the repository (tracked files and untracked ones git does not ignore) to .mutation/repo,
   so the work tree is never mutated, and give the copy its own environment (`uv sync --frozen`).
2. One cosmic-ray session per module of mutation/cosmic-ray.toml, each with its own fast test
   subset (`[sessions.<module>]`: the real-service tests that judge that module), in
   .mutation/<module>.toml and .mutation/<module>.sqlite: `cosmic-ray init` its mutants, skip
   the excluded operators (`cr-filter-operators`) and everything outside the scope
   (mutation/scope.py).
3. Check that the subset passes unmutated (`cosmic-ray baseline`), then run it once per mutant
   (`cosmic-ray exec`): a mutant is killed when the subset fails (or outlives the timeout).
4. Print the counts and write every surviving mutant with its diff to .mutation/survivors.txt;
   docs/testing.md says why each one known is acceptable.

A second run resumes each unfinished session, as long as the mutated modules and the
configuration are unchanged (otherwise that session starts over, as `--fresh` does for all);
`--module NAME` (repeatable, e.g. `store.py`) runs only those sessions. The whole scope is
about 700 mutants: count on about 2.5 hours on two cores (docs/testing.md has the last run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
COPY = WORK / "repo"
CONFIG = "mutation/cosmic-ray.toml"
UV = os.environ.get("UV") or shutil.which("uv") or "uv"
"""uv itself (`uv run` names it in $UV)."""
COSMIC_RAY = "cosmic-ray==8.7.0"
"""Run as a uv tool: it mutates files and runs the test command, so it needs nothing of ours."""


def run(*command: str, cwd: Path = COPY, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a command in the copy, echoing it."""
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=cwd, check=check)  # noqa: S603


def tool(*command: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """A cosmic-ray command, from its own isolated environment."""
    return run(UV, "tool", "run", "--from", COSMIC_RAY, *command, check=check)


def copy_repository() -> None:
    """Refresh .mutation/repo from the work tree (its .venv is kept)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    files = [name.decode() for name in listed if name and (ROOT / name.decode()).is_file()]
    for entry in COPY.iterdir() if COPY.exists() else ():
        if entry.name != ".venv":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for name in files:
        target = COPY / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    print(f"copied {len(files)} files to {COPY}", flush=True)


def toml_value(value: object) -> str:
    """A TOML value for the strings, numbers, lists and tables of our configuration."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    msg = f"no TOML for {value!r}"
    raise TypeError(msg)


def session_configs() -> dict[str, Path]:
    """Write one cosmic-ray configuration per module (its own tests and timeout); name -> path."""
    config = tomllib.loads((COPY / CONFIG).read_text(encoding="utf-8"))
    base, sessions = config["cosmic-ray"], config["sessions"]
    written = {}
    for module in base["module-path"]:
        session = sessions[module]
        own = {
            **base,
            "module-path": [module],
            "timeout": session["timeout"],
            "test-command": " ".join(f"{sessions['pytest']} {session['tests']}".split()),
        }
        name = Path(module).name
        path = WORK / f"{name}.toml"
        path.write_text(
            "[cosmic-ray]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in own.items()),
            encoding="utf-8",
        )
        written[name] = path
    return written


def fingerprint(config: Path, module: str) -> str:
    """sha256 of the session's configuration, the scope filter and the service's source, as copied."""
    digest = hashlib.sha256(config.read_bytes())
    for name in ("mutation/scope.py", *sorted(str(p.relative_to(COPY)) for p in COPY.glob("src/**/*.py"))):
        digest.update((COPY / name).read_bytes())
    digest.update(module.encode())
    return digest.hexdigest()


def run_session(name: str, config: Path, fresh: bool) -> bool:
    """Init (unless resumable) and exec one module's session; False if its subset fails unmutated."""
    session, stamp = WORK / f"{name}.sqlite", WORK / f"{name}.sources"
    if fresh or not stamp.exists() or stamp.read_text() != fingerprint(config, name):
        session.unlink(missing_ok=True)
    if not session.exists():
        if tool("cosmic-ray", "baseline", str(config), check=False).returncode != 0:
            print(f"{name}: the test subset fails without any mutation: fix that first", file=sys.stderr)
            return False
        tool("cosmic-ray", "init", str(config), str(session))
        tool("cr-filter-operators", str(session), str(config))
        tool("python", "mutation/scope.py", str(session), str(config))
        stamp.write_text(fingerprint(config, name))
    tool("cosmic-ray", "exec", str(config), str(session))
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when every session finished (survivors are a finding, not a failure)."""
    parser = argparse.ArgumentParser(prog="task mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="forget the previous sessions and start over")
    parser.add_argument("--module", action="append", default=[], help="run only this module's session (e.g. store.py)")
    args = parser.parse_args(argv)
    copy_repository()
    run(UV, "sync", "--frozen", "--quiet")
    configs = session_configs()
    unknown = set(args.module) - set(configs)
    if unknown:
        parser.error(f"no session for {', '.join(sorted(unknown))}; sessions: {', '.join(configs)}")
    chosen = {name: config for name, config in configs.items() if not args.module or name in args.module}
    failed = [name for name, config in chosen.items() if not run_session(name, config, args.fresh)]
    with (WORK / "survivors.txt").open("wb") as out:
        for name in configs:
            session = WORK / f"{name}.sqlite"
            if session.exists():
                report = ["cr-report", "--show-diff", "--surviving-only", str(session)]
                subprocess.run([UV, "tool", "run", "--from", COSMIC_RAY, *report], cwd=COPY, check=True, stdout=out)  # noqa: S603
    for name in configs:
        session = WORK / f"{name}.sqlite"
        if session.exists():
            print(f"== {name}", flush=True)
            tool("cr-report", str(session), check=False)
    print(f"surviving mutants with their diffs: {WORK / 'survivors.txt'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
