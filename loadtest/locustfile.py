"""weather-api load profiles for Locust.

Default: the original system's profile, 10 users posting single reports, 70% of them for one
municipality, until 10,000 requests are done. `--profile` picks another set of users:

  batch       batches to /api/weather/batch, each with an Idempotency-Key, retried on 5xx/timeout
  idempotent  single reports with an Idempotency-Key, retried with the same key on 5xx/timeout,
              and now and then replayed on purpose (the replay must return the first answer)
  invalid     bad requests that must get their 4xx (success when they do, failure otherwise)
  mixed       all of the above: 5 default : 3 idempotent : 1 batch : 1 invalid

Every logical request takes a ticket from the run's budget (loadtest/budget.py), so the count is
exact across users and workers, and its outcome goes to the ledger (loadtest/ledger.py) that
`verify` compares with Valkey. Thresholds are checked at the end; the exit code says whether
they held. Usage and options: loadtest/README.md.
"""

from __future__ import annotations

import csv
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.html import get_html_report, process_html_filename
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
from locust.util.timespan import parse_timespan

# Locust puts the current directory and this file's folder on sys.path, not necessarily the
# repository root that the `loadtest` package lives in; add it so that
# `locust -f loadtest/locustfile.py` works from anywhere. `absolute()`, not `resolve()`: in a
# Kubernetes ConfigMap volume each file is a symlink into `..data/`, and resolving it would
# give the package's own folder instead of its parent (deploy/images/check.py runs it so).
sys.path.insert(0, str(Path(__file__).absolute().parent.parent))

from loadtest import budget as budgets
from loadtest import users
from loadtest.exporter import LocustMetrics
from loadtest.ledger import Ledger
from loadtest.reports import MUNICIPALITIES, ReportFactory
from loadtest.thresholds import Observed, Thresholds, broken, summary

# Locust runs the User classes it finds in this module.
from loadtest.users import BatchUser, IdempotentUser, InvalidUser, ReportUser, WeatherUser

logger = logging.getLogger("loadtest")

PROFILES = ("default", "batch", "idempotent", "invalid", "mixed")
PROFILE_USERS: dict[str, tuple[type[WeatherUser], ...]] = {
    "default": (ReportUser,),
    "batch": (BatchUser,),
    "idempotent": (IdempotentUser,),
    "invalid": (InvalidUser,),
    "mixed": (ReportUser, IdempotentUser, BatchUser, InvalidUser),
}
DEFAULT_REQUESTS = 10_000
METRICS = LocustMetrics()


@events.init_command_line_parser.add_listener
def add_options(parser: Any, **_: Any) -> None:  # noqa: ANN401 - Locust's configargparse parser
    """Options of this locustfile (each also settable by the LOCUST_* variable shown).

    The profile is Locust's own `--profile` (a label it shows in the report), read here as one
    of PROFILES.
    """
    group = parser.add_argument_group("weather-api", "Options of loadtest/locustfile.py")
    add = group.add_argument
    add("--municipality", default="chinautla", env_var="LOCUST_MUNICIPALITY", help="gets --share of reports")
    add("--share", type=float, default=0.7, env_var="LOCUST_SHARE", help="share of --municipality (0..1)")
    add(
        "--municipalities",
        default=os.environ.get("WEATHER_MUNICIPALITIES", ",".join(MUNICIPALITIES)),
        env_var="LOCUST_MUNICIPALITIES",
        help="all municipalities the service accepts, comma-separated",
    )
    add(
        "--requests",
        type=int,
        default=None,
        env_var="LOCUST_REQUESTS",
        help=f"logical requests in all (retries excluded; 0: no limit); default {DEFAULT_REQUESTS} "
        "unless --duration is given",
    )
    add("--duration", default="", env_var="LOCUST_DURATION", help="stop starting requests after this (e.g. 90s, 5m)")
    add("--batch-size", type=int, default=10, env_var="LOCUST_BATCH_SIZE", help="reports per batch request")
    add("--wait-ms", type=float, default=0.0, env_var="LOCUST_WAIT_MS", help="each user's pause between requests")
    add("--request-timeout", type=float, default=5.0, env_var="LOCUST_REQUEST_TIMEOUT", help="seconds per attempt")
    add("--retry-for", type=float, default=30.0, env_var="LOCUST_RETRY_FOR", help="seconds a request keeps retrying")
    add("--replay-share", type=float, default=0.05, env_var="LOCUST_REPLAY_SHARE", help="accepted requests replayed")
    add("--ledger", default="", env_var="LOCUST_LEDGER", help="ledger file (default: ledger.json beside --csv)")
    add("--metrics-port", type=int, default=9646, env_var="LOCUST_METRICS_PORT", help="Prometheus port; 0: off")
    add(
        "--worker-metrics-port",
        type=int,
        default=9647,
        env_var="LOCUST_WORKER_METRICS_PORT",
        help="a worker's Prometheus port (the next free one from here); 0: off",
    )
    add("--metrics-host", default="0.0.0.0", env_var="LOCUST_METRICS_HOST", help="address to serve metrics on")  # noqa: S104
    defaults = Thresholds()
    add("--max-failure-ratio", type=float, default=defaults.max_failure_ratio, env_var="LOCUST_MAX_FAILURE_RATIO")
    add("--max-p95-ms", type=float, default=defaults.max_p95_ms, env_var="LOCUST_MAX_P95_MS")
    add("--max-p99-ms", type=float, default=defaults.max_p99_ms, env_var="LOCUST_MAX_P99_MS")


# ---- wiring into Locust's events ----------------------------------------------------------------


@events.init.add_listener
def on_init(environment: Environment, runner: Runner, **_: Any) -> None:  # noqa: ANN401
    """Pick the profile's users, start the metrics endpoint, wire the budget messages."""
    options = environment.parsed_options
    if options is None:  # a library user building its own Environment
        return
    problem = check_options(options)
    if problem:
        sys.exit(problem)  # before any user starts: a run with a typo must not hang or send 400s
    CTRL_C.install()
    environment.profile = options.profile
    # Workers keep every class: the master decides which ones they run.
    if not isinstance(runner, WorkerRunner) and not options.user_classes:
        environment.user_classes[:] = list(PROFILE_USERS[options.profile])
    events.request.add_listener(METRICS.on_request)
    if isinstance(runner, WorkerRunner):
        port, attempts = options.worker_metrics_port, 32
    else:
        port, attempts = options.metrics_port, 1
        METRICS.count_users(lambda: float(runner.user_count))
    if port:
        try:
            served = METRICS.serve(port, options.metrics_host, attempts)
        except OSError as exc:
            sys.exit(f"Prometheus metrics: {exc} (another run? --metrics-port 0 turns them off)")
        logger.info("Prometheus metrics on http://%s:%d/metrics", options.metrics_host, served)
    if isinstance(runner, MasterRunner):
        runner.register_message(budgets.REQUEST, on_ticket_request)
        runner.register_message(budgets.DONE, on_tickets_done)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(budgets.GRANT, on_ticket_grant)


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:  # noqa: ANN401
    """Set up this process's run: the report factory, the ledger and the budget."""
    options, runner = environment.parsed_options, environment.runner
    if options is None or runner is None:
        return
    factory = ReportFactory(municipality_list(options), options.municipality, options.share)
    WeatherUser.network_timeout = WeatherUser.connection_timeout = options.request_timeout
    ledger = Ledger()
    if isinstance(runner, WorkerRunner):
        run = users.Run(factory, ledger, budgets.WorkerBudget(runner.send_message, ledger), options)
    else:
        limit, deadline = plan(options)
        pool = budgets.Pool(limit, deadline, on_drained=lambda: gevent.spawn(drained, environment))
        run = users.Run(factory, ledger, budgets.LocalBudget(pool), options, pool=pool)
        ledger.meta.update(
            host=environment.host,
            profile=options.profile,
            municipality=options.municipality,
            users=options.num_users,
            planned_requests=limit,
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        gevent.spawn(report_progress, environment, run)
    users.start(run)


def municipality_list(options: Any) -> tuple[str, ...]:  # noqa: ANN401
    """--municipalities as a tuple."""
    return tuple(m.strip() for m in options.municipalities.split(",") if m.strip())


def check_options(options: Any) -> str | None:  # noqa: ANN401
    """What is wrong with the options, if anything (the profile defaults to `default`)."""
    options.profile = options.profile or "default"
    if options.profile not in PROFILES:
        return f"--profile {options.profile!r}: expected one of {', '.join(PROFILES)}"
    try:
        ReportFactory(municipality_list(options), options.municipality, options.share)
        if options.duration:
            parse_timespan(options.duration)
    except ValueError as exc:
        return f"--municipality/--share/--duration: {exc}"
    if options.requests is not None and options.requests < 0:
        return f"--requests {options.requests}: expected 0 (no limit) or more"
    if options.batch_size < 1:
        return f"--batch-size {options.batch_size}: expected 1 or more"
    return None


def plan(options: Any) -> tuple[int | None, float | None]:  # noqa: ANN401
    """The request limit (None: none) and the deadline (monotonic seconds, None: none)."""
    requests = options.requests
    if requests is None:
        requests = 0 if options.duration else DEFAULT_REQUESTS
    deadline = time.monotonic() + parse_timespan(options.duration) if options.duration else None
    return (requests or None), deadline


class CtrlC:
    """Ctrl+C stops the run in Locust's main greenlet, never inside a request.

    Python raises KeyboardInterrupt in whichever greenlet runs when SIGINT arrives: often a user
    in the middle of a request, which then dies with its fate unknown (tests/loadtest/
    test_profiles.py caught that). A gevent signal watcher instead throws it into the main
    greenlet, where Locust's own Ctrl+C handling starts (HTML report, then the quitting event,
    whose handler lets the requests in flight end). Later SIGINTs (`task loadtest` forwards the
    terminal's to Locust, which got it already) change nothing.
    """

    def __init__(self) -> None:
        self._watcher: object = None
        self.stopping = False

    def install(self) -> None:
        """Watch SIGINT from now on (in the process that runs the locustfile)."""
        self._watcher = gevent.signal_handler(signal.SIGINT, self._on_sigint)

    def _on_sigint(self) -> None:
        if self.stopping:
            logger.info("already stopping: the requests in flight are ending")
            return
        self.stopping = True
        gevent.get_hub().parent.throw(KeyboardInterrupt)


CTRL_C = CtrlC()


def drained(environment: Environment) -> None:
    """Every ticket has come back: stop the whole run (workers included)."""
    run = users.current()
    logger.info("all %d requests done, stopping", run.ledger.requests)
    if environment.runner is not None and not run.quitting:
        environment.runner.quit()


def let_requests_end(environment: Environment, pool: budgets.Pool, patience: float) -> None:
    """Locust is shutting down early (SIGTERM, Ctrl+C): let the requests in flight end.

    No more requests start; those in flight get `patience` seconds, then the users are stopped
    (the fate of a request cut short is unknown, and the ledger says so).
    """
    pool.close()
    deadline = time.monotonic() + patience
    while not pool.drained and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if environment.runner is not None and not isinstance(environment.runner, MasterRunner):
        environment.runner.stop()


def report_progress(environment: Environment, run: users.Run, every: float = 2.0) -> None:
    """A progress line every few seconds while the run lasts."""
    pool = run.pool
    last_time, last_done = time.monotonic(), 0
    while pool is not None:
        gevent.sleep(every)
        if pool.drained:
            return
        now, done = time.monotonic(), pool.done
        total = environment.stats.total
        logger.info(
            "progress: %d%s requests done, %.0f/s, %d failures, p95 %s ms",
            done,
            f"/{pool.limit}" if pool.limit else "",
            (done - last_done) / (now - last_time),
            total.num_failures,
            total.get_current_response_time_percentile(0.95) or 0,
        )
        last_time, last_done = now, done


def pool() -> budgets.Pool:
    """The master's (or standalone process's) ticket pool."""
    found = users.current().pool
    if found is None:
        msg = "only the master has a ticket pool"
        raise RuntimeError(msg)
    return found


def on_ticket_request(environment: Environment, msg: Any, **_: Any) -> None:  # noqa: ANN401
    """Master: a worker wants tickets."""
    granted = pool().grant(int(msg.data["want"]))
    if environment.runner is not None:
        environment.runner.send_message(budgets.GRANT, {"n": granted}, client_id=msg.node_id)


def on_tickets_done(environment: Environment, msg: Any, **_: Any) -> None:  # noqa: ANN401, ARG001
    """Master: a worker returns tickets, with the ledger piece of their requests."""
    users.current().ledger.merge(Ledger.from_dict(msg.data["ledger"]))
    pool().complete(int(msg.data["done"]))


def on_ticket_grant(environment: Environment, msg: Any, **_: Any) -> None:  # noqa: ANN401, ARG001
    """Worker: the master's answer to a ticket request."""
    budget = users.current().budget
    if isinstance(budget, budgets.WorkerBudget):
        budget.on_grant(int(msg.data["n"]))


@events.test_stopping.add_listener
def on_test_stopping(**_: Any) -> None:  # noqa: ANN401
    """Whatever stops the run (Ctrl+C, --run-time): start no more requests."""
    run = users.started()
    if run is not None and run.pool is not None:
        run.pool.close()


@events.test_stop.add_listener
def on_test_stop(**_: Any) -> None:  # noqa: ANN401
    """Worker: send what is left of the ledger to the master."""
    run = users.started()
    if run is not None and isinstance(run.budget, budgets.WorkerBudget):
        run.budget.flush()


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:  # noqa: ANN401
    """Master or standalone: write the ledger, print the summary, judge the thresholds."""
    run = users.started()
    if run is None or run.pool is None or environment.parsed_options is None:
        return
    options, pool, ledger = environment.parsed_options, run.pool, run.ledger
    run.quitting = True
    if not pool.drained:
        let_requests_end(environment, pool, options.request_timeout + 1.0)
    # Complete: every request sent has its fate in the ledger (a worker's last piece may be
    # missing after an interrupt).
    complete = pool.done >= pool.granted
    ledger.meta.update(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        complete=complete,
        interrupted=pool.interrupted,
    )
    path = ledger_path(options)
    ledger.write(path)
    if options.csv_prefix:
        write_final_csv(environment, options.csv_prefix)
    if options.html_file:
        write_missing_html(environment, options, since=time.time() - (time.monotonic() - run.started))
    total = environment.stats.total
    seen = Observed(
        requests=total.num_requests,
        failures=total.num_failures,
        p50_ms=total.get_response_time_percentile(0.5) or 0,
        p95_ms=total.get_response_time_percentile(0.95) or 0,
        p99_ms=total.get_response_time_percentile(0.99) or 0,
        max_ms=total.max_response_time or 0,
        seconds=time.monotonic() - run.started,
    )
    limits = Thresholds(options.max_failure_ratio, options.max_p95_ms, options.max_p99_ms)
    problems = [f"THRESHOLD BROKEN: {problem}" for problem in broken(limits, seen)]
    # Locust's own --run-time ends an unlimited run normally; anything else that stops early
    # (Ctrl+C, SIGTERM) leaves the planned requests undone.
    if pool.interrupted and not (options.run_time and pool.limit is None):
        planned = f" of {pool.limit}" if pool.limit else ""
        problems.append(f"INTERRUPTED after {pool.done}{planned} requests")
    lines = [*summary(seen, ledger, pool.limit), f"ledger: {path}"]
    if problems:
        lines += problems
    else:
        lines.append(f"thresholds held: {held(limits)}")
    print_block(lines)
    environment.process_exit_code = 1 if problems else 0


def held(limits: Thresholds) -> str:
    """The limits in force, for the closing line."""
    parts = [
        f"failure ratio <= {limits.max_failure_ratio:g}" if limits.max_failure_ratio >= 0 else "",
        f"p95 <= {limits.max_p95_ms:g} ms" if limits.max_p95_ms >= 0 else "",
        f"p99 <= {limits.max_p99_ms:g} ms" if limits.max_p99_ms >= 0 else "",
    ]
    return ", ".join(p for p in parts if p) or "none set"


def write_final_csv(environment: Environment, prefix: str) -> None:
    """Write Locust's CSV files with the final numbers.

    Locust rewrites them once a second and not at the end, so a short run would keep stale
    ones. New files replace the old: Locust's open handles keep writing to the replaced ones.
    """
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("_stats.csv", writer.requests_csv),
        ("_failures.csv", writer.failures_csv),
        ("_exceptions.csv", writer.exceptions_csv),
    ):
        path = Path(prefix + suffix)
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", newline="", encoding="utf-8") as f:
            write(csv.writer(f))
        partial.replace(path)


def write_missing_html(environment: Environment, options: Any, since: float) -> None:  # noqa: ANN401
    """Write Locust's HTML report if Locust has not, as after SIGTERM.

    Locust writes it before the quitting event when the run ends by itself or by Ctrl+C, but its
    SIGTERM handler goes straight to quitting and skips it (locust 2.47, locust/main.py,
    `sig_term_handler`); a report written since the run started is left alone.
    """
    process_html_filename(options)
    path = Path(options.html_file)
    if path.exists() and path.stat().st_mtime >= since:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(get_html_report(environment, show_download_link=False), encoding="utf-8")


def ledger_path(options: Any) -> Path:  # noqa: ANN401
    """--ledger, else ledger.json beside the CSV files, else in the current directory."""
    if options.ledger:
        return Path(options.ledger)
    if options.csv_prefix:
        return Path(options.csv_prefix).parent / "ledger.json"
    return Path("ledger.json")


def print_block(lines: list[str], write: Callable[[str], object] = sys.stderr.write) -> None:
    """Print lines framed, so they stand out among Locust's tables."""
    rule = "-" * 78
    write("\n".join(["", rule, "weather-api load test", *lines, rule, ""]) + "\n")
