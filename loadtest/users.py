"""The Locust users of weather-api's load profiles, and the run state they share.

Every user takes a ticket from the run's budget before a logical request, sends it (with its
retries), records the outcome in the ledger, and returns the ticket. `locustfile.py` sets the
run up (`start`) and wires everything into Locust's events.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
from locust import FastHttpUser, task

from loadtest import budget as budgets
from loadtest.ledger import Ledger
from loadtest.reports import Report, ReportFactory, invalid_cases

RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
NO_ANSWER = 0  # Locust's status code for a timeout or a broken connection


@dataclass
class Run:
    """State of the current run in this process, set up when the test starts."""

    factory: ReportFactory
    ledger: Ledger
    budget: budgets.Budget
    options: Any
    pool: budgets.Pool | None = None
    started: float = field(default_factory=time.monotonic)
    quitting: bool = False
    """Locust is shutting down: nothing may start a second shutdown."""

    def record(self, outcome: str, reports: Sequence[Report]) -> None:
        """Put the end of one logical request into the ledger."""
        if outcome == "accepted":
            self.ledger.accept(reports)
        elif outcome == "unknown":
            self.ledger.lose_track(reports)
        else:
            self.ledger.reject(int(outcome.removeprefix("rejected:")))
        self.ledger.finish()


_RUN: Run | None = None


def start(run: Run) -> None:
    """Make `run` the run of this process (one at a time; Locust's users reach it here)."""
    global _RUN  # noqa: PLW0603
    _RUN = run


def current() -> Run:
    """The run of this process (users exist only after the test started)."""
    if _RUN is None:
        msg = "no run: the test has not started"
        raise RuntimeError(msg)
    return _RUN


def started() -> Run | None:
    """The run of this process, if the test has started."""
    return _RUN


def rejected(status: int) -> str:
    """Outcome of a request refused with `status`."""
    return f"rejected:{status}"


def settled(response: Any) -> str | None:  # noqa: ANN401
    """The outcome an answer proves, or None when the request may have been applied unseen.

    201 is accepted. A 4xx wrote nothing, and neither did a 503 whose problem says
    `"outcome": "not_applied"` (Valkey was not reached in time, or refused) or that the service
    was over capacity; a refused connection carried nothing. A 503 with `"outcome": "unknown"`
    (the reports were handed to Valkey, no answer came back: they may run once Valkey is back),
    any other 503, a timeout, a broken connection or another 5xx proves nothing.
    """
    status = response.status_code
    if status == 201:
        return "accepted"
    if 400 <= status < 500 or (status == 503 and _not_applied(response)):
        return rejected(status)
    if status == NO_ANSWER and isinstance(response.error, ConnectionRefusedError):
        return rejected(NO_ANSWER)
    return None


class WeatherUser(FastHttpUser):
    """Takes a ticket, makes one logical request, records its outcome, returns the ticket."""

    abstract = True
    network_timeout = 5.0
    connection_timeout = 5.0

    def wait_time(self) -> float:
        """Each user's pause between logical requests (--wait-ms)."""
        return float(current().options.wait_ms) / 1000.0

    def draw(self) -> list[Report]:
        """The reports of the next request."""
        return [current().factory.report()]

    def exchange(self, reports: list[Report]) -> str:
        """Send them; returns 'accepted', 'unknown' or 'rejected:<status>'."""
        raise NotImplementedError

    @task
    def one_request(self) -> None:
        """One logical request under one ticket; parks the user once the budget is spent."""
        run = current()
        if not run.budget.take():
            # Wait to be stopped with the run rather than stop alone: a user that ends itself
            # races Locust's own bookkeeping at shutdown.
            gevent.event.Event().wait()  # until the stop kills this greenlet
            return
        reports: list[Report] = []
        outcome = "unknown"  # if anything (even a kill at shutdown) cuts the request short
        try:
            reports = self.draw()
            outcome = self.exchange(reports)
        finally:
            run.record(outcome, reports)
            run.budget.finish()

    def post(self, path: str, body: bytes, name: str, headers: dict[str, str] | None = None) -> Any:  # noqa: ANN401
        """POST JSON with catch_response, so the caller decides success."""
        return self.client.post(
            path,
            data=body,  # type: ignore[arg-type] # geventhttpclient sends bytes as they are
            headers={"Content-Type": "application/json", **(headers or {})},
            name=name,
            catch_response=True,
        )


class ReportUser(WeatherUser):
    """The original profile: one report per request, no key, no retry."""

    weight = 5

    def exchange(self, reports: list[Report]) -> str:
        """One POST; only a 201 counts as accepted."""
        with self.post("/api/weather", json.dumps(reports[0].to_json()).encode(), "/api/weather") as response:
            if response.status_code == 201:
                response.success()
            else:
                response.failure(describe(response))
            return settled(response) or "unknown"


class RetryingUser(WeatherUser):
    """Sends with an Idempotency-Key and retries timeouts and 5xx with the same key and body."""

    abstract = True
    path = "/api/weather"

    def body(self, reports: list[Report]) -> bytes:
        """The request body for `reports`."""
        return json.dumps(reports[0].to_json()).encode()

    def check(self, answer: Any, reports: list[Report]) -> str | None:  # noqa: ANN401, ARG002 - BatchUser needs them
        """What is wrong with a 201's body, if anything."""
        return None if isinstance(answer, dict) and answer.get("id") else "201 without an id"

    def exchange(self, reports: list[Report]) -> str:
        """Attempts until a definite answer or --retry-for runs out; a replay now and then."""
        options = current().options
        body, key = self.body(reports), str(uuid.uuid4())
        deadline = time.monotonic() + options.retry_for
        uncertain = False  # whether an attempt so far may have been applied unseen
        for attempt in range(1, 1_000_000):
            name = self.path if attempt == 1 else f"{self.path} [retry]"
            with self.post(self.path, body, name, {"Idempotency-Key": key}) as response:
                status, outcome = response.status_code, settled(response)
                problem = self.check(parse(response.text), reports) if status == 201 else describe(response)
                if problem:
                    response.failure(problem)
                else:
                    response.success()
            if status == 201:
                if random.random() < options.replay_share:  # noqa: S311
                    self.replay(body, key, response.text)
                return "accepted"
            if status != NO_ANSWER and status not in RETRYABLE:
                return outcome or "unknown"
            uncertain = uncertain or outcome is None
            pause = backoff(attempt, retry_after(response))
            if time.monotonic() + pause > deadline:
                break
            gevent.sleep(pause)
        return "unknown" if uncertain else rejected(status)

    def replay(self, body: bytes, key: str, first: str) -> None:
        """Send an accepted request again: the service must answer as the first time."""
        with self.post(self.path, body, f"{self.path} [replay]", {"Idempotency-Key": key}) as response:
            if response.status_code == 201 and parse(response.text) == parse(first):
                response.success()
            else:
                response.failure(f"replay answered differently: {describe(response)}")


class IdempotentUser(RetryingUser):
    """Single reports with an Idempotency-Key; retries never count twice."""

    weight = 3


class BatchUser(RetryingUser):
    """Batches of --batch-size reports, all-or-nothing, with an Idempotency-Key."""

    weight = 1
    path = "/api/weather/batch"

    def draw(self) -> list[Report]:
        """--batch-size reports."""
        run = current()
        return run.factory.batch(run.options.batch_size)

    def body(self, reports: list[Report]) -> bytes:
        """A JSON array of reports."""
        return json.dumps([r.to_json() for r in reports]).encode()

    def check(self, answer: Any, reports: list[Report]) -> str | None:  # noqa: ANN401
        """The answer must count every report and give each an id."""
        if not isinstance(answer, dict) or answer.get("count") != len(reports):
            return f"201 without count {len(reports)}"
        ids = answer.get("ids")
        if not isinstance(ids, list) or len(ids) != len(reports):
            return f"201 without {len(reports)} ids"
        return None


class InvalidUser(WeatherUser):
    """Bad requests; a request counts as a success when it gets the 4xx it deserves."""

    weight = 1

    def on_start(self) -> None:
        """Start the rotation of cases at a random one, so small runs still see a mix."""
        self._turn = random.randrange(1000)  # noqa: S311

    def exchange(self, reports: list[Report]) -> str:
        """One bad request; nothing may be stored."""
        cases = invalid_cases(reports[0])
        case = cases[self._turn % len(cases)]
        self._turn += 1
        name = f"{case.path} [invalid:{case.name}]"
        with self.client.post(
            case.path,
            data=case.body,  # type: ignore[arg-type]
            headers={"Content-Type": case.content_type, **dict(case.headers)},
            name=name,
            catch_response=True,
        ) as response:
            status = response.status_code
            if status in case.expected:
                response.success()
                return rejected(status)
            expected = "/".join(str(s) for s in sorted(case.expected))
            response.failure(f"expected {expected}, got {describe(response)}")
            outcome = settled(response)
            # A bad request that got in may have stored something: let verify show it.
            return "unknown" if outcome in (None, "accepted") else outcome


def _not_applied(response: Any) -> bool:  # noqa: ANN401
    """Whether a 503 problem says nothing was written: `outcome` not_applied, or shed over capacity."""
    answer = parse(response.text)
    if not isinstance(answer, dict):
        return False
    return answer.get("outcome") == "not_applied" or answer.get("type") == "urn:weather-api:problem:over-capacity"


def parse(text: str | None) -> Any:  # noqa: ANN401
    """JSON of a response body, or None."""
    try:
        return json.loads(text or "")
    except ValueError:
        return None


def describe(response: Any) -> str:  # noqa: ANN401
    """Status and problem title, or the error when there was no answer.

    Few distinct texts, so that Locust's error report groups them.
    """
    if response.status_code == NO_ANSWER:
        return f"no answer: {type(response.error).__name__}"
    answer = parse(response.text)
    title = answer.get("title") if isinstance(answer, dict) else None
    return f"HTTP {response.status_code}" + (f" {title}" if isinstance(title, str) else "")


def retry_after(response: Any) -> float:  # noqa: ANN401
    """Seconds from a Retry-After header (0 when absent or not a number)."""
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def backoff(attempt: int, hint: float, cap: float = 2.0) -> float:
    """Exponential backoff with jitter from 50 ms, at least Retry-After, at most `cap` seconds."""
    exponential = 0.05 * 2.0 ** min(attempt - 1, 10) * random.uniform(0.5, 1.0)  # noqa: S311
    return min(cap, max(exponential, hint))
