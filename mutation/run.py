"""`task mutate`: a repeatable mutation-testing run with cosmic-ray, on a copy of the repository.

1. Copy the repository (tracked files and untracked ones git does not ignore) to .mutation/repo,
   so the work tree is never mutated, and give the copy its own environment (`uv sync --frozen`).
2. `cosmic-ray init` the mutants of mutation/cosmic-ray.toml's modules, skip the excluded
   operators (`cr-filter-operators`) and everything outside the scope (mutation/scope.py).
3. Check that the fast test subset passes unmutated (`cosmic-ray baseline`), then run it once per
   mutant (`cosmic-ray exec`): a mutant is killed when the subset fails.
4. Print the counts and write every surviving mutant with its diff to .mutation/survivors.txt;
   docs/testing.md says why each one known is acceptable.

A second run resumes an unfinished session, as long as the mutated modules and the
configuration are unchanged (otherwise it starts over, as `--fresh` does). The whole scope is
about 400 mutants; at 5 to 20 s each, count on one to two hours on two idle cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
COPY = WORK / "repo"
SESSION = WORK / "session.sqlite"
FINGERPRINT = WORK / "session.sources"
"""Hash of what the session's mutants were made from: a resumed session must match it."""
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


def fingerprint() -> str:
    """sha256 of the configuration and the service's source, as copied."""
    digest = hashlib.sha256()
    for name in (CONFIG, "mutation/scope.py", *sorted(str(p.relative_to(COPY)) for p in COPY.glob("src/**/*.py"))):
        digest.update((COPY / name).read_bytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when the run finished (survivors are a finding, not a failure)."""
    parser = argparse.ArgumentParser(prog="task mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="forget the previous session and start over")
    args = parser.parse_args(argv)
    copy_repository()
    if args.fresh or (FINGERPRINT.exists() and FINGERPRINT.read_text() != fingerprint()):
        SESSION.unlink(missing_ok=True)
    run(UV, "sync", "--frozen", "--quiet")
    if not SESSION.exists():
        if tool("cosmic-ray", "baseline", CONFIG, check=False).returncode != 0:
            print("the test subset fails without any mutation: fix that first", file=sys.stderr)
            return 1
        tool("cosmic-ray", "init", CONFIG, str(SESSION))
        tool("cr-filter-operators", str(SESSION), CONFIG)
        tool("python", "mutation/scope.py", str(SESSION), CONFIG)
        FINGERPRINT.write_text(fingerprint())
    tool("cosmic-ray", "exec", CONFIG, str(SESSION))
    with (WORK / "survivors.txt").open("wb") as out:
        subprocess.run(  # noqa: S603
            [UV, "tool", "run", "--from", COSMIC_RAY, "cr-report", "--show-diff", "--surviving-only", str(SESSION)],
            cwd=COPY, check=True, stdout=out,
        )  # fmt: skip
    tool("cr-rate", "--estimate", str(SESSION), check=False)
    print(f"surviving mutants with their diffs: {WORK / 'survivors.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
