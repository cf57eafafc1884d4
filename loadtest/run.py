"""`task loadtest`: run a headless Locust load test with this project's defaults.

Makes a results folder `loadtest/results/<UTC time>/` (CSV, HTML report, ledger; `latest` links
to it), runs `locust -f loadtest/locustfile.py --headless ...` with progress on the terminal, and
exits with Locust's code: 0 when every threshold held, non-zero with a `THRESHOLD BROKEN: ...`
line naming the one that did not. Anything after `--` goes to Locust unchanged.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
RESULTS = Path("loadtest/results")
DEFAULT_HOST = "http://127.0.0.1:8000"  # `task up`


def parser() -> argparse.ArgumentParser:
    """The runner's options; the locustfile's defaults apply to those left out."""
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=DEFAULT_HOST, help="service to load (default: %(default)s, `task up`)")
    p.add_argument("--users", type=int, default=10, help="concurrent users (default: %(default)s)")
    p.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second (default: %(default)s)")
    p.add_argument("--requests", type=int, help="logical requests in all (default: 10000; 0: no limit)")
    p.add_argument("--duration", help="start no requests after this long (e.g. 90s, 5m)")
    p.add_argument("--profile", default="default", help="default, batch, idempotent, invalid or mixed")
    p.add_argument("--municipality", help="gets 70%% of the reports (default: chinautla)")
    p.add_argument("--max-failure-ratio", type=float, help="threshold (default: 0.01; below 0: off)")
    p.add_argument("--max-p95-ms", type=float, help="threshold (default: 100; below 0: off)")
    p.add_argument("--max-p99-ms", type=float, help="threshold (default: 250; below 0: off)")
    p.add_argument("--metrics-port", type=int, help="Prometheus endpoint of this run (default: 9646; 0: off)")
    p.add_argument("--workers", type=int, default=0, help="run distributed: a master and this many local workers")
    p.add_argument("--results", type=Path, default=RESULTS, help="where run folders go (default: %(default)s)")
    p.add_argument("--verbose", action="store_true", help="also print Locust's stats table every few seconds")
    return p


def results_folder(base: Path) -> Path:
    """A new folder named by the UTC start time; `latest` points at it."""
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder, n = base / stamp, 1
    while folder.exists():  # two runs in one second
        n += 1
        folder = base / f"{stamp}-{n}"
    folder.mkdir()
    latest = base / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(folder.name)
    return folder


def locust_command(args: argparse.Namespace, folder: Path, extra: Sequence[str]) -> list[str]:
    """The Locust command line for these options."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        args.host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--profile",
        args.profile,
        "--csv",
        str(folder / "locust"),
        "--html",
        str(folder / "report.html"),
        "--ledger",
        str(folder / "ledger.json"),
    ]
    optional = {
        "--requests": args.requests,
        "--duration": args.duration,
        "--municipality": args.municipality,
        "--max-failure-ratio": args.max_failure_ratio,
        "--max-p95-ms": args.max_p95_ms,
        "--max-p99-ms": args.max_p99_ms,
        "--metrics-port": args.metrics_port,
    }
    for flag, value in optional.items():
        if value is not None:
            command += [flag, str(value)]
    if args.workers > 0:
        # Locust forks a master and the workers itself: distributed mode on one machine.
        command += ["--processes", str(args.workers)]
    if not args.verbose:
        command.append("--only-summary")  # the locustfile prints a progress line instead
    return [*command, *extra]


class PassOn:
    """Signal handler: pass the first SIGINT or SIGTERM on to Locust, ignore the ones after it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._passed = False

    def __call__(self, signum: int, _frame: object) -> None:
        """Forward `signum` once."""
        if not self._passed:
            self._passed = True
            self._process.send_signal(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns Locust's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser().parse_args(argv)
    folder = results_folder(args.results)
    command = locust_command(args, folder, extra)
    print(f"loadtest: {args.profile} profile against {args.host}; results in {folder}", flush=True)  # noqa: T201
    # Locust gets a process group of its own, so that a terminal's Ctrl+C reaches this runner
    # alone, which passes it on exactly once: a second SIGINT (the terminal's and ours) could
    # arrive as Locust removes its handler on the way out, and kill it (exit -2).
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, process_group=0)  # noqa: S603
    stop = PassOn(process)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = process.wait()  # Locust stops in order: requests in flight end, reports are written
    verdict = "passed" if code == 0 else f"FAILED (exit {code})"
    if (folder / "ledger.json").exists():
        print(  # noqa: T201
            f"loadtest: {verdict}; report {folder / 'report.html'}, CSV {folder}/locust_*.csv, "
            f"ledger {folder / 'ledger.json'}\n"
            "loadtest: check Valkey against the ledger with `task loadtest:verify`",
            flush=True,
        )
    else:
        print(f"loadtest: {verdict}; the run did not start, no reports written", flush=True)  # noqa: T201
    return code


if __name__ == "__main__":
    sys.exit(main())
